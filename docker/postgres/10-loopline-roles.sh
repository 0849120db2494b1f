#!/usr/bin/env bash
# Loopline's Postgres roles and databases: one login role per service, each with only what it needs.
# Idempotent: run by the postgres image's entrypoint on a fresh data directory
# (/docker-entrypoint-initdb.d) and again by compose's db-init on every `up` (so a changed password in
# .env reaches the role, and a volume from an older Loopline gets the roles). For Kubernetes / a managed
# Postgres run it once with an admin connection (docs/deploy-kubernetes.md, step 2):
#   PGHOST=... PGUSER=<admin> PGPASSWORD=... AIRFLOW_DB_PASSWORD=... (all five) bash 10-loopline-roles.sh
#
#   role      database(s)          may
#   airflow   airflow   (owner)    everything in Airflow's metadata database; nothing elsewhere
#   mlflow    mlflow, mlflow_auth  MLflow's tracking/registry database and its users database (basic-auth
#             (owner)              app); nothing elsewhere
#   feast     feast     (owner)    Feast's offline tables and SQL registry; nothing elsewhere
#   loopline  loopline  (owner)    Loopline's tables: creates and owns the prediction log and the decision
#                                  history (Airflow tasks: drift monitor, canary, retention, history)
#   serving   loopline, feast      INSERT + SELECT on the prediction log (and its id sequence); DELETE of
#                                  rows older than 30 days only (its retention thread; a trigger refuses
#                                  younger ones, which the drift monitor, the canary and fresh features
#                                  read); SELECT on the decision history, on the materialisation watermark
#                                  (fresh features) and on Feast's tables; no DDL, no UPDATE/TRUNCATE, not
#                                  the ingest ledger, no other database
#
# No role is a superuser or may create roles or databases; PUBLIC may not connect to any database.
# Needs psql 15+ (\getenv). Reads the passwords from the environment (never from the command line):
#   AIRFLOW_DB_PASSWORD MLFLOW_DB_PASSWORD FEAST_DB_PASSWORD LOOPLINE_DB_PASSWORD SERVING_DB_PASSWORD
# and connects with the usual libpq variables (PGHOST, PGPORT, PGUSER, PGPASSWORD), as POSTGRES_USER by
# default. The prediction log's DDL below is include/loopline/serving/prediction_log.py's _PG_SCHEMA
# (tests/packaging/test_packaging_postgres_roles.py checks they are the same).

loopline_db_roles() (
    set -euo pipefail
    missing=""
    for name in AIRFLOW_DB_PASSWORD MLFLOW_DB_PASSWORD FEAST_DB_PASSWORD LOOPLINE_DB_PASSWORD SERVING_DB_PASSWORD; do
        if [ -z "${!name:-}" ]; then missing="$missing $name"; fi
    done
    if [ -n "$missing" ]; then
        echo "10-loopline-roles.sh: set$missing (each role's password)" >&2
        return 1
    fi
    psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet \
        --username "${PGUSER:-${POSTGRES_USER:-postgres}}" --dbname "${LOOPLINE_ADMIN_DB:-postgres}" <<'SQL'
\getenv airflow_pw AIRFLOW_DB_PASSWORD
\getenv mlflow_pw MLFLOW_DB_PASSWORD
\getenv feast_pw FEAST_DB_PASSWORD
\getenv loopline_pw LOOPLINE_DB_PASSWORD
\getenv serving_pw SERVING_DB_PASSWORD

-- Roles: log in, nothing more. The passwords are (re)set on every run: rotating one is editing .env.
SELECT format('CREATE ROLE %I', r) FROM unnest(ARRAY['airflow', 'mlflow', 'feast', 'loopline', 'serving']) AS r
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) \gexec
ALTER ROLE airflow  WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'airflow_pw';
ALTER ROLE mlflow   WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'mlflow_pw';
ALTER ROLE feast    WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'feast_pw';
ALTER ROLE loopline WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'loopline_pw';
ALTER ROLE serving  WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'serving_pw';
-- Feast's point-in-time joins are quadratic with nested loops (feature_repo/<use case>/feature_store.production.yaml).
ALTER ROLE feast SET enable_nestloop = off;

-- One database per owner (Airflow and MLflow both keep an alembic_version table: they cannot share one;
-- MLflow's users live apart from its runs, as with MLflow's own default of a separate basic_auth.db).
SELECT format('CREATE DATABASE %I OWNER %I', d, o)
  FROM (VALUES ('airflow', 'airflow'), ('mlflow', 'mlflow'), ('mlflow_auth', 'mlflow'), ('feast', 'feast'),
               ('loopline', 'loopline')) AS t(d, o)
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = d) \gexec
ALTER DATABASE airflow     OWNER TO airflow;
ALTER DATABASE mlflow      OWNER TO mlflow;
ALTER DATABASE mlflow_auth OWNER TO mlflow;
ALTER DATABASE feast       OWNER TO feast;
ALTER DATABASE loopline    OWNER TO loopline;
-- Nobody connects where it has no business (Postgres lets PUBLIC connect to every database by default).
REVOKE ALL ON DATABASE airflow, mlflow, mlflow_auth, feast, loopline, postgres FROM PUBLIC;
GRANT CONNECT ON DATABASE feast, loopline TO serving;

-- Each database's public schema belongs to its owner alone (Postgres < 15 let PUBLIC create there).
\connect airflow
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT ALL ON SCHEMA public TO airflow;

\connect mlflow
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT ALL ON SCHEMA public TO mlflow;

\connect mlflow_auth
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT ALL ON SCHEMA public TO mlflow;

\connect feast
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT ALL ON SCHEMA public TO feast;
-- Serving reads Feast's registry (SQL registry tables) to look up online features; the tables are created by
-- Feast as the feast role (airflow-init, then every `feast apply`), so default privileges cover new ones.
GRANT USAGE ON SCHEMA public TO serving;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO serving;
ALTER DEFAULT PRIVILEGES FOR ROLE feast IN SCHEMA public GRANT SELECT ON TABLES TO serving;

\connect loopline
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT ALL ON SCHEMA public TO loopline;
GRANT USAGE ON SCHEMA public TO serving;
-- The prediction log, created by its owner here so that serving needs no DDL (same DDL as serving's).
SET ROLE loopline;
CREATE TABLE IF NOT EXISTS predictions (
    id BIGSERIAL PRIMARY KEY,
    request_id TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,   -- seconds since the epoch (UTC), as in the SQLite log
    transaction_id TEXT NOT NULL,
    customer_id TEXT,
    inputs JSONB NOT NULL,
    features JSONB NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    decision BOOLEAN NOT NULL,
    variant TEXT NOT NULL,
    model_version TEXT NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS predictions_ts ON predictions (ts);
CREATE INDEX IF NOT EXISTS predictions_variant_ts ON predictions (variant, ts);
CREATE INDEX IF NOT EXISTS predictions_transaction ON predictions (transaction_id);
-- Serving's retention thread (include/loopline/serving/prediction_log.py, Retention) deletes old rows: only
-- the owner may delete rows of the last 30 days (below retention's own floor of 31 days for fresh features,
-- so clock skew of a day never trips it), so a leaked serving password cannot empty what the drift monitor,
-- the canary and fresh features read. A trigger, because row-level security would stop serving's COPY.
CREATE OR REPLACE FUNCTION predictions_keep_recent() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF OLD.ts > extract(epoch FROM now()) - 30 * 86400 AND NOT pg_has_role(current_user, 'loopline', 'MEMBER') THEN
        RAISE EXCEPTION 'prediction log: only its owner deletes predictions of the last 30 days (id %)', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN OLD;
END
$fn$;
CREATE OR REPLACE TRIGGER predictions_keep_recent BEFORE DELETE ON predictions
    FOR EACH ROW EXECUTE FUNCTION predictions_keep_recent();
-- The decision history (include/loopline/lineage/history.py's _PG_SCHEMA), written by the Airflow tasks;
-- serving reads it (its retention keeps the predictions of a running canary).
CREATE TABLE IF NOT EXISTS events (
    id      BIGSERIAL PRIMARY KEY,
    at      TEXT NOT NULL,
    kind    TEXT NOT NULL,
    version TEXT,
    reason  TEXT NOT NULL DEFAULT '',
    details TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_kind_at ON events (kind, at);
-- The materialisation watermark (include/loopline/storage/state_db.py's _WATERMARK_SCHEMA; the state
-- database LOOPLINE_STATE_DB_URL is this one), written by the Airflow tasks; serving reads it when fresh
-- features start where pods share no disk (Kubernetes). The ingest ledger beside it stays the tasks' own.
CREATE TABLE IF NOT EXISTS watermarks (name TEXT PRIMARY KEY, value_json TEXT NOT NULL, updated_at TEXT NOT NULL);
RESET ROLE;
REVOKE ALL ON events FROM serving;
GRANT SELECT ON events TO serving;
REVOKE ALL ON watermarks FROM serving;
GRANT SELECT ON watermarks TO serving;
-- Serving appends (COPY/INSERT takes ids from the sequence), reads the log (fresh features, newest id,
-- retention's bounds) and deletes old rows (retention, guarded above).
REVOKE ALL ON predictions FROM serving;
GRANT SELECT, INSERT, DELETE ON predictions TO serving;
GRANT USAGE ON SEQUENCE predictions_id_seq TO serving;
SQL
    echo "10-loopline-roles.sh: roles airflow, mlflow, feast, loopline, serving and their databases are in place"
)

loopline_db_roles

"""docker/postgres/10-loopline-roles.sh against a real (throwaway) Postgres: one role per service, each with
only what it needs; serving inserts into and reads the prediction log and nothing more.

The cluster runs like the postgres image's: a superuser `postgres`, password (SCRAM) logins over TCP for
every other role. The script runs twice (idempotent), the second time sourced the way the image's
entrypoint runs /docker-entrypoint-initdb.d scripts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import local_servers
import pytest
from local_servers import postgres_server
from packaging_files import REPO_ROOT

pytestmark = pytest.mark.integration

SCRIPT = REPO_ROOT / "docker" / "postgres" / "10-loopline-roles.sh"
ROLES = ("airflow", "mlflow", "feast", "loopline", "serving")
DATABASES = {
    "airflow": "airflow",
    "mlflow": "mlflow",
    "mlflow_auth": "mlflow",
    "feast": "feast",
    "loopline": "loopline",
}
PASSWORDS = {f"{role.upper()}_DB_PASSWORD": f"{role}-pw-{'0123456789abcdef'}" for role in ROLES}
SUPERUSER = "postgres"


def _psycopg() -> Any:
    return pytest.importorskip("psycopg")


def _run_script(port: int, env: dict[str, str], sourced: bool = False) -> subprocess.CompletedProcess[str]:
    if shutil.which("psql") is None:
        pytest.skip(f"psql is missing ({local_servers.APT_LINE})")
    full = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(port), "PGUSER": SUPERUSER, **env}
    # The image's entrypoint sources a script that is not executable, under `set -Eeo pipefail`.
    argv = (
        ["bash", "-c", f"set -Eeo pipefail; . {SCRIPT}; echo sourced-ok"]
        if sourced
        else ["bash", str(SCRIPT)]
    )
    return subprocess.run(argv, env=full, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    psycopg = _psycopg()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(local_servers, "PG_USER", SUPERUSER)  # the bootstrap superuser, as in the image
        with postgres_server() as pg_port:
            patch.undo()
            with psycopg.connect(
                host="127.0.0.1", port=pg_port, user=SUPERUSER, dbname="postgres", autocommit=True
            ) as conn:
                hba = Path(conn.execute("SHOW hba_file").fetchone()[0])
                hba.write_text(
                    "local all all trust\n"
                    f"host all {SUPERUSER} 127.0.0.1/32 trust\n"
                    "host all all 127.0.0.1/32 scram-sha-256\n"
                )
                conn.execute("SELECT pg_reload_conf()")
            done = _run_script(pg_port, PASSWORDS)
            assert done.returncode == 0, done.stderr
            yield pg_port


def connect(port: int, role: str, dbname: str, password: str | None = None) -> Any:
    psycopg = _psycopg()
    password = password if password is not None else PASSWORDS.get(f"{role.upper()}_DB_PASSWORD", "")
    return psycopg.connect(
        host="127.0.0.1",
        port=port,
        user=role,
        password=password,
        dbname=dbname,
        autocommit=True,
        connect_timeout=5,
    )


def _denied(port: int, role: str, dbname: str, sql: str, params: list[Any] | None = None) -> str:
    """The error ``sql`` fails with for ``role`` (the test fails if it succeeds)."""
    psycopg = _psycopg()
    with connect(port, role, dbname) as conn:
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(sql, params or [])
    return str(caught.value)


def test_the_script_is_idempotent_and_works_when_sourced(port: int) -> None:
    again = _run_script(port, PASSWORDS, sourced=True)
    assert again.returncode == 0, again.stderr
    assert "sourced-ok" in again.stdout and "roles airflow, mlflow, feast, loopline, serving" in again.stdout


def test_it_refuses_to_run_without_every_password(port: int) -> None:
    done = _run_script(port, {**PASSWORDS, "SERVING_DB_PASSWORD": ""})
    assert done.returncode != 0
    assert "SERVING_DB_PASSWORD" in done.stderr


def test_every_role_logs_in_to_its_own_database_with_its_password_and_is_not_privileged(port: int) -> None:
    for database, owner in DATABASES.items():
        with connect(port, owner, database) as conn:
            assert conn.execute("SELECT current_user").fetchone()[0] == owner
    psycopg = _psycopg()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(port, "serving", "loopline", password="wrong-password-0000")
    with connect(port, SUPERUSER, "postgres") as conn:
        rows = conn.execute(
            "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls "
            "FROM pg_roles WHERE rolname = ANY(%s)",
            [list(ROLES)],
        ).fetchall()
        owners = dict(conn.execute("SELECT datname, pg_get_userbyid(datdba) FROM pg_database").fetchall())
    assert {row[0] for row in rows} == set(ROLES)
    assert all(not any(row[1:]) for row in rows), rows
    assert {db: owners[db] for db in DATABASES} == DATABASES


def test_roles_reach_no_database_but_their_own(port: int) -> None:
    psycopg = _psycopg()
    allowed = {
        *((owner, db) for db, owner in DATABASES.items()),
        ("serving", "feast"),
        ("serving", "loopline"),
    }
    for role in ROLES:
        for database in (*DATABASES, "postgres"):
            if (role, database) in allowed:
                continue
            with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
                connect(port, role, database)


def test_a_password_change_in_env_reaches_the_role_on_the_next_run(port: int) -> None:
    psycopg = _psycopg()
    rotated = {**PASSWORDS, "SERVING_DB_PASSWORD": "serving-rotated-0123456789"}
    try:
        assert _run_script(port, rotated).returncode == 0
        with connect(port, "serving", "loopline", password=rotated["SERVING_DB_PASSWORD"]):
            pass
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            connect(port, "serving", "loopline")
    finally:
        assert _run_script(port, PASSWORDS).returncode == 0


PREDICTION = (
    "req-1",
    1_800_000_000.0,
    "tx-1",
    "c-1",
    '{"amount": 1}',
    '{"f": 2}',
    0.25,
    False,
    "champion",
    "3",
    1.5,
)
COLUMNS = (
    "request_id",
    "ts",
    "transaction_id",
    "customer_id",
    "inputs",
    "features",
    "score",
    "decision",
    "variant",
    "model_version",
    "latency_ms",
)


def test_serving_appends_to_and_reads_the_prediction_log(port: int) -> None:
    with connect(port, "serving", "loopline") as conn:
        # What PostgresPredictionLog.append does: COPY in one transaction (ids from the sequence).
        with conn.transaction(), conn.cursor() as cursor:
            with cursor.copy(f"COPY predictions ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                copy.write_row(PREDICTION)
        conn.execute(
            f"INSERT INTO predictions ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})",
            list(PREDICTION),
        )
        assert conn.execute("SELECT COUNT(*) FROM predictions WHERE request_id = 'req-1'").fetchone()[0] >= 2
        assert conn.execute("SELECT MAX(id) FROM predictions").fetchone()[0] >= 2
        conn.execute("SELECT pg_advisory_xact_lock(7246001)")  # the log's schema lock is open to anyone


@pytest.mark.parametrize(
    "sql",
    [
        "DROP TABLE predictions",
        "TRUNCATE predictions",
        "DELETE FROM predictions",  # rows of the last 30 days are there: the trigger refuses
        "UPDATE predictions SET score = 1",
        "DROP TRIGGER predictions_keep_recent ON predictions",
        "ALTER TABLE predictions DISABLE TRIGGER predictions_keep_recent",
        "CREATE OR REPLACE FUNCTION predictions_keep_recent() RETURNS trigger LANGUAGE sql AS 'SELECT NULL'",
        "ALTER TABLE predictions ADD COLUMN x int",
        "CREATE TABLE mine (x int)",
        "CREATE INDEX IF NOT EXISTS predictions_ts ON predictions (ts)",
        "CREATE TABLE IF NOT EXISTS predictions (id int)",
        "SELECT setval('predictions_id_seq', 1)",
    ],
)
def test_serving_cannot_change_or_drop_the_prediction_log_or_create_anything(port: int, sql: str) -> None:
    assert re.search(
        r"permission denied|must be owner|only its owner deletes", _denied(port, "serving", "loopline", sql)
    )


def test_serving_s_retention_deletes_old_rows_only(port: int) -> None:
    """Loopline's own retention call (PostgresPredictionLog.delete_before) as the serving role."""
    import time

    from loopline.serving.prediction_log import PostgresPredictionLog

    now, day = time.time(), 86_400.0
    with connect(port, "serving", "loopline") as conn:
        for ts, tx in ((now - 40 * day, "tx-old"), (now - 2 * day, "tx-new")):
            conn.execute(
                f"INSERT INTO predictions ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})",
                [PREDICTION[0], ts, tx, *PREDICTION[3:]],
            )
    serving = PostgresPredictionLog(
        f"postgresql://serving:{PASSWORDS['SERVING_DB_PASSWORD']}@127.0.0.1:{port}/loopline",
        read_only=True,
        timeout_s=5,
    )
    try:
        assert serving.delete_before(now - 35 * day, batch_rows=100) >= 1
        with pytest.raises(_psycopg().errors.InsufficientPrivilege, match="only its owner deletes"):
            serving.delete_before(now - day, batch_rows=100)  # what a leaked password could try
    finally:
        serving.close()
    with connect(port, "loopline", "loopline") as conn:
        left = {
            r[0]
            for r in conn.execute("SELECT transaction_id FROM predictions WHERE transaction_id LIKE 'tx-%%'")
        }
        assert "tx-old" not in left and "tx-new" in left
        # The owner (Airflow tasks) is not bound by the guard.
        assert conn.execute("DELETE FROM predictions WHERE transaction_id = 'tx-new'").rowcount == 1


def test_serving_reads_the_decision_history_but_cannot_change_it_nor_read_airflows_tables(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tasks' role records decisions with Loopline's own code; serving's retention reads them (a running
    canary's start) through the same code, and cannot write them."""
    from loopline.config import Settings
    from loopline.lineage import history

    url = f"postgresql://loopline:{PASSWORDS['LOOPLINE_DB_PASSWORD']}@127.0.0.1:{port}/loopline"
    monkeypatch.setenv("LOOPLINE_HISTORY_URL", url)
    history.record(Settings(), "promoted", version=3, reason="test")
    serving_url = f"postgresql://serving:{PASSWORDS['SERVING_DB_PASSWORD']}@127.0.0.1:{port}/loopline"
    monkeypatch.setenv("LOOPLINE_HISTORY_URL", serving_url)
    assert any(e.kind == "promoted" and e.reason == "test" for e in history.read(Settings()))
    for statement in (
        "INSERT INTO events (at, kind) VALUES ('x', 'promoted')",
        "DELETE FROM events",
        "UPDATE events SET reason = 'forged'",
        "DROP TABLE events",
    ):
        message = _denied(port, "serving", "loopline", statement)
        assert "permission denied" in message or "must be owner" in message, message
    with connect(port, "airflow", "airflow") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS connection (id int, password text)")
    with pytest.raises(_psycopg().OperationalError, match="permission denied for database"):
        connect(port, "serving", "airflow")


def test_the_tasks_role_reads_what_serving_logged_with_loopline_s_reader(port: int) -> None:
    from loopline.serving.prediction_log import PostgresPredictionLog

    with connect(port, "serving", "loopline") as conn:
        conn.execute(
            f"INSERT INTO predictions ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})",
            [*PREDICTION[:2], "tx-read", *PREDICTION[3:]],
        )
    reader = PostgresPredictionLog(
        f"postgresql://loopline:{PASSWORDS['LOOPLINE_DB_PASSWORD']}@127.0.0.1:{port}/loopline", read_only=True
    )
    try:
        frame = reader.read()
        assert "tx-read" in set(frame["transaction_id"])
        assert reader.counts()[("champion", "3")] >= 1
    finally:
        reader.close()
    with connect(port, "loopline", "loopline") as conn:  # the owner may delete any row
        assert conn.execute("DELETE FROM predictions WHERE transaction_id = 'tx-read'").rowcount == 1


def test_serving_s_own_prediction_log_writer_works_with_the_serving_role(port: int) -> None:
    """Serving does not own the table (the owner role created it), so its writer must not run DDL."""
    from loopline.serving.prediction_log import LoggedPrediction, PostgresPredictionLog

    log = PostgresPredictionLog(
        f"postgresql://serving:{PASSWORDS['SERVING_DB_PASSWORD']}@127.0.0.1:{port}/loopline"
    )
    try:
        row = LoggedPrediction(
            "req-w", 1_800_000_001.0, "tx-w", "c", {"amount": 1}, {}, 0.5, True, "champion", "3", 1.0
        )
        assert log.append([row]) == 1
    finally:
        log.close()


def test_serving_reads_feasts_registry_that_the_feast_role_wrote(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Feast's SQL registry as compose opens it (feature_store.production.yaml): airflow-init creates it as
    the feast role, then a serving replica opens it read-only."""
    pytest.importorskip("feast")
    from loopline.config import Settings
    from loopline.platform.feast_store import feature_store

    def store_as(role: str) -> Any:
        password = PASSWORDS[f"{role.upper()}_DB_PASSWORD"]
        for key, value in {
            "FEAST_FS_YAML_FILE_PATH": "feature_store.production.yaml",
            "LOOPLINE_FEAST_REGISTRY_URL": f"postgresql+psycopg://{role}:{password}@127.0.0.1:{port}/feast",
            "LOOPLINE_FEAST_PG_HOST": "127.0.0.1",
            "LOOPLINE_FEAST_PG_PORT": str(port),
            "LOOPLINE_FEAST_PG_DATABASE": "feast",
            "LOOPLINE_FEAST_PG_USER": role,
            "LOOPLINE_FEAST_PG_PASSWORD": password,
            "LOOPLINE_FEAST_PG_SSLMODE": "disable",
            "LOOPLINE_FEAST_REDIS": "127.0.0.1:1,password=unused",
        }.items():
            monkeypatch.setenv(key, value)
        return feature_store(Settings())

    # What airflow-init does (Feast writes the project's row when its registry is opened a second time: a
    # read-only role opening it first would have to write it), then what a serving replica does at start.
    for _ in range(2):
        assert store_as("feast").registry is not None
    served = store_as("serving")
    assert served.list_feature_views() == []
    assert "permission denied" in _denied(port, "serving", "feast", "DELETE FROM feast_metadata")
    with connect(port, "serving", "feast") as conn:
        assert conn.execute("SELECT COUNT(*) FROM feast_metadata").fetchone()[0] >= 1


def test_serving_reads_the_materialisation_watermark_and_nothing_else_of_the_state_db(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fresh features in Kubernetes: the tasks' role writes the watermark with Loopline's own code, serving
    reads it through the same code as a role that may only SELECT it; the ingest ledger stays the tasks'."""
    from loopline.config import Settings
    from loopline.data.ingest import IngestLedger
    from loopline.storage.state_db import read_watermark, write_watermark

    def settings_as(role: str) -> Settings:
        password = PASSWORDS[f"{role.upper()}_DB_PASSWORD"]
        monkeypatch.setenv(
            "LOOPLINE_STATE_DB_URL", f"postgresql://{role}:{password}@127.0.0.1:{port}/loopline"
        )
        return Settings()

    unused = Path("/nonexistent/materialized_until.json")
    assert read_watermark(settings_as("serving"), "not-written", unused) == {}
    write_watermark(
        settings_as("loopline"), "materialized_until", {"until": "2026-01-05T00:00:00+00:00"}, unused
    )
    assert IngestLedger.of(settings_as("loopline")).published("no-such-hash") is None  # creates its tables
    assert read_watermark(settings_as("serving"), "materialized_until", unused) == {
        "until": "2026-01-05T00:00:00+00:00"
    }
    for statement in (
        "INSERT INTO watermarks VALUES ('x', '{}', 'now')",
        "UPDATE watermarks SET value_json = '{}'",
        "DELETE FROM watermarks",
        "DROP TABLE watermarks",
        "CREATE TABLE IF NOT EXISTS watermarks (name TEXT PRIMARY KEY)",
    ):
        message = _denied(port, "serving", "loopline", statement)
        assert "permission denied" in message or "must be owner" in message, message
    with connect(port, "loopline", "loopline") as conn:
        ledger_tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> ALL(%s)",
                [["predictions", "events", "watermarks"]],
            )
        ]
    assert ledger_tables, "the ingest ledger's tables were not created"
    for table in ledger_tables:
        assert "permission denied" in _denied(port, "serving", "loopline", f"SELECT * FROM {table}")


def test_the_prediction_log_ddl_is_serving_s_own() -> None:
    """The script creates the table serving would create: same columns, types and indexes."""
    from loopline.serving.prediction_log import _PG_SCHEMA

    def statements(sql: str) -> list[str]:
        sql = re.sub(r"--[^\n]*", "", sql)
        return [" ".join(s.split()) for s in sql.split(";") if s.strip()]

    script = SCRIPT.read_text()
    block = script[
        script.index("CREATE TABLE IF NOT EXISTS predictions") : script.index(
            "CREATE OR REPLACE FUNCTION predictions_keep_recent"
        )
    ]
    assert statements(block) == statements(_PG_SCHEMA)
    from loopline.lineage.history import _PG_SCHEMA as HISTORY_SCHEMA

    events = script[
        script.index("CREATE TABLE IF NOT EXISTS events") : script.index(
            "CREATE TABLE IF NOT EXISTS watermarks"
        )
    ]
    assert statements(events) == statements(HISTORY_SCHEMA)
    from loopline.storage.state_db import _WATERMARK_SCHEMA

    watermarks = script[
        script.index("CREATE TABLE IF NOT EXISTS watermarks") : script.index(
            "RESET ROLE;\nREVOKE ALL ON events"
        )
    ]
    assert statements(watermarks) == [statements(s)[0] for s in _WATERMARK_SCHEMA]

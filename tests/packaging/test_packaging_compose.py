"""docker-compose.yaml: valid for docker-compose, no secret in it, healthchecks, two serving replicas; the
secrets check every service waits for, one Postgres role and one MLflow user per service, serving's
read-only state and its API key (the roles themselves: test_packaging_postgres_roles.py; MLflow's auth:
test_packaging_mlflow_auth.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging_files import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    REPO_ROOT,
    compose,
    compose_variables,
    env_example,
    service_environment,
)

COMPOSE_APT = "apt-get install -y --no-install-recommends docker-compose"
# One-shot jobs: they exit, the others wait for `service_completed_successfully`.
ONE_SHOT = {"check-secrets", "db-init", "mlflow-init", "airflow-init"}
AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
}
SERVING_REPLICAS = {"serving-a", "serving-b"}
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|_KEY$|TOKEN")


def _compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def _config(env_file: Path) -> subprocess.CompletedProcess[str]:
    command = _compose_command()
    if command is None:
        pytest.skip(f"neither docker-compose nor `docker compose` is installed ({COMPOSE_APT})")
    return subprocess.run(
        [
            *command,
            "--project-directory",
            str(REPO_ROOT),
            "--env-file",
            str(env_file),
            "-f",
            str(COMPOSE_FILE),
            "config",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_config_accepts_the_file_with_env_example(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(ENV_EXAMPLE.read_text())
    done = _config(env)
    assert done.returncode == 0, done.stderr
    rendered = yaml.safe_load(done.stdout)
    assert set(rendered["services"]) == set(compose()["services"])
    # Values from .env reach the services (interpolation happened; only `$${...}` escapes remain).
    postgres = service_environment(rendered["services"]["postgres"])
    assert postgres["POSTGRES_PASSWORD"] == env_example()["POSTGRES_PASSWORD"]
    assert not re.search(r"(?<!\$)\$\{", done.stdout)


def test_compose_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    empty = tmp_path / ".env"
    empty.write_text("")
    done = _config(empty)
    assert done.returncode != 0
    required = [name for name, error in compose_variables().items() if error is not None]
    assert any(name in done.stderr for name in required), done.stderr


def test_every_required_variable_is_in_env_example_and_nothing_else_is() -> None:
    variables = compose_variables()
    example = env_example()
    required = {name for name, error in variables.items() if error is not None}
    assert required <= set(example), f"add to .env.example: {sorted(required - set(example))}"
    unused = set(example) - set(variables) - {"COMPOSE_PROJECT_NAME"}
    assert not unused, f".env.example sets variables the compose file never reads: {sorted(unused)}"
    for name, error in variables.items():
        if error is not None:
            assert name in error, f"${{{name}:?...}} should name the variable to set: {error!r}"


def test_no_secret_value_is_written_in_the_compose_file() -> None:
    for name, service in compose()["services"].items():
        for key, value in service_environment(service).items():
            if _SECRET_NAME.search(key) and "_FILE" not in key:
                assert "${" in value, f"{name}: {key} must come from .env, not be written in the file"
        for key, value in service_environment(service).items():
            if "://" in value and "@" in value:  # credentials inside a URL
                assert "${" in value.split("@")[0], f"{name}: {key} has a literal password in its URL"


def test_long_running_services_have_healthchecks_and_waits_use_conditions() -> None:
    services = compose()["services"]
    for name, service in services.items():
        if name not in ONE_SHOT:
            assert "healthcheck" in service, f"{name} has no healthcheck"
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on must use conditions, not a list"
        for dependency, spec in depends.items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            expected = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            assert spec.get("condition") == expected, f"{name} -> {dependency}: condition {spec!r}"


def test_the_stack_has_every_component_of_the_issue() -> None:
    services = set(compose()["services"])
    assert services >= {
        "postgres",
        "redis",
        "airflow-init",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "mlflow",
        "prometheus",
        "grafana",
        "serving-proxy",
        *SERVING_REPLICAS,
    }


def test_published_ports_bind_to_loopback_only() -> None:
    for name, service in compose()["services"].items():
        for port in service.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def _nginx_upstreams() -> set[str]:
    conf = (REPO_ROOT / "docker" / "serving" / "nginx.conf").read_text()
    return set(re.findall(r"^\s*server\s+([\w-]+):8000\b", conf, flags=re.MULTILINE))


def test_two_serving_replicas_behind_one_port() -> None:
    services = compose()["services"]
    replicas = {
        name for name, s in services.items() if s.get("image", "").startswith("ghcr.io/loopline/serving")
    }
    assert replicas == SERVING_REPLICAS
    assert _nginx_upstreams() == replicas
    proxy = services["serving-proxy"]
    assert len(proxy["ports"]) == 1
    assert set(proxy["depends_on"]) - {"check-secrets"} == replicas
    # Identical replicas (one YAML anchor): same image, command and environment.
    a, b = (services[name] for name in sorted(replicas))
    assert (a["command"], service_environment(a)) == (b["command"], service_environment(b))


def test_prometheus_scrapes_each_serving_replica_and_airflow() -> None:
    prometheus = yaml.safe_load((REPO_ROOT / "docker" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    targets = {t for job in jobs.values() for c in job.get("static_configs", []) for t in c["targets"]}
    # Every container of the serving services, by DNS (scaling needs no change), and each only once: a
    # replica scraped twice would count its errors twice in the canary's sum.
    serving = jobs["loopline-serving"]
    (dns,) = serving["dns_sd_configs"]
    assert (set(dns["names"]), dns["type"], dns["port"]) == (SERVING_REPLICAS, "A", 8000)
    assert "static_configs" not in serving and not {t for t in targets if t.endswith(":8000")}
    services = compose()["services"]
    statsd = services["statsd-exporter"]
    assert "statsd-exporter:9102" in targets
    airflow = service_environment(services["airflow-scheduler"])
    assert airflow["LOOPLINE_PROMETHEUS_URL"] == "http://prometheus:9090"
    assert airflow["AIRFLOW__METRICS__STATSD_ON"] == "True"
    assert airflow["AIRFLOW__METRICS__STATSD_HOST"] == "statsd-exporter"
    assert f"{airflow['AIRFLOW__METRICS__STATSD_PORT']}/udp" in statsd["expose"]


def _mounted_files(service: dict[str, Any]) -> list[str]:
    return [v.split(":")[0] for v in service.get("volumes") or [] if v.startswith("./")]


def test_files_the_stack_mounts_and_builds_exist() -> None:
    for name, service in compose()["services"].items():
        for source in _mounted_files(service):
            assert (REPO_ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
        build = service.get("build")
        if build:
            assert (REPO_ROOT / build["context"] / build["dockerfile"]).is_file(), (
                f"{name}: no {build['dockerfile']}"
            )


def test_compose_airflow_image_carries_torch_for_the_local_trainer() -> None:
    services = compose()["services"]
    for name in ("airflow-scheduler", "airflow-init"):
        assert services[name]["build"]["args"]["TORCH"] == "cpu"
        assert service_environment(services[name])["LOOPLINE_TRAINING_BACKEND"] == "local"


def _user_and_target(url: str) -> tuple[str, str]:
    """(user, host:port/database) of a connection URL with its password left as written."""
    match = re.match(r"^[\w+]+://([^:@/]+):[^@]*@(.+)$", url)
    assert match, url
    return match.group(1), match.group(2)


def test_every_replica_and_airflow_share_one_prediction_log_each_as_its_own_role() -> None:
    services = compose()["services"]
    targets = {}
    for name in (*sorted(SERVING_REPLICAS), *sorted(AIRFLOW_SERVICES)):
        user, target = _user_and_target(service_environment(services[name])["LOOPLINE_PREDICTION_LOG_URL"])
        assert user == ("serving" if name in SERVING_REPLICAS else "loopline"), (name, user)
        targets[name] = target
    assert set(targets.values()) == {"postgres:5432/loopline"}
    for name in AIRFLOW_SERVICES:  # the decision history: written by the Airflow tasks
        url = service_environment(services[name])["LOOPLINE_HISTORY_URL"]
        assert _user_and_target(url) == ("loopline", "postgres:5432/loopline")
    for name in SERVING_REPLICAS:  # and read by serving (its role may only SELECT it)
        url = service_environment(services[name])["LOOPLINE_HISTORY_URL"]
        assert _user_and_target(url) == ("serving", "postgres:5432/loopline")


# --- secrets: nothing starts on placeholders ------------------------------------------------------------------


def test_every_service_waits_for_the_secrets_check() -> None:
    services = compose()["services"]
    for name, service in services.items():
        if name == "check-secrets":
            assert not service.get("depends_on")
            continue
        depends = service.get("depends_on") or {}
        assert depends.get("check-secrets") == {"condition": "service_completed_successfully"}, name


def test_the_check_covers_every_secret_compose_reads_and_runs_without_dependencies() -> None:
    from loopline.platform.secrets import COMPOSE_SECRETS

    names = {spec.name for spec in COMPOSE_SECRETS}
    check = compose()["services"]["check-secrets"]
    env = service_environment(check)
    assert {k for k in env if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")} == names
    for name in names:
        assert env[name] == f"${{{name}:?set {name} in .env}}", name
    secret_like = {
        name for name, error in compose_variables().items() if error is not None and _SECRET_NAME.search(name)
    }
    assert secret_like <= names, f"secrets compose reads that nobody checks: {sorted(secret_like - names)}"
    # A plain Python image (no Loopline dependencies) runs it from the checkout, offline and read-only.
    assert check["image"].startswith("python:3.11") and check["network_mode"] == "none" and check["read_only"]
    assert check["volumes"] == ["./include/loopline:/opt/loopline-check/loopline:ro"]
    assert check["command"] == ["python", "-m", "loopline.platform.secrets", "check"]


def test_env_example_placeholders_fail_the_check_and_name_the_command_to_generate_each() -> None:
    from loopline.platform.secrets import COMPOSE_SECRETS, secret_problem

    example, text = env_example(), ENV_EXAMPLE.read_text()
    for spec in COMPOSE_SECRETS:
        assert spec.name in example, f".env.example lacks {spec.name}"
        assert secret_problem(spec, example[spec.name]), f".env.example's {spec.name} would pass the check"
        # The comment block right above the variable names the command (or the first of its group does).
        above = text[: text.index(f"\n{spec.name}=")]
        assert spec.generate in above, f".env.example does not say how to generate {spec.name}"


def _run_check(rendered: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """check-secrets' command with its rendered environment, as its container runs it (standard library only)."""
    import sys

    service = rendered["services"]["check-secrets"]
    env = {
        **service_environment(service),
        "PYTHONPATH": str(REPO_ROOT / "include"),
        "PATH": os.environ["PATH"],
    }
    argv = [sys.executable, "-S", *service["command"][1:]]  # -S: no site-packages, as in a bare Python image
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)


def test_cp_env_example_dot_env_does_not_start_a_stack(tmp_path: Path) -> None:
    """`cp .env.example .env`: compose renders, but check-secrets exits 1 naming every placeholder."""
    from loopline.platform.secrets import COMPOSE_SECRETS

    env = tmp_path / ".env"
    env.write_text(ENV_EXAMPLE.read_text())
    done = _config(env)
    assert done.returncode == 0, done.stderr
    check = _run_check(yaml.safe_load(done.stdout))
    assert check.returncode == 1, check.stdout + check.stderr
    for spec in COMPOSE_SECRETS:
        assert f"{spec.name}: " in check.stderr and spec.generate in check.stderr


def test_generated_secrets_pass_the_check(tmp_path: Path) -> None:
    import sys

    env = tmp_path / ".env"
    generated = subprocess.run(
        [sys.executable, "-S", "-m", "loopline.platform.secrets", "generate-env", str(ENV_EXAMPLE)],
        env={"PYTHONPATH": str(REPO_ROOT / "include")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert generated.returncode == 0, generated.stderr
    env.write_text(generated.stdout)
    done = _config(env)
    assert done.returncode == 0, done.stderr
    check = _run_check(yaml.safe_load(done.stdout))
    assert check.returncode == 0, check.stderr
    assert "secrets ok" in check.stdout


# --- one identity per service ------------------------------------------------------------------------------


def test_each_service_logs_in_to_postgres_as_its_own_role() -> None:
    services = compose()["services"]
    env = {name: service_environment(service) for name, service in services.items()}
    for name in AIRFLOW_SERVICES:
        assert _user_and_target(env[name]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]) == (
            "airflow",
            "postgres:5432/airflow",
        )
    feast = {name: "feast" for name in AIRFLOW_SERVICES} | {name: "serving" for name in SERVING_REPLICAS}
    for name, role in feast.items():
        assert _user_and_target(env[name]["LOOPLINE_FEAST_REGISTRY_URL"]) == (role, "postgres:5432/feast")
        assert env[name]["LOOPLINE_FEAST_PG_USER"] == role
    assert _user_and_target(env["mlflow"]["MLFLOW_BACKEND_STORE_URI"]) == ("mlflow", "postgres:5432/mlflow")
    assert _user_and_target(env["mlflow"]["MLFLOW_AUTH_DATABASE_URI"]) == (
        "mlflow",
        "postgres:5432/mlflow_auth",
    )
    # The superuser's password reaches only Postgres itself, the role setup and the check.
    holders = {name for name, values in env.items() if any("POSTGRES_PASSWORD" in v for v in values.values())}
    assert holders == {"check-secrets", "postgres", "db-init"}
    assert env["postgres"]["POSTGRES_USER"] == env["db-init"]["PGUSER"] == "postgres"
    # Each role's password goes only where that role logs in (and to the role setup and the check).
    where = {
        "AIRFLOW_DB_PASSWORD": AIRFLOW_SERVICES,
        "MLFLOW_DB_PASSWORD": {"mlflow"},
        "FEAST_DB_PASSWORD": AIRFLOW_SERVICES,
        "LOOPLINE_DB_PASSWORD": AIRFLOW_SERVICES,
        "SERVING_DB_PASSWORD": SERVING_REPLICAS,
    }
    for variable, users in where.items():
        holders = {
            name for name, values in env.items() if any(f"${{{variable}:" in v for v in values.values())
        }
        assert holders == {*users, "check-secrets", "postgres", "db-init"}, (variable, holders)


def test_postgres_sets_up_the_roles_at_first_start_and_db_init_on_every_start() -> None:
    services = compose()["services"]
    script = "./docker/postgres/10-loopline-roles.sh:/docker-entrypoint-initdb.d/10-loopline-roles.sh:ro"
    assert script in services["postgres"]["volumes"] and script in services["db-init"]["volumes"]
    assert services["db-init"]["entrypoint"] == ["bash", "/docker-entrypoint-initdb.d/10-loopline-roles.sh"]
    assert services["mlflow"]["depends_on"]["db-init"] == {"condition": "service_completed_successfully"}


def test_only_airflow_holds_the_mlflow_identity_that_can_move_champion() -> None:
    services = compose()["services"]
    env = {name: service_environment(service) for name, service in services.items()}
    for name in AIRFLOW_SERVICES:
        assert env[name]["MLFLOW_TRACKING_USERNAME"] == "loopline"
        assert env[name]["MLFLOW_TRACKING_PASSWORD"].startswith("${MLFLOW_LOOPLINE_PASSWORD:?")
    for name in SERVING_REPLICAS:
        assert env[name]["MLFLOW_TRACKING_USERNAME"] == "serving"
        assert env[name]["MLFLOW_TRACKING_PASSWORD"].startswith("${MLFLOW_SERVING_PASSWORD:?")
    writers = {
        name
        for name, values in env.items()
        if any("${MLFLOW_LOOPLINE_PASSWORD:" in v for v in values.values())
    }
    assert writers == {*AIRFLOW_SERVICES, "mlflow-init", "check-secrets"}
    admins = {
        name for name, values in env.items() if any("${MLFLOW_ADMIN_PASSWORD:" in v for v in values.values())
    }
    assert admins == {"mlflow", "mlflow-init", "check-secrets"}


def test_mlflow_runs_its_basic_auth_app_and_mlflow_init_grants_what_loopline_uses() -> None:
    from loopline.config.use_case import load_use_case
    from loopline.serving.config import load_serving_config

    fraud = load_use_case("fraud")  # the stack's default use case: its model and experiments

    services = compose()["services"]
    mlflow = services["mlflow"]
    # The image's entrypoint (the wrapper that turns basic-auth on) is not overridden.
    assert "entrypoint" not in mlflow and "command" not in mlflow
    dockerfile = (REPO_ROOT / "docker" / "mlflow" / "Dockerfile").read_text()
    assert re.search(r'ENTRYPOINT \["python", "/opt/loopline/loopline_mlflow.py", "serve"', dockerfile)
    env = service_environment(mlflow)
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"].startswith("${MLFLOW_FLASK_SECRET_KEY:?")
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"].startswith("${MLFLOW_ADMIN_PASSWORD:?")
    init = services["mlflow-init"]
    assert init["entrypoint"] == ["python", "/opt/loopline/loopline_mlflow.py", "init"]
    assert init["depends_on"]["mlflow"] == {"condition": "service_healthy"}
    init_env = service_environment(init)
    registry = load_serving_config().registry
    assert init_env["LOOPLINE_MLFLOW_MODEL"] == registry.model_name
    assert {fraud.training_experiment, fraud.monitoring_experiment} <= set(
        init_env["LOOPLINE_MLFLOW_EXPERIMENTS"].split(",")
    )
    assert init_env["LOOPLINE_MLFLOW_SERVING_EXPERIMENTS"].split(",") == [fraud.training_experiment]
    for name in (*SERVING_REPLICAS, *AIRFLOW_SERVICES - {"airflow-init"}):
        assert services[name]["depends_on"]["mlflow-init"] == {
            "condition": "service_completed_successfully"
        }, name


# --- serving: read-only state, API key ------------------------------------------------------------------------


def test_serving_reads_the_state_volume_and_writes_nothing_but_tmp() -> None:
    services = compose()["services"]
    for name in SERVING_REPLICAS:
        service = services[name]
        assert service["volumes"] == ["loopline-state:/var/lib/loopline:ro"], name
        assert service["read_only"] is True and service["tmpfs"] == ["/tmp"]
        assert not str(service["user"]).startswith("50000"), "serving must not run as Airflow's user"
        assert service["depends_on"]["airflow-init"] == {"condition": "service_completed_successfully"}
    # Everything else that mounts the state volume is Airflow (which writes it).
    writers = {
        name
        for name, s in services.items()
        if any(
            str(v).startswith("loopline-state:") and not str(v).endswith(":ro")
            for v in s.get("volumes") or []
        )
    }
    assert writers == AIRFLOW_SERVICES


def test_serving_requires_its_api_key_and_prometheus_sends_it() -> None:
    services = compose()["services"]
    key = "${LOOPLINE_SERVING_API_KEY:?set LOOPLINE_SERVING_API_KEY in .env}"
    holders = {name for name, s in services.items() if key in service_environment(s).values()}
    assert holders == {*SERVING_REPLICAS, "prometheus", "check-secrets"}
    prometheus = services["prometheus"]
    config = yaml.safe_load((REPO_ROOT / "docker" / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "loopline-serving"]
    assert job["authorization"]["type"] == "Bearer"
    credentials = job["authorization"]["credentials_file"]
    script = prometheus["command"][0]
    assert f"> {credentials}" in script and "umask 077" in script and "exec /bin/prometheus" in script
    assert str(Path(credentials).parent) in prometheus["tmpfs"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in script
    # Every other job scrapes without it (the key is serving's only).
    assert all("authorization" not in j for j in config["scrape_configs"] if j is not job)

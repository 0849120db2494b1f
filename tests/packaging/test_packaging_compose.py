"""docker-compose.yaml: valid for docker-compose, no secret in it, healthchecks, two serving replicas."""

from __future__ import annotations

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
ONE_SHOT = {"db-init", "airflow-init"}
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
    return subprocess.run([*command, "--project-directory", str(REPO_ROOT), "--env-file", str(env_file),
                           "-f", str(COMPOSE_FILE), "config"], capture_output=True, text=True, timeout=60)


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
    assert services >= {"postgres", "redis", "airflow-init", "airflow-api-server", "airflow-scheduler",
                        "airflow-dag-processor", "airflow-triggerer", "mlflow", "prometheus", "grafana",
                        "serving-proxy", *SERVING_REPLICAS}


def test_published_ports_bind_to_loopback_only() -> None:
    for name, service in compose()["services"].items():
        for port in service.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def _nginx_upstreams() -> set[str]:
    conf = (REPO_ROOT / "docker" / "serving" / "nginx.conf").read_text()
    return set(re.findall(r"^\s*server\s+([\w-]+):8000\b", conf, flags=re.MULTILINE))


def test_two_serving_replicas_behind_one_port() -> None:
    services = compose()["services"]
    replicas = {name for name, s in services.items() if s.get("image", "").startswith("ghcr.io/loopline/serving")}
    assert replicas == SERVING_REPLICAS
    assert _nginx_upstreams() == replicas
    proxy = services["serving-proxy"]
    assert len(proxy["ports"]) == 1
    assert set(proxy["depends_on"]) == replicas
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
            assert (REPO_ROOT / build["context"] / build["dockerfile"]).is_file(), f"{name}: no {build['dockerfile']}"


def test_compose_airflow_image_carries_torch_for_the_local_trainer() -> None:
    services = compose()["services"]
    for name in ("airflow-scheduler", "airflow-init"):
        assert services[name]["build"]["args"]["TORCH"] == "cpu"
        assert service_environment(services[name])["LOOPLINE_TRAINING_BACKEND"] == "local"


def test_every_replica_and_airflow_share_one_prediction_log_and_history_in_postgres() -> None:
    services = compose()["services"]
    for variable in ("LOOPLINE_PREDICTION_LOG_URL", "LOOPLINE_HISTORY_URL"):
        urls = {name: service_environment(services[name]).get(variable)
                for name in (*sorted(SERVING_REPLICAS), "airflow-scheduler", "airflow-api-server")}
        assert len(set(urls.values())) == 1, urls
        url = next(iter(urls.values()))
        assert url.startswith("postgresql://") and url.endswith("@postgres:5432/loopline"), url
    assert "loopline" in " ".join(services["db-init"]["command"])  # the database exists before serving starts

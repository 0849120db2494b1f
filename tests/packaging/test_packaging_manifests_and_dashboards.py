"""Every rendered Kubernetes object validates strictly; the Grafana dashboard queries real metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from packaging_files import REPO_ROOT, helm_values

from loopline.cli import k8s as k8s_cli
from loopline.k8s import manifests
from loopline.serving.metrics import ServingMetrics

DEPLOY_FILES = sorted((REPO_ROOT / "deploy" / "kubernetes").glob("*.yaml"))
DASHBOARD = REPO_ROOT / "docker" / "grafana" / "dashboards" / "loopline-model-loop.json"


@pytest.mark.parametrize("path", DEPLOY_FILES, ids=[p.name for p in DEPLOY_FILES])
def test_every_committed_manifest_validates_strictly(path: Path) -> None:
    """What `kubectl apply -f deploy/kubernetes/` would send (the builders are tested in tests/unit/k8s)."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs, f"{path} is empty"
    for doc in docs:
        kubernetes_validate.validate(doc, k8s_cli.SCHEMA_VERSION, strict=True)
        assert manifests.restricted_violations(doc) == []


def test_deploy_directory_has_every_group_the_cli_writes() -> None:
    names = {p.stem for p in DEPLOY_FILES}
    assert "training-pod" in names  # the sample pod, rendered through Airflow
    from loopline.k8s.config import parse_config

    config = parse_config(yaml.safe_load((REPO_ROOT / "include" / "config" / "kubernetes.yaml").read_text()))
    assert set(manifests.static_manifests(config)) <= names


# --- the Helm values: no shared disk, and what they hand the chart is valid Kubernetes ---------------------------
# The official chart is not in a package registry the tests can install from, so `helm template` is not run
# (docs/deploy-kubernetes.md says so). What the values pass through to the chart's pods is validated here.


def _walk(node: object, path: str = "") -> list[tuple[str, object]]:
    found = [(path, node)]
    if isinstance(node, dict):
        found += [
            item for key, value in node.items() for item in _walk(value, f"{path}.{key}" if path else key)
        ]
    elif isinstance(node, list):
        found += [item for i, value in enumerate(node) for item in _walk(value, f"{path}[{i}]")]
    return found


def _helm_env() -> dict[str, str]:
    return {item["name"]: item.get("value") for item in helm_values()["env"]}


def test_helm_values_share_no_disk_between_pods() -> None:
    """No PVC and no emptyDir holds state another pod reads; the only emptyDir is a task pod's scratch."""
    values = helm_values()
    nodes = _walk(values)
    persistent = [
        path
        for path, node in nodes
        if path.endswith("persistence") and isinstance(node, dict) and node.get("enabled")
    ]
    assert not persistent, f"persistent volumes are shared state: {persistent}"
    assert values["dags"]["persistence"]["enabled"] is False and values["dags"]["gitSync"]["enabled"] is False
    empty_dirs = [(path, node) for path, node in nodes if isinstance(node, dict) and "emptyDir" in node]
    assert [path for path, _ in empty_dirs] == ["workers.extraVolumes[0]"]
    ((_, scratch),) = empty_dirs
    assert "scratch" in scratch["name"] and scratch["emptyDir"].get("sizeLimit")
    # Mounted in the task pods only, at the state dir (each task's private scratch, deleted with the pod).
    mounts = [
        (path, node)
        for path, node in nodes
        if isinstance(node, dict) and node.get("name") == scratch["name"] and "mountPath" in node
    ]
    assert [(path, node["mountPath"]) for path, node in mounts] == [
        ("workers.extraVolumeMounts[0]", _helm_env()["LOOPLINE_STATE_DIR"])
    ]
    # What tasks share lives in services instead: files in the object store, control state in Postgres.
    assert str(_helm_env()["LOOPLINE_STORAGE_URL"]).startswith("s3://")
    assert "loopline-database" in values["extraEnvFrom"]  # LOOPLINE_STATE_DB_URL (docs, step 2)


def _pod_from_values(component: str) -> dict:
    """A pod of ``component`` (workers, apiServer, ...) with exactly what the values add to the chart's:
    env, extraEnv, extraEnvFrom, security contexts, service account, extra volumes and mounts."""
    values = helm_values()
    part = values.get(component) or {}
    image = values["images"]["airflow"]
    container = {
        "name": "base",
        "image": f"{image['repository']}:{image['tag']}",
        "imagePullPolicy": image["pullPolicy"],
        "env": [*values["env"], *yaml.safe_load(values["extraEnv"])],
        "envFrom": yaml.safe_load(values["extraEnvFrom"]),
        "securityContext": values["securityContexts"]["containers"],
        "volumeMounts": part.get("extraVolumeMounts", []),
    }
    spec = {
        "securityContext": values["securityContexts"]["pod"],
        "containers": [container],
        "volumes": part.get("extraVolumes", []),
    }
    if "serviceAccount" in part:
        spec["serviceAccountName"] = part["serviceAccount"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"values-{component.lower()}"},
        "spec": spec,
    }


@pytest.mark.parametrize("component", ["workers", "triggerer", "apiServer", "scheduler"])
def test_what_the_helm_values_add_to_a_pod_validates_strictly_and_is_restricted(component: str) -> None:
    pod = _pod_from_values(component)
    kubernetes_validate.validate(pod, k8s_cli.SCHEMA_VERSION, strict=True)
    assert manifests.restricted_violations(pod) == []
    mounted = {m["name"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounted == {v["name"] for v in pod["spec"]["volumes"]}, "a mount without a volume (or the reverse)"


def test_the_pod_check_of_the_values_catches_a_bad_value() -> None:
    pod = _pod_from_values("workers")
    pod["spec"]["containers"][0]["env"].append({"name": "LOOPLINE_X", "value": True})  # unquoted YAML boolean
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, k8s_cli.SCHEMA_VERSION, strict=True)


def _serving_series() -> set[str]:
    """Every series name the prediction service exports (counters get _total, histograms _bucket/...)."""
    # Labelled metrics have no samples before their first observation: derive the names from the type.
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {
        metric.name + suffix
        for metric in ServingMetrics().registry.collect()
        for suffix in suffixes[metric.type]
    }


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _expressions() -> list[str]:
    return [t["expr"] for p in _dashboard()["panels"] for t in p.get("targets", [])]


def test_dashboard_queries_only_metrics_that_exist() -> None:
    serving = _serving_series()
    mapping = yaml.safe_load((REPO_ROOT / "docker" / "prometheus" / "statsd-mapping.yml").read_text())
    statsd = {m["name"] for m in mapping["mappings"]}
    for expr in _expressions():
        for name in set(re.findall(r"\b((?:loopline|airflow)_[a-z_]+)\b", expr)):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in serving or name in statsd or base in statsd, (
                f"{name} (in {expr!r}) is exported by nothing"
            )


def test_dashboard_covers_the_model_loop() -> None:
    text = " ".join(_expressions())
    for needle, what in [
        ("loopline_predictions_total", "traffic"),
        ("loopline_prediction_seconds_bucket", "latency"),
        ("loopline_http_errors_total", "errors"),
        ("loopline_score_bucket", "score distribution"),
        ("offset 7d", "drift"),
        ("by (variant)", "per variant"),
    ]:
        assert needle in text, f"the dashboard has no {what} panel"


def test_dashboard_uses_the_provisioned_datasource() -> None:
    datasources = yaml.safe_load(
        (REPO_ROOT / "docker" / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )["datasources"]
    uids = {d["uid"] for d in datasources}
    for panel in _dashboard()["panels"]:
        assert panel["datasource"]["uid"] in uids, panel["title"]

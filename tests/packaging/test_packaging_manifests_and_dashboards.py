"""Every rendered Kubernetes object validates strictly; the Grafana dashboard queries real metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from packaging_files import REPO_ROOT

from loopline.k8s import k8s_cli, manifests
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


def _serving_series() -> set[str]:
    """Every series name the prediction service exports (counters get _total, histograms _bucket/...)."""
    # Labelled metrics have no samples before their first observation: derive the names from the type.
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {metric.name + suffix for metric in ServingMetrics().registry.collect()
            for suffix in suffixes[metric.type]}


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
            assert name in serving or name in statsd or base in statsd, f"{name} (in {expr!r}) is exported by nothing"


def test_dashboard_covers_the_model_loop() -> None:
    text = " ".join(_expressions())
    for needle, what in [("loopline_predictions_total", "traffic"), ("loopline_prediction_seconds_bucket", "latency"),
                         ("loopline_http_errors_total", "errors"), ("loopline_score_bucket", "score distribution"),
                         ("offset 7d", "drift"), ("by (variant)", "per variant")]:
        assert needle in text, f"the dashboard has no {what} panel"


def test_dashboard_uses_the_provisioned_datasource() -> None:
    datasources = yaml.safe_load((REPO_ROOT / "docker" / "grafana" / "provisioning" / "datasources"
                                  / "prometheus.yaml").read_text())["datasources"]
    uids = {d["uid"] for d in datasources}
    for panel in _dashboard()["panels"]:
        assert panel["datasource"]["uid"] in uids, panel["title"]

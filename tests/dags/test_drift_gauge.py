"""The drift monitor's gauge reaches the dashboard: the name the task sends is one statsd-exporter maps to the
metric Grafana's drift panel queries, and the task sends it."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import yaml

from loopline_airflow.metrics import drift_share_metric, emit_drift_share

REPO = Path(__file__).resolve().parents[2]


def test_the_drift_gauge_is_mapped_to_the_metric_the_dashboard_plots() -> None:
    mappings = yaml.safe_load((REPO / "docker/prometheus/statsd-mapping.yml").read_text())["mappings"]
    sent = f"airflow.{drift_share_metric('monitor_drift')}"  # Airflow's StatsD prefix
    (mapping,) = [m for m in mappings if fnmatch.fnmatchcase(sent, m["match"])]
    dashboard = json.loads((REPO / "docker/grafana/dashboards/loopline-model-loop.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", []) if "expr" in t]
    assert any(mapping["name"] in q for q in queries), (mapping["name"], queries)


def test_the_task_sends_the_share_as_a_gauge(monkeypatch) -> None:
    from airflow.sdk.observability.stats import Stats

    sent = []
    monkeypatch.setattr(Stats, "gauge", staticmethod(lambda name, value, *a, **k: sent.append((name, value))))
    emit_drift_share("monitor_drift", 0.25)
    assert sent == [("loopline.drift.monitor_drift.share", 0.25)]

"""Loopline's own gauges, sent through the task's Airflow StatsD client (compose: statsd-exporter turns them
into Prometheus metrics, ``docker/prometheus/statsd-mapping.yml``; Grafana's model-loop dashboard plots them).
Without ``[metrics] statsd_on`` the calls are no-ops."""

from __future__ import annotations


def drift_share_metric(dag_id: str) -> str:
    """The StatsD name of a drift check's share of drifted features (Airflow prefixes ``airflow.``)."""
    return f"loopline.drift.{dag_id}.share"


def emit_drift_share(dag_id: str, share: float) -> None:
    from airflow.sdk.observability.stats import Stats

    Stats.gauge(drift_share_metric(dag_id), share)

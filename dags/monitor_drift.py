"""
### Monitor drift of the champion

Hourly, and on demand (`loopline trigger monitor_drift`). Compares the newest window of the prediction log
with the champion's reference sample (kept with its MLflow run) using the methods pinned in
the use case's `drift.yaml` (fraud's: `include/loopline/usecases/fraud/policies/drift.yaml`; `include/config/drift.yaml` is the default).

| task | does |
|---|---|
| `check_drift` | verdict (per-feature data drift, prediction drift, data quality, concept drift from late labels, served vs offline point-in-time features of the window's traffic) → Evidently HTML + JSON report in `<state>/reports/drift/<time>/` and a run in MLflow experiment `fraud_detector_monitoring` (tagged on the champion version) → history `drift_checked`, and `retrain_requested` or `retrain_suppressed` with why; `served_features_skew` when served features differ from the offline ones above the policy's limit (a serving bug: recorded, never a retrain) |
| `request_retrain` | when the retrain policy says so, emits `loopline.retrain_requested` (extra: reason, evidence summary, report path) — `train_model` is scheduled on it; otherwise skipped, so no event |

Never while a `train_model` run is queued or running (asked of Airflow itself), and at most one request per
cooldown: a drift storm yields one retrain.
"""

from datetime import timedelta

from airflow.sdk import dag, task

from loopline_airflow.assets import RETRAIN_REQUESTED, retrain_extra
from loopline_airflow.defaults import START_DATE, default_args

TRAINING_DAG = "train_model"


@dag(
    schedule=timedelta(hours=1),
    start_date=START_DATE,
    catchup=False,
    tags=["loopline", "monitoring"],
    doc_md=__doc__,
    default_args=default_args(retries=1),
    # Checks read and record the same history: one at a time, so two cannot both request a retrain.
    max_active_runs=1,
)
def monitor_drift():
    @task(multiple_outputs=False)
    def check_drift(**context) -> dict:
        from loopline.config import get_settings
        from loopline.monitoring.monitor import run_check

        # Airflow's own record of train_model runs: no credentials, no clock guessing.
        running = context["ti"].get_dr_count(dag_id=TRAINING_DAG, states=["queued", "running"]) > 0
        from loopline_airflow.metrics import emit_drift_share
        from loopline_airflow.run_conf import run_moment

        result = run_check(get_settings(), training_running=running, now=run_moment(context))
        emit_drift_share(context["dag"].dag_id, result.drifted_share)  # Grafana's drift panel
        print(f"{result.summary}\nretrain: {result.retrain} ({result.reason})\nreport: {result.report_dir}")
        if result.served_features_alarm:
            print(f"DATA-QUALITY ALARM (no retrain): {result.served_features}")
        return result.to_dict()

    @task(outlets=[RETRAIN_REQUESTED], multiple_outputs=False)
    def request_retrain(result: dict, **context) -> dict:
        from airflow.exceptions import AirflowSkipException

        if not result["retrain"]:
            raise AirflowSkipException(f"no retrain: {result['reason']}")
        extra = retrain_extra(result)
        context["outlet_events"][RETRAIN_REQUESTED].extra = extra
        return extra

    request_retrain(check_drift())


monitor_drift()

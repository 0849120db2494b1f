"""
### Materialise features

Runs on every `loopline.validated_batch` event. For the days the new transactions cover it

| task | does |
|---|---|
| `plan_interval` | which days the transactions batches published since the last materialisation cover (from the ingest ledger, so no batch is missed when Airflow folds several events into one run; label batches need no features) |
| `materialize_interval` | recomputes the leak-free aggregates of those days (history from 30 days before) into the offline store, then loads the online store over the interval, with a day of overlap for late data |

and emits `loopline.features` with the interval and row counts. By hand: `loopline features materialize`.
"""

from airflow.sdk import dag, task

from loopline_airflow.assets import FEATURES, VALIDATED_BATCH, features_extra
from loopline_airflow.defaults import START_DATE, default_args


@dag(
    schedule=[VALIDATED_BATCH],
    start_date=START_DATE,
    catchup=False,
    tags=["loopline", "features"],
    doc_md=__doc__,
    default_args=default_args(),
    # Materialisations write the same offline files and the online store: one at a time.
    max_active_runs=1,
)
def materialize_features():
    @task(multiple_outputs=False)
    def plan_interval() -> dict | None:
        from loopline.config import get_settings
        from loopline.config.use_case import load_use_case
        from loopline.data.ingest import IngestLedger
        from loopline.features.intervals import pending_interval
        from loopline.features.watermark import materialized_cursor

        settings = get_settings()
        events_kind = load_use_case(settings.use_case).batch_names["events"]
        return pending_interval(IngestLedger.of(settings), materialized_cursor(settings), events_kind)

    @task(outlets=[FEATURES], multiple_outputs=False)
    def materialize_interval(interval: dict | None, **context) -> dict:
        from datetime import datetime

        from airflow.exceptions import AirflowSkipException

        from loopline.config import get_settings
        from loopline.features.materialize import materialize
        from loopline.serving.prediction_log import answered_events

        if interval is None:
            raise AirflowSkipException("no events batch published since the last materialisation")
        settings = get_settings()
        result = materialize(
            settings,
            datetime.fromisoformat(interval["start"]),
            datetime.fromisoformat(interval["end"]),
            ledger_cursor=interval["cursor"],
            served=answered_events(settings),  # scored, not ingested yet: the online state keeps them
        )
        context["outlet_events"][FEATURES].extra = features_extra(result, interval)
        return result.to_dict()

    materialize_interval(plan_interval())


materialize_features()

"""
### Materialise features

Runs on every `loopline.validated_batch` event. For the days the new transactions cover it

| task | does |
|---|---|
| `plan_interval` | reads the triggering events: which days were published (label batches need no features) |
| `materialize_interval` | recomputes the leak-free aggregates of those days (history from 30 days before) into the offline store, then loads the online store over the interval, with a day of overlap for late data |

and emits `loopline.features` with the interval and row counts. By hand: `loopline features materialize`.
"""

from airflow.sdk import dag, task

from loopline_airflow.assets import FEATURES, VALIDATED_BATCH
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
    @task
    def plan_interval(**context) -> dict | None:
        from loopline.features.intervals import interval_from_events

        events = [
            event.extra
            for events in context["triggering_asset_events"].values()
            for event in events
        ]
        return interval_from_events(events)

    @task(outlets=[FEATURES])
    def materialize_interval(interval: dict | None, **context) -> dict:
        from datetime import datetime

        from airflow.exceptions import AirflowSkipException

        from loopline.config import get_settings
        from loopline.features.store import materialize

        if interval is None:
            raise AirflowSkipException("only label batches arrived: no features to compute")
        result = materialize(
            get_settings(), datetime.fromisoformat(interval["start"]), datetime.fromisoformat(interval["end"])
        )
        context["outlet_events"][FEATURES].extra = {**result.to_dict(), "batches": interval["batches"]}
        return result.to_dict()

    materialize_interval(plan_interval())


materialize_features()

"""
### Ingest landed batches (write–audit–publish)

Starts by itself when a batch file lands in `landing/transactions/` or `landing/labels/`: an
`AssetWatcher` on the landing zone (a trigger in the triggerer, no polling cron) emits an asset event
per new file, which schedules this DAG.

| task | does |
|---|---|
| `list_landed_batches` | every file waiting in the landing zone (also ones that landed while Airflow was down) |
| `ingest_batch` (one per file) | validate with the Great Expectations suite of its kind; **publish** into the curated store (partitioned parquet, idempotent by content hash) and emit `loopline.validated_batch`, or **quarantine** with a JSON + HTML report and fail, naming each failed expectation, column, count and sample |

A re-delivered file is skipped as `already_published`. The same step runs synchronously with
`loopline ingest FILE`.
"""

from airflow.sdk import Asset, AssetWatcher, dag, task

from loopline_airflow.assets import VALIDATED_BATCH, validated_batch_extra
from loopline_airflow.defaults import START_DATE, default_args
from loopline_airflow.settings import landing_dir
from loopline_airflow.triggers import LandingZoneTrigger

LANDING = Asset(
    name="loopline.landing",
    uri=landing_dir() if "://" in landing_dir() else f"file://{landing_dir()}",
    watchers=[
        AssetWatcher(name="landing_zone_watcher", trigger=LandingZoneTrigger(landing_dir=landing_dir()))
    ],
)


@dag(
    schedule=[LANDING],
    start_date=START_DATE,
    catchup=False,
    tags=["loopline", "data"],
    doc_md=__doc__,
    # A bad batch is quarantined on the first try; retries only cover infrastructure hiccups.
    default_args=default_args(retries=1),
    # Runs one after another: each sees what the previous one archived.
    max_active_runs=1,
)
def ingest_landing():
    @task
    def list_landed_batches() -> list[str]:
        from loopline.config import get_settings
        from loopline.data.ingest import landed_files

        return [str(path) for path in landed_files(get_settings())]

    @task(outlets=[VALIDATED_BATCH], map_index_template="{{ task.op_kwargs['path'].rsplit('/', 1)[-1] }}")
    def ingest_batch(path: str, **context) -> dict:
        from airflow.exceptions import AirflowFailException, AirflowSkipException

        from loopline.config import get_settings
        from loopline.data.ingest import BatchGone, ingest_file

        try:
            result = ingest_file(get_settings(), path)  # a local path or an object-storage URI
        except BatchGone as gone:
            raise AirflowSkipException(str(gone)) from gone
        if result.status == "quarantined":
            # The result (with the quarantine report) stays readable: the task's "Report" link uses it.
            context["ti"].xcom_push(key="return_value", value=result.to_dict())
            raise AirflowFailException(result.summary())
        if result.published_rows == 0:
            raise AirflowSkipException(result.summary())  # nothing new: no event for consumers
        context["outlet_events"][VALIDATED_BATCH].extra = validated_batch_extra(result)
        print(result.summary())
        return result.to_dict()

    ingest_batch.expand(path=list_landed_batches())


ingest_landing()

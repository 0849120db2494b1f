"""
### Platform smoke test

Touches every service Loopline depends on and proves it works by writing and reading back:

| task | proves |
|---|---|
| `check_state_dir` | every zone of the state directory is writable |
| `check_mlflow` | the tracking server logs a run, a metric and an artifact and returns them |
| `check_feast_registry` | `feature_repo/` applies to the Feast registry and its entities read back |
| `check_great_expectations` | GX passes a good frame and fails a bad one |
| `record_smoke_report` | the results land in `reports/platform_smoke/<run>.json` |

Run it first after any upgrade: `loopline trigger platform_smoke --wait`.
"""

from airflow.sdk import dag, task

from loopline_airflow.defaults import START_DATE, default_args


@dag(
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    tags=["loopline", "platform"],
    doc_md=__doc__,
    # A smoke test should report a broken service quickly, not retry it for minutes.
    default_args=default_args(retries=1),
    max_active_runs=1,
)
def platform_smoke():
    @task
    def check_state_dir():
        from loopline.config import get_settings
        from loopline.platform.smoke import check_state_dir

        return check_state_dir(get_settings()).to_dict()

    @task
    def check_mlflow():
        from loopline.config import get_settings
        from loopline.platform.smoke import check_mlflow

        return check_mlflow(get_settings()).to_dict()

    @task
    def check_feast_registry():
        from loopline.config import get_settings
        from loopline.platform.smoke import check_feast

        return check_feast(get_settings()).to_dict()

    @task
    def check_great_expectations():
        from loopline.config import get_settings
        from loopline.platform.smoke import check_great_expectations

        return check_great_expectations(get_settings()).to_dict()

    @task
    def record_smoke_report(results: list[dict]) -> str:
        from airflow.sdk import get_current_context

        from loopline.config import get_settings
        from loopline.platform.smoke import write_report

        run_id = get_current_context()["run_id"]
        return str(write_report(get_settings(), results, run_id))

    state = check_state_dir()
    results = [state, check_mlflow(), check_feast_registry(), check_great_expectations()]
    state >> results[1:]
    record_smoke_report(results)


platform_smoke()

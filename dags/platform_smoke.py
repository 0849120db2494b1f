"""
### Platform smoke test

Touches every service Loopline depends on and proves it works by writing and reading back:

| task | proves |
|---|---|
| `check_state_dir` | every zone of the state directory is writable |
| `check_mlflow` | the tracking server logs a run, a metric and an artifact and returns them |
| `check_feast_registry` | the use case's `feature_repo/<use case>/` applies to the Feast registry and its entities read back |
| `check_great_expectations` | GX passes a good frame and fails a bad one |
| `record_smoke_report` | the results land in `reports/platform_smoke/<run>.json` |

Run it first after any upgrade: `loopline trigger platform_smoke --wait`.
"""

from airflow.sdk import dag, task

from loopline_airflow.defaults import START_DATE, default_args

# One task per service check in loopline.platform.smoke; state_dir first, as everything writes there.
SERVICE_CHECKS = ["mlflow", "feast_registry", "great_expectations"]


def run_check(name: str) -> dict:
    from loopline.config import get_settings
    from loopline.platform.smoke import ALL_CHECKS

    return ALL_CHECKS[name](get_settings()).to_dict()


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
    def record_smoke_report(results: list[dict]) -> str:
        from airflow.sdk import get_current_context

        from loopline.config import get_settings
        from loopline.platform.smoke import write_report

        run_id = get_current_context()["run_id"]
        return str(write_report(get_settings(), results, run_id))

    state = task(run_check, task_id="check_state_dir", multiple_outputs=False)("state_dir")
    services = [
        task(run_check, task_id=f"check_{name}", multiple_outputs=False)(name) for name in SERVICE_CHECKS
    ]
    state >> services
    record_smoke_report([state, *services])


platform_smoke()

"""
### Roll production back one step

Manual only. The alias `champion` returns to `previous_champion` (set by the last promotion); the demoted
version is tagged `loopline.canary = rolled_back` with the reason, and a `rolled_back` event (scope
`production`) appears in `loopline status --json` under `history`. Serving replicas switch within one
registry poll, without failing requests.

Same as `loopline rollback --reason "..."`.
"""

from airflow.sdk import Param, dag, task

from loopline_airflow.defaults import START_DATE, default_args
from loopline_airflow.run_conf import reject_unknown_conf


@dag(
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    tags=["loopline", "deployment"],
    doc_md=__doc__,
    default_args=default_args(retries=0),
    max_active_runs=1,
    params={
        "reason": Param(
            type="string",
            minLength=3,
            maxLength=500,
            description="Why production goes back (recorded with the decision)",
        )
    },
)
def rollback_production():
    @task
    def roll_back_production(**context) -> dict:
        """``previous_champion`` serves again."""
        from loopline.config import get_settings
        from loopline.deployment.actions import rollback_production as roll_back

        reject_unknown_conf(context)
        demoted, restored = roll_back(get_settings(), context["params"]["reason"])
        return {"demoted": demoted, "champion": restored}

    roll_back_production()


rollback_production()

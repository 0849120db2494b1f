"""
### Canary: earn production traffic step by step, then promote — or roll back

Runs whenever the gate emits `loopline.challenger` (a version took the alias `challenger`), or manually.
Policy: `include/config/canary.yaml` (steps, bake, thresholds, shadow phase, approval).

| task | does |
|---|---|
| `start_canary` | no champion yet → promote the first model directly (nothing to compare against; recorded as such) and stop; a version no longer the challenger → stop; else `canary_started` |
| `ramp_canary` | for each step (optional shadow, then e.g. 5 % → 25 % → 50 % → 100 %): shift traffic → **bake** (deferred to the triggerer: minimum requests per variant and minimum time) → analyse vs the champion (errors, p95 latency, score shift, labelled quality) → next step; any failed or unjudgeable step rolls back (traffic 0, alias removed, reason recorded); a challenger that cannot load in serving or fails every request ends its bake at the next poll and is rolled back with that reason (`analysis.health`) |
| `decide_promotion` | promote, or — when `approval.required` — ask a person (Airflow HITL: Promote / Roll back; no answer = roll back) |
| `promote_challenger` | alias `champion` moves to the challenger; the old champion keeps `previous_champion` |
| `roll_back_challenger` | after a rejection, or when a canary task failed: traffic 0 and the challenger alias removed |

Faster bake for tests and demos: trigger with `{"bake_seconds": 20, "min_requests": 30}`.
Decisions appear in `loopline status --json` under `history`. One run at a time.
"""

from airflow.sdk import Param, dag, task

from loopline_airflow.assets import CHALLENGER, challenger_from_events
from loopline_airflow.canary_triggers import CanaryRampOperator, PromotionDecisionOperator
from loopline_airflow.defaults import START_DATE, default_args
from loopline_airflow.run_conf import reject_unknown_conf


@dag(
    schedule=[CHALLENGER],
    start_date=START_DATE,
    catchup=False,
    tags=["loopline", "deployment"],
    doc_md=__doc__,
    default_args=default_args(retries=1),
    max_active_runs=1,
    params={
        "version": Param(
            None, type=["null", "string"], description="Challenger version (null: the @challenger alias)"
        ),
        "bake_seconds": Param(
            None,
            type=["null", "number"],
            minimum=0,
            description="Override the minimum bake per step (null: canary.yaml)",
        ),
        "max_bake_seconds": Param(
            None,
            type=["null", "number"],
            exclusiveMinimum=0,
            description="Override the maximum bake per step",
        ),
        "min_requests": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="Override every minimum sample size (bake and checks)",
        ),
    },
)
def deploy_canary():
    @task.short_circuit
    def start_canary(**context) -> dict | bool:
        """First model → promoted here; stale → nothing; else the canary plan (the rest runs)."""
        from loopline.config import get_settings
        from loopline.deployment.canary import begin
        from loopline.deployment.policy import load_canary_policy

        reject_unknown_conf(context)
        settings = get_settings()
        version, reason = challenger_from_events(context)
        start = begin(
            settings,
            load_canary_policy(settings.canary_policy or settings.policy_file("canary")),
            version,
            reason=reason,
        )
        print(f"{start.action}: {start.reason}")
        return start.to_dict() if start.action == "canary" else False

    @task
    def promote_challenger(ramp: dict, **context) -> str:
        """The champion alias moves to the challenger; the previous champion is the fallback."""
        from loopline.config import get_settings
        from loopline.deployment.actions import promote
        from loopline.deployment.approval import who_decided
        from loopline.deployment.canary import CanaryPlan, promote_reason

        plan = CanaryPlan.from_dict(ramp["plan"])
        decision = context["ti"].xcom_pull(task_ids="decide_promotion", key="decision")
        approved = who_decided(decision) if ramp["policy"]["approval"]["required"] else None
        promote(get_settings(), plan.version, promote_reason(plan, approved), verdict=ramp["verdicts"][-1])
        return plan.version

    @task(trigger_rule="all_done")
    def roll_back_challenger(**context) -> str:
        """Rejected at approval, or a canary task failed: the challenger leaves production traffic."""
        from loopline.config import get_settings
        from loopline.deployment.actions import roll_back
        from loopline.deployment.approval import roll_back_reason

        start = context["ti"].xcom_pull(task_ids="start_canary")
        if not isinstance(start, dict):
            return "no canary started: nothing to roll back"
        reason = roll_back_reason(
            context["ti"].xcom_pull(task_ids="ramp_canary"),
            context["ti"].xcom_pull(task_ids="decide_promotion", key="decision"),
        )
        roll_back(get_settings(), start["plan"]["version"], reason)
        return reason

    start = start_canary()
    ramp = CanaryRampOperator(task_id="ramp_canary", start=start)
    decide = PromotionDecisionOperator(
        task_id="decide_promotion",
        ramp_task_id="ramp_canary",
        promote_task_id="promote_challenger",
        roll_back_task_id="roll_back_challenger",
    )
    start >> ramp >> decide >> [promote_challenger(ramp.output), roll_back_challenger()]


deploy_canary()

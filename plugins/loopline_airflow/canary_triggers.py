"""Airflow glue of the canary (DAG ``deploy_canary``): the deferrable bake, the ramp and the promotion
decision. The decisions themselves are ``loopline.deployment`` functions; this module only waits and routes.

- ``CanaryBakeTrigger`` runs in the triggerer: it polls the prediction log's per-variant counts (and the
  service's error counters) until the step has baked, so no worker slot is held for minutes.
- ``CanaryRampOperator`` shifts traffic to a step, defers to the trigger, analyses the window when it
  fires, and either defers again for the next step, rolls back, or hands over for promotion.
- ``PromotionDecisionOperator`` is Airflow's HITL branch operator that asks a person only when the
  policy requires approval; otherwise (or after a failed ramp) it branches without asking. The question
  is answered in the UI ("Required actions"), over REST, or with ``loopline canary approve | reject``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import HITLBranchOperator
from airflow.sdk import BaseOperator, Param
from airflow.triggers.base import BaseTrigger, TriggerEvent

# The question's options and its comment field are shared with `loopline canary approve | reject`.
from loopline.deployment.approval import COMMENT, PROMOTE, ROLL_BACK


def _policy(data: dict[str, Any]):
    from loopline.deployment.policy import CanaryPolicy

    return CanaryPolicy.model_validate(data)


def policy_for_run(params: dict[str, Any]) -> dict[str, Any]:
    """The YAML policy with this run's overrides (``bake_seconds``, ``min_requests``, ``max_bake_seconds``)."""
    from loopline.config import get_settings
    from loopline.deployment.policy import load_canary_policy

    settings = get_settings()
    # LOOPLINE_CANARY_POLICY (e.g. the demo's seconds-long bake) else the use case's canary policy.
    policy = load_canary_policy(settings.canary_policy or settings.policy_file("canary")).with_overrides(
        bake_seconds=params.get("bake_seconds"),
        min_requests=params.get("min_requests"),
        max_bake_seconds=params.get("max_bake_seconds"),
    )
    return policy.model_dump(mode="json")


class CanaryBakeTrigger(BaseTrigger):
    """Fires once the step has baked (minimum requests per variant and minimum time) or ran out of time.

    The event carries the canary's state back (plan, step, policy, verdicts so far) rather than the
    deferral's ``kwargs``: ``dag.test()`` drops those when it runs a trigger inline, the event it keeps.
    """

    def __init__(
        self,
        plan: dict[str, Any],
        step: dict[str, Any],
        policy: dict[str, Any],
        verdicts: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.plan = plan
        self.step = step
        self.policy = policy
        self.verdicts = verdicts or []

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"plan": self.plan, "step": self.step, "policy": self.policy, "verdicts": self.verdicts},
        )

    def _progress(self) -> dict[str, Any]:
        from loopline.config import get_settings
        from loopline.deployment.canary import CanaryPlan, StepState, bake_progress

        return bake_progress(
            get_settings(),
            _policy(self.policy),
            CanaryPlan.from_dict(self.plan),
            StepState.from_dict(self.step),
        ).to_dict()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        poll = float(self.policy["bake"]["poll_seconds"])
        while True:
            progress = await asyncio.to_thread(self._progress)  # SQLite + HTTP: off the triggerer's loop
            if progress["done"]:
                yield TriggerEvent(
                    {
                        "progress": progress,
                        "plan": self.plan,
                        "step": self.step,
                        "policy": self.policy,
                        "verdicts": self.verdicts,
                    }
                )
                return
            self.log.info(
                "baking step %s: %s after %.0f s%s",
                self.step["index"] + 1,
                progress["requests"],
                progress["elapsed_s"],
                f"; waiting for {progress['waiting_for']}" if progress.get("waiting_for") else "",
            )
            await asyncio.sleep(poll)


class CanaryRampOperator(BaseOperator):
    """Shift → bake (deferred) → analyse, step after step. Returns ``{"outcome": "promote" | "rolled_back",
    "plan", "verdicts"}``; a rollback is already done when it returns."""

    template_fields = ("start",)

    def __init__(self, *, start: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start = start

    def _bake(
        self,
        plan: dict[str, Any],
        step: dict[str, Any],
        policy: dict[str, Any],
        verdicts: list[dict[str, Any]],
    ) -> None:
        self.log.info(
            "step %d of %d: %s", step["index"] + 1, len(plan["phases"]), plan["phases"][step["index"]]
        )
        bake = policy["bake"]
        self.defer(
            trigger=CanaryBakeTrigger(plan, step, policy, verdicts),
            method_name="bake_done",
            # The trigger ends the bake itself at max_seconds; this only catches a lost trigger.
            timeout=timedelta(seconds=bake["max_seconds"] + 600),
        )

    def execute(self, context: Any) -> Any:
        from loopline.config import get_settings
        from loopline.deployment.canary import CanaryPlan, begin_step

        policy = policy_for_run(context["params"])
        plan = self.start["plan"]
        step = begin_step(get_settings(), CanaryPlan.from_dict(plan), 0).to_dict()
        self._bake(plan, step, policy, [])

    def bake_done(self, context: Any, event: dict[str, Any], **_: Any) -> dict[str, Any]:
        from loopline.config import get_settings
        from loopline.deployment.canary import CanaryPlan, StepState, begin_step, conclude, judge_step

        plan, step, policy, verdicts = event["plan"], event["step"], event["policy"], event["verdicts"]
        settings, canary, state = get_settings(), CanaryPlan.from_dict(plan), StepState.from_dict(step)
        verdict = judge_step(settings, _policy(policy), canary, state)
        self.log.info("step %d verdict: %s", state.index + 1, verdict.why)
        verdicts = [*verdicts, verdict.to_dict()]
        outcome = conclude(settings, canary, verdict, state, timed_out=bool(event["progress"]["timed_out"]))
        if outcome == "next":
            following = begin_step(settings, canary, state.index + 1, previous_verdict=verdict.why).to_dict()
            self._bake(plan, following, policy, verdicts)
        return {"outcome": outcome, "plan": plan, "verdicts": verdicts, "policy": policy}


class PromotionDecisionOperator(HITLBranchOperator):
    """Promote, roll back, or (policy ``approval.required``) ask a person which of the two.

    Airflow's ``ApprovalOperator`` only skips on "Reject"; here a rejection must roll back, so this is
    the HITL *branch* operator with the options mapped to the two tasks. No answer in
    ``approval.timeout_minutes``: the default, "Roll back". The answer (option, who, comment, timed out)
    is pushed as XCom ``decision`` for the tasks that act on it.
    """

    def __init__(
        self, *, ramp_task_id: str, promote_task_id: str, roll_back_task_id: str, **kwargs: Any
    ) -> None:
        # HITL shows only task-level params as form fields; the DAG's (merged in here by Airflow) are merged
        # again by the base class, so they are dropped from kwargs rather than passed twice.
        kwargs.pop("params", None)
        super().__init__(
            subject="Promote the challenger to champion?",
            options=[PROMOTE, ROLL_BACK],
            options_mapping={PROMOTE: promote_task_id, ROLL_BACK: roll_back_task_id},
            defaults=[ROLL_BACK],
            params={
                COMMENT: Param(
                    None, type=["null", "string"], description="Why (optional): kept with the decision"
                )
            },
            **kwargs,
        )
        self.ramp_task_id = ramp_task_id
        self.promote_task_id = promote_task_id
        self.roll_back_task_id = roll_back_task_id

    def execute(self, context: Any) -> Any:
        ramp = context["ti"].xcom_pull(task_ids=self.ramp_task_id) or {}
        if ramp.get("outcome") != "promote":
            return self.do_branch(context, [])  # already rolled back by the ramp: nothing downstream
        approval = ramp["policy"]["approval"]
        if not approval["required"]:
            return self.do_branch(context, self.promote_task_id)
        last = ramp["verdicts"][-1]
        # The subject names the version: it is what the UI's list of required actions and the CLI show.
        self.subject = f"Promote version {ramp['plan']['version']} to champion?"
        self.body = (
            f"Version **{ramp['plan']['version']}** passed every canary step against champion "
            f"{ramp['plan']['champion']}.\n\nLast verdict: {last['why']}"
        )
        self.response_timeout = timedelta(minutes=approval["timeout_minutes"])
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if (
            "chosen_options" in event
        ):  # an answer, or the default at the timeout (an "error" event fails below)
            decision = {
                "option": event["chosen_options"][0],
                "by": (event.get("responded_by_user") or {}).get("name"),
                "comment": (event.get("params_input") or {}).get(COMMENT),
                "timed_out": bool(event.get("timedout")),
            }
            self.log.info("decision: %s", decision)
            context["ti"].xcom_push(key="decision", value=decision)
        return super().execute_complete(context, event)

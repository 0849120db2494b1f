"""The canary's human approval for real: a stack of its own (scheduler, triggerer, api-server,
dag-processor, MLflow, the prediction service under constant client load), a policy with
`approval.required: true` and a bake of seconds. deploy_canary is triggered over REST, ramps the
challenger through its steps, then waits for a person (Airflow HITL); `loopline canary approve | reject`
answers over the REST API and the DAG promotes or rolls back."""

from __future__ import annotations

import json
import time

import pytest
from canary_stack import CanaryStack, running_stack, task_log_hint
from canary_testkit import Load
from serving_testkit import MODEL, wait_until
from test_canary import fast_policy

from loopline.deployment.actions import TAG_CANARY, TAG_REASON, read_state
from loopline.deployment.approval import APPROVAL_DAG, APPROVAL_TASK, waiting_approvals
from loopline.lineage import history
from loopline.platform.airflow_api import AirflowApiError

pytestmark = pytest.mark.integration


# Airflow 3.3.2 can kill a task that resumes within seconds of parking (deferred or awaiting input): the
# stale "success" of the parked process's exit reaches the scheduler after the resumed attempt runs
# (apache/airflow#72716, open). Real bakes take minutes and people seconds; these keep the test as clear.
# On a loaded 2-core CI runner an answer 2 s after the question still hit it once (the run never finished), so the
# answer waits two of the trigger's 5 s polls longer.
BAKE_SECONDS = 6
ANSWER_AFTER_SECONDS = 10


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # The deployment tests' quick policy (30 requests, loose noise limits) with one step, as the steps
    # themselves are tested there, and a person's approval.
    policy = fast_policy().model_dump(mode="json")
    policy["steps"] = [0.5]
    policy["bake"]["min_seconds"] = BAKE_SECONDS
    policy["approval"] = {"required": True, "timeout_minutes": 10}
    with running_stack(tmp_path_factory.mktemp("approval"), policy) as running:
        yield running


def canary_until_approval(stack: CanaryStack, load: Load) -> tuple[str, str]:
    """A fresh challenger, loaded by the service; deploy_canary triggered over REST and followed until it
    asks for approval. Returns (version, run id)."""
    version = stack.register_version()
    stack.registry().set_registered_model_alias(MODEL, "challenger", version)
    wait_until(lambda: stack.served("challenger") == version, timeout=60, what=f"challenger {version} loaded")
    api = stack.api()
    run_id = api.trigger(APPROVAL_DAG, {"version": version})
    deadline = time.monotonic() + 150
    while not waiting_approvals(api, run_id):
        assert api.run_state(APPROVAL_DAG, run_id) not in ("success", "failed"), task_log_hint(stack, run_id)
        assert time.monotonic() < deadline, f"no approval asked within 150 s: {task_log_hint(stack, run_id)}"
        time.sleep(0.5)
    assert load.outcomes, "the canary baked without client load?"
    time.sleep(ANSWER_AFTER_SECONDS)
    return version, run_id


def finished(stack: CanaryStack, run_id: str) -> dict[str, str]:
    try:
        result = stack.api().wait(APPROVAL_DAG, run_id, timeout=90)
    except AirflowApiError as stuck:
        raise AssertionError(f"{stuck}: {task_log_hint(stack, run_id)}") from stuck
    assert result.succeeded, task_log_hint(stack, run_id)
    return result.task_states


def decision(stack: CanaryStack, run_id: str) -> dict:
    """What the approval task recorded about the answer (XCom ``decision``), read over REST."""
    from airflow_client.client.api.x_com_api import XComApi

    api = stack.api()
    entry = XComApi(api.client).get_xcom_entry(APPROVAL_DAG, APPROVAL_TASK, run_id, "decision")
    value = entry.actual_instance.value
    return json.loads(value) if isinstance(value, str) else value


def test_approving_over_the_cli_promotes_the_challenger(stack) -> None:
    champion = read_state(stack.settings).champion
    with Load(stack.serving_url, stack.transactions, clients=1) as load:
        version, run_id = canary_until_approval(stack, load)
        [question] = waiting_approvals(stack.api(), run_id)
        assert question.subject == f"Promote version {version} to champion?"
        shown = stack.loopline("status", "--json")
        assert shown.returncode == 0, shown.stderr
        status = json.loads(shown.stdout)["approval"]  # what a person or a script sees waiting
        assert (status["run_id"], status["options"], status["default"]) == (
            run_id,
            ["Promote", "Roll back"],
            ["Roll back"],
        )
        assert read_state(stack.settings).champion == champion, "nothing is promoted before the answer"

        answer = stack.loopline("canary", "approve", "--comment", "fraud team signed off")
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout.startswith(
            f"approved: Promote version {version} to champion? → Promote ({APPROVAL_DAG} run {run_id}"
        ), answer.stdout
        tasks = finished(stack, run_id)
        wait_until(lambda: stack.served("champion") == version, timeout=30, what=f"version {version} serving")
    assert not load.failed(), f"{len(load.failed())} of {len(load.outcomes)} requests failed"

    assert (tasks["promote_challenger"], tasks["roll_back_challenger"]) == ("success", "skipped")
    state = read_state(stack.settings)
    assert (state.champion, state.previous_champion, state.challenger) == (version, champion, None)
    promoted = history.read(stack.settings, limit=1)[0]
    assert (promoted.kind, promoted.version) == ("promoted", version)
    # Who approved, and why, is part of the recorded decision.
    assert f"approved by {stack.api().username} (HITL): 'fraud team signed off'" in promoted.reason, (
        promoted.reason
    )
    assert decision(stack, run_id) == {
        "option": "Promote",
        "by": stack.api().username,
        "comment": "fraud team signed off",
        "timed_out": False,
    }

    # Answered: nothing waits any more, and the CLI says which run it looked at.
    again = stack.loopline("canary", "approve")
    assert again.returncode == 1
    assert (
        f"no canary is waiting for approval: the latest {APPROVAL_DAG} run {run_id!r} is success "
        f"({APPROVAL_TASK}: success)"
    ) in again.stderr, again.stderr
    unknown = stack.loopline("canary", "reject", "--run-id", "no_such_run")
    assert unknown.returncode == 1
    assert f"no canary is waiting for approval: {APPROVAL_DAG} has no run 'no_such_run'" in unknown.stderr


def test_rejecting_over_the_cli_rolls_the_challenger_back(stack) -> None:
    champion = read_state(stack.settings).champion
    with Load(stack.serving_url, stack.transactions, clients=1) as load:
        version, run_id = canary_until_approval(stack, load)
        answer = stack.loopline(
            "canary", "reject", "--run-id", run_id, "--comment", "not before the audit", "--json"
        )
        assert answer.returncode == 0, answer.stderr
        result = json.loads(answer.stdout)
        assert (result["run_id"], result["answer"], result["comment"]) == (
            run_id,
            "Roll back",
            "not before the audit",
        )
        tasks = finished(stack, run_id)
        wait_until(lambda: stack.served("challenger") is None, timeout=30, what="the challenger unloaded")
    assert not load.failed(), f"{len(load.failed())} of {len(load.outcomes)} requests failed"

    assert (tasks["promote_challenger"], tasks["roll_back_challenger"]) == ("skipped", "success")
    state = read_state(stack.settings)
    assert (state.champion, state.challenger, state.share) == (champion, None, None)  # traffic 0, alias gone
    tags = stack.registry().get_model_version(MODEL, version).tags
    said = f"promotion rejected by {stack.api().username} (HITL): 'not before the audit'"
    assert tags[TAG_CANARY] == "rolled_back" and said in tags[TAG_REASON]
    rolled_back = history.read(stack.settings, limit=1)[0]
    assert (rolled_back.kind, rolled_back.version) == ("rolled_back", version)
    assert rolled_back.reason.startswith(said), rolled_back.reason
    assert decision(stack, run_id)["option"] == "Roll back"

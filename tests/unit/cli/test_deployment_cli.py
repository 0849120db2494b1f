"""`loopline canary approve | reject` without a stack: the command line, and the errors a person sees.
Answering a real waiting approval is tested against a real stack in
tests/integration/test_canary_approval.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopline.cli.deployment import cmd_answer, cmd_canary
from loopline.cli.main import build_parser, main
from loopline.deployment.approval import nothing_waiting

pytestmark = pytest.mark.usefixtures("clean_loopline_env")


def test_approve_and_reject_parse_with_run_id_and_comment() -> None:
    parser = build_parser()
    approve = parser.parse_args(["canary", "approve", "--comment", "fraud team signed off"])
    assert (approve.func, approve.approve, approve.run_id, approve.comment) == (
        cmd_answer,
        True,
        None,
        "fraud team signed off",
    )
    reject = parser.parse_args(["canary", "reject", "--run-id", "manual__2026-01-01", "--json"])
    assert (reject.func, reject.approve, reject.run_id, reject.json) == (
        cmd_answer,
        False,
        "manual__2026-01-01",
        True,
    )


def test_plain_canary_still_runs_a_canary_in_process() -> None:
    args = build_parser().parse_args(["canary", "--version", "3", "--bake-seconds", "5"])
    assert (args.func, args.version, args.bake_seconds) == (cmd_canary, "3", 5.0)


def test_an_unknown_answer_is_refused_naming_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["canary", "aprove"])
    assert "choose from 'approve', 'reject'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("run", "task_state", "run_id", "expected"),
    [
        (None, None, None, "no canary is waiting for approval: deploy_canary has not run yet"),
        (None, None, "nope", "no canary is waiting for approval: deploy_canary has no run 'nope'"),
        (
            {"run_id": "r1", "state": "success"},
            "success",
            None,
            "no canary is waiting for approval: the latest deploy_canary run 'r1' is success (decide_promotion: success)",
        ),
        (
            {"run_id": "r2", "state": "running"},
            None,
            "r2",
            "no canary is waiting for approval: deploy_canary run 'r2' is running (decide_promotion: not started)",
        ),
    ],
)
def test_nothing_waiting_names_the_run_it_looked_at(run, task_state, run_id, expected) -> None:
    assert nothing_waiting(run, task_state, run_id) == expected


def test_an_empty_comment_is_refused_before_asking_airflow(
    capsys: pytest.CaptureFixture[str], state_dir: Path
) -> None:
    assert main(["canary", "approve", "--comment", "  "]) == 2
    assert "--comment is empty" in capsys.readouterr().err


def test_without_a_stack_the_answer_says_to_start_it(
    capsys: pytest.CaptureFixture[str], state_dir: Path
) -> None:
    assert main(["canary", "reject"]) == 2
    assert "loopline up" in capsys.readouterr().err

"""What deploy_canary records when it rolls a challenger back, and who approved a promotion."""

from __future__ import annotations

from loopline.deployment.approval import roll_back_reason, who_decided

RAMPED = {"outcome": "promote"}


def test_a_canary_that_did_not_complete_is_rolled_back_for_that_whatever_the_answer() -> None:
    for ramp in (None, {}, {"outcome": "roll_back"}):
        reason = roll_back_reason(ramp, {"option": "Roll back", "by": "alice"})
        assert reason.startswith("the canary did not complete"), reason


def test_no_answer_in_time_is_said_as_such() -> None:
    reason = roll_back_reason(RAMPED, {"option": "Roll back", "by": None, "comment": None, "timed_out": True})
    assert reason.startswith("promotion not approved: no answer within approval.timeout_minutes"), reason


def test_a_rejection_names_who_and_why() -> None:
    decision = {"option": "Roll back", "by": "alice", "comment": "not before the audit", "timed_out": False}
    assert roll_back_reason(RAMPED, decision) == "promotion rejected by alice (HITL): 'not before the audit'"
    assert roll_back_reason(RAMPED, None) == "promotion rejected by a person (HITL)"


def test_who_decided_without_a_comment_or_a_name() -> None:
    assert who_decided({"by": "bob"}) == "bob (HITL)"
    assert who_decided({"by": None, "comment": "ok"}) == "a person (HITL): 'ok'"

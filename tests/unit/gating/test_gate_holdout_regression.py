"""The holdout of a regressor: every label is complete when it lands, so the labelled range ends at the newest
labelled event (no confirmed-negative frontier), and a group needs rows only (a quantity has no positives)."""

from __future__ import annotations

import sys
from datetime import UTC, timedelta
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "monitoring"))
from delivery_world import DELIVERY, days  # noqa: E402

from loopline.gating.holdout import HoldoutError, _range_of, choose_holdout  # noqa: E402
from loopline.gating.policy import policy_from_dict  # noqa: E402


@pytest.fixture(scope="module")
def labelled() -> pd.DataFrame:
    return days(3, 0, 14)[[DELIVERY.id_column, DELIVERY.time_column, DELIVERY.label_column, "customer_tier"]]


def test_the_range_ends_at_the_newest_labelled_event(labelled: pd.DataFrame) -> None:
    first, end = _range_of(labelled, DELIVERY)
    assert first == labelled[DELIVERY.time_column].min().to_pydatetime().astimezone(UTC)
    assert end == labelled[DELIVERY.time_column].max().to_pydatetime().astimezone(UTC) + timedelta(
        microseconds=1
    )
    with pytest.raises(HoldoutError, match="no event has a label yet"):
        _range_of(labelled.assign(**{DELIVERY.label_column: float("nan")}), DELIVERY)


def test_the_holdout_grows_until_every_tier_has_enough_rows(labelled: pd.DataFrame) -> None:
    first, end = _range_of(labelled, DELIVERY)
    policy = policy_from_dict(
        {"holdout": {"days": 1, "max_days": 5, "min_train_days": 5}, "fairness": {"min_group_size": 400}}
    )
    plan = choose_holdout(labelled, first, end, policy, DELIVERY)
    assert 1 < plan.days <= 5 and not plan.short
    assert all(g.rows >= 400 and g.positives == 0 and g.enough for g in plan.groups)
    assert "has at least 400 rows" in plan.why and "positive" not in plan.why


def test_a_tier_still_too_small_at_the_limit_is_listed_not_judged(labelled: pd.DataFrame) -> None:
    first, end = _range_of(labelled, DELIVERY)
    policy = policy_from_dict({"holdout": {"days": 1, "max_days": 2}, "fairness": {"min_group_size": 5000}})
    plan = choose_holdout(labelled, first, end, policy, DELIVERY)
    assert plan.days == 2 and {g.group for g in plan.short} == {"new", "regular", "premium"}
    assert "short of 5000 rows: not judged" in plan.why and "positive" not in plan.why

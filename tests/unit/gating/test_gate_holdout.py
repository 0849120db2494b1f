"""Holdout sizing (pure): grown day by day until every fairness group can be judged, within limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from loopline.config.use_case import load_use_case
from loopline.gating.holdout import HoldoutError, choose_holdout
from loopline.gating.policy import policy_from_dict

FRAUD = load_use_case("fraud")
END = datetime(2026, 1, 15, tzinfo=UTC)
FIRST = END - timedelta(days=14)


def history(fraud_per_day: dict[str, int], rows_per_day: int = 300) -> pd.DataFrame:
    """14 days; each day ``rows_per_day`` rows per band, of which ``fraud_per_day[band]`` are fraud."""
    rows = []
    for day in range(14):
        stamp = FIRST + timedelta(days=day, hours=12)
        for band, frauds in fraud_per_day.items():
            rows += [
                {
                    "event_timestamp": stamp,
                    "customer_age_band": band,
                    "customer_region": "north",
                    "is_fraud": int(i < frauds),
                }
                for i in range(rows_per_day)
            ]
    return pd.DataFrame(rows)


def holdout_policy(**holdout):
    return policy_from_dict(
        {
            "fairness": {
                "group_columns": ["customer_age_band", "customer_region"],
                "min_group_size": 200,
                "min_group_positives": 10,
            },
            "holdout": {"days": 2, **holdout},
        }
    )


def test_the_holdout_grows_until_the_thinnest_group_can_be_judged() -> None:
    labelled = history({"18-25": 2, "26-40": 8})  # 18-25 needs five days for 10 frauds
    plan = choose_holdout(labelled, FIRST, END, holdout_policy(max_days=7, min_train_days=5), FRAUD)
    assert plan.days == 5 and plan.windows.holdout_start == END - timedelta(days=5)
    assert plan.windows.train_end == plan.windows.holdout_start and plan.windows.holdout_end == END
    counts = {(g.attribute, g.group): g.positives for g in plan.groups}
    assert counts == {
        ("customer_age_band", "18-25"): 10,
        ("customer_age_band", "26-40"): 40,
        ("customer_region", "north"): 50,
    }
    assert plan.short == () and "every group" in plan.why


def test_without_max_days_the_holdout_stays_at_days() -> None:
    plan = choose_holdout(history({"18-25": 2, "26-40": 8}), FIRST, END, holdout_policy(), FRAUD)
    assert plan.days == 2 and [g.group for g in plan.short] == ["18-25"]


@pytest.mark.parametrize(
    ("limits", "days", "limit"),
    [
        ({"max_days": 4}, 4, "holdout.max_days"),
        ({"max_days": 10, "min_train_days": 11}, 3, "holdout.min_train_days"),
    ],
)
def test_at_its_limit_the_short_groups_are_listed(limits: dict, days: float, limit: str) -> None:
    plan = choose_holdout(history({"18-25": 2, "26-40": 8}), FIRST, END, holdout_policy(**limits), FRAUD)
    assert plan.days == days and limit in plan.why
    [short] = plan.short
    assert (short.group, short.positives, short.rows) == ("18-25", 2 * days, 300 * days)
    assert "18-25 has" in plan.why and "not judged" in plan.why


def test_without_group_columns_the_policy_judges_the_use_cases_groups() -> None:
    assert policy_from_dict({}).fairness.columns(FRAUD) == list(FRAUD.group_columns)
    assert policy_from_dict({"fairness": {"group_columns": ["customer_region"]}}).fairness.columns(FRAUD) == [
        "customer_region"
    ]
    plan = choose_holdout(history({"18-25": 2, "26-40": 8}), FIRST, END, policy_from_dict({}), FRAUD)
    assert {g.attribute for g in plan.groups} == set(FRAUD.group_columns)


def test_a_holdout_that_leaves_too_little_training_is_refused() -> None:
    with pytest.raises(HoldoutError, match="training would keep less than holdout.min_train_days"):
        choose_holdout(history({"18-25": 2}), FIRST, END, holdout_policy(min_train_days=13), FRAUD)
    with pytest.raises(HoldoutError, match="nothing would be left to train on"):
        choose_holdout(history({"18-25": 2}), FIRST, END, holdout_policy(days=14), FRAUD)
    with pytest.raises(ValueError, match="max_days"):
        holdout_policy(max_days=1)


def test_build_holdout_records_each_fairness_attributes_values_in_the_history(gate_world) -> None:
    import json

    from loopline.gating.holdout import FAIRNESS_GROUPS_KEY

    holdout = Path(gate_world["holdout"].path)
    recorded = json.loads(holdout.with_name(holdout.name + ".manifest.json").read_text())[FAIRNESS_GROUPS_KEY]
    transactions = gate_world["sim"].transactions
    assert recorded == {
        c: sorted(transactions[c].astype(str).unique()) for c in ("customer_age_band", "customer_region")
    }

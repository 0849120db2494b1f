"""Served vs offline features on logged traffic: a small real world (simulated days published to the curated
store, materialised by Feast) whose prediction log holds faithful, perturbed, stale (scored by the real
online lookup before the day's own transactions were materialised) and not-yet-ingested predictions."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from loopline.cli.main import main
from loopline.config import Settings
from loopline.data.ingest import publish
from loopline.features.curated import curated_time_range
from loopline.features.historical import historical_features
from loopline.features.materialize import materialize
from loopline.features.online import OnlineFeatures
from loopline.monitoring.served_check import check_served
from loopline.platform.feast_store import feature_store
from loopline.serving.prediction_log import LoggedPrediction, PredictionLog
from loopline.usecases.fraud.simulator import SimulationConfig, simulate

DAYS = 9
STALE_DAY, PENDING_DAY = 7, 8  # served by a stale online store, then ingested; served, never materialised
PERTURBED = 10  # rows of day 4 logged with one feature off
REQUEST_FIELDS = (
    "transaction_id",
    "customer_id",
    "card_id",
    "merchant_id",
    "merchant_category",
    "merchant_country",
    "amount",
    "channel",
    "device_id",
)


def _inputs(record: dict, at: pd.Timestamp | None = None) -> dict:
    """The transaction as serving logs it (pydantic's JSON dump: the time as ISO 8601 with Z)."""
    stamp = pd.Timestamp(at if at is not None else record["event_timestamp"]).tz_convert("UTC")
    return {
        **{k: record[k] for k in REQUEST_FIELDS},
        "event_timestamp": stamp.isoformat().replace("+00:00", "Z"),
    }


def _row(
    record: dict,
    features: dict,
    *,
    variant: str = "champion",
    at: pd.Timestamp | None = None,
    inputs: dict | None = None,
) -> LoggedPrediction:
    ts = pd.Timestamp(at if at is not None else record["event_timestamp"]).timestamp()
    return LoggedPrediction(
        uuid.uuid4().hex,
        ts,
        str(record["transaction_id"]),
        str(record["customer_id"]),
        inputs or _inputs(record),
        features,
        0.01,
        False,
        variant,
        "1",
        2.0,
    )


def _features(frame: pd.DataFrame, names: list[str]) -> dict[str, dict]:
    """transaction id -> {feature: value} as JSON would carry it (NaN -> None)."""
    out = {}
    for record in frame.to_dict("records"):
        out[str(record["transaction_id"])] = {
            n: None
            if record[n] is None
            or (isinstance(record[n], float) and np.isnan(record[n]))
            or record[n] is pd.NA
            else (record[n].item() if hasattr(record[n], "item") else record[n])
            for n in names
        }
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Nine simulated days. Days 0-6 published and materialised; day 7 scored by the real online lookup
    with the store as of its start (stale within the day), then published and materialised; day 8 published
    but not materialised. The log: days 4-6 faithful (offline point-in-time features; 10 rows of day 4 with
    merch_tx_count_7d off by one, plus shadow rows, retries and re-stamped replays that must not count),
    day 7 stale, day 8 and API probes that were never ingested waiting."""
    state = tmp_path_factory.mktemp("served-check")
    settings = Settings(state_dir=state)
    settings.state.ensure()
    sim = simulate(SimulationConfig(days=DAYS, n_customers=80, seed=5))
    tx = sim.transactions.reset_index(drop=True)
    start = tx["event_timestamp"].min().normalize()
    day = ((tx["event_timestamp"] - start) // pd.Timedelta(days=1)).astype(int)
    day_start = [start + pd.Timedelta(days=d) for d in range(DAYS + 1)]
    publish(settings, tx[day < STALE_DAY], "transactions", "sim-early")
    materialize(settings, *curated_time_range(settings))

    online = OnlineFeatures(settings)
    names = online.names
    stale_day = tx[day == STALE_DAY]
    stale = online.lookup(
        stale_day.to_dict("records")
    )  # the store knows nothing of the day's own transactions
    publish(settings, tx[day == STALE_DAY], "transactions", "sim-day7")
    materialize(settings, day_start[STALE_DAY].to_pydatetime(), day_start[STALE_DAY + 1].to_pydatetime())
    publish(settings, tx[day == PENDING_DAY], "transactions", "sim-day8")  # ingested, not materialised

    faithful_days = tx[(day >= 4) & (day <= 6)]
    truth = _features(historical_features(feature_store(settings), faithful_days), names)
    rows, perturbed = [], []
    for record in faithful_days.to_dict("records"):
        features = dict(truth[str(record["transaction_id"])])
        if len(perturbed) < PERTURBED and day_of(record, start) == 4:
            features["merch_tx_count_7d"] = (features["merch_tx_count_7d"] or 0) + 1
            perturbed.append(str(record["transaction_id"]))
        at = pd.Timestamp(record["event_timestamp"])
        garbage = {n: 123456.0 for n in names}
        rows.append(
            _row(record, garbage, variant="shadow", at=at - pd.Timedelta(milliseconds=1))
        )  # never answered
        rows.append(_row(record, features, at=at))
        rows.append(
            _row(record, garbage, variant="challenger", at=at + pd.Timedelta(seconds=1))
        )  # a later retry
    replayed = tx[day == 2].head(3)
    for record in replayed.to_dict("records"):  # replays of day-2 transactions, re-stamped to day 5
        at = day_start[5] + pd.Timedelta(hours=1)
        rows.append(_row(record, {n: 1.0 for n in names}, at=at, inputs=_inputs(record, at)))
    for record, features in zip(stale_day.to_dict("records"), stale, strict=True):
        rows.append(_row(record, features))
    pending = tx[day == PENDING_DAY]
    for record in pending.to_dict("records"):
        rows.append(_row(record, {n: None for n in names}))
    probe = {
        **pending.iloc[0].to_dict(),
        "transaction_id": "tx_api_probe",
        "event_timestamp": day_start[PENDING_DAY],
    }
    rows.append(_row(probe, {n: None for n in names}))
    log = PredictionLog(settings.state.prediction_log)
    log.append(rows)
    log.close()
    return {
        "settings": settings,
        "tx": tx,
        "day": day,
        "day_start": [d.to_pydatetime() for d in day_start],
        "perturbed": perturbed,
        "names": names,
    }


def day_of(record: dict, start: pd.Timestamp) -> int:
    return int((pd.Timestamp(record["event_timestamp"]) - start) // pd.Timedelta(days=1))


def _window(world, first: int, last: int) -> dict:
    return {"since": world["day_start"][first], "until": world["day_start"][last + 1]}


def test_faithfully_logged_features_give_no_mismatch(world):
    report = check_served(world["settings"], **_window(world, 5, 6))
    faithful = int(world["day"].isin([5, 6]).sum())
    assert report.judged and report.reason == ""
    assert report.compared == faithful, (
        "every faithful answered transaction, once (shadow rows and retries skipped)"
    )
    assert report.mismatches == 0 and report.mismatch_rate == 0.0, report.examples
    assert report.inputs_differ == 3, "re-stamped replays were not scored as the recorded transaction"
    assert report.waiting == 0 and report.features == len(world["names"]) > 25


def test_a_perturbed_feature_is_counted_named_and_shown(world):
    report = check_served(world["settings"], **_window(world, 4, 4))
    assert report.judged and report.compared == int((world["day"] == 4).sum())
    assert report.mismatches == len(world["perturbed"]) == 10
    assert report.worst_features == {"merch_tx_count_7d": 10}
    example = report.examples[0]
    assert example["feature"] == "merch_tx_count_7d" and example["event_id"] in world["perturbed"]
    assert example["served"] == (example["offline"] or 0) + 1
    assert report.exceeds(0.01) and not report.exceeds(0.5)


def test_features_served_before_the_days_own_transactions_were_materialised_are_stale(world):
    """Day 7 was scored with the online store as of its start: a transaction differs exactly when its
    customer or merchant had an earlier transaction that day (the state the store did not have yet)."""
    tx, day = world["tx"], world["day"]
    today = tx[day == STALE_DAY]
    expected = set()
    for record in today.to_dict("records"):
        earlier = today[
            (today["event_timestamp"] < record["event_timestamp"])
            & (
                (today["customer_id"] == record["customer_id"])
                | (today["merchant_id"] == record["merchant_id"])
            )
        ]
        if len(earlier):
            expected.add(str(record["transaction_id"]))
    repeat_customers = sum(
        bool(
            (
                (today["event_timestamp"] < r["event_timestamp"]) & (today["customer_id"] == r["customer_id"])
            ).any()
        )
        for r in today.to_dict("records")
    )
    report = check_served(world["settings"], **_window(world, STALE_DAY, STALE_DAY))
    assert report.judged and report.compared == len(today) and report.waiting == 0
    assert 0 < len(expected) < len(today)
    assert report.mismatches == len(expected)
    # The customer's own history moved that day: every customer feature of a repeat customer is stale.
    assert max(report.worst_features.values()) == repeat_customers > 0
    assert all(name.startswith("cust_") for name in report.worst_features)
    assert len({e["event_id"] for e in report.examples}) == len(report.examples) == 5
    assert report.exceeds(0.01)


def test_transactions_not_ingested_or_not_materialised_wait(world):
    report = check_served(world["settings"], **_window(world, PENDING_DAY, PENDING_DAY))
    pending = int((world["day"] == PENDING_DAY).sum())
    assert not report.judged and report.compared == 0 and report.mismatch_rate is None
    assert (
        report.waiting == pending + 1
    )  # day 8 (ingested, not materialised) and the API probe (never ingested)
    assert "no served transaction is ingested and materialised yet" in report.reason


def test_the_sample_is_seeded_and_bounded(world):
    window = _window(world, 4, 8)
    first = check_served(world["settings"], sample=40, seed=3, **window)
    again = check_served(world["settings"], sample=40, seed=3, **window)
    assert first == again and first.sampled == 40 and first.compared + first.inputs_differ == 40
    assert first.waiting == int((world["day"] == PENDING_DAY).sum()) + 1


def test_an_empty_log_is_not_judged_and_says_why(tmp_path):
    settings = Settings(state_dir=tmp_path / "state")
    report = check_served(
        settings, since=datetime(2026, 1, 1, tzinfo=UTC), until=datetime(2026, 1, 2, tzinfo=UTC)
    )
    assert not report.judged and report.compared == 0 and "no answered prediction" in report.reason
    assert report.to_dict()["since"] == "2026-01-01T00:00:00+00:00"


def test_the_cli_prints_the_report_as_its_last_line_and_exits_by_the_policy_limit(world, monkeypatch, capsys):
    monkeypatch.setenv("LOOPLINE_STATE_DIR", str(world["settings"].state.root))
    window = _window(world, 5, 6)
    args = [
        "features",
        "check-served",
        "--since",
        window["since"].isoformat(),
        "--until",
        window["until"].isoformat(),
    ]
    assert main([*args, "--json"]) == 0
    out = capsys.readouterr()
    report = json.loads(out.out.strip().splitlines()[-1])
    assert report["judged"] and report["mismatches"] == 0 and report["alarm"] is False
    assert report["max_mismatch_rate"] == 0.01 and "0/" in out.err  # the human line goes to stderr
    stale = _window(world, STALE_DAY, STALE_DAY)
    assert (
        main(
            [
                "features",
                "check-served",
                "--since",
                stale["since"].isoformat(),
                "--until",
                stale["until"].isoformat(),
                "--sample",
                "50",
            ]
        )
        == 1
    )
    human = capsys.readouterr().out
    assert "SKEW" in human and "exit 1" in human
    pending = _window(world, PENDING_DAY, PENDING_DAY)
    assert main(["features", "check-served", "--since", pending["since"].isoformat(), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["judged"] is False


def test_window_bounds_are_half_open(world):
    at = world["day_start"][5]
    report = check_served(world["settings"], since=at, until=at + timedelta(hours=12))
    morning = world["tx"][
        (world["tx"]["event_timestamp"] >= at) & (world["tx"]["event_timestamp"] < at + timedelta(hours=12))
    ]
    assert report.compared == len(morning) and report.inputs_differ == 3

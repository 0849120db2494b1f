"""Feast end to end on simulated, curated data: point-in-time correctness, no dropped rows, label delay,
online = offline, and a skew check that notices a changed definition."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopline.config import Settings
from loopline.config.use_case import load_use_case
from loopline.data.ingest import publish
from loopline.features.curated import curated_time_range, read_curated_event_frame
from loopline.features.feature_service import FeatureRowsMismatch, feature_names
from loopline.features.historical import historical_features
from loopline.features.materialize import materialize
from loopline.features.online import OnlineFeatures
from loopline.features.skew import _same, check_skew
from loopline.features.training_sets import build_training_set
from loopline.platform.feast_store import feature_store
from loopline.usecases.fraud.simulator import SimulationConfig, simulate

FRAUD = load_use_case("fraud")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """12 simulated days published to a curated store and materialised (shared: Feast set-up is slow)."""
    state = tmp_path_factory.mktemp("feature-store")
    settings = Settings(state_dir=state)
    settings.state.ensure()
    sim = simulate(SimulationConfig(days=12, n_customers=150, seed=21))
    publish(settings, sim.transactions, "transactions", "sim")
    publish(settings, sim.labels, "labels", "sim")  # every label, with its real (delayed) timestamp
    span = curated_time_range(settings)
    materialize(settings, *span)
    manifest = build_training_set(settings, state / "train.parquet")
    return {
        "settings": settings,
        "sim": sim,
        "manifest": manifest,
        "frame": pd.read_parquet(state / "train.parquet"),
    }


def test_every_transaction_becomes_exactly_one_training_row(world):
    frame, manifest, sim = world["frame"], world["manifest"], world["sim"]
    assert manifest.rows == len(frame) == len(sim.transactions)
    assert sorted(frame["transaction_id"]) == sorted(sim.transactions["transaction_id"])
    assert manifest.labelled_rows == int(frame["is_fraud"].notna().sum())
    assert manifest.positive_rows == int(sim.labels["is_fraud"].sum())  # all labels are in the past by now
    assert manifest.feature_service == "fraud_detection_v1" and manifest.feature_service_version == "1"
    on_disk = json.loads(Path(manifest.path + ".manifest.json").read_text())
    assert on_disk["content_hash"] == manifest.content_hash and on_disk["rows"] == manifest.rows
    assert set(manifest.features) <= set(frame.columns) and "customer_age_band" in frame.columns


def _brute_force_velocity(history: pd.DataFrame, t: pd.Timestamp) -> dict:
    """The customer's state after their last transaction strictly before t (what a row at t may see)."""
    before = history[history["event_timestamp"] < t]
    if before.empty:
        return {}
    last = before["event_timestamp"].max()

    def window(days):
        return before[before["event_timestamp"] > last - pd.Timedelta(days=days)]

    w24, w7, w30 = window(1), window(7), window(30)
    return {
        "cust_tx_count_24h": len(w24),
        "cust_tx_count_7d": len(w7),
        "cust_amount_mean_30d": w30["amount"].mean(),
        "cust_amount_max_7d": w7["amount"].max(),
        "cust_distinct_merchants_7d": w7["merchant_id"].nunique(),
        "cust_last_tx_epoch_s": last.value / 1e9,
    }


def test_point_in_time_features_match_a_brute_force_computation(world):
    frame, sim = world["frame"], world["sim"]
    tx = sim.transactions
    rows = frame.sample(n=150, random_state=4)
    for _, row in rows.iterrows():
        history = tx[tx["customer_id"] == row["customer_id"]]
        expected = _brute_force_velocity(history, row["event_timestamp"])
        if not expected:  # the customer's first transaction: no history may leak in
            assert pd.isna(row["cust_tx_count_24h"]) and row["has_customer_history"] == 0
            continue
        for name, value in expected.items():
            assert row[name] == pytest.approx(value, rel=1e-9), (row["transaction_id"], name)
        # Request-time features are computed from the transaction itself.
        assert row["seconds_since_last_tx"] == pytest.approx(
            row["event_timestamp"].value / 1e9 - expected["cust_last_tx_epoch_s"], abs=1e-3
        )


def test_no_feature_ever_reflects_the_transaction_itself(world):
    frame = world["frame"]
    since_last = frame["seconds_since_last_tx"]
    assert ((since_last > 0) | (since_last == -1)).all(), "the previous transaction is strictly earlier"
    first_use = frame.sort_values("event_timestamp").groupby(["customer_id", "device_id"]).head(1)
    assert (first_use["is_new_device"] == 1).all(), "a device is new the first time its customer uses it"


def test_labels_not_yet_known_stay_unlabelled(world, tmp_path):
    settings, sim = world["settings"], world["sim"]
    as_of = sim.transactions["event_timestamp"].max().to_pydatetime()
    early = build_training_set(settings, tmp_path / "early.parquet", labels_as_of=as_of)
    known = int((sim.labels["label_timestamp"] <= pd.Timestamp(as_of)).sum())
    assert early.rows == world["manifest"].rows, "unlabelled transactions are kept, not dropped"
    assert early.labelled_rows == known < world["manifest"].labelled_rows


def test_an_empty_window_is_an_error_not_an_empty_file(world, tmp_path):
    with pytest.raises(FeatureRowsMismatch):
        build_training_set(
            world["settings"],
            tmp_path / "x.parquet",
            start=datetime(2020, 1, 1, tzinfo=UTC),
            end=datetime(2020, 1, 2, tzinfo=UTC),
        )


def test_online_lookup_equals_the_offline_point_in_time_features(world):
    report = check_skew(world["settings"], sample=60)
    assert report.compared == 60 and report.features > 20
    assert report.mismatches == 0, report.examples


def test_online_lookup_for_a_new_customer_has_no_history(world):
    online = OnlineFeatures(world["settings"])
    (row,) = online.lookup(
        [
            {
                "customer_id": "c_nobody",
                "merchant_id": "m_nobody",
                "device_id": "d_x",
                "channel": "online",
                "amount": 12.0,
                "event_timestamp": datetime(2026, 1, 13, 12, tzinfo=UTC),
            }
        ]
    )
    assert row["has_customer_history"] == 0 and row["is_new_device"] == 1 and row["hour_of_day"] == 12
    assert row["cust_tx_count_24h"] is None


def test_the_skew_check_notices_a_changed_definition(world, tmp_path):
    settings = world["settings"]
    table = settings.state.feast_offline_dir / "customer_velocity.parquet"
    original = table.read_bytes()
    try:
        changed = pd.read_parquet(table)
        changed["cust_tx_count_24h"] += 1  # "the 24 h window now counts differently" — not re-materialised
        changed.to_parquet(table, index=False)
        report = check_skew(settings, sample=40)
        assert report.mismatches == report.compared == 40
        assert set(report.mismatched_features) >= {"cust_tx_count_24h"}
    finally:
        table.write_bytes(original)


def test_materialising_an_old_interval_late_never_rolls_the_online_store_back(world):
    settings, sim = world["settings"], world["sim"]
    first = sim.transactions["event_timestamp"].min().to_pydatetime()
    materialize(settings, first, first + timedelta(days=1))  # a late re-run of day one
    assert check_skew(settings, sample=30).mismatches == 0


def test_amount_features_are_finite(world):
    frame = world["frame"]
    assert np.isfinite(frame["amount_to_cust_mean_30d"]).all()
    assert np.isfinite(frame["amount_zscore_30d"]).all()


def test_the_merge_asof_join_equals_feasts_own_point_in_time_join(world):
    """build_training_set's join (merge_asof + the on-demand view's own transformation) against Feast's
    get_historical_features: every feature of every row, same values, same nulls, same dtypes."""
    store = feature_store(world["settings"])
    transactions = read_curated_event_frame(world["settings"].state.curated, use_case=FRAUD)
    ours = historical_features(store, transactions, engine="pandas").set_index("transaction_id")
    feast = (
        historical_features(store, transactions, engine="feast").set_index("transaction_id").loc[ours.index]
    )
    ours.index = feast.index = ours.index.astype(object)
    names = feature_names(store)
    assert len(ours) == len(transactions) and len(names) > 25
    for name in names:
        assert ours[name].dtype == feast[name].dtype, name
        pd.testing.assert_series_equal(ours[name], feast[name], check_exact=True, obj=name)
    assert ours["cust_tx_count_24h"].isna().any() and ours["merch_tx_count_7d"].isna().any(), (
        "nulls compared too"
    )


def _previous_merchant_event(tx: pd.DataFrame) -> pd.Series:
    """Per transaction, the merchant's latest earlier event time (NaT for its first)."""
    left = tx[["transaction_id", "merchant_id", "event_timestamp"]].sort_values("event_timestamp")
    right = left[["merchant_id", "event_timestamp"]].assign(previous=left["event_timestamp"])
    joined = pd.merge_asof(left, right, on="event_timestamp", by="merchant_id", allow_exact_matches=False)
    return joined.set_index("transaction_id")["previous"]


def test_merchant_state_older_than_its_seven_day_ttl_is_null_in_training_sets(world):
    frame = world["frame"].set_index("transaction_id")
    previous = _previous_merchant_event(world["sim"].transactions).loc[frame.index]
    age = frame["event_timestamp"] - previous
    stale, fresh = age > pd.Timedelta(days=7), age <= pd.Timedelta(days=7)
    assert stale.sum() > 0, "the world must contain merchants idle for more than 7 days"
    assert frame.loc[stale | previous.isna(), "merch_tx_count_7d"].isna().all()
    assert frame.loc[fresh, "merch_tx_count_7d"].notna().all()
    # The customer views keep their 30-day TTL: the same rows still see the customer's history.
    assert frame.loc[stale, "cust_tx_count_30d"].notna().any()


def test_online_lookups_apply_each_views_ttl_like_the_offline_join(world):
    """Online rows never expire, so the lookup must null stale ones itself: probes at growing distances
    after the newest transaction get exactly the offline point-in-time values."""
    settings, tx = world["settings"], world["sim"].transactions
    last = tx.sort_values("event_timestamp").iloc[-1]
    online = OnlineFeatures(settings)
    probes = pd.DataFrame(
        [
            {
                **last.to_dict(),
                "transaction_id": f"ttl_probe_{days}",
                "event_timestamp": last["event_timestamp"] + pd.Timedelta(days=days),
            }
            for days in (1, 6.9, 7.1, 29.9, 30.1)
        ]
    )
    online_rows = online.lookup(probes.to_dict("records"))
    offline = historical_features(online.store, probes).set_index("transaction_id")
    for tx_id, row in zip(probes["transaction_id"], online_rows, strict=True):
        for name in online.names:
            assert _same(
                row[name], offline.loc[tx_id, name] if pd.notna(offline.loc[tx_id, name]) else None
            ), (tx_id, name, row[name], offline.loc[tx_id, name])
    merchant_known = [row["merch_tx_count_7d"] is not None for row in online_rows]
    customer_known = [row["cust_tx_count_30d"] is not None for row in online_rows]
    assert merchant_known == [True, True, False, False, False]
    assert customer_known == [True, True, True, True, False]
    assert [row["has_customer_history"] for row in online_rows] == [1, 1, 1, 1, 0]


def test_the_online_read_returns_what_feasts_get_online_features_returns(world):
    """The lookup reads each view through the online store's online_read instead of get_online_features:
    per view, the same values (nulls and unknown keys included) and the same feature times, for a batch
    with repeated and unknown keys."""
    online = OnlineFeatures(world["settings"])
    known = world["sim"].transactions.sort_values("event_timestamp").tail(12).to_dict("records")
    unknown = {**known[0], "customer_id": "c_nobody", "merchant_id": "m_nobody", "device_id": "d_nobody"}
    batch = [*known, known[3], unknown, known[3]]
    for read in online._reads:
        rows = [{key: tx[column] for key, column in read.part.keys.items()} for tx in batch]
        response = online.store.get_online_features(
            features=[f"{read.view.name}:{f}" for f in read.part.features],
            entity_rows=rows,
            full_feature_names=True,
        )
        expected = response.to_dict()
        stamps = dict(zip(response.proto.metadata.feature_names.val, response.proto.results, strict=True))
        got = online._read(read, batch)
        first = stamps[f"{read.view.name}__{read.part.features[0]}"].event_timestamps
        assert [ns for ns, _ in got] == [
            ts.seconds * 10**9 + ts.nanos if ts.seconds else None for ts in first
        ]
        for feature in read.part.features:
            assert [None if values is None else values[feature] for _, values in got] == expected[
                f"{read.view.name}__{feature}"
            ], (read.view.name, feature)
        assert got[-2] == (None, None), "an unknown key has no row"
        assert got[3] == got[-3] == got[-1]

"""Delivery's features through the platform's feature layer: its aggregate tables computed from curated orders
with fraud's point-in-time semantics (the state after each order, joined 1 µs before the next), its Feast repo
(feature_repo/delivery/) applied and materialised, and a training set of one row per order with the labels
known at the time asked for."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from loopline.config import Settings
from loopline.config.use_case import load_use_case
from loopline.data.batch_files import write_frame
from loopline.data.ingest import ingest_file
from loopline.features.curated import curated_time_range
from loopline.features.definitions import feature_definitions
from loopline.features.fresh import FreshFeatures, FreshFeaturesUnavailable
from loopline.features.materialize import materialize
from loopline.features.training_sets import build_training_set
from loopline.usecases.delivery.features import (
    FEATURES,
    RESTAURANT_LOAD,
    STREAMING,
    ZONE_LOAD,
    compute_aggregates,
)
from loopline.usecases.delivery.simulator import DeliveryConfig, simulate, write_days

USE_CASE = load_use_case("delivery")
SMALL = DeliveryConfig(seed=5, days=3, orders_per_day=300, restaurants=20)
DAY3 = pd.Timestamp(SMALL.day(2), tz="UTC")
# A restaurant the simulation does not have, with orders at hand-picked times on the last day.
HANDMADE_TIMES = {
    "o_900000000001": DAY3 + pd.Timedelta(hours=10),
    "o_900000000002": DAY3 + pd.Timedelta(hours=10, minutes=30),
    "o_900000000003": DAY3 + pd.Timedelta(hours=11, minutes=15),
    "o_900000000004": DAY3 + pd.Timedelta(hours=11, minutes=15),  # the same instant as the one before
    "o_900000000005": DAY3 + pd.Timedelta(hours=12),
}
HANDMADE_RESTAURANT = "r_9999"


def _handmade_orders() -> pd.DataFrame:
    orders = simulate(SMALL)[2].orders.head(len(HANDMADE_TIMES)).copy()
    orders["order_id"] = pd.array(list(HANDMADE_TIMES), dtype="string")
    orders["ordered_at"] = pd.Series(list(HANDMADE_TIMES.values()), index=orders.index).astype(
        "datetime64[us, UTC]"
    )
    orders["restaurant_id"] = pd.array([HANDMADE_RESTAURANT] * len(orders), dtype="string")
    return orders.reset_index(drop=True)


def test_delivery_defines_its_features_for_the_platform() -> None:
    assert feature_definitions(USE_CASE) is FEATURES
    assert FEATURES.service == "delivery_time_v1"
    assert FEATURES.tables == (RESTAURANT_LOAD, ZONE_LOAD)
    assert "customer_tier" not in FEATURES.model_inputs  # a fairness group, never a model input
    # Fresh load counts for both tables (test_delivery_streaming checks them against offline).
    assert FEATURES.streaming is STREAMING
    assert [t.table for t in STREAMING.tables] == [RESTAURANT_LOAD, ZONE_LOAD]


def test_the_tables_hold_the_state_after_each_order_hand_checked() -> None:
    rows = compute_aggregates(_handmade_orders())[RESTAURANT_LOAD.name]
    # One row per (restaurant, instant): the two orders at 11:15 share one, holding the state after both.
    assert rows["event_timestamp"].tolist() == sorted(set(HANDMADE_TIMES.values()))
    # (t - 1 h, t]: 10:00 -> itself; 10:30 -> 10:00 and itself; 11:15 -> 10:30 and both at 11:15;
    # 12:00 -> both at 11:15 and itself (10:30 fell out).
    assert rows["rest_orders_1h"].tolist() == [1, 2, 3, 3]
    assert rows["rest_orders_24h"].tolist() == [1, 2, 4, 5]
    assert {str(d) for d in rows.dtypes.iloc[2:]} == {"int64"}


@pytest.fixture(scope="module")
def delivery_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Three simulated days and the hand-made orders, ingested and materialised; a training set with the
    labels known at noon of the last day."""
    state = tmp_path_factory.mktemp("delivery") / "state"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LOOPLINE_STATE_DIR", str(state))
        settings = Settings(state_dir=state, use_case="delivery")
        written = write_days(SMALL, settings.state.landing)
        handmade = settings.state.landing / "orders" / "handmade.parquet"
        write_frame(_handmade_orders(), handmade, "parquet")
        results = [ingest_file(settings, path) for path in [*written, handmade]]
        assert {r.status for r in results} == {"published"}, [r.summary() for r in results]
        span = curated_time_range(settings)
        assert span is not None
        result = materialize(settings, span[0], span[1])
        labels_as_of = (DAY3 + pd.Timedelta(hours=12)).to_pydatetime()
        out = tmp_path_factory.mktemp("sets") / "delivery.parquet"
        manifest = build_training_set(settings, out, labels_as_of=labels_as_of)
        orders = pd.concat(
            [pd.read_parquet(p) for p in sorted((settings.state.curated / "orders").rglob("*.parquet"))],
            ignore_index=True,
        )
        deliveries = pd.concat(
            [pd.read_parquet(p) for p in sorted((settings.state.curated / "deliveries").rglob("*.parquet"))],
            ignore_index=True,
        )
        yield {
            "settings": settings,
            "manifest": manifest,
            "materialized": result,
            "frame": pd.read_parquet(out),
            "orders": orders,
            "deliveries": deliveries,
            "labels_as_of": labels_as_of,
        }


def test_one_training_row_per_order_with_the_use_cases_columns(delivery_world: dict[str, object]) -> None:
    frame, orders, manifest = delivery_world["frame"], delivery_world["orders"], delivery_world["manifest"]
    assert isinstance(frame, pd.DataFrame) and isinstance(orders, pd.DataFrame)
    assert len(frame) == len(orders) == manifest.rows  # type: ignore[attr-defined]
    assert frame["order_id"].is_unique and set(frame["order_id"]) == set(orders["order_id"])
    assert manifest.feature_service == "delivery_time_v1"  # type: ignore[attr-defined]
    assert manifest.positive_rows == 0 and manifest.label_rate is None  # type: ignore[attr-defined]
    expected = {
        "order_id",
        "ordered_at",
        *FEATURES.entity_columns,
        *FEATURES.passthrough_columns,
        "delivery_minutes",
        "delivered_at",
        "rest_orders_1h",
        "rest_orders_24h",
        "zone_orders_1h",
        "hour_of_day",
        "day_of_week",
        "has_restaurant_history",
    }
    assert set(frame.columns) == expected
    assert str(frame["delivery_minutes"].dtype) == "float64"
    assert frame["ordered_at"].is_monotonic_increasing


def test_labels_are_joined_as_known_at_labels_as_of(delivery_world: dict[str, object]) -> None:
    frame, deliveries = delivery_world["frame"], delivery_world["deliveries"]
    as_of = pd.Timestamp(delivery_world["labels_as_of"])  # type: ignore[arg-type]
    assert isinstance(frame, pd.DataFrame) and isinstance(deliveries, pd.DataFrame)
    known = deliveries[deliveries["delivered_at"] <= as_of].set_index("order_id")["delivery_minutes"]
    later = deliveries[deliveries["delivered_at"] > as_of]
    assert len(known) and len(later)  # both kinds exist: the check below means something
    got = frame.set_index("order_id")["delivery_minutes"]
    assert got.notna().sum() == len(known) == delivery_world["manifest"].labelled_rows  # type: ignore[attr-defined]
    pd.testing.assert_series_equal(
        got.reindex(known.index).astype("float64"), known.astype("float64"), check_names=False
    )
    assert got.reindex(later["order_id"]).isna().all()  # delivered after labels_as_of: not known yet
    assert (frame.loc[frame["delivered_at"].notna(), "delivered_at"] <= as_of).all()


def test_the_hand_made_orders_see_only_the_orders_before_them(delivery_world: dict[str, object]) -> None:
    frame = delivery_world["frame"]
    assert isinstance(frame, pd.DataFrame)
    rows = frame[frame["restaurant_id"] == HANDMADE_RESTAURANT].set_index("order_id")
    # Joined at T - 1 µs: the first has no history; the 10:30 one sees the 10:00 one; both 11:15 ones see the
    # state after 10:30 (10:00 and 10:30), never themselves nor each other; 12:00 sees the state after 11:15.
    assert rows["rest_orders_1h"].astype("Int64").tolist() == [pd.NA, 1, 2, 2, 3]
    assert rows["rest_orders_24h"].astype("Int64").tolist() == [pd.NA, 1, 2, 2, 4]
    assert rows["has_restaurant_history"].tolist() == [0, 1, 1, 1, 1]
    assert rows["hour_of_day"].tolist() == [10, 10, 11, 11, 12]


def _expected_counts(orders: pd.DataFrame, key: str, window: timedelta, ttl: timedelta) -> pd.Series:
    """By brute force: per order at T, the newest order of its key strictly before T (at or before T - 1 µs),
    null if none or older than the TTL, else that key's orders in (newest - window, newest]."""
    out = {}
    for _, group in orders.groupby(key):
        times = np.sort(group["ordered_at"].to_numpy())
        for order_id, t in zip(group["order_id"], group["ordered_at"].to_numpy(), strict=True):
            before = times[times < t]
            if not len(before) or before[-1] < t - np.timedelta64(1, "us") - np.timedelta64(ttl):
                out[order_id] = pd.NA
                continue
            newest = before[-1]
            out[order_id] = int(((times > newest - np.timedelta64(window)) & (times <= newest)).sum())
    return pd.Series(out, dtype="Int64")


def test_the_aggregate_features_are_point_in_time_correct_for_every_order(
    delivery_world: dict[str, object],
) -> None:
    frame, orders = delivery_world["frame"], delivery_world["orders"]
    assert isinstance(frame, pd.DataFrame) and isinstance(orders, pd.DataFrame)
    got = frame.set_index("order_id")
    for feature, key, window, ttl in (
        ("rest_orders_1h", "restaurant_id", timedelta(hours=1), timedelta(hours=24)),
        ("rest_orders_24h", "restaurant_id", timedelta(hours=24), timedelta(hours=24)),
        ("zone_orders_1h", "pickup_zone", timedelta(hours=1), timedelta(hours=1)),
    ):
        expected = _expected_counts(orders, key, window, ttl)
        pd.testing.assert_series_equal(
            got[feature].astype("Int64").reindex(expected.index), expected, check_names=False, obj=feature
        )


def test_materialisation_loads_the_online_store_and_fresh_features_say_they_are_off(
    delivery_world: dict[str, object],
) -> None:
    from loopline.features.online import OnlineFeatures

    settings = delivery_world["settings"]
    assert isinstance(settings, Settings)
    assert set(delivery_world["materialized"].offline_rows) == {"restaurant_load", "zone_load"}  # type: ignore[attr-defined]
    online = OnlineFeatures(settings)
    order = {
        "order_id": "o_999999999999",
        "ordered_at": (DAY3 + pd.Timedelta(hours=12, minutes=30)).to_pydatetime(),
        "restaurant_id": HANDMADE_RESTAURANT,
        "pickup_zone": "centre",
    }
    row = online.lookup([order])[0]
    assert row["rest_orders_1h"] == 3 and row["rest_orders_24h"] == 5  # the state after the 12:00 order
    assert row["hour_of_day"] == 12
    # Fresh: at 12:35 the last hour holds the 12:00 order and the 12:30 one just scored (the 11:15 ones have
    # left it), where the store still holds the state after 12:00.
    fresh = FreshFeatures(settings).bootstrap()
    fresh.observe([order])
    later = {
        **order,
        "order_id": "o_999999999998",
        "ordered_at": order["ordered_at"] + pd.Timedelta(minutes=5),
    }
    assert online.lookup([later], fresh)[0]["rest_orders_1h"] == 2
    assert online.lookup([later])[0]["rest_orders_1h"] == 3
    # A use case without streaming features is told so, not misled.
    from loopline.features import fresh as fresh_module

    without = FreshFeatures(settings)
    without.streaming = fresh_module._NO_STREAMING
    with pytest.raises(FreshFeaturesUnavailable, match="use case 'delivery' defines no streaming features"):
        without.bootstrap()

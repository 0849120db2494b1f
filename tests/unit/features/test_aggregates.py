"""The aggregate tables against a per-row brute force of the definitions in ``tables.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopline.config.use_case import load_use_case
from loopline.features.curated import read_curated_event_frame
from loopline.features.offline_refresh import refresh_aggregates
from loopline.features.offline_sink import write_aggregates
from loopline.usecases.fraud.features.aggregates import compute_aggregates
from loopline.usecases.fraud.features.tables import (
    CUSTOMER_CHANNEL,
    CUSTOMER_DEVICE,
    CUSTOMER_VELOCITY,
    MERCHANT_STATS,
    TABLES,
)
from loopline.usecases.fraud.schema import TRANSACTION_COLUMNS
from loopline.usecases.fraud.simulator import SimulationConfig, simulate

H = pd.Timedelta(hours=1)
D = pd.Timedelta(days=1)
W = {"1h": H, "24h": D, "7d": 7 * D, "30d": 30 * D}
T0 = pd.Timestamp("2026-01-01 00:00", tz="UTC")

FRAUD = load_use_case("fraud")


# --- data ------------------------------------------------------------------------------------------


def make_tx(rows: list[dict]) -> pd.DataFrame:
    """Contract-shaped transactions from a few fields per row (the rest filled in)."""
    full = []
    for i, row in enumerate(rows):
        customer = row.get("customer_id", "c_1")
        full.append(
            {
                "transaction_id": f"tx_{i:012d}",
                "event_timestamp": pd.Timestamp(row["t"]),
                "customer_id": customer,
                "card_id": row.get("card_id", f"card_{customer}"),
                "merchant_id": row.get("merchant_id", "m_1"),
                "merchant_category": "grocery",
                "merchant_country": row.get("merchant_country", "DE"),
                "amount": float(row.get("amount", 10.0)),
                "channel": row.get("channel", "chip"),
                "device_id": row.get("device_id", "d_1"),
                "customer_age_band": "26-40",
                "customer_region": "north",
            }
        )
    frame = pd.DataFrame(full, columns=list(TRANSACTION_COLUMNS))
    return pd.DataFrame({c: frame[c].astype(d) for c, d in TRANSACTION_COLUMNS.items()})


@pytest.fixture(scope="module")
def sim_tx() -> pd.DataFrame:
    return simulate(SimulationConfig(days=8, n_customers=150, seed=7)).transactions


def grid_tx(seed: int = 3, n: int = 900) -> pd.DataFrame:
    """Few keys, times on a 30-minute grid over 12 days: many ties and transactions exactly w apart."""
    rng = np.random.default_rng(seed)
    slots = rng.integers(0, 12 * 48, size=n)
    jitter = rng.choice([0, 0, 0, 0, 1, -1], size=n)  # a few at w ± 1 µs
    times = T0 + pd.to_timedelta(slots * 30, unit="min") + pd.to_timedelta(jitter, unit="us")
    rows = [
        {
            "t": times[i],
            "customer_id": f"c_{rng.integers(0, 6)}",
            "merchant_id": f"m_{rng.integers(0, 5)}",
            "card_id": f"card_{rng.integers(0, 8)}",
            "merchant_country": rng.choice(["DE", "FR", "US"]),
            "channel": rng.choice(["chip", "online", "atm", "contactless"]),
            "device_id": f"d_{rng.integers(0, 3)}",
            "amount": rng.choice([5.0, 12.5, 99.99, 250.0]),  # repeated amounts: exact zero std windows
        }
        for i in range(n)
    ]
    return make_tx(rows)


# --- brute force -----------------------------------------------------------------------------------


def _epoch_s(t: pd.Timestamp) -> float:
    return (t - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)


def _groups(tx: pd.DataFrame, keys: list[str]):
    """(key values, {column: numpy array}) per key; times as int µs."""
    for key, g in tx.groupby(keys):
        cols = {
            c: g[c].to_numpy(dtype=object) for c in ("merchant_id", "card_id", "channel", "merchant_country")
        }
        cols["amount"] = g["amount"].to_numpy(dtype=float)
        cols["t"] = (
            g["event_timestamp"].dt.tz_localize(None).to_numpy().astype("datetime64[us]").astype("int64")
        )
        yield key, cols


def brute_force(tx: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each table by the definitions, one (keys, timestamp) at a time: window = (t - w, t]."""
    us = {k: int(w / pd.Timedelta(microseconds=1)) for k, w in W.items()}
    out: dict[str, list[dict]] = {t.name: [] for t in TABLES}

    def rows(g: dict, w: str, t: int) -> np.ndarray:
        return (g["t"] > t - us[w]) & (g["t"] <= t)

    for (customer,), g in _groups(tx, ["customer_id"]):
        for t in sorted(set(g["t"].tolist())):
            m = {k: rows(g, k, t) for k in W}
            a30 = g["amount"][m["30d"]]
            out[CUSTOMER_VELOCITY.name].append(
                {
                    "customer_id": customer,
                    "event_timestamp": pd.Timestamp(t, unit="us", tz="UTC"),
                    **{f"cust_tx_count_{k}": int(m[k].sum()) for k in W},
                    "cust_amount_sum_24h": sum(g["amount"][m["24h"]]),
                    "cust_amount_mean_24h": float(np.mean(g["amount"][m["24h"]])),
                    "cust_amount_mean_7d": float(np.mean(g["amount"][m["7d"]])),
                    "cust_amount_mean_30d": float(np.mean(a30)),
                    "cust_amount_std_30d": float(np.sqrt(np.mean((a30 - np.mean(a30)) ** 2))),
                    "cust_amount_max_7d": max(g["amount"][m["7d"]]),
                    "cust_distinct_merchants_24h": len(set(g["merchant_id"][m["24h"]])),
                    "cust_distinct_merchants_7d": len(set(g["merchant_id"][m["7d"]])),
                    "cust_online_share_30d": float(np.mean(g["channel"][m["30d"]] == "online")),
                    "cust_foreign_share_30d": float(np.mean(g["merchant_country"][m["30d"]] != "DE")),
                    "cust_last_tx_epoch_s": t / 1e6,
                }
            )
    for (merchant,), g in _groups(tx, ["merchant_id"]):
        for t in sorted(set(g["t"].tolist())):
            d1, d7 = rows(g, "24h", t), rows(g, "7d", t)
            out[MERCHANT_STATS.name].append(
                {
                    "merchant_id": merchant,
                    "event_timestamp": pd.Timestamp(t, unit="us", tz="UTC"),
                    "merch_tx_count_24h": int(d1.sum()),
                    "merch_tx_count_7d": int(d7.sum()),
                    "merch_amount_mean_7d": float(np.mean(g["amount"][d7])),
                    "merch_distinct_cards_24h": len(set(g["card_id"][d1])),
                }
            )
    for keys, table, name in (
        (["customer_id", "device_id"], CUSTOMER_DEVICE, "dev_tx_count_30d"),
        (["customer_id", "channel"], CUSTOMER_CHANNEL, "chan_tx_count_30d"),
    ):
        for key, g in _groups(tx, keys):
            for t in sorted(set(g["t"].tolist())):
                row = {
                    **dict(zip(keys, key, strict=True)),
                    "event_timestamp": pd.Timestamp(t, unit="us", tz="UTC"),
                }
                row[name] = int(rows(g, "30d", t).sum())
                if table is CUSTOMER_DEVICE:
                    row["dev_first_seen_epoch_s"] = g["t"].min() / 1e6  # all history
                out[table.name].append(row)
    result = {}
    for table in TABLES:
        frame = pd.DataFrame(out[table.name], columns=table.columns)
        dtypes = {
            **dict.fromkeys(table.keys, "string"),
            "event_timestamp": "datetime64[us, UTC]",
            **table.features,
        }
        frame = frame.astype(dtypes).sort_values([*table.keys, "event_timestamp"], kind="stable")
        result[table.name] = frame.reset_index(drop=True)
    return result


def assert_tables_equal(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-9, atol=1e-7)


def assert_contract(tables: dict[str, pd.DataFrame]) -> None:
    assert list(tables) == [t.name for t in TABLES]
    for table in TABLES:
        frame = tables[table.name]
        assert list(frame.columns) == table.columns
        for key in table.keys:
            assert frame[key].dtype == pd.StringDtype("python"), key
        assert str(frame["event_timestamp"].dtype) == "datetime64[us, UTC]"
        for name, dtype in table.features.items():
            assert str(frame[name].dtype) == dtype, name
        assert frame.index.equals(pd.RangeIndex(len(frame)))


# --- the computation -------------------------------------------------------------------------------


def test_matches_brute_force_on_a_simulation(sim_tx: pd.DataFrame) -> None:
    got = compute_aggregates(sim_tx)
    expected = brute_force(sim_tx)
    assert_contract(got)
    for table in TABLES:
        assert_tables_equal(got[table.name], expected[table.name])
    assert len(got[CUSTOMER_VELOCITY.name]) == sim_tx.groupby(["customer_id", "event_timestamp"]).ngroups


def test_matches_brute_force_with_ties_and_exact_window_edges() -> None:
    tx = grid_tx()
    got = compute_aggregates(tx)
    expected = brute_force(tx)
    for table in TABLES:
        assert_tables_equal(got[table.name], expected[table.name])
    velocity = got[CUSTOMER_VELOCITY.name]
    assert len(velocity) < len(tx)  # ties collapsed into one row each
    assert (velocity["cust_amount_std_30d"] == 0.0).any()  # some windows hold one distinct amount


def test_hand_made_edges() -> None:
    t = T0 + 6 * H
    rows = [
        {"t": t, "amount": 10.0, "merchant_id": "m_a", "channel": "online", "merchant_country": "FR"},
        {"t": t + H, "amount": 30.0, "merchant_id": "m_b"},  # exactly 1 h later: the first is out of 1h
        {"t": t + H + pd.Timedelta(microseconds=1), "amount": 5.0, "merchant_id": "m_a"},
        {"t": t + D, "amount": 7.0, "merchant_id": "m_c"},  # exactly 24 h after the first
        {"t": t + 2 * D, "amount": 1.0, "merchant_id": "m_d", "device_id": "d_2"},  # same-time pair
        {"t": t + 2 * D, "amount": 3.0, "merchant_id": "m_d", "device_id": "d_2", "channel": "online"},
        {"t": t + 30 * D, "amount": 2.0},  # exactly 30 d after the first
        {"t": t + 31 * D, "amount": 2.0, "device_id": "d_2"},
        {"t": t + 31 * D + H, "amount": 2.0},
        {"t": t + 33 * D, "amount": 2.0},  # the 30 d window holds only 2.0s: std exactly 0
        {"t": t + 3 * D, "customer_id": "c_single", "amount": 42.0, "merchant_id": "m_z"},
    ]
    tx = make_tx(rows)
    got = compute_aggregates(tx)
    expected = brute_force(tx)
    for table in TABLES:
        assert_tables_equal(got[table.name], expected[table.name])

    v = got[CUSTOMER_VELOCITY.name].set_index(["customer_id", "event_timestamp"])
    second = v.loc[("c_1", t + H)]
    assert second["cust_tx_count_1h"] == 1 and second["cust_tx_count_24h"] == 2
    assert v.loc[("c_1", t + D), "cust_tx_count_24h"] == 3  # t itself is at t+24h-24h: excluded
    pair = v.loc[("c_1", t + 2 * D)]  # one row for the same-time pair, holding both
    assert pair["cust_tx_count_1h"] == 2 and pair["cust_amount_sum_24h"] == 4.0
    assert v.loc[("c_1", t + 30 * D), "cust_tx_count_30d"] == 6  # the first is out
    assert v.loc[("c_1", t + 31 * D + H), "cust_amount_std_30d"] > 0.0
    assert v.loc[("c_1", t + 33 * D), "cust_amount_std_30d"] == 0.0
    single = v.loc[("c_single", t + 3 * D)]
    assert single["cust_amount_std_30d"] == 0.0 and single["cust_tx_count_30d"] == 1
    assert single["cust_amount_max_7d"] == 42.0 and single["cust_distinct_merchants_7d"] == 1

    dev = got[CUSTOMER_DEVICE.name].set_index(["customer_id", "device_id", "event_timestamp"])
    assert dev.loc[("c_1", "d_2", t + 2 * D), "dev_tx_count_30d"] == 2
    late = dev.loc[("c_1", "d_2", t + 31 * D)]
    assert late["dev_tx_count_30d"] == 3
    assert late["dev_first_seen_epoch_s"] == _epoch_s(t + 2 * D)
    assert dev.loc[("c_1", "d_1", t + 33 * D), "dev_first_seen_epoch_s"] == _epoch_s(t)  # not 30 d only


def test_empty_input_gives_typed_empty_tables() -> None:
    tables = compute_aggregates(make_tx([]))
    assert_contract(tables)
    assert all(len(frame) == 0 for frame in tables.values())


def test_sorted_by_keys_then_time(sim_tx: pd.DataFrame) -> None:
    shuffled = sim_tx.sample(frac=1.0, random_state=1).reset_index(drop=True)
    got = compute_aggregates(shuffled)
    for table in TABLES:
        frame = got[table.name]
        resorted = frame.sort_values([*table.keys, "event_timestamp"], kind="stable").reset_index(drop=True)
        pd.testing.assert_frame_equal(frame, resorted)
        assert not frame.duplicated([*table.keys, "event_timestamp"]).any()
    for table in TABLES:  # the input order does not matter
        pd.testing.assert_frame_equal(got[table.name], compute_aggregates(sim_tx)[table.name])


def test_leak_free_later_transactions_never_change_earlier_rows(sim_tx: pd.DataFrame) -> None:
    cut = sim_tx["event_timestamp"].iloc[len(sim_tx) // 2]
    after = sim_tx["event_timestamp"] > cut
    changed = sim_tx.copy()
    changed.loc[after, "amount"] = changed.loc[after, "amount"] * 3 + 1
    changed.loc[after, "merchant_id"] = "m_new"
    changed.loc[after, "channel"] = "online"
    extra = sim_tx[sim_tx["event_timestamp"] <= cut].tail(50).copy()  # same keys, 1 µs after the cut
    extra["event_timestamp"] = cut + pd.Timedelta(microseconds=1)
    extra["transaction_id"] = extra["transaction_id"] + "_x"
    changed = pd.concat([changed, extra], ignore_index=True)

    base, other = compute_aggregates(sim_tx), compute_aggregates(changed)
    truncated = compute_aggregates(sim_tx[sim_tx["event_timestamp"] <= cut])
    for table in TABLES:
        a, b = base[table.name], other[table.name]
        a_before = a[a["event_timestamp"] <= cut].reset_index(drop=True)
        pd.testing.assert_frame_equal(a_before, b[b["event_timestamp"] <= cut].reset_index(drop=True))
        pd.testing.assert_frame_equal(a_before, truncated[table.name])
        assert (
            not a[a["event_timestamp"] > cut]
            .reset_index(drop=True)
            .equals(b[b["event_timestamp"] > cut].reset_index(drop=True))
        )


@pytest.mark.parametrize("where", ["mid_day", "on_a_transaction", "before_all", "after_all"])
def test_since_equals_full_computation_restricted(sim_tx: pd.DataFrame, where: str) -> None:
    ts = sim_tx["event_timestamp"]
    since = {
        "mid_day": T0 + 4 * D + 13 * H,
        "on_a_transaction": ts.iloc[len(ts) * 2 // 3],
        "before_all": ts.min() - D,
        "after_all": ts.max() + H,
    }[where]
    full = compute_aggregates(sim_tx)
    part = compute_aggregates(sim_tx, since=since)
    for table in TABLES:
        frame = full[table.name]
        expected = frame[frame["event_timestamp"] >= since].reset_index(drop=True)
        pd.testing.assert_frame_equal(part[table.name], expected)
    assert_contract(part)


# --- the offline store -----------------------------------------------------------------------------


def _read_offline(offline: Path) -> dict[str, pd.DataFrame]:
    return {t.name: pd.read_parquet(offline / f"{t.name}.parquet") for t in TABLES}


def test_write_is_idempotent_and_atomic(tmp_path: Path, sim_tx: pd.DataFrame) -> None:
    offline = tmp_path / "offline"
    full = compute_aggregates(sim_tx)
    first = write_aggregates(offline, full)
    assert first == {name: len(frame) for name, frame in full.items()}
    stored = _read_offline(offline)
    assert write_aggregates(offline, full) == first  # the same rows again: nothing added
    for table in TABLES:
        again = pd.read_parquet(offline / f"{table.name}.parquet")
        pd.testing.assert_frame_equal(again, stored[table.name])
        pd.testing.assert_frame_equal(again, full[table.name])
    assert sorted(p.name for p in offline.iterdir()) == sorted(f"{t.name}.parquet" for t in TABLES)


def test_overlapping_recomputations_converge(tmp_path: Path, sim_tx: pd.DataFrame) -> None:
    offline = tmp_path / "offline"
    ts = sim_tx["event_timestamp"]
    full = compute_aggregates(sim_tx)
    # Write the first 5 days, then recompute from day 3 with history; then a stale value is replaced.
    early = sim_tx[ts < T0 + 5 * D]
    write_aggregates(offline, compute_aggregates(early))
    stale = compute_aggregates(early, since=T0 + 3 * D)[CUSTOMER_VELOCITY.name].copy()
    stale["cust_tx_count_30d"] = -1
    write_aggregates(offline, {CUSTOMER_VELOCITY.name: stale})
    write_aggregates(offline, compute_aggregates(sim_tx, since=T0 + 3 * D))
    for name, frame in _read_offline(offline).items():
        table = next(t for t in TABLES if t.name == name)
        assert not frame.duplicated([*table.keys, "event_timestamp"]).any()
        pd.testing.assert_frame_equal(frame, full[name])
    assert not list(offline.glob(".*"))


# --- the curated store -----------------------------------------------------------------------------


def write_curated(root: Path, tx: pd.DataFrame) -> None:
    days = tx["event_timestamp"].dt.strftime("%Y-%m-%d")
    for day, rows in tx.groupby(days):
        part = root / "transactions" / f"date={day}"
        part.mkdir(parents=True, exist_ok=True)
        half = len(rows) // 2  # two batch files per day
        rows.iloc[:half].to_parquet(part / "batch_a.parquet", index=False)
        rows.iloc[half:].to_parquet(part / "batch_b.parquet", index=False)


def test_read_curated_prunes_partitions(tmp_path: Path, sim_tx: pd.DataFrame) -> None:
    curated = tmp_path / "curated"
    write_curated(curated, sim_tx)
    # An unreadable file in a partition outside the range proves it is never opened.
    (curated / "transactions" / "date=2026-01-01" / "broken.parquet").write_bytes(b"not parquet")
    (curated / "transactions" / "date=2026-01-04" / ".batch_c.parquet.tmp").write_bytes(b"in flight")
    start, end = T0 + 2 * D + 6 * H, T0 + 5 * D
    got = read_curated_event_frame(curated, start, end, use_case=FRAUD)
    ts = sim_tx["event_timestamp"]
    expected = sim_tx[(ts >= start) & (ts < end)]
    assert list(got.columns) == list(TRANSACTION_COLUMNS)
    assert {c: str(d) for c, d in got.dtypes.items()} == TRANSACTION_COLUMNS
    assert sorted(got["transaction_id"]) == sorted(expected["transaction_id"])
    assert got["event_timestamp"].is_monotonic_increasing
    with pytest.raises(Exception):  # noqa: B017 - whatever the parquet reader raises
        read_curated_event_frame(curated, use_case=FRAUD)
    assert len(read_curated_event_frame(curated, T0 + D, use_case=FRAUD)) == int((ts >= T0 + D).sum())
    assert len(read_curated_event_frame(curated, T0 + 30 * D, T0 + 31 * D, use_case=FRAUD)) == 0
    assert len(read_curated_event_frame(tmp_path / "nowhere", use_case=FRAUD)) == 0


def test_refresh_matches_full_computation(tmp_path: Path) -> None:
    tx = simulate(SimulationConfig(days=40, n_customers=40, seed=11)).transactions
    curated, offline = tmp_path / "curated", tmp_path / "offline"
    write_curated(curated, tx)
    full = compute_aggregates(tx)
    start = T0 + 36 * D
    for day in range(36, 40):  # one batch a day, the last one twice
        refresh_aggregates(curated, offline, T0 + day * D, T0 + (day + 1) * D)
    counts = refresh_aggregates(curated, offline, T0 + 39 * D, T0 + 40 * D)
    stored = _read_offline(offline)
    for table in TABLES:
        frame = full[table.name]
        expected = frame[frame["event_timestamp"] >= start].reset_index(drop=True)
        pd.testing.assert_frame_equal(stored[table.name], expected)
        assert counts[table.name] == len(expected)
    # Some device was first used more than 30 days before a refreshed row: the older partitions count.
    dev = stored[CUSTOMER_DEVICE.name]
    age = dev["event_timestamp"] - pd.to_datetime(dev["dev_first_seen_epoch_s"], unit="s", utc=True)
    assert (age > 30 * D).any()

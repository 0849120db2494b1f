"""Fresh features on the production feature store: Postgres offline store and registry, Redis online store.

The same checks as ``tests/unit/features/test_fresh.py`` (SQLite online store), against a throwaway Postgres
and Redis (``test_production_feature_store``'s servers): a world of 9 simulated days is ingested and
materialised into Redis; day 10 is served by ``FreshFeatures`` + ``OnlineFeatures`` before its batch exists
and compared with Feast's point-in-time join on Postgres once the batch is ingested. What is specific to
Redis: ``OnlineStateWriter`` writes Feast's hash layout through a compare-and-set script (older rows never
replace newer ones, a same-instant correction does), and Feast's own reader must read what it wrote.
"""

from __future__ import annotations

import itertools
import uuid

import pandas as pd
import pytest
from fresh_world import DAYS, day, ingest_history, mismatches, offline_truth, request, simulated
from local_servers import PG_USER
from test_production_feature_store import (  # noqa: F401 (servers: the module-scoped fixture)
    OFFLINE_DB,
    Servers,
    servers,
)

from loopline.config import Settings
from loopline.data.ingest import publish
from loopline.features.fresh import FreshFeatures
from loopline.features.materialize import materialize
from loopline.features.online import OnlineFeatures
from loopline.features.streaming import OnlineStateWriter, epoch_us
from loopline.platform.feast_store import feature_store
from loopline.serving.prediction_log import AnsweredFeed, LoggedPrediction, PredictionLog
from loopline.usecases.fraud.features.aggregates import compute_aggregates
from loopline.usecases.fraud.features.streaming import EventWindows, events_from_frame, table_key
from loopline.usecases.fraud.features.tables import CUSTOMER_VELOCITY

pytestmark = pytest.mark.integration

_DATABASES = itertools.count()


def _redis_client(servers: Servers):  # noqa: F811 (the imported fixture)
    import redis

    return redis.Redis(host="127.0.0.1", port=servers.redis_port)


@pytest.fixture(scope="module")
def sim():
    return simulated()


@pytest.fixture
def prod(servers: Servers, monkeypatch: pytest.MonkeyPatch, tmp_path) -> Servers:  # noqa: F811 (the fixture)
    """The production yaml pointed at the servers, with an empty Redis and an offline database of this
    test's own (aggregate tables start empty; the SQL registry is shared, its definitions are the same)."""
    import psycopg

    database = f"fresh_{next(_DATABASES)}"
    with psycopg.connect(
        host="127.0.0.1", port=servers.pg_port, user=PG_USER, dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {database}")
        conn.execute(f"CREATE DATABASE {database}")
        conn.execute(f"ALTER ROLE {PG_USER} IN DATABASE {database} SET enable_nestloop = off")
    for key, value in {**servers.env(), "LOOPLINE_FEAST_PG_DATABASE": database}.items():
        monkeypatch.setenv(key, value)
    assert database != OFFLINE_DB
    _redis_client(servers).flushall()
    return servers


@pytest.fixture
def world(prod, sim, tmp_path):
    """Days 1..9 ingested and materialised (Postgres, then Redis) in a state dir of the test's own."""
    settings = Settings(state_dir=tmp_path / "state")
    last = ingest_history(settings, sim)
    store = feature_store(settings)
    assert store.config.online_store.type == "redis" and store.config.offline_store.type == "postgres"
    return settings, sim, last


def _stored(settings: Settings, customers: list[str], *features: str) -> dict:
    """Feast's own read of customer_velocity rows in Redis."""
    return (
        feature_store(settings)
        .get_online_features(
            features=[f"customer_velocity:{f}" for f in features],
            entity_rows=[{"customer_id": c} for c in customers],
        )
        .to_dict()
    )


def _newest_velocity(transactions: pd.DataFrame) -> pd.DataFrame:
    """Offline customer_velocity row after each customer's newest transaction."""
    rows = compute_aggregates(transactions)["customer_velocity"].sort_values("event_timestamp", kind="stable")
    return rows.groupby("customer_id", observed=True).tail(1).set_index("customer_id")


def test_a_served_day_on_redis_gets_the_offline_point_in_time_features(world):
    """The whole last day, in order, in batches of 16, flushing to Redis now and then."""
    settings, sim, last = world
    online = OnlineFeatures(settings)
    fresh = FreshFeatures(settings).bootstrap()
    assert fresh.stats.curated_loaded > 0
    served = [request(r) for r in last.to_dict("records")]
    assert len(served) > 300
    got = []
    for i in range(0, len(served), 16):
        batch = served[i : i + 16]
        fresh.observe(batch)
        got.extend(online.lookup(batch, fresh))
        if i % 64 == 0:
            fresh.flush()
    stale = online.lookup(served[-200:])  # what serving saw before: the store as of the last batch
    fresh.flush()
    assert fresh.stats.write_failures == 0, fresh.stats.last_write_error
    assert fresh.stats.rows_written > 0
    # The flushes reached Redis: each customer's row is the state after its newest served transaction.
    customers = sorted(last["customer_id"].astype(str).unique())
    stored = _stored(settings, customers, "cust_last_tx_epoch_s", "cust_tx_count_24h")
    expected = _newest_velocity(sim.transactions)
    assert stored["cust_last_tx_epoch_s"] == [
        expected.loc[c, "event_timestamp"].timestamp() for c in customers
    ]
    assert stored["cust_tx_count_24h"] == [expected.loc[c, "cust_tx_count_24h"] for c in customers]

    truth = offline_truth(settings, sim, last)
    assert mismatches(online, served, got, truth) == []
    assert len(mismatches(online, served[-200:], stale, truth)) > 100  # the test can fail


def test_the_redis_writer_keeps_newer_rows_takes_corrections_and_feast_reads_them(world):
    settings, _, last = world
    store = feature_store(settings)
    writer = OnlineStateWriter(store)
    assert writer.kind == "redis"
    windows = EventWindows()
    windows.add(events_from_frame(last))
    tx = request(last.iloc[0].to_dict())
    key = table_key("customer_velocity", tx)
    newest, state = windows.state("customer_velocity", key, epoch_us(tx["event_timestamp"]))

    def read(*features: str, rows=None, view="customer_velocity") -> dict:
        """Feast's get_online_features (values; times in whole seconds under "<feature>__ts")."""
        return store.get_online_features(
            features=[f"{view}:{f}" for f in features], entity_rows=rows or [{"customer_id": key[0]}]
        ).to_dict(include_event_timestamps=True)

    def stamps(view: str, keys: list[tuple[str, ...]]) -> list[int]:
        """The rows' times in µs, as the provider's online_read (Feast's Redis reader) parses them."""
        rows = writer._provider.online_read(
            store.config, store.get_feature_view(view), [writer._entity_key(view, k) for k in keys], None
        )
        return [epoch_us(stamp) for stamp, _ in rows]

    writer.write("customer_velocity", {key: (newest, {**state, "cust_tx_count_24h": 99})})
    first = read("cust_tx_count_24h", "cust_amount_sum_24h")
    assert first["cust_tx_count_24h"] == [99]
    assert first["cust_amount_sum_24h"] == [pytest.approx(state["cust_amount_sum_24h"])]
    assert first["cust_tx_count_24h__ts"] == [newest // 10**6]  # Feast's _ts field
    assert stamps("customer_velocity", [key]) == [newest]
    writer.write(
        "customer_velocity", {key: (newest - 10**6, {**state, "cust_tx_count_24h": 1})}
    )  # older: ignored
    assert read("cust_tx_count_24h")["cust_tx_count_24h"] == [99]
    assert stamps("customer_velocity", [key]) == [newest]
    writer.write(
        "customer_velocity", {key: (newest, {**state, "cust_tx_count_24h": 7})}
    )  # same instant: a correction
    assert read("cust_tx_count_24h")["cust_tx_count_24h"] == [7]
    writer.write(
        "customer_velocity", {key: (newest + 1, {**state, "cust_tx_count_24h": 8})}
    )  # 1 µs newer: replaces
    assert read("cust_tx_count_24h")["cust_tx_count_24h"] == [8]
    assert stamps("customer_velocity", [key]) == [newest + 1]
    writer.write(
        "customer_velocity", {key: (newest, {**state, "cust_tx_count_24h": 9})}
    )  # 1 µs older: ignored
    assert read("cust_tx_count_24h")["cust_tx_count_24h"] == [8]

    # Every view, including those keyed by two columns: each row lands where Feast looks for it.
    states = {
        table: windows.latest(table, keys) for table, keys in windows.touched(windows.events_since(0)).items()
    }
    for table, rows in states.items():
        assert rows, table
        writer.write(table, rows)
    for table, rows, feature in (
        ("customer_device", states["customer_device"], "dev_tx_count_30d"),
        ("customer_channel", states["customer_channel"], "chan_tx_count_30d"),
        ("merchant_stats", states["merchant_stats"], "merch_tx_count_24h"),
    ):
        keys = sorted(rows)
        columns = {
            "customer_device": ("customer_id", "device_id"),
            "customer_channel": ("customer_id", "channel"),
            "merchant_stats": ("merchant_id",),
        }[table]
        got = read(feature, rows=[dict(zip(columns, k, strict=True)) for k in keys], view=table)
        assert got[feature] == [rows[k][1][feature] for k in keys], table
        assert got[f"{feature}__ts"] == [rows[k][0] // 10**6 for k in keys], table
        assert stamps(table, keys) == [rows[k][0] for k in keys], table
    # The customer's own row is the newest state now (its newest event of the day), not the one written above.
    newest_row = states["customer_velocity"][key]
    assert read("cust_tx_count_24h")["cust_tx_count_24h"] == [newest_row[1]["cust_tx_count_24h"]]


def test_replicas_on_redis_see_each_others_transactions_through_the_prediction_log(world, tmp_path):
    """Replica B scores a customer's next transaction right after replica A answered the previous one:
    A has written nothing to Redis yet, B learns it from the shared log."""
    settings, _, last = world
    log_a, log_b = PredictionLog(tmp_path / "predictions.db"), PredictionLog(tmp_path / "predictions.db")
    replicas = []
    for plog in (log_a, log_b):
        fresh = FreshFeatures(settings)
        fresh.served = AnsweredFeed(plog, known=fresh.windows.__contains__, settings=settings)
        replicas.append((fresh.bootstrap(), OnlineFeatures(settings), plog))
    lonely = FreshFeatures(settings).bootstrap()  # a replica that does not read the log
    customer = last["customer_id"].value_counts().index[0]
    first, second = (request(r) for r in last[last["customer_id"] == customer].head(2).to_dict("records"))
    gap = (pd.Timestamp(second["event_timestamp"]) - pd.Timestamp(first["event_timestamp"])).total_seconds()

    fresh_a, online_a, plog_a = replicas[0]
    fresh_a.observe([first])
    (features,) = online_a.lookup([first], fresh_a)
    plog_a.append(
        [
            LoggedPrediction(
                uuid.uuid4().hex,
                0.0,
                first["transaction_id"],
                customer,
                first,
                features,
                0.1,
                False,
                "champion",
                "1",
                1.0,
            )
        ]
    )  # committed before A answers
    assert fresh_a.stats.rows_written == 0
    stored = _stored(settings, [customer], "cust_last_tx_epoch_s")["cust_last_tx_epoch_s"][0]
    assert stored < pd.Timestamp(first["event_timestamp"]).timestamp()  # Redis does not know `first` yet

    fresh_b, online_b, _ = replicas[1]
    fresh_b.observe([second])
    (seen,) = online_b.lookup([second], fresh_b)
    assert seen["seconds_since_last_tx"] == pytest.approx(gap)
    assert fresh_b.stats.events_synced == 1
    lonely.observe([second])
    (unseen,) = OnlineFeatures(settings).lookup([second], lonely)
    assert unseen["seconds_since_last_tx"] != pytest.approx(gap)  # the test can fail

    # Both flush, in either order: Redis ends with the state after `second`.
    assert fresh_b.flush() > 0 and fresh_a.flush() > 0
    assert fresh_a.stats.write_failures == fresh_b.stats.write_failures == 0
    after = _stored(settings, [customer], "cust_last_tx_epoch_s")["cust_last_tx_epoch_s"][0]
    assert after == pd.Timestamp(second["event_timestamp"]).timestamp()
    log_a.close()
    log_b.close()


def test_the_batch_corrects_redis_and_never_rolls_it_back(world):
    """Half of the day is served and flushed; the day's batch also holds transactions serving never saw.
    Materialising it with the served events writes each customer's state after its newest transaction of
    the day (unscored ones counted); a state serving wrote that is newer than the batch stays."""
    settings, sim, last = world
    fresh = FreshFeatures(settings).bootstrap()
    served = last.iloc[::2]  # every other transaction reached serving
    # One customer's transaction an hour after the day, served but in no batch yet (arrives tomorrow).
    ahead = last.iloc[[-1]].copy()
    ahead["transaction_id"] = "tx_ahead"
    ahead["event_timestamp"] = pd.Timestamp(day(DAYS)) + pd.Timedelta(hours=1)
    ahead_customer = str(ahead["customer_id"].iloc[0])
    fresh.observe([request(r) for r in pd.concat([served, ahead]).to_dict("records")])
    assert fresh.flush() > 0 and fresh.stats.write_failures == 0
    customers = sorted(last["customer_id"].astype(str).unique())
    before = _stored(settings, customers, "cust_last_tx_epoch_s")

    publish(settings, last, "transactions", "day")
    materialize(
        settings, day(DAYS - 1), day(DAYS), served=fresh.windows.events_since(epoch_us(day(DAYS - 1)))
    )
    materialize(settings, day(DAYS - 1), day(DAYS))  # again without the served events: nothing goes back
    materialize(settings, day(DAYS - 3), day(DAYS - 2))  # an old interval late
    features = list(CUSTOMER_VELOCITY.features)
    after = _stored(settings, customers, *features)
    expected = _newest_velocity(pd.concat([sim.transactions, ahead], ignore_index=True))
    day_newest = last.groupby("customer_id", observed=True)["event_timestamp"].max()
    changed = 0
    for i, customer in enumerate(customers):
        assert after["cust_last_tx_epoch_s"][i] >= (before["cust_last_tx_epoch_s"][i] or 0)  # never older
        if customer != ahead_customer:
            assert after["cust_last_tx_epoch_s"][i] == day_newest[customer].timestamp()  # the day's newest
        changed += after["cust_last_tx_epoch_s"][i] != before["cust_last_tx_epoch_s"][i]
        for feature in features:  # unscored transactions count
            assert after[feature][i] == pytest.approx(expected.loc[customer, feature], rel=1e-9, abs=1e-9), (
                customer,
                feature,
            )
    assert (
        after["cust_last_tx_epoch_s"][customers.index(ahead_customer)]
        == ahead["event_timestamp"].iloc[0].timestamp()
    )
    assert changed > 10  # the batch did correct rows serving had written (the test can fail)


def test_a_row_feast_itself_wrote_newer_is_not_rolled_back_on_redis(world):
    """The compare-and-set reads Feast's own row time (``_ts``), so it holds whoever wrote the stored row:
    Feast's materialize, a push, write_to_online_store."""
    from datetime import timedelta as _td

    from loopline.features.streaming import _EPOCH
    from loopline.usecases.fraud.features.streaming import TABLES_BY_NAME

    settings, _, last = world
    store = feature_store(settings)
    writer = OnlineStateWriter(store)
    windows = EventWindows()
    windows.add(events_from_frame(last))
    tx = request(last.iloc[0].to_dict())
    key = table_key("customer_velocity", tx)
    newest, state = windows.state("customer_velocity", key, epoch_us(tx["event_timestamp"]))
    view = store.get_feature_view("customer_velocity")
    from feast.protos.feast.types.Value_pb2 import Value

    row = {**state, "cust_tx_count_24h": 42}
    feast_row = {
        name: Value(int64_val=row[name]) if dtype == "int64" else Value(double_val=row[name])
        for name, dtype in TABLES_BY_NAME["customer_velocity"].features.items()
    }
    writer._provider.online_write_batch(
        store.config,
        view,
        [
            (
                writer._entity_key("customer_velocity", key),
                feast_row,
                _EPOCH + _td(microseconds=newest + 5),
                None,
            )
        ],
        None,
    )
    writer.write(
        "customer_velocity", {key: (newest, {**state, "cust_tx_count_24h": 1})}
    )  # older than Feast's row
    read = store.get_online_features(
        features=["customer_velocity:cust_tx_count_24h"], entity_rows=[{"customer_id": key[0]}]
    ).to_dict()
    assert read["cust_tx_count_24h"] == [42]

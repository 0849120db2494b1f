"""Fresh features at scoring time: the streaming rule, replicas, the batch correction and a crash.

A world of 9 simulated days is ingested and materialised; day 10 is then "served" by ``FreshFeatures`` +
``OnlineFeatures`` (the lookup serving runs) before its batch exists, and compared with the offline
point-in-time features computed once the batch is ingested: the definition of right.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from fresh_world import DAYS, day, ingest_history, mismatches, offline_truth, request, simulated

from loopline.config import Settings
from loopline.data.ingest import publish
from loopline.features.fresh import FreshFeatures
from loopline.features.historical import historical_features
from loopline.features.materialize import materialize
from loopline.features.online import OnlineFeatures
from loopline.features.streaming import OnlineStateWriter, epoch_us
from loopline.features.watermark import materialized_until
from loopline.platform.feast_store import feature_store
from loopline.serving.prediction_log import AnsweredFeed, LoggedPrediction, PredictionLog, answered_events
from loopline.usecases.fraud.features.aggregates import compute_aggregates
from loopline.usecases.fraud.features.streaming import EventWindows, events_from_frame, table_key
from loopline.usecases.fraud.features.tables import TABLES
from loopline.usecases.fraud.simulator import SimulationConfig, simulate


@pytest.fixture(scope="module")
def sim():
    return simulated()


@pytest.fixture
def world(sim, tmp_path):
    """Days 1..9 ingested and materialised in a state dir of the test's own (tests write to its online
    store; a copied state dir would not do: Feast's apply drops the online tables of the registry's old path)."""
    settings = Settings(state_dir=tmp_path / "state")
    last = ingest_history(settings, sim)
    return settings, sim, last


@pytest.mark.parametrize("seed", [3, 17])
def test_streamed_state_equals_the_offline_aggregates(seed):
    """The per-entity computation serving runs equals the vectorised offline tables, row for row."""
    tx = simulate(SimulationConfig(days=9, n_customers=120, seed=seed)).transactions
    offline = compute_aggregates(tx)
    windows = EventWindows()
    windows.add(events_from_frame(tx.sample(frac=1.0, random_state=seed)))  # any arrival order
    for table in TABLES:
        for row in offline[table.name].to_dict("records"):
            key = tuple(str(row[k]) for k in table.keys)
            newest, state = windows.state(table.name, key, epoch_us(row["event_timestamp"]))
            assert newest == epoch_us(row["event_timestamp"])
            for feature in table.features:
                assert np.isclose(state[feature], row[feature], rtol=1e-9, atol=1e-9), (
                    table.name,
                    key,
                    feature,
                )


def test_a_transaction_never_sees_itself_and_the_next_one_of_the_customer_does(world):
    settings, _, last = world
    online = OnlineFeatures(settings)
    fresh = FreshFeatures(settings).bootstrap()
    customer = last["customer_id"].value_counts().index[0]
    first, second = (request(r) for r in last[last["customer_id"] == customer].head(2).to_dict("records"))
    same_instant = {**second, "transaction_id": "tx_same_instant"}

    fresh.observe([first])
    (seen_first,) = online.lookup([first], fresh)
    assert seen_first == online.lookup([first])[0]  # nothing newer than the store's row: itself excluded
    fresh.observe([second, same_instant])
    seen_second, seen_same = online.lookup([second, same_instant], fresh)
    gap = (pd.Timestamp(second["event_timestamp"]) - pd.Timestamp(first["event_timestamp"])).total_seconds()
    assert seen_second["seconds_since_last_tx"] == pytest.approx(gap)
    assert seen_first["seconds_since_last_tx"] != pytest.approx(gap)
    assert seen_same == seen_second  # a transaction of the same instant is not seen either (offline ties)

    fresh.flush()  # the store now holds the state after both (the newest event wins)
    stored = (
        feature_store(settings)
        .get_online_features(
            features=["customer_velocity:cust_last_tx_epoch_s"], entity_rows=[{"customer_id": customer}]
        )
        .to_dict()
    )
    assert stored["cust_last_tx_epoch_s"] == [pd.Timestamp(second["event_timestamp"]).timestamp()]


@pytest.mark.parametrize("path", ["computed", "store_and_overlay"])
def test_a_served_day_gets_the_offline_point_in_time_features(world, path, monkeypatch):
    """The whole last day, in order, in batches of 16 (same-batch customers and merchants included).

    ``computed``: the process holds the whole history, so rows are computed without reading the store (a
    store read fails the test). ``store_and_overlay``: the path of a process that does not (the store's rows,
    replaced where the process knows newer events)."""
    settings, sim, last = world
    online = OnlineFeatures(settings)
    fresh = FreshFeatures(settings).bootstrap()
    store_reads = []
    if path == "computed":
        monkeypatch.setattr(online._provider, "online_read", lambda *a, **k: store_reads.append(a) or 1 / 0)
    else:
        monkeypatch.setattr(fresh, "computes", lambda as_of_us: False)
    served = [request(r) for r in last.to_dict("records")]
    got = []
    for i in range(0, len(served), 16):
        batch = served[i : i + 16]
        fresh.observe(batch)
        got.extend(online.lookup(batch, fresh))
        if i % 64 == 0:
            fresh.flush()
    assert store_reads == []
    monkeypatch.undo()
    stale = online.lookup(served[-200:])  # what serving saw before: the store as of the last batch
    truth = offline_truth(settings, sim, last)
    assert mismatches(online, served, got, truth) == []
    assert len(mismatches(online, served[-200:], stale, truth)) > 100  # the test can fail


def test_a_transaction_older_than_the_history_held_is_looked_up_in_the_store(world, monkeypatch):
    """Rows as of an instant whose 30 days before reach past the events the process loaded are not computed
    from them alone: the lookup reads the store, and still never serves a row from after the transaction."""
    settings, sim, _ = world
    fresh = FreshFeatures(settings).bootstrap()
    early = (
        sim.transactions[sim.transactions["event_timestamp"] < day(2)].sort_values("event_timestamp").tail(30)
    )
    served = [request(r) for r in early.to_dict("records")]
    assert not fresh.computes(epoch_us(served[0]["event_timestamp"]) - 1)
    assert fresh.computes(epoch_us(day(DAYS)) - 1)
    online = OnlineFeatures(settings)
    reads = []
    read = online._provider.online_read
    monkeypatch.setattr(online._provider, "online_read", lambda *a, **k: reads.append(1) or read(*a, **k))
    got = online.lookup(served, fresh)
    assert len(reads) == len(online._reads)
    truth = historical_features(feature_store(settings), early).set_index("transaction_id")
    assert mismatches(online, served, got, truth) == []


def test_a_batch_materialised_while_serving_joins_the_process_and_its_rows_equal_the_stores(world):
    """Late or unscored transactions reach serving through materialisation: the writer thread reads the new
    batch, the next scored batch joins it, and the rows computed from then on equal the store's."""
    import time

    settings, sim, last = world
    fresh = FreshFeatures(settings, refresh_interval_s=0.05, flush_interval_s=0.02).bootstrap().start()
    try:
        publish(settings, last, "transactions", "late")  # never served: the store learns it from the batch
        materialize(settings, day(DAYS - 1), day(DAYS))
        deadline = time.monotonic() + 20
        while not fresh.knows(last["transaction_id"].iloc[-1]) and time.monotonic() < deadline:
            fresh.observe([])
            time.sleep(0.02)
        assert fresh.knows(last["transaction_id"].iloc[-1])
        after = [
            {
                **request(r),
                "transaction_id": f"next_{i}",
                "event_timestamp": (day(DAYS) + pd.Timedelta(minutes=i)).isoformat(),
            }
            for i, r in enumerate(last.drop_duplicates("customer_id").head(40).to_dict("records"))
        ]
        assert fresh.computes(epoch_us(after[0]["event_timestamp"]) - 1)
        online = OnlineFeatures(settings)
        assert online.lookup(after, fresh) == online.lookup(after)
    finally:
        fresh.close()


def test_replicas_see_each_others_transactions_through_the_prediction_log(world, tmp_path):
    """Replica B scores a customer's next transaction right after replica A answered the previous one:
    A's online write has not happened yet, B learns it from the shared log."""
    settings, _, last = world
    log_a, log_b = PredictionLog(tmp_path / "predictions.db"), PredictionLog(tmp_path / "predictions.db")
    replicas = []
    for plog in (log_a, log_b):
        fresh = FreshFeatures(settings)
        fresh.served = AnsweredFeed(plog, known=fresh.windows.__contains__, settings=settings)
        replicas.append((fresh.bootstrap(), OnlineFeatures(settings), plog))
    customer = last["customer_id"].value_counts().index[0]
    first, second = (request(r) for r in last[last["customer_id"] == customer].head(2).to_dict("records"))

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
    fresh_b, online_b, _ = replicas[1]
    fresh_b.observe([second])
    (seen,) = online_b.lookup([second], fresh_b)
    gap = (pd.Timestamp(second["event_timestamp"]) - pd.Timestamp(first["event_timestamp"])).total_seconds()
    assert seen["seconds_since_last_tx"] == pytest.approx(gap)
    assert fresh_b.stats.events_synced == 1
    log_a.close()
    log_b.close()


def test_the_batch_corrects_the_store_and_never_rolls_it_back(world):
    """Only part of the day is served; its batch also holds transactions serving never saw (late or
    unscored). Materialising the batch with the served ones recomputes each entity's newest state: equal to
    the offline truth, and not older than what serving wrote."""
    settings, sim, last = world
    fresh = FreshFeatures(settings).bootstrap()
    served = last.iloc[::2]  # every other transaction reached serving
    fresh.observe([request(r) for r in served.to_dict("records")])
    fresh.flush()
    store = feature_store(settings)
    customers = sorted(last["customer_id"].astype(str).unique())[:40]
    before = store.get_online_features(
        features=["customer_velocity:cust_last_tx_epoch_s"],
        entity_rows=[{"customer_id": c} for c in customers],
    ).to_dict()

    publish(settings, last, "transactions", "day")
    materialize(
        settings, day(DAYS - 1), day(DAYS), served=fresh.windows.events_since(epoch_us(day(DAYS - 1)))
    )
    materialize(settings, day(DAYS - 3), day(DAYS - 2))  # an old interval late, without served events
    after = store.get_online_features(
        features=["customer_velocity:cust_last_tx_epoch_s", "customer_velocity:cust_tx_count_24h"],
        entity_rows=[{"customer_id": c} for c in customers],
    ).to_dict()
    newest = last.groupby("customer_id")["event_timestamp"].max()
    counts = compute_aggregates(sim.transactions)["customer_velocity"].sort_values("event_timestamp")
    expected_count = counts.groupby("customer_id").tail(1).set_index("customer_id")["cust_tx_count_24h"]
    for i, customer in enumerate(customers):
        assert (
            after["cust_last_tx_epoch_s"][i] == newest[customer].timestamp()
        )  # the batch's newest, not older
        assert after["cust_last_tx_epoch_s"][i] >= (before["cust_last_tx_epoch_s"][i] or 0)
        assert after["cust_tx_count_24h"][i] == expected_count[customer]  # unscored transactions count


def test_a_crash_between_scoring_and_the_online_write_is_recomputed_by_the_next_materialisation(world):
    settings, sim, last = world
    plog = PredictionLog(settings.state.prediction_log)
    crashed = FreshFeatures(settings).bootstrap()  # never flushed: the process died before its write
    served = [request(r) for r in last.head(300).to_dict("records")]
    crashed.observe(served)
    plog.append(
        [
            LoggedPrediction(
                uuid.uuid4().hex,
                datetime.now(UTC).timestamp(),
                tx["transaction_id"],
                tx["customer_id"],
                tx,
                {},
                0.1,
                False,
                "champion",
                "1",
                1.0,
            )
            for tx in served
        ]
    )
    plog.close()
    online = OnlineFeatures(settings)
    probe = {
        **served[-1],
        "transaction_id": "tx_probe",
        "event_timestamp": (
            pd.Timestamp(served[-1]["event_timestamp"]) + pd.Timedelta(seconds=1)
        ).isoformat(),
    }
    before = online.lookup([probe])[0]
    # No batch has arrived; the next materialisation (any interval) runs with the logged served events.
    materialize(settings, day(DAYS - 2), day(DAYS - 1), served=answered_events(settings))
    after = online.lookup([probe])[0]
    assert before["seconds_since_last_tx"] != pytest.approx(1.0)
    assert after["seconds_since_last_tx"] == pytest.approx(1.0)  # the lost write is back
    assert materialized_until(settings) == day(DAYS - 1)  # serving's events do not move the watermark


def test_an_older_write_never_replaces_a_newer_row(world):
    settings, _, last = world
    store = feature_store(settings)
    writer = OnlineStateWriter(store)
    tx = request(last.iloc[0].to_dict())
    windows = EventWindows()
    windows.add(events_from_frame(last.head(1)))
    key = table_key("customer_velocity", tx)
    newest, state = windows.state("customer_velocity", key, epoch_us(tx["event_timestamp"]))
    writer.write("customer_velocity", {key: (newest, {**state, "cust_tx_count_24h": 99})})
    writer.write(
        "customer_velocity", {key: (newest - 10**6, {**state, "cust_tx_count_24h": 1})}
    )  # older: ignored
    read = store.get_online_features(
        features=["customer_velocity:cust_tx_count_24h"], entity_rows=[{"customer_id": key[0]}]
    ).to_dict()
    assert read["cust_tx_count_24h"] == [99]
    writer.write(
        "customer_velocity", {key: (newest, {**state, "cust_tx_count_24h": 7})}
    )  # same instant: a correction
    read = store.get_online_features(
        features=["customer_velocity:cust_tx_count_24h"], entity_rows=[{"customer_id": key[0]}]
    ).to_dict()
    assert read["cust_tx_count_24h"] == [7]


def test_check_skew_leaves_out_entities_serving_already_moved_past_the_batch(world):
    """check-skew compares at the newest materialised time; states serving wrote after it are not
    comparable there (check-served judges them) and are counted, not reported as skew."""
    from loopline.features.skew import check_skew

    settings, _, last = world
    fresh = FreshFeatures(settings).bootstrap()
    fresh.observe([request(r) for r in last.head(200).to_dict("records")])
    fresh.flush()
    report = check_skew(settings, sample=150)
    assert report.newer_online > 0 and report.compared > 0
    assert report.mismatches == 0, report.examples


def test_fresh_features_refuse_where_the_batch_history_is_not_visible(world, tmp_path):
    """A state computed without the curated history would be wrong, not stale: refuse, saying why (for
    good in Kubernetes; until the first materialisation where batches are ingested but not materialised)."""
    from loopline.features.fresh import FreshFeaturesNotReady, FreshFeaturesUnavailable
    from loopline.platform.feast_store import apply_feature_repo

    settings, sim, _ = world
    with pytest.raises(FreshFeaturesUnavailable, match="Kubernetes.*LOOPLINE_STORAGE_URL"):
        FreshFeatures(settings.model_copy(update={"mode": "kubernetes"})).bootstrap()
    unmaterialised = Settings(state_dir=tmp_path / "other")
    unmaterialised.state.ensure()
    publish(unmaterialised, sim.transactions.head(50), "transactions", "some")
    apply_feature_repo(unmaterialised)  # the views exist, no batch was materialised
    with pytest.raises(FreshFeaturesNotReady, match="no materialisation watermark"):
        FreshFeatures(unmaterialised).bootstrap()


def test_a_history_shorter_than_window_plus_ttl_is_refused_naming_the_table(world):
    """A customer's row is served up to its 30-day TTL after their newest transaction and counts the 30 days
    before it: computed from 30 days of history only, an idle customer's counts would be short, so serving
    refuses such a use case instead (the shipped 60 days pass)."""
    from dataclasses import replace

    from loopline.features.fresh import FreshFeaturesUnavailable, check_history
    from loopline.features.streaming import D30
    from loopline.usecases.fraud.features.streaming import STREAMING

    settings, _, _ = world
    store = feature_store(settings)
    check_history("fraud", STREAMING, store)
    fresh = FreshFeatures(settings)
    fresh.streaming = replace(STREAMING, history_us=D30)
    with pytest.raises(FreshFeaturesUnavailable, match="history_us is 30 d") as refused:
        fresh.bootstrap()
    assert "the longest window of 'customer_velocity' (30 d) plus its view's TTL (30 d)" in str(refused.value)
    assert "at least 60 d" in str(refused.value) and not fresh.ready


STORAGE_URL, STATE_DB_URL = "s3://loopline", "postgresql://serving:pw@postgres.example:5432/loopline"


@pytest.mark.parametrize(
    ("storage_url", "state_db_url", "missing"),
    [
        (None, None, ["LOOPLINE_STORAGE_URL", "LOOPLINE_STATE_DB_URL"]),
        (STORAGE_URL, None, ["LOOPLINE_STATE_DB_URL"]),
        (None, STATE_DB_URL, ["LOOPLINE_STORAGE_URL"]),
    ],
)
def test_fresh_features_in_kubernetes_refuse_without_the_shared_settings_naming_the_missing_one(
    tmp_path, storage_url, state_db_url, missing
):
    """A serving pod has no disk in common with the tasks: without the shared curated store and state DB its
    history would be wrong, so it refuses and says which setting to add (nothing else is touched)."""
    from loopline.features.fresh import FreshFeaturesUnavailable

    settings = Settings(
        state_dir=tmp_path / "state", mode="kubernetes", storage_url=storage_url, state_db_url=state_db_url
    )
    with pytest.raises(FreshFeaturesUnavailable, match="Kubernetes") as refused:
        FreshFeatures(settings).bootstrap()
    message = str(refused.value)
    for name in ("LOOPLINE_STORAGE_URL", "LOOPLINE_STATE_DB_URL"):
        assert (f"{name} (" in message) == (name in missing), message
    assert "last materialisation" in message


def test_fresh_features_in_kubernetes_bootstrap_from_the_shared_settings(tmp_path):
    """With both settings the Kubernetes refusal is passed and bootstrap goes on to read the watermark from
    the state database (unreachable here: the shared services themselves are the distributed profile's tests)."""
    from loopline.features.fresh import FreshFeaturesUnavailable

    unreachable = "postgresql://serving:pw@127.0.0.1:1/loopline"
    settings = Settings(
        state_dir=tmp_path / "state", mode="kubernetes", storage_url=STORAGE_URL, state_db_url=unreachable
    )
    fresh = FreshFeatures(settings)
    fresh.writer = object()  # no Feast store: the online writer is not what this checks
    with pytest.raises(ConnectionError, match="LOOPLINE_STATE_DB_URL") as failed:
        fresh.bootstrap()
    assert not isinstance(failed.value, FreshFeaturesUnavailable)


@pytest.mark.parametrize(
    ("value", "dtype"),
    [
        (0, "int64"),
        (1, "int64"),
        (300, "int64"),
        (2**40, "int64"),
        (-5, "int64"),
        (0.0, "float64"),
        (-1.5, "float64"),
        (1736935380.123456, "float64"),
        (1e-300, "float64"),
    ],
)
def test_values_are_encoded_exactly_as_feast_serialises_them(value, dtype):
    from feast.protos.feast.types.Value_pb2 import Value

    from loopline.features.streaming import encode_value

    proto = Value(int64_val=value) if dtype == "int64" else Value(double_val=value)
    assert encode_value(value, dtype)[0] == proto.SerializeToString()


def test_serving_started_before_the_first_materialisation_turns_fresh_features_on_when_it_lands(
    sim, tmp_path
):
    """`loopline up` starts serving before any batch: fresh features wait (no feature view registered yet)
    and switch on by themselves once materialisation has run."""
    import time

    settings = Settings(state_dir=tmp_path / "state")
    settings.state.ensure()
    fresh = FreshFeatures(settings, refresh_interval_s=0.05, flush_interval_s=0.02)
    with pytest.raises(Exception, match="customer_velocity"):
        fresh.bootstrap()
    fresh.start()
    first = request(sim.transactions.iloc[0].to_dict())
    fresh.observe([first])  # not ready: nothing happens, nothing breaks
    assert not fresh.ready and fresh.fresher("customer_velocity", ("c",), 0, None) is not None
    publish(settings, sim.transactions[sim.transactions["event_timestamp"] < day(3)], "transactions", "first")
    materialize(settings, day(0), day(3))
    deadline = time.monotonic() + 20
    while not fresh.ready and time.monotonic() < deadline:
        time.sleep(0.05)
    fresh.close()
    assert fresh.ready and len(fresh.windows) > 0


def test_the_gates_serving_probes_never_count_as_transactions(world, tmp_path):
    """The gate probes a candidate through a serving process that logs what it scores: those rows are not
    transactions, so neither the replicas' feed nor materialisation may count them."""
    from loopline.gating.infra import probe_requests

    settings, _, last = world
    plog = PredictionLog(settings.state.prediction_log)
    real, probe = (request(r) for r in last.head(2).to_dict("records"))
    (probe,) = probe_requests([probe], "7")
    plog.append(
        [
            LoggedPrediction(
                uuid.uuid4().hex,
                datetime.now(UTC).timestamp(),
                tx["transaction_id"],
                tx["customer_id"],
                tx,
                {},
                0.1,
                False,
                "champion",
                "7",
                1.0,
            )
            for tx in (real, probe)
        ]
    )
    assert [e.transaction_id for e in answered_events(settings)] == [real["transaction_id"]]
    assert [
        e.transaction_id
        for e in AnsweredFeed(plog, settings=settings).backlog(datetime(2000, 1, 1, tzinfo=UTC))
    ] == [real["transaction_id"]]
    with pytest.raises(TypeError, match="needs the settings"):
        AnsweredFeed(plog)  # never the process environment's use case
    plog.close()

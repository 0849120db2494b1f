from loopline.features.intervals import interval_from_events


def test_interval_covers_the_published_transaction_days_only():
    events = [
        {
            "kind": "transactions",
            "batch_id": "b2",
            "partitions": [
                "transactions/date=2026-01-03/b2.parquet",
                "transactions/date=2026-01-04/b2.parquet",
            ],
        },
        {"kind": "labels", "batch_id": "l1", "partitions": ["labels/date=2026-02-01/l1.parquet"]},
        {"kind": "transactions", "batch_id": "b1", "partitions": ["transactions/date=2026-01-02/b1.parquet"]},
    ]
    assert interval_from_events(events, "transactions") == {
        "start": "2026-01-02T00:00:00+00:00",
        "end": "2026-01-05T00:00:00+00:00",
        "batches": ["b1", "b2"],
    }


def test_label_batches_alone_need_no_materialisation():
    assert (
        interval_from_events(
            [{"kind": "labels", "partitions": ["labels/date=2026-02-01/x.parquet"]}], "transactions"
        )
        is None
    )
    assert interval_from_events([], "transactions") is None


def test_pending_interval_follows_the_ingest_ledger_not_the_events(state_dir):
    from loopline.config import Settings
    from loopline.data.ingest import IngestLedger, IngestResult
    from loopline.features.intervals import pending_interval

    settings = Settings(state_dir=state_dir)
    ledger = IngestLedger(settings.state.ingest_ledger)

    def published(batch, kind, days):
        ledger.record(
            IngestResult(
                status="published",
                batch_id=batch,
                kind=kind,
                source=batch,
                content_hash=batch,
                rows=1,
                partitions=[f"{kind}/date={d}/{batch}.parquet" for d in days],
            )
        )

    assert pending_interval(settings.state.ingest_ledger, 0, "transactions") is None
    published("t1", "transactions", ["2026-01-01"])
    published("l1", "labels", ["2026-01-09"])
    published("t2", "transactions", ["2026-01-03", "2026-01-02"])
    everything = pending_interval(settings.state.ingest_ledger, 0, "transactions")
    assert (everything["start"], everything["end"]) == (
        "2026-01-01T00:00:00+00:00",
        "2026-01-04T00:00:00+00:00",
    )
    assert everything["batches"] == ["t1", "t2"] and everything["cursor"] == 3
    later = pending_interval(settings.state.ingest_ledger, 1, "transactions")
    assert later["batches"] == ["t2"] and later["start"].startswith("2026-01-02")
    assert pending_interval(settings.state.ingest_ledger, 3, "transactions") is None


def test_the_interval_follows_the_use_cases_events_folder():
    """Delivery's events land as orders: its order days need features, its deliveries (labels) none."""
    events = [
        {"kind": "orders", "batch_id": "o1", "partitions": ["orders/date=2026-03-02/o1.parquet"]},
        {"kind": "deliveries", "batch_id": "d1", "partitions": ["deliveries/date=2026-03-05/d1.parquet"]},
    ]
    assert interval_from_events(events, "orders") == {
        "start": "2026-03-02T00:00:00+00:00",
        "end": "2026-03-03T00:00:00+00:00",
        "batches": ["o1"],
    }
    assert interval_from_events(events, "transactions") is None

from loopline.features.intervals import interval_from_events


def test_interval_covers_the_published_transaction_days_only():
    events = [
        {"kind": "transactions", "batch_id": "b2",
         "partitions": ["transactions/date=2026-01-03/b2.parquet", "transactions/date=2026-01-04/b2.parquet"]},
        {"kind": "labels", "batch_id": "l1", "partitions": ["labels/date=2026-02-01/l1.parquet"]},
        {"kind": "transactions", "batch_id": "b1", "partitions": ["transactions/date=2026-01-02/b1.parquet"]},
    ]
    assert interval_from_events(events) == {
        "start": "2026-01-02T00:00:00+00:00",
        "end": "2026-01-05T00:00:00+00:00",
        "batches": ["b1", "b2"],
    }


def test_label_batches_alone_need_no_materialisation():
    assert interval_from_events([{"kind": "labels", "partitions": ["labels/date=2026-02-01/x.parquet"]}]) is None
    assert interval_from_events([]) is None

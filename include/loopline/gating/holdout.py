"""The gate's holdout: the newest labelled days, after the training window, with point-in-time features.

The train_model DAG builds its training set with ``end = holdout_start`` and gates on the holdout, so
no holdout transaction (nor anything later) can have been trained on.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from loopline.config import Settings
from loopline.features.store import TrainingSetManifest, build_training_set, read_labels
from loopline.gating.policy import GatePolicy


class HoldoutError(RuntimeError):
    """No usable holdout: too little labelled data, or nothing left to train on before it."""


class Windows(NamedTuple):
    train_end: datetime
    holdout_start: datetime
    holdout_end: datetime


def labelled_range(settings: Settings, labels_as_of: datetime | None = None) -> tuple[datetime, datetime]:
    """[first labelled transaction, last *confirmed-genuine* labelled transaction + 1 µs).

    Chargebacks (fraud) arrive within days, confirmations of genuine transactions only after a maturity
    window: beyond the newest confirmed-genuine transaction the labels present are nearly all fraud, and
    a holdout there would be biased. Ending at that frontier keeps the holdout's labels complete."""
    import pandas as pd

    from loopline.features.aggregates import read_curated_transactions

    labels = read_labels(settings, labels_as_of or datetime.now(UTC))
    if labels.empty:
        raise HoldoutError("the curated store has no labels yet: ingest label batches before gating")
    events = read_curated_transactions(settings.state.curated, columns=["transaction_id", "event_timestamp"])
    joined = events.merge(labels[["transaction_id", "is_fraud"]], on="transaction_id", how="inner")
    genuine = joined[joined["is_fraud"] == 0]
    if genuine.empty:
        raise HoldoutError(f"none of the {len(joined)} labelled transactions is a confirmed genuine one yet: "
                           "wait for the label maturity window to pass")
    first = pd.Timestamp(joined["event_timestamp"].min()).to_pydatetime().astimezone(UTC)
    last = pd.Timestamp(genuine["event_timestamp"].max()).to_pydatetime().astimezone(UTC)
    return first, last + timedelta(microseconds=1)


def plan_windows(settings: Settings, policy: GatePolicy, labels_as_of: datetime | None = None) -> Windows:
    """(train_end, holdout_start, holdout_end): the holdout is the newest ``policy.holdout.days`` of
    labelled data; training uses everything before it (``train_end == holdout_start``)."""
    first, end = labelled_range(settings, labels_as_of)
    start = end - timedelta(days=policy.holdout.days)
    if start <= first:
        raise HoldoutError(
            f"labelled data spans {first.isoformat()} .. {end.isoformat()}, not more than the holdout's "
            f"{policy.holdout.days} days: nothing would be left to train on (simulate/ingest more days or "
            "shorten holdout.days in the gate policy)")
    return Windows(train_end=start, holdout_start=start, holdout_end=end)


def build_holdout(settings: Settings, policy: GatePolicy, out: Path,
                  labels_as_of: datetime | None = None) -> TrainingSetManifest:
    """Build the holdout parquet (+ manifest) for the planned window with ``build_training_set``, and
    refuse one with too few labelled or fraud rows to judge a model on."""
    windows = plan_windows(settings, policy, labels_as_of)
    manifest = build_training_set(settings, Path(out), start=windows.holdout_start, end=windows.holdout_end,
                                  labels_as_of=labels_as_of)
    h = policy.holdout
    if manifest.labelled_rows < h.min_labelled_rows or manifest.fraud_rows < h.min_fraud_rows:
        raise HoldoutError(
            f"the holdout [{manifest.start}, {manifest.end}) has {manifest.labelled_rows} labelled rows and "
            f"{manifest.fraud_rows} fraud rows; the gate policy needs at least {h.min_labelled_rows} and "
            f"{h.min_fraud_rows} (raise holdout.days or lower the minimums in include/config/gate.yaml)")
    return manifest

"""Whole runs: a run in memory (:func:`simulate`) or written into a landing directory (:func:`write_run`,
one transactions batch per day, one labels batch per day on which labels land, optionally a bad batch)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from loopline.config.use_case import DemoPlan, SimulationRequest
from loopline.data.batch_files import BATCH_FORMATS, write_frame
from loopline.usecases.fraud.simulator.bad_batches import BAD_KINDS, write_bad_batch
from loopline.usecases.fraud.simulator.config import DRIFT_KINDS, SimulationConfig
from loopline.usecases.fraud.simulator.day import DayBatch, Simulator
from loopline.usecases.fraud.simulator.draws import _rng


@dataclass
class Simulation:
    """A whole run in memory (tests, notebooks)."""

    config: SimulationConfig
    days: list[DayBatch]

    @functools.cached_property
    def transactions(self) -> pd.DataFrame:
        return pd.concat([d.transactions for d in self.days], ignore_index=True)

    @functools.cached_property
    def labels(self) -> pd.DataFrame:
        """The label of every transaction (also those landing after the run)."""
        return pd.concat([d.transaction_labels for d in self.days], ignore_index=True)

    @functools.cached_property
    def landed_labels(self) -> pd.DataFrame:
        """The label batches that land within the run, concatenated."""
        return pd.concat([d.labels for d in self.days], ignore_index=True)

    @functools.cached_property
    def patterns(self) -> pd.Series:
        patterns: pd.Series = pd.concat([d.patterns for d in self.days], ignore_index=True)
        return patterns


def simulate(config: SimulationConfig) -> Simulation:
    return Simulation(config, list(Simulator(config).days()))


def batch_path(out: Path, kind: str, day: date, fmt: str, suffix: str = "") -> Path:
    """``out/<kind>/<kind>_<YYYY-MM-DD><suffix>.<fmt>``, the landing layout."""
    return (Path(out) if isinstance(out, str) else out) / kind / f"{kind}_{day.isoformat()}{suffix}.{fmt}"


def write_run(
    config: SimulationConfig,
    out: Path,
    fmt: str = "parquet",
    bad: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Simulate ``config`` into ``out`` (the landing layout) and return a summary.

    One transactions batch per day; one labels batch per day on which labels land (days without any,
    such as the first day of a run, get no file; labels landing after the last day are not written).
    With ``bad``, the bad batch of that kind made from the first day's transactions is written next to
    it as ``transactions_<first day>_bad-<kind>.<fmt>``.
    """
    from tqdm import tqdm

    if fmt not in BATCH_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid formats: {', '.join(BATCH_FORMATS)}")
    if bad is not None:
        if bad not in BAD_KINDS:
            raise ValueError(f"unknown bad-batch kind {bad!r}; valid kinds: {', '.join(BAD_KINDS)}")
    config.validate()
    out = Path(out).resolve() if isinstance(out, str | Path) else out  # or a path on object storage
    transaction_files: list[str] = []
    label_files: list[str] = []
    rows = fraud = label_rows = 0
    bad_file: str | None = None
    days = tqdm(
        Simulator(config).days(),
        total=config.days,
        unit="day",
        desc="simulate",
        disable=not progress,
        leave=False,
    )
    for batch in days:
        path = batch_path(out, "transactions", batch.day, fmt)
        write_frame(batch.transactions, path, fmt)
        transaction_files.append(str(path))
        rows += len(batch.transactions)
        fraud += int(batch.transaction_labels["is_fraud"].sum())
        if len(batch.labels):
            path = batch_path(out, "labels", batch.day, fmt)
            write_frame(batch.labels, path, fmt)
            label_files.append(str(path))
            label_rows += len(batch.labels)
        if bad is not None and batch.index == 0:
            path = batch_path(out, "transactions", batch.day, fmt, suffix=f"_bad-{bad}")
            write_bad_batch(bad, batch.transactions, path, fmt, _rng(config.seed, 99))
            bad_file = str(path)
    drift = None
    if config.drift is not None:
        drift = {
            "kind": config.drift.kind,
            "from_day": config.drift.from_day,
            "from_date": config.day(config.drift.from_day).isoformat(),
            "description": DRIFT_KINDS[config.drift.kind],
        }
    return {
        "out": str(out),
        "days": config.days,
        "start": config.start.isoformat(),
        "end": config.end.isoformat(),
        "seed": config.seed,
        "customers": config.n_customers,
        "format": fmt,
        "transactions": rows,
        "fraud_transactions": fraud,
        "fraud_rate": round(fraud / rows, 6) if rows else 0.0,
        "label_files": len(label_files),
        "label_rows": label_rows,
        "transaction_files": transaction_files,
        "bad_file": bad_file,
        "drift": drift,
    }


DEMO_AMOUNT_FACTOR = 6.0


def account_takeover(transaction: dict[str, Any]) -> dict[str, Any]:
    """The same customer, far larger amounts, card-not-present, abroad: the pattern of an account takeover
    wave (the model's inputs and its scores shift): the demo's live drift."""
    return {
        **transaction,
        "amount": round(float(transaction["amount"]) * DEMO_AMOUNT_FACTOR, 2),
        "channel": "online",
        "merchant_country": "US",
    }


class FraudWorldSimulation:
    """The fraud use case's :class:`~loopline.config.use_case.WorldSimulator`: card traffic through
    :func:`write_run` (``loopline simulate``, the demo)."""

    drift_kinds = DRIFT_KINDS
    options = {
        "customers": "number of customers (default 2000)",
        "bad": "also write a bad batch of this kind for the first day (see --list-bad)",
    }
    bad_kinds = BAD_KINDS
    # Labels of genuine transactions mature after 7 days: three weeks leave two weeks of labelled history,
    # the newest days of which are the gate's holdout. 8 epochs: a model that clears the gate in well under
    # a minute.
    demo = DemoPlan(
        days=21,
        epochs=8,
        live_drift=account_takeover,
        live_drift_description=f"amounts x{DEMO_AMOUNT_FACTOR:g}, online, abroad",
        options={"customers": 1000, "bad": "duplicate_ids"},
    )

    def write(self, request: SimulationRequest, progress: bool = False) -> dict[str, Any]:
        from loopline.usecases.fraud.simulator.config import DEFAULT_CUSTOMERS, Drift

        drift = Drift(request.drift, request.drift_from) if request.drift is not None else None
        config = SimulationConfig(
            days=request.days,
            start=request.start,
            seed=request.seed,
            n_customers=int(request.options.get("customers") or DEFAULT_CUSTOMERS),
            drift=drift,
        )
        summary = write_run(
            config, request.out, fmt=request.fmt, bad=request.options.get("bad"), progress=progress
        )
        bad_files = [summary["bad_file"]] if summary["bad_file"] else []
        summary["files"] = len(summary["transaction_files"]) + summary["label_files"] + len(bad_files)
        summary["bad_files"] = bad_files
        return summary

    def describe(self, summary: dict[str, Any]) -> str:
        lines = [
            f"Simulated {summary['days']} days ({summary['start']} .. {summary['end']}, seed {summary['seed']}): "
            f"{summary['transactions']:,} transactions, fraud rate {summary['fraud_rate']:.2%}",
            f"  {len(summary['transaction_files'])} transaction batches in {summary['out']}/transactions",
            f"  {summary['label_files']} label batches ({summary['label_rows']:,} labels) in {summary['out']}/labels",
        ]
        if summary["drift"]:
            drift = summary["drift"]
            lines.append(
                f"  drift: {drift['kind']} from day {drift['from_day']} ({drift['from_date']}): "
                f"{drift['description']}"
            )
        if summary["bad_file"]:
            lines.append(f"  bad batch: {summary['bad_file']}")
        return "\n".join(lines)


SIMULATION = FraudWorldSimulation()

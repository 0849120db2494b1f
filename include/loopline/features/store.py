"""Loopline's feature store: materialisation, point-in-time training sets, online retrieval, skew.

Everything goes through one versioned Feast FeatureService (``fraud_detection_v1``), so training and
serving ask for the same features computed by the same definitions.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopline.config import Settings
from loopline.platform.feast_store import apply_feature_repo, feature_store
from loopline.platform.files import exclusive_lock, sha256_file

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore

FEATURE_SERVICE = "fraud_detection_v1"
# Entity and request columns every lookup needs (join keys of the views + the request source).
ENTITY_COLUMNS = ("customer_id", "merchant_id", "device_id", "channel")
REQUEST_COLUMNS = ("amount", "event_epoch_s")
# Transaction columns the model uses directly (categoricals) or the gate needs (fairness groups).
PASSTHROUGH_COLUMNS = ("merchant_category", "merchant_country", "customer_age_band", "customer_region")
# Late data: each materialisation re-reads this much before the batch's interval.
MATERIALIZE_OVERLAP = timedelta(days=1)
ONE_MICROSECOND = timedelta(microseconds=1)


class FeatureRowsMismatch(RuntimeError):
    """Rows went missing or were duplicated between the entity rows and the features: never silent."""


def _epoch_seconds(timestamps: pd.Series) -> pd.Series:
    """UTC timestamps (any resolution) as float seconds since the epoch."""
    return timestamps.dt.tz_convert("UTC").astype("datetime64[us, UTC]").astype("int64") / 1e6


def entity_rows(transactions: pd.DataFrame) -> pd.DataFrame:
    """Entity rows for point-in-time joins: each transaction joined 1 µs before it happened, so it sees
    the state after the previous transactions only — the same state serving sees when scoring it."""
    import pandas as pd

    timestamps = pd.to_datetime(transactions["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    rows = transactions[["transaction_id", *ENTITY_COLUMNS, "amount"]].copy()
    rows["event_epoch_s"] = _epoch_seconds(timestamps)
    rows["event_timestamp"] = timestamps - ONE_MICROSECOND
    return rows.reset_index(drop=True)


def service(store: FeatureStore, name: str = FEATURE_SERVICE):
    return store.get_feature_service(name)


def feature_names(store: FeatureStore, name: str = FEATURE_SERVICE) -> list[str]:
    """The feature columns the service returns, in a stable order."""
    return [f.name for projection in service(store, name).feature_view_projections for f in projection.features]


def historical_features(store: FeatureStore, transactions: pd.DataFrame, name: str = FEATURE_SERVICE) -> pd.DataFrame:
    """Point-in-time features for each transaction; one output row per input row, or an error."""
    entities = entity_rows(transactions)
    if entities["transaction_id"].duplicated().any():
        raise FeatureRowsMismatch("transaction ids repeat in the entity rows: deduplicate the input first")
    frame = store.get_historical_features(entity_df=entities, features=service(store, name)).to_df()
    if len(frame) != len(entities) or set(frame["transaction_id"]) != set(entities["transaction_id"]):
        raise FeatureRowsMismatch(
            f"the point-in-time join returned {len(frame)} rows for {len(entities)} transactions; "
            "rows must never be dropped or duplicated (check the offline store and the entity timestamps)"
        )
    return frame


# --- materialisation --------------------------------------------------------------------------------


def _watermark_path(settings: Settings) -> Path:
    return settings.state.feast_dir / "materialized_until.json"


def _watermark(settings: Settings) -> dict[str, Any]:
    path = _watermark_path(settings)
    return json.loads(path.read_text()) if path.exists() else {}


def materialized_until(settings: Settings) -> datetime | None:
    """The newest event time the online store holds state for."""
    until = _watermark(settings).get("until")
    return datetime.fromisoformat(until) if until else None


def materialized_cursor(settings: Settings) -> int:
    """The ingest-ledger position up to which published batches are materialised."""
    return int(_watermark(settings).get("ledger_cursor", 0))


@dataclass(frozen=True)
class MaterializeResult:
    start: str
    end: str
    offline_rows: dict[str, int]
    online_window: tuple[str, str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _materialize_lock(settings: Settings) -> contextlib.AbstractContextManager[None]:
    """The offline tables are read-merge-rewritten: one materialisation at a time per state dir."""
    return exclusive_lock(settings.state.feast_dir / ".materialize.lock")


def materialize(
    settings: Settings, start: datetime, end: datetime, ledger_cursor: int | None = None
) -> MaterializeResult:
    """Compute the aggregates of transactions in [start, end) and load them into the online store.

    The online load re-reads ``MATERIALIZE_OVERLAP`` before ``start`` (late data) and always runs up to
    the newest materialised time, so loading an old interval late never replaces newer online state.
    ``ledger_cursor`` records which published batches this covers (see ``features.intervals``).
    """
    import pandas as pd

    from loopline.features.aggregates import refresh_aggregates

    with _materialize_lock(settings):
        rows = refresh_aggregates(
            settings.state.curated, settings.state.feast_offline_dir, pd.Timestamp(start), pd.Timestamp(end)
        )
        # Apply the definitions first (idempotent): a changed feature repo takes effect with the next run.
        store = apply_feature_repo(settings)
        until = max(end, materialized_until(settings) or end)
        window = (start - MATERIALIZE_OVERLAP, until)
        store.materialize(start_date=window[0], end_date=window[1])
        cursor = max(ledger_cursor or 0, materialized_cursor(settings))
        _watermark_path(settings).write_text(json.dumps({"until": until.isoformat(), "ledger_cursor": cursor}))
    return MaterializeResult(
        start=start.isoformat(), end=end.isoformat(), offline_rows=rows,
        online_window=(window[0].isoformat(), window[1].isoformat()),
    )


def curated_time_range(settings: Settings) -> tuple[datetime, datetime] | None:
    """[first event, last event + 1 µs) over the curated transactions, or None when there are none."""
    import pyarrow.dataset as ds

    folder = settings.state.curated / "transactions"
    files = sorted(folder.glob("date=*/*.parquet"))
    if not files:
        return None
    table = ds.dataset([str(f) for f in files], format="parquet").to_table(columns=["event_timestamp"])
    column = table.column(0)
    import pyarrow.compute as pc

    low, high = pc.min(column).as_py(), pc.max(column).as_py()
    return low.astimezone(UTC), high.astimezone(UTC) + ONE_MICROSECOND


# --- training sets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingSetManifest:
    path: str
    content_hash: str
    rows: int
    labelled_rows: int
    fraud_rows: int
    label_rate: float | None
    start: str
    end: str
    labels_as_of: str
    feature_service: str
    feature_service_version: str
    features: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    created_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_labels(settings: Settings, as_of: datetime) -> pd.DataFrame:
    """Curated labels known at ``as_of`` (label delay honoured: later labels do not exist yet)."""
    import pandas as pd

    files = sorted((settings.state.curated / "labels").glob("date=*/*.parquet"))
    if not files:
        return pd.DataFrame({"transaction_id": pd.Series(dtype="string"), "is_fraud": pd.Series(dtype="Int64"),
                             "label_timestamp": pd.Series(dtype="datetime64[us, UTC]")})
    labels = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    labels = labels[labels["label_timestamp"] <= pd.Timestamp(as_of)]
    if labels["transaction_id"].duplicated().any():
        raise FeatureRowsMismatch("a transaction has more than one label in the curated store")
    return labels


def build_training_set(
    settings: Settings,
    out: Path,
    start: datetime | None = None,
    end: datetime | None = None,
    labels_as_of: datetime | None = None,
    name: str = FEATURE_SERVICE,
) -> TrainingSetManifest:
    """Transactions in [start, end) with their labels (as known at ``labels_as_of``, default now) and
    point-in-time features → ``out`` (parquet) + ``out.manifest.json``. Every transaction yields one
    row; unlabelled ones keep an empty label so counts reconcile."""
    import pandas as pd

    from loopline.features.aggregates import read_curated_transactions

    span = curated_time_range(settings)
    if span is None:
        raise FeatureRowsMismatch("the curated store has no transactions yet: ingest some batches first")
    start, end = start or span[0], end or span[1]
    labels_as_of = labels_as_of or datetime.now(UTC)
    transactions = read_curated_transactions(settings.state.curated, pd.Timestamp(start), pd.Timestamp(end))
    stamps = transactions["event_timestamp"]
    transactions = transactions[(stamps >= pd.Timestamp(start)) & (stamps < pd.Timestamp(end))]
    if transactions.empty:
        raise FeatureRowsMismatch(f"no curated transactions in [{start}, {end})")
    labels = read_labels(settings, labels_as_of)
    labelled = transactions.merge(labels, on="transaction_id", how="left", validate="one_to_one")
    store = feature_store(settings)
    features = historical_features(store, transactions, name)
    feature_cols = feature_names(store, name)
    frame = labelled[["transaction_id", "event_timestamp", *ENTITY_COLUMNS, "amount", *PASSTHROUGH_COLUMNS,
                      "is_fraud", "label_timestamp"]].merge(
        features[["transaction_id", *feature_cols]], on="transaction_id", how="inner", validate="one_to_one"
    )
    if len(frame) != len(transactions):
        raise FeatureRowsMismatch(f"{len(transactions)} transactions became {len(frame)} training rows")
    frame["is_fraud"] = frame["is_fraud"].astype("Int64")
    frame = frame.sort_values(["event_timestamp", "transaction_id"], kind="stable").reset_index(drop=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, out)
    digest = sha256_file(out)
    labelled_rows = int(frame["is_fraud"].notna().sum())
    fraud_rows = int(frame["is_fraud"].fillna(0).sum())
    svc = service(store, name)
    manifest = TrainingSetManifest(
        path=str(out), content_hash=digest, rows=len(frame), labelled_rows=labelled_rows, fraud_rows=fraud_rows,
        label_rate=round(fraud_rows / labelled_rows, 6) if labelled_rows else None,
        start=pd.Timestamp(start).isoformat(), end=pd.Timestamp(end).isoformat(),
        labels_as_of=labels_as_of.isoformat(), feature_service=svc.name,
        feature_service_version=svc.tags.get("version", ""), features=feature_cols, columns=list(frame.columns),
        created_at=datetime.now(UTC).isoformat(),
    )
    out.with_name(out.name + ".manifest.json").write_text(json.dumps(manifest.to_dict(), indent=2))
    return manifest


# --- online retrieval -------------------------------------------------------------------------------


class OnlineFeatures:
    """The lookup serving uses: online features of the same feature service, per transaction."""

    def __init__(self, settings: Settings, name: str = FEATURE_SERVICE) -> None:
        self.store = feature_store(settings)
        self.service = service(self.store, name)
        self.names = feature_names(self.store, name)

    def lookup(self, transactions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Features for each transaction (dicts with the entity columns, amount and event_timestamp)."""
        import pandas as pd

        rows = []
        for tx in transactions:
            stamp = pd.Timestamp(tx["event_timestamp"])
            stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
            rows.append({**{k: tx[k] for k in ENTITY_COLUMNS}, "amount": float(tx["amount"]),
                         "event_epoch_s": stamp.value / 1e9})
        result = self.store.get_online_features(features=self.service, entity_rows=rows).to_dict()
        return [{name: result[name][i] for name in self.names} for i in range(len(rows))]


# --- training/serving skew --------------------------------------------------------------------------


@dataclass(frozen=True)
class SkewReport:
    compared: int
    mismatches: int
    features: int
    mismatched_features: dict[str, int]
    examples: list[dict[str, Any]]
    at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _missing(value: Any) -> bool:
    import math

    return value is None or (isinstance(value, float) and math.isnan(value))


def _same(a: Any, b: Any) -> bool:
    import math

    if _missing(a) or _missing(b):
        return _missing(a) and _missing(b)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-6)
    return a == b


def check_skew(settings: Settings, sample: int = 200, seed: int = 0) -> SkewReport:
    """Online features vs offline point-in-time features for the same entities at the same time.

    Samples the newest transaction of ``sample`` customers and asks both stores for the features a
    transaction with the same entities and amount would get right after everything materialised.
    """
    import pandas as pd

    from loopline.features.aggregates import read_curated_transactions

    until = materialized_until(settings)
    if until is None:
        raise FeatureRowsMismatch("nothing is materialised yet: run `loopline features materialize` first")
    transactions = read_curated_transactions(
        settings.state.curated, pd.Timestamp(until) - pd.Timedelta(days=30), pd.Timestamp(until)
    )
    latest = transactions.sort_values("event_timestamp").groupby("customer_id", observed=True).tail(1)
    probe = latest.sample(n=min(sample, len(latest)), random_state=seed).copy()
    at = pd.Timestamp(until)
    probe["event_timestamp"] = at + pd.Timedelta(microseconds=1)  # joined at `until`: after everything
    probe["transaction_id"] = [f"skew_probe_{i}" for i in range(len(probe))]
    online = OnlineFeatures(settings)
    online_rows = online.lookup(probe.to_dict("records"))
    offline = historical_features(online.store, probe).set_index("transaction_id")
    mismatched: dict[str, int] = {}
    examples: list[dict[str, Any]] = []
    bad_rows = 0
    for tx, online_row in zip(probe["transaction_id"], online_rows, strict=True):
        offline_row = offline.loc[tx]
        diffs = {n: (online_row[n], offline_row[n]) for n in online.names if not _same(online_row[n], _py(offline_row[n]))}
        if diffs:
            bad_rows += 1
            for n in diffs:
                mismatched[n] = mismatched.get(n, 0) + 1
            if len(examples) < 5:
                examples.append({"transaction": tx, "diffs": {n: [str(a), str(b)] for n, (a, b) in diffs.items()}})
    return SkewReport(compared=len(probe), mismatches=bad_rows, features=len(online.names),
                      mismatched_features=mismatched, examples=examples, at=at.isoformat())


def _py(value: Any) -> Any:
    import pandas as pd

    if value is pd.NA or value is None:
        return None
    return value.item() if hasattr(value, "item") else value

"""The data contract of Loopline's default use case (card-fraud detection).

One place names the columns, types and vocabularies of the two kinds of batch that land: card
transactions, and labels (chargebacks / confirmations) that arrive days later. The simulator writes
this contract, the Great Expectations suites in ``include/loopline/usecases/fraud/expectations/`` enforce it, the
feature stage reads it.
"""

from __future__ import annotations

from typing import Final, Literal

BatchKind = Literal["transactions", "labels"]
BATCH_KINDS: Final[tuple[BatchKind, ...]] = ("transactions", "labels")

# Column → pandas dtype as written to parquet. Timestamps are UTC (datetime64[us, UTC]).
TRANSACTION_COLUMNS: Final[dict[str, str]] = {
    "transaction_id": "string",  # unique across all batches, e.g. "tx_000000123456"
    "event_timestamp": "datetime64[us, UTC]",  # when the card was used
    "customer_id": "string",  # e.g. "c_00042"
    "card_id": "string",  # e.g. "card_00042_1"; a customer has 1-3 cards
    "merchant_id": "string",  # e.g. "m_0007"
    "merchant_category": "string",  # see MERCHANT_CATEGORIES (new ones may appear: a warning)
    "merchant_country": "string",  # ISO 3166-1 alpha-2
    "amount": "float64",  # in EUR, > 0
    "channel": "string",  # see CHANNELS
    "device_id": "string",  # device or terminal fingerprint; never null
    "customer_age_band": "string",  # fairness group attribute, see AGE_BANDS
    "customer_region": "string",  # fairness group attribute, see REGIONS
}

LABEL_COLUMNS: Final[dict[str, str]] = {
    "transaction_id": "string",  # refers to a transaction delivered earlier
    "is_fraud": "int64",  # 1 = fraud (chargeback), 0 = confirmed genuine
    "label_timestamp": "datetime64[us, UTC]",  # when the label became known (after the event)
}

# Closed vocabularies: an unknown value is a broken batch (blocking).
CHANNELS: Final[tuple[str, ...]] = ("chip", "contactless", "online", "atm")
AGE_BANDS: Final[tuple[str, ...]] = ("18-25", "26-40", "41-60", "60+")
REGIONS: Final[tuple[str, ...]] = ("north", "south", "east", "west")
# Open vocabulary: the business adds merchant categories; a new one is recorded (warning), not blocked.
MERCHANT_CATEGORIES: Final[tuple[str, ...]] = (
    "grocery",
    "restaurant",
    "fuel",
    "transport",
    "travel",
    "electronics",
    "fashion",
    "digital_goods",
    "entertainment",
    "health",
    "utilities",
    "gambling",
)
# Countries merchants are registered in (home market first).
MERCHANT_COUNTRIES: Final[tuple[str, ...]] = (
    "DE",
    "FR",
    "NL",
    "BE",
    "AT",
    "ES",
    "IT",
    "PL",
    "GB",
    "US",
    "CN",
    "NG",
    "BR",
    "RU",
    "TR",
)

AMOUNT_MIN: Final[float] = 0.01
AMOUNT_MAX: Final[float] = 50_000.0

REQUIRED_TRANSACTION_COLUMNS: Final[tuple[str, ...]] = tuple(TRANSACTION_COLUMNS)
REQUIRED_LABEL_COLUMNS: Final[tuple[str, ...]] = tuple(LABEL_COLUMNS)


def columns_for(kind: BatchKind) -> dict[str, str]:
    """The column contract of a batch kind."""
    return {"transactions": TRANSACTION_COLUMNS, "labels": LABEL_COLUMNS}[kind]

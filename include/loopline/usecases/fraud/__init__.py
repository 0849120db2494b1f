"""Card-fraud detection: the built-in use case.

Simulated card transactions land daily; chargebacks and confirmations (``is_fraud``) arrive days later. A
binary classifier scores each transaction; the gate and the canary judge it by PR-AUC and recall at a fixed
false-positive rate, and fairly across customer age bands and regions.
"""

from __future__ import annotations

from pathlib import Path

from loopline.config.use_case import UseCase
from loopline.usecases.fraud.schema import LABEL_COLUMNS, TRANSACTION_COLUMNS

USE_CASE = UseCase(
    name="fraud",
    task="binary_classification",
    event_columns=TRANSACTION_COLUMNS,
    label_columns=LABEL_COLUMNS,
    id_column="transaction_id",
    time_column="event_timestamp",
    label_column="is_fraud",
    label_time_column="label_timestamp",
    expectations_dir=Path(__file__).parent / "expectations",
    policies_dir=Path(__file__).parent / "policies",
    model_name="fraud_detector",
    group_columns=("customer_age_band", "customer_region"),
    unit_column="customer_id",
    optional_request_columns=("card_id",),
    batch_names={"events": "transactions", "labels": "labels"},
    simulator="loopline.usecases.fraud.simulator.runs:SIMULATION",
    features="loopline.usecases.fraud.features:FEATURES",
    description="Card-fraud detection on simulated card transactions with late chargeback labels.",
)

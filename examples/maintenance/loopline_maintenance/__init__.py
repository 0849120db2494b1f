"""Predictive maintenance: a use case that lives in its own package, outside Loopline's source tree.

Machines in three plants send a sensor reading about every four hours; whether the machine failed within the
48 hours after a reading is known 48 hours later. A binary classifier scores each reading; the gate and the
canary judge it by PR-AUC and recall, and fairly across plants (a failure must not be caught less often in
one plant than in another). The package registers itself under the entry-point group ``loopline.use_cases``
(``maintenance = "loopline_maintenance"`` in its ``pyproject.toml``), so ``LOOPLINE_USE_CASE=maintenance``
runs it once it is installed next to Loopline.
"""

from __future__ import annotations

from pathlib import Path

from loopline.config.use_case import UseCase
from loopline_maintenance.schema import FAILURE_COLUMNS, READING_COLUMNS

HERE = Path(__file__).parent

USE_CASE = UseCase(
    name="maintenance",
    task="binary_classification",
    event_columns=READING_COLUMNS,
    label_columns=FAILURE_COLUMNS,
    id_column="reading_id",
    time_column="read_at",
    label_column="failed_within_48h",
    label_time_column="failure_known_at",
    expectations_dir=HERE / "expectations",
    policies_dir=HERE / "policies",
    model_name="machine_failure",
    group_columns=("plant_code",),
    unit_column="machine_id",
    batch_names={"events": "readings", "labels": "failures"},
    simulator="loopline_maintenance.simulator:SIMULATION",
    features="loopline_maintenance.features:FEATURES",
    feature_repo=HERE / "feature_repo",
    description="Predictive maintenance: will a machine fail within 48 hours of a sensor reading?",
)

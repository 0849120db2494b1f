"""Feature views over maintenance's leak-free aggregate table (loopline_maintenance.features).

Every row holds the state *after* a reading; training joins at the reading time minus 1 µs, serving reads the
latest state, so both see exactly the machine's readings before it. The source follows the offline store of
the feature_store.yaml in use (loopline.features.feast_views).
"""

from pathlib import Path

from entities import machine

from loopline.features.feast_views import aggregate_view
from loopline_maintenance.features import MACHINE_CONDITION, VIEW_TTL

REPO = Path(__file__).resolve().parent
SEMANTICS = "state after each reading"

machine_condition = aggregate_view(
    MACHINE_CONDITION,
    [machine],
    VIEW_TTL,
    "The machine's readings in the last day and its mean vibration and bearing temperature over the last "
    "day and week: how it has been running.",
    REPO,
    SEMANTICS,
)

"""The data contract of the predictive-maintenance use case: sensor readings, and whether the machine failed.

Every machine in the plants sends a reading about every four hours; whether it failed within the 48 hours
after a reading is known 48 hours later (``failure_known_at = read_at + 48 h``). The Great Expectations suites
in ``expectations/`` enforce this contract.
"""

from __future__ import annotations

from typing import Final

READING_COLUMNS: Final[dict[str, str]] = {
    "reading_id": "string",  # unique across all batches, e.g. "rd_000000000123"
    "read_at": "datetime64[us, UTC]",  # when the sensors were read
    "machine_id": "string",  # e.g. "mc_0042"
    "plant_code": "string",  # the plant the machine stands in: fairness group (never a model input), PLANTS
    "machine_series": "string",  # the machine's series (its vintage), see SERIES
    "vibration_mm_s": "float64",  # RMS vibration velocity in mm/s, > 0
    "bearing_temp_c": "float64",  # main bearing temperature in degrees C
    "spindle_load_pct": "float64",  # spindle load in per cent of rated, 0..100
    "hours_since_service": "float64",  # operating hours since the last service (or repair), >= 0
    "ambient_temp_c": "float64",  # the hall's temperature next to the machine in degrees C
}

FAILURE_COLUMNS: Final[dict[str, str]] = {
    "reading_id": "string",  # refers to a reading delivered earlier
    "failed_within_48h": "int64",  # 1 = the machine failed within 48 hours after the reading
    "failure_known_at": "datetime64[us, UTC]",  # read_at + 48 h: when the answer became known
}

PLANTS: Final[tuple[str, ...]] = ("aachen", "brno", "cluj")
SERIES: Final[tuple[str, ...]] = ("hx100", "hx200", "hx300")  # oldest first

VIBRATION_MAX_MM_S: Final[float] = 100.0
LABEL_DELAY_HOURS: Final[int] = 48

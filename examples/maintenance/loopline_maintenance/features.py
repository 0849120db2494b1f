"""Maintenance's feature definitions: how the machine has been running lately.

One aggregate table, ``machine_condition``, keyed by the machine, with the platform's point-in-time semantics
(one row per reading holding the state **after** it, windows ``(t - w, t]``; a training row joins at its
reading's time minus 1 µs, so it sees the machine's earlier readings, never itself nor later ones): the
machine's readings in the last day (few after a repair), and its mean vibration and bearing temperature over
the last day and week. The Feast repo ships in this package (``feature_repo/``: FeatureService
``machine_failure_v1``, with the reading's rise over the machine's week computed on demand); the reading's own
columns (vibration, bearing temperature, load, hours since service, hall temperature, series) reach the model
as they are.

``STREAMING`` keeps the table fresh at scoring time with the same windows (running totals of vibration and
bearing temperature per machine), so a served reading reads the state a training row of its instant holds.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, NamedTuple

import numpy as np
import pandas as pd

from loopline.features.aggregates import WINDOW_US, Windows, emit, since_us, utc_timestamp, with_keys
from loopline.features.curated import read_curated_event_frame
from loopline.features.definitions import FeatureDefinitions
from loopline.features.frames import entity_codes
from loopline.features.frames import epoch_us as frame_epoch_us
from loopline.features.streaming import (
    StreamingFeatures,
    StreamTable,
    Timeline,
    epoch_us,
    frame_texts,
    frame_times_us,
    text,
)
from loopline.features.tables import AggregateTable
from loopline_maintenance import USE_CASE

MACHINE_CONDITION: Final = AggregateTable(
    name="machine_condition",
    keys=("machine_id",),
    features={
        "mc_readings_24h": "int64",  # the machine's readings in (t - 24 h, t]: fewer after a repair
        "mc_vibration_mean_24h": "float64",  # its mean vibration (mm/s) over them
        "mc_vibration_mean_7d": "float64",  # ... over (t - 7 d, t]: its normal level
        "mc_bearing_temp_mean_24h": "float64",  # its mean bearing temperature over the last day
        "mc_bearing_temp_mean_7d": "float64",  # ... over the last week
    },
)
TABLES: Final[tuple[AggregateTable, ...]] = (MACHINE_CONDITION,)
HISTORY = timedelta(days=7)
"""The longest window: a row at ``t`` needs the machine's readings in ``(t - 7 d, t]``."""
VIEW_TTL = timedelta(days=7)
"""The view's TTL (``feature_repo/features.py``): older state says nothing current about a machine."""
SERVING_HISTORY = HISTORY + VIEW_TTL
"""What fresh features keep: a machine's row is read up to the TTL after its newest reading, and that row
holds the week before it."""

DAY_US, WEEK_US = WINDOW_US["24h"], WINDOW_US["7d"]


def compute_aggregates(readings: pd.DataFrame, since: pd.Timestamp | None = None) -> dict[str, pd.DataFrame]:
    """Table name -> rows for every reading with ``read_at >= since`` (all if None), computed with the history
    in ``readings``; each frame has exactly the table's columns and dtypes."""
    readings = readings[readings[USE_CASE.time_column].notna()].reset_index(drop=True)
    t_us = frame_epoch_us(readings[USE_CASE.time_column])
    readings, t_us = with_keys(readings, t_us, MACHINE_CONDITION)
    win = Windows(entity_codes(readings, MACHINE_CONDITION.keys), t_us)
    vibration = readings["vibration_mm_s"].to_numpy(dtype=np.float64)[win.order]
    bearing = readings["bearing_temp_c"].to_numpy(dtype=np.float64)[win.order]
    vibration_prefix, bearing_prefix = win.prefix(vibration), win.prefix(bearing)
    day, week = win.count(DAY_US), win.count(WEEK_US)
    features = {
        "mc_readings_24h": day,
        "mc_vibration_mean_24h": win.window_sum(vibration, DAY_US, vibration_prefix) / day,
        "mc_vibration_mean_7d": win.window_sum(vibration, WEEK_US, vibration_prefix) / week,
        "mc_bearing_temp_mean_24h": win.window_sum(bearing, DAY_US, bearing_prefix) / day,
        "mc_bearing_temp_mean_7d": win.window_sum(bearing, WEEK_US, bearing_prefix) / week,
    }
    return {MACHINE_CONDITION.name: emit(MACHINE_CONDITION, readings, win, features, since_us(since))}


def compute_offline(curated_dir: Path, start: pd.Timestamp, end: pd.Timestamp) -> dict[str, pd.DataFrame]:
    """The rows of the readings in ``[start, end)``, reading the curated readings from a week before ``start``."""
    start, end = utc_timestamp(start), utc_timestamp(end)
    columns = ["machine_id", "vibration_mm_s", "bearing_temp_c"]
    readings = read_curated_event_frame(curated_dir, start - HISTORY, end, columns=columns, use_case=USE_CASE)
    return compute_aggregates(readings, since=start)


# --- fresh at scoring time --------------------------------------------------------------------------


class StreamEvent(NamedTuple):
    """The fields of one reading that the table reads: its id, its time, its machine and two sensor values."""

    reading_id: str
    t_us: int  # read_at, µs since the epoch
    machine_id: str | None
    vibration_mm_s: float
    bearing_temp_c: float

    @property
    def event_id(self) -> str:
        return self.reading_id


def event_from_reading(reading: Mapping[str, Any]) -> StreamEvent:
    """A request's (or a logged prediction's) reading as an event."""
    return StreamEvent(
        str(reading[USE_CASE.id_column]),
        epoch_us(reading[USE_CASE.time_column]),
        text(reading.get("machine_id")),
        float(reading["vibration_mm_s"]),
        float(reading["bearing_temp_c"]),
    )


def events_from_frame(frame: pd.DataFrame) -> list[StreamEvent]:
    """Curated readings as events, vectorised."""
    if not len(frame):
        return []
    return list(
        map(
            StreamEvent,
            frame[USE_CASE.id_column].astype(str).tolist(),
            frame_times_us(frame, USE_CASE.time_column),
            frame_texts(frame, "machine_id"),
            frame["vibration_mm_s"].astype(float).tolist(),
            frame["bearing_temp_c"].astype(float).tolist(),
        )
    )


VIBRATION, BEARING = 0, 1  # the running totals of a machine's timeline, by position
TOTALS = (operator.attrgetter("vibration_mm_s"), operator.attrgetter("bearing_temp_c"))


def machine_condition_row(line: Timeline, end: int, newest: int, slot: int) -> dict[str, Any]:
    """The machine's state after its newest reading in the windows (``end``: the index after it)."""
    day, week = line.start(newest, DAY_US), line.start(newest, WEEK_US)
    return {
        "mc_readings_24h": end - day,
        "mc_vibration_mean_24h": line.window_total(VIBRATION, day, end) / (end - day),
        "mc_vibration_mean_7d": line.window_total(VIBRATION, week, end) / (end - week),
        "mc_bearing_temp_mean_24h": line.window_total(BEARING, day, end) / (end - day),
        "mc_bearing_temp_mean_7d": line.window_total(BEARING, week, end) / (end - week),
    }


STREAMING = StreamingFeatures(
    tables=(StreamTable(MACHINE_CONDITION, machine_condition_row, WEEK_US, totals=TOTALS),),
    history_us=SERVING_HISTORY // timedelta(microseconds=1),
    event=event_from_reading,
    events=events_from_frame,
)

# The reading's own columns the model takes next to the service's features.
MODEL_INPUTS: Final[tuple[str, ...]] = (
    "machine_series",
    "vibration_mm_s",
    "bearing_temp_c",
    "spindle_load_pct",
    "hours_since_service",
    "ambient_temp_c",
)

FEATURES = FeatureDefinitions(
    service="machine_failure_v1",
    entity_columns=("machine_id",),
    # The on-demand view compares the reading with the machine's week (feature_repo/on_demand.py).
    request_columns=("vibration_mm_s", "bearing_temp_c"),
    # Kept in training rows: the model inputs, and the fairness group (never an input).
    passthrough_columns=(*MODEL_INPUTS, "plant_code"),
    model_inputs=MODEL_INPUTS,
    tables=TABLES,
    compute=compute_offline,
    streaming=STREAMING,
)

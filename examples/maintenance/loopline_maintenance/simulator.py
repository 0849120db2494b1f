"""The simulated plants of the predictive-maintenance use case: machines that wear, warn and fail.

A :class:`Fleet` holds what stays fixed for a seed: each machine's plant, series, vibration level and bearing
offset, its reading schedule (every four hours at its own phase), and its failures. Failures are a renewal
process per machine (Weibull lifetimes from the last service, wear-out: older series fail sooner), each
drawn from the machine's own random stream, so a longer run extends a shorter one and every day is the same
whatever the run's length. Most failures announce themselves: in the 50 to 120 hours before one, vibration
and bearing temperature rise (a tenth come without warning). After a failure the machine is repaired (6 to 30
hours without readings) and its hours since service start again from zero.

A reading is labelled ``failed_within_48h = 1`` when the machine's next failure is at most 48 hours after it,
and the label is known 48 hours after the reading. About 2.7 % of readings are positive; 400 machines send
about 2,380 readings a day.

Drift kinds (``loopline simulate --drift KIND --drift-from DAY``):

* ``sensor_firmware`` (covariate shift of one input): a firmware update makes every sensor report
  peak-to-peak vibration, 2.83 x the RMS value it reported before. The machines are the same.
* ``heat_wave`` (covariate shift): the halls are 9 degrees warmer, so bearings run warmer too; failures
  come as before.

Bad batches (option ``bad``), written next to the first day's readings as ``readings_<day>_bad-<kind>``:
``missing_column`` (no ``bearing_temp_c``) and ``negative_vibration`` (a few negative vibration values).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pandas as pd

from loopline.config.use_case import DemoPlan, SimulationRequest
from loopline.data.batch_files import write_frame
from loopline_maintenance.schema import (
    FAILURE_COLUMNS,
    LABEL_DELAY_HOURS,
    PLANTS,
    READING_COLUMNS,
    SERIES,
    VIBRATION_MAX_MM_S,
)

DriftKind = Literal["sensor_firmware", "heat_wave"]
HOUR_S = 3600
DAY_S = 24 * HOUR_S
READ_EVERY_S = 4 * HOUR_S  # a divisor of a day: every machine reads the same six times a day
READS_PER_DAY = DAY_S // READ_EVERY_S
JITTER_S = 10 * 60  # a reading comes up to 10 minutes early or late (never across midnight: see Fleet)
LABEL_DELAY_S = LABEL_DELAY_HOURS * HOUR_S
PLANT_AMBIENT_C = {"aachen": 21.0, "brno": 23.0, "cluj": 25.0}
SERIES_SHARE = (0.3, 0.4, 0.3)
SERIES_LIFE_H = {"hx100": 1300.0, "hx200": 1750.0, "hx300": 2300.0}  # Weibull scale of the hours to failure
WEIBULL_SHAPE = 1.6  # > 1: wear-out, the longer since service the likelier a failure
WARNING_HOURS = (50.0, 120.0)  # how long before a failure the signal starts rising
SUDDEN_SHARE = 0.1  # failures that come without warning
REPAIR_HOURS = (6.0, 30.0)
PEAK_TO_PEAK = 2.83  # peak-to-peak over RMS of a sine: the new firmware's vibration scale
HEAT_WAVE_C = 9.0


@dataclass(frozen=True)
class MaintenanceDrift:
    kind: DriftKind
    from_day: int  # index of the first drifted day (0 = the first simulated day)


@dataclass(frozen=True)
class MaintenanceConfig:
    seed: int = 7
    start: date = date(2026, 1, 5)
    days: int = 14
    machines: int = 400
    drift: MaintenanceDrift | None = None

    def day(self, index: int) -> date:
        return self.start + timedelta(days=index)


@dataclass
class MaintenanceDay:
    day: date
    readings: pd.DataFrame
    failures: pd.DataFrame  # the labels of this day's readings (known 48 hours after each: two days later)


def _epoch_s(day: date) -> int:
    return int(datetime.combine(day, datetime.min.time(), tzinfo=UTC).timestamp())


class Fleet:
    """The machines of a seed and every failure they will have until ``until_day`` (plus the label delay)."""

    def __init__(self, config: MaintenanceConfig) -> None:
        self.config = config
        n = config.machines
        rng = np.random.default_rng([config.seed, 0])
        self.plant = rng.choice(np.array(PLANTS), n)
        self.series = rng.choice(np.array(SERIES), n, p=SERIES_SHARE)
        self.base_vibration = rng.lognormal(np.log(2.2), 0.25, n)  # mm/s RMS of a healthy machine
        self.bearing_offset = rng.normal(0.0, 2.0, n)
        # Within (10 min, 4 h - 10 min) of each 4-hour slot: jittered readings stay inside their day.
        self.phase_s = rng.integers(JITTER_S + 60, READ_EVERY_S - JITTER_S - 60, n)
        age_h = rng.uniform(0.0, 1500.0, n)  # hours since the last service when the run starts
        start_s = _epoch_s(config.start)
        first_service = start_s - np.round(age_h * HOUR_S).astype(np.int64)

        horizon = _epoch_s(config.day(config.days)) + LABEL_DELAY_S + DAY_S
        fail, back, lead, sudden, owner = [], [], [], [], []
        for m in range(n):
            # Each machine's own stream: its failures do not depend on how many machines or days are simulated.
            own = np.random.default_rng([config.seed, 2, m])
            scale_s = SERIES_LIFE_H[str(self.series[m])] * HOUR_S
            service, age_s = int(first_service[m]), float(start_s - first_service[m])
            while True:
                e = own.exponential()
                warning = own.uniform(*WARNING_HOURS) * HOUR_S
                is_sudden = own.random() < SUDDEN_SHARE
                repair = own.uniform(*REPAIR_HOURS) * HOUR_S
                # The first lifetime is conditional on having run age_s already (a Weibull residual life).
                life = scale_s * ((age_s / scale_s) ** WEIBULL_SHAPE + e) ** (1.0 / WEIBULL_SHAPE)
                failed = service + int(life)
                fail.append(failed)
                back.append(failed + int(repair))
                lead.append(warning)
                sudden.append(is_sudden)
                owner.append(m)
                if failed > horizon:
                    break
                service, age_s = failed + int(repair), 0.0
        self.first_service = first_service
        self.fail_s = np.array(fail, dtype=np.int64)
        self.back_s = np.array(back, dtype=np.int64)
        self.lead_s = np.array(lead, dtype=np.float64)
        self.sudden = np.array(sudden, dtype=bool)
        self.owner = np.array(owner, dtype=np.int64)
        # (machine, time) as one sortable key: a searchsorted finds each reading's last and next failure.
        self._stride = np.int64(10**11)
        self._keys = self.owner * self._stride + self.fail_s

    def simulate_day(self, index: int) -> MaintenanceDay:
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, 1, index])
        drift = cfg.drift if cfg.drift and index >= cfg.drift.from_day else None
        n = cfg.machines
        day_start = _epoch_s(cfg.day(index))
        slots = day_start + self.phase_s[:, None] + READ_EVERY_S * np.arange(READS_PER_DAY)[None, :]
        t = (slots + rng.integers(-JITTER_S, JITTER_S + 1, slots.shape)).ravel()
        machine = np.repeat(np.arange(n), READS_PER_DAY)
        shape = t.shape
        # Every draw is made for every slot, down or not, drifted or not: the same day is the same world.
        load = np.clip(rng.beta(4.0, 3.0, shape) * 100.0, 5.0, 100.0)
        hour = (t - day_start) / HOUR_S
        night = (hour < 6) | (hour >= 22)
        load = np.where(night, load * 0.75, load)
        ambient_noise = rng.normal(0.0, 0.8, shape)
        vibration_noise = rng.lognormal(0.0, 0.10, shape)
        bearing_noise = rng.normal(0.0, 1.2, shape)

        # The last failure at or before t (j) and the next one after it (j + 1, always the same machine).
        j = np.searchsorted(self._keys, machine * self._stride + t, side="right") - 1
        has_last = (j >= 0) & (self.owner[np.maximum(j, 0)] == machine)
        down = has_last & (t < self.back_s[np.maximum(j, 0)])
        service = np.where(has_last, self.back_s[np.maximum(j, 0)], self.first_service[machine])
        following = j + 1
        until_failure = self.fail_s[following] - t
        warning = np.clip(1.0 - until_failure / self.lead_s[following], 0.0, 1.0) ** 1.5
        warning = np.where(self.sudden[following], 0.0, warning)
        failed = (until_failure <= LABEL_DELAY_S).astype(np.int64)
        hours_since = (t - service) / HOUR_S

        plant = self.plant[machine]
        ambient = np.array([PLANT_AMBIENT_C[str(p)] for p in plant])
        ambient = ambient + 3.0 * np.sin(2 * np.pi * (hour - 9.0) / 24.0) + ambient_noise
        if drift and drift.kind == "heat_wave":
            ambient = ambient + HEAT_WAVE_C
        vibration = (
            self.base_vibration[machine]
            * (0.85 + 0.3 * load / 100.0)
            * (1.0 + 0.04 * hours_since / 1000.0)
            * (1.0 + 2.2 * warning)
            * vibration_noise
        )
        if drift and drift.kind == "sensor_firmware":
            vibration = vibration * PEAK_TO_PEAK
        bearing = (
            38.0
            + 0.7 * (ambient - 22.0)
            + 8.0 * load / 100.0
            + self.bearing_offset[machine]
            + 18.0 * warning
            + bearing_noise
        )

        keep = np.flatnonzero(~down)
        keep = keep[np.argsort(t[keep], kind="stable")]
        first = index * 10_000_000
        ids = pd.array([f"rd_{first + i:012d}" for i in range(len(keep))], dtype="string")
        read_at = pd.to_datetime(t[keep], unit="s", utc=True).astype("datetime64[us, UTC]")
        readings = pd.DataFrame(
            {
                "reading_id": ids,
                "read_at": read_at,
                "machine_id": pd.array([f"mc_{m:04d}" for m in machine[keep]], dtype="string"),
                "plant_code": pd.array(plant[keep], dtype="string"),
                "machine_series": pd.array(self.series[machine[keep]], dtype="string"),
                "vibration_mm_s": np.round(np.minimum(vibration[keep], VIBRATION_MAX_MM_S), 3),
                "bearing_temp_c": np.round(bearing[keep], 1),
                "spindle_load_pct": np.round(load[keep], 1),
                "hours_since_service": np.round(hours_since[keep], 1),
                "ambient_temp_c": np.round(ambient[keep], 1),
            }
        )[list(READING_COLUMNS)]
        failures = pd.DataFrame(
            {
                "reading_id": ids,
                "failed_within_48h": failed[keep].astype("int64"),
                "failure_known_at": (read_at + pd.Timedelta(hours=LABEL_DELAY_HOURS)).astype(
                    "datetime64[us, UTC]"
                ),
            }
        )[list(FAILURE_COLUMNS)]
        return MaintenanceDay(cfg.day(index), readings, failures)


def simulate(config: MaintenanceConfig) -> list[MaintenanceDay]:
    fleet = Fleet(config)
    return [fleet.simulate_day(i) for i in range(config.days)]


# --- bad batches ------------------------------------------------------------------------------------

BAD_KINDS: dict[str, str] = {
    "missing_column": "bearing_temp_c is missing (a sensor gateway dropped it)",
    "negative_vibration": "a few vibration values are negative (a wiring fault)",
}


def make_bad_batch(kind: str, good: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """A broken copy of a good readings batch, broken by exactly the rule ``kind`` names."""
    if kind == "missing_column":
        return good.drop(columns=["bearing_temp_c"])
    if kind == "negative_vibration":
        bad = good.copy()
        rows = np.sort(rng.choice(len(bad), size=min(len(bad), max(2, len(bad) // 50)), replace=False))
        vibration = bad["vibration_mm_s"].to_numpy(dtype=np.float64, copy=True)
        vibration[rows] = -vibration[rows]
        bad["vibration_mm_s"] = vibration
        return bad
    raise ValueError(f"unknown bad-batch kind {kind!r}; valid kinds: {', '.join(BAD_KINDS)}")


# --- the landing zone -------------------------------------------------------------------------------


def write_days(config: MaintenanceConfig, landing: Path, fmt: str = "parquet") -> list[Path]:
    """Each day's readings and the failure labels that became known that day, as the landing zone takes them
    (``landing/readings/``, ``landing/failures/``): a label is known 48 hours after its reading, so day
    ``i``'s failures batch holds the labels of day ``i - 2``'s readings (the first two days have none, and
    the last two days' labels come after the run)."""
    return list(_write_batches(config, landing, fmt))


def _write_batches(
    config: MaintenanceConfig, landing: Path, fmt: str, bad: str | None = None
) -> dict[Path, int]:
    """``write_days``, with the rows written to each file (in writing order); ``bad``: also the bad batch of
    that kind made from the first day's readings."""
    written: dict[Path, int] = {}
    days = simulate(config)
    delay = LABEL_DELAY_HOURS // 24
    for index, day in enumerate(days):
        path = landing / "readings" / f"readings_{day.day.isoformat()}.{fmt}"
        write_frame(day.readings, path, fmt)
        written[path] = len(day.readings)
        if bad is not None and index == 0:
            path = landing / "readings" / f"readings_{day.day.isoformat()}_bad-{bad}.{fmt}"
            broken = make_bad_batch(bad, day.readings, np.random.default_rng([config.seed, 99]))
            write_frame(broken, path, fmt)
            written[path] = len(broken)
        if index >= delay:
            known = days[index - delay].failures
            path = landing / "failures" / f"failures_{day.day.isoformat()}.{fmt}"
            write_frame(known, path, fmt)
            written[path] = len(known)
    return written


DRIFT_KINDS: dict[str, str] = {
    "sensor_firmware": f"new sensor firmware reports peak-to-peak vibration ({PEAK_TO_PEAK:g} x the RMS it reported)",
    "heat_wave": f"the halls are {HEAT_WAVE_C:g} degrees warmer, and the bearings with them (failures unchanged)",
}


def peak_to_peak_firmware(reading: dict[str, Any]) -> dict[str, Any]:
    """Every sensor reports peak-to-peak vibration instead of RMS (x2.83, within the contract's 100 mm/s):
    the demo's live drift. The machines and their plants are the same; only what the model reads moves."""
    vibration = float(reading["vibration_mm_s"]) * PEAK_TO_PEAK
    return {**reading, "vibration_mm_s": round(min(VIBRATION_MAX_MM_S, vibration), 3)}


class MaintenanceWorldSimulation:
    """The maintenance use case's :class:`~loopline.config.use_case.WorldSimulator` (``loopline simulate``)."""

    drift_kinds = DRIFT_KINDS
    options = {
        "machines": f"number of machines (default {MaintenanceConfig.machines})",
        "bad": "also write a bad readings batch of this kind for the first day (see --list-bad)",
    }
    bad_kinds = BAD_KINDS
    # Labels are known 48 hours after a reading: three weeks give 19 labelled days, the newest of which are
    # the gate's holdout. The demo shows a quarantine: one readings batch with negative vibration.
    demo = DemoPlan(
        days=21,
        epochs=8,
        live_drift=peak_to_peak_firmware,
        live_drift_description=f"new sensor firmware: vibration reported peak-to-peak (x{PEAK_TO_PEAK:g})",
        options={"machines": 400, "bad": "negative_vibration"},
    )

    def write(self, request: SimulationRequest, progress: bool = False) -> dict[str, Any]:
        drift = None
        if request.drift is not None:
            if request.drift not in DRIFT_KINDS:
                raise ValueError(
                    f"unknown drift kind {request.drift!r}; valid kinds: {', '.join(DRIFT_KINDS)}"
                )
            if not 0 <= request.drift_from < request.days:
                raise ValueError(
                    f"drift must start within the run (day 0..{request.days - 1}), got {request.drift_from}"
                )
            drift = MaintenanceDrift(cast(DriftKind, request.drift), request.drift_from)
        bad = request.options.get("bad")
        if bad is not None and bad not in BAD_KINDS:
            raise ValueError(f"unknown bad-batch kind {bad!r}; valid kinds: {', '.join(BAD_KINDS)}")
        config = MaintenanceConfig(
            seed=request.seed,
            start=request.start,
            days=request.days,
            machines=int(request.options.get("machines") or MaintenanceConfig.machines),
            drift=drift,
        )
        out = Path(request.out)
        written = _write_batches(config, out, request.fmt, bad)
        bad_files = [p for p in written if "_bad-" in p.name]
        readings = [p for p in written if p.parent.name == "readings" and p not in bad_files]
        failures = [p for p in written if p.parent.name == "failures"]
        return {
            "out": str(out),
            "days": config.days,
            "start": config.start.isoformat(),
            "end": config.day(config.days - 1).isoformat(),
            "seed": config.seed,
            "machines": config.machines,
            "format": request.fmt,
            "readings": sum(written[p] for p in readings),  # counted as written, not read back
            "labelled_readings": sum(written[p] for p in failures),
            "reading_files": [str(p) for p in readings],
            "failure_files": [str(p) for p in failures],
            "drift": None if drift is None else {"kind": drift.kind, "from_day": drift.from_day},
            "files": len(written),
            "bad_files": [str(p) for p in bad_files],
        }

    def describe(self, summary: dict[str, Any]) -> str:
        lines = [
            f"Simulated {summary['days']} days ({summary['start']} .. {summary['end']}, seed {summary['seed']}): "
            f"{summary['readings']:,} readings of {summary['machines']} machines",
            f"  {len(summary['reading_files'])} reading batches in {summary['out']}/readings",
            f"  {len(summary['failure_files'])} failure-label batches in {summary['out']}/failures "
            f"({summary['labelled_readings']:,} readings labelled; a label is known 48 h after its reading)",
        ]
        for path in summary["bad_files"]:
            lines.append(f"  a broken batch, to be quarantined: {path}")
        if summary["drift"]:
            kind = summary["drift"]["kind"]
            lines.append(f"  drift: {kind} from day {summary['drift']['from_day']}: {DRIFT_KINDS[kind]}")
        return "\n".join(lines)


SIMULATION = MaintenanceWorldSimulation()

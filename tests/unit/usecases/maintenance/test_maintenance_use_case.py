"""The predictive-maintenance use case (a binary classifier in a package of its own, ``examples/maintenance/``,
registered by one entry point) through the platform's interface: its simulated plants keep its own data
contract and tell failures in advance, its batches pass its own Great Expectations suites, the platform's
ingest publishes them and quarantines its broken ones naming the column, its drift kinds change what they
say, and its features are point-in-time correct, offline (Feast, from the repo the package ships) and fresh.

Nothing here imports Loopline's built-in use cases: only the platform and ``loopline_maintenance``. The example is
part of the suite, never skipped: ``make install`` installs it (``pip install -e examples/maintenance``)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, timedelta
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import loopline_maintenance
from loopline.config import Settings
from loopline.config.use_case import (
    ENTRY_POINT_GROUP,
    SimulationRequest,
    built_in_use_cases,
    load_use_case,
)
from loopline.data.batch_files import write_frame
from loopline.data.ingest import ingest_file, landed_files
from loopline.data.validation import validate_frame
from loopline.features.curated import curated_time_range
from loopline.features.definitions import feature_definitions
from loopline.features.materialize import materialize
from loopline.features.streaming import EventWindows, epoch_us
from loopline.features.training_sets import build_training_set
from loopline_maintenance import USE_CASE
from loopline_maintenance.features import (
    FEATURES,
    MACHINE_CONDITION,
    STREAMING,
    compute_aggregates,
    events_from_frame,
)
from loopline_maintenance.simulator import (
    HEAT_WAVE_C,
    PEAK_TO_PEAK,
    SIMULATION,
    MaintenanceConfig,
    MaintenanceDrift,
    simulate,
    write_days,
)

SMALL = MaintenanceConfig(seed=3, days=4, machines=40)
LABEL_DELAY = pd.Timedelta(hours=48)


@pytest.fixture
def settings(state_dir: Path) -> Settings:
    return Settings(state_dir=state_dir, use_case="maintenance")


def _all(days: list[Any], kind: str) -> pd.DataFrame:
    return pd.concat([getattr(day, kind) for day in days], ignore_index=True)


# --- the package and its registration ----------------------------------------------------------------------


def test_the_package_registers_the_use_case_and_ships_its_pieces() -> None:
    registered = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert registered["maintenance"] == "loopline_maintenance"
    assert "maintenance" not in built_in_use_cases()  # not part of Loopline's source
    assert load_use_case("maintenance") is USE_CASE
    package = Path(loopline_maintenance.__file__).parent
    assert USE_CASE.feature_repo == package / "feature_repo"
    assert Settings(use_case="maintenance").feature_repo_dir == package / "feature_repo"
    assert USE_CASE.task == "binary_classification" and USE_CASE.model_name == "machine_failure"
    assert feature_definitions(USE_CASE) is FEATURES
    assert "plant_code" not in FEATURES.model_inputs  # a fairness group, never a model input
    assert Settings(use_case="maintenance").policy_file("gate").parent == USE_CASE.policies_dir
    assert "project: loopline_maintenance" in (package / "feature_repo" / "feature_store.yaml").read_text()


# --- the simulated world ------------------------------------------------------------------------------------


def test_a_seed_is_one_world_and_each_batch_keeps_the_contract() -> None:
    first, again = simulate(SMALL), simulate(SMALL)
    for day, same in zip(first, again, strict=True):
        pd.testing.assert_frame_equal(day.readings, same.readings)
        pd.testing.assert_frame_equal(day.failures, same.failures)
        assert {c: str(t) for c, t in day.readings.dtypes.items()} == dict(USE_CASE.event_columns)
        assert {c: str(t) for c, t in day.failures.dtypes.items()} == dict(USE_CASE.label_columns)
        assert day.readings["read_at"].is_monotonic_increasing
        assert (day.readings["read_at"].dt.date == day.day).all()
        # A label refers to its reading and is known exactly 48 hours after it.
        assert day.failures["reading_id"].tolist() == day.readings["reading_id"].tolist()
        assert (day.failures["failure_known_at"] - day.readings["read_at"] == LABEL_DELAY).all()
    # A longer run extends a shorter one: the same days are the same world.
    longer = simulate(replace(SMALL, days=SMALL.days + 3))
    for day, same in zip(first, longer, strict=False):
        pd.testing.assert_frame_equal(day.readings, same.readings)
        pd.testing.assert_frame_equal(day.failures, same.failures)
    other = simulate(replace(SMALL, seed=4, days=1))
    assert not first[0].readings["vibration_mm_s"].equals(other[0].readings["vibration_mm_s"])


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC-AUC of one score by ranks (Mann-Whitney), ties averaged."""
    ranks = pd.Series(scores).rank().to_numpy()
    positives = labels == 1
    n_pos, n_neg = positives.sum(), (~positives).sum()
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_failures_are_rare_and_announced_by_rising_vibration_and_bearing_temperature() -> None:
    days = simulate(MaintenanceConfig(seed=7, days=14))  # the default fleet: 400 machines
    readings, failures = _all(days, "readings"), _all(days, "failures")
    rows = readings.merge(failures, on="reading_id")
    failed = rows["failed_within_48h"].to_numpy()
    # Measured: 2,377 readings a day, 2.7 % of them within 48 hours of a failure (seed 7, 21 days).
    assert 2200 < len(readings) / len(days) < 2450
    assert 0.015 < failed.mean() < 0.045
    for plant, group in rows.groupby("plant_code"):
        assert 0.01 < group["failed_within_48h"].mean() < 0.06, (
            plant
        )  # every plant fails, none far more often
    # The signal: each alone separates the readings before a failure from the rest.
    assert _auc(rows["vibration_mm_s"].to_numpy(), failed) > 0.75
    assert _auc(rows["bearing_temp_c"].to_numpy(), failed) > 0.75
    assert _auc(rows["hours_since_service"].to_numpy(), failed) > 0.55  # wear-out: older service, likelier
    # Against the machine's own level it is sharper still (what the features give the model).
    own = rows.groupby("machine_id")["vibration_mm_s"].transform("median")
    assert _auc((rows["vibration_mm_s"] / own).to_numpy(), failed) > 0.85
    # The older series fail more often.
    by_series = rows.groupby("machine_series")["failed_within_48h"].mean()
    assert by_series["hx100"] > by_series["hx300"]


def test_after_a_failure_the_machine_is_repaired_and_its_service_clock_restarts() -> None:
    readings = _all(simulate(MaintenanceConfig(seed=7, days=14)), "readings")
    gaps = readings.groupby("machine_id")["read_at"].diff().dt.total_seconds() / 3600
    hours = readings["hours_since_service"]
    restarted = hours < readings.groupby("machine_id")["hours_since_service"].shift(1)
    assert restarted.sum() > 20  # repairs happen
    assert (gaps[restarted] > 4.5).all()  # a repair leaves a gap of silence longer than the reading cycle
    assert (hours[restarted] < 30).all()
    assert (gaps[~restarted].dropna() < 4.5).all()


def test_the_simulated_batches_pass_their_own_suites() -> None:
    day = simulate(SMALL)[0]
    for kind, frame in (("readings", day.readings), ("failures", day.failures)):
        outcome = validate_frame(frame, kind, USE_CASE.expectations_dir)
        assert outcome.passed and not outcome.warnings, (kind, outcome.blocking, outcome.warnings)


def test_the_platform_ingests_the_use_case_and_quarantines_its_broken_batches(settings: Settings) -> None:
    written = write_days(SMALL, settings.state.landing)
    assert sorted(landed_files(settings)) == sorted(written)
    # A label is known 48 hours after its reading: the first two days land none, the last two days' come later.
    assert len([p for p in written if p.parent.name == "failures"]) == SMALL.days - 2
    results = [ingest_file(settings, path) for path in written]
    assert {r.status for r in results} == {"published"}, [r.summary() for r in results]
    curated = settings.state.curated
    readings = pd.concat(pd.read_parquet(p) for p in sorted((curated / "readings").rglob("*.parquet")))
    failures = pd.concat(pd.read_parquet(p) for p in sorted((curated / "failures").rglob("*.parquet")))
    assert len(readings) == sum(len(d.readings) for d in simulate(SMALL))
    assert set(failures["reading_id"]) == set(_all(simulate(SMALL)[:-2], "readings")["reading_id"])

    out = settings.state.root / "broken"
    for kind, column in (("negative_vibration", "vibration_mm_s"), ("missing_column", "bearing_temp_c")):
        request = SimulationRequest(
            out=out, days=1, start=SMALL.start, seed=3, options={"machines": 40, "bad": kind}
        )
        summary = SIMULATION.write(request)
        (path,) = summary["bad_files"]
        landed = settings.state.landing / "readings" / Path(path).name
        write_frame(pd.read_parquet(path), landed, "parquet")
        result = ingest_file(settings, landed)
        assert result.status == "quarantined", kind
        named = [f for f in result.failures if f.get("column") == column or column in str(f.get("message"))]
        assert named, (kind, result.failures)
        if kind == "negative_vibration":
            negative = int((pd.read_parquet(path)["vibration_mm_s"] < 0).sum())
            assert [(f["column"], f["count"]) for f in result.failures] == [(column, negative)]


def test_a_batch_outside_the_use_cases_folders_names_them(settings: Settings) -> None:
    path = settings.state.landing / "orders" / "day.parquet"
    write_frame(simulate(SMALL)[0].readings, path, "parquet")
    result = ingest_file(settings, path)
    assert result.status == "quarantined"
    assert "deliver it under landing/readings/ or landing/failures/" in result.failures[0]["message"]


def test_the_drift_kinds_change_what_they_say() -> None:
    base = replace(SMALL, days=4)
    plain = simulate(base)
    firmware = simulate(replace(base, drift=MaintenanceDrift("sensor_firmware", from_day=2)))
    hot = simulate(replace(base, drift=MaintenanceDrift("heat_wave", from_day=2)))
    for index, (b, f, h) in enumerate(zip(plain, firmware, hot, strict=True)):
        pd.testing.assert_frame_equal(b.failures, f.failures)  # the machines fail as before
        pd.testing.assert_frame_equal(b.failures, h.failures)
        if index < 2:
            pd.testing.assert_frame_equal(b.readings, f.readings)
            pd.testing.assert_frame_equal(b.readings, h.readings)
            continue
        others = [c for c in USE_CASE.event_columns if c != "vibration_mm_s"]
        pd.testing.assert_frame_equal(b.readings[others], f.readings[others])
        ratio = f.readings["vibration_mm_s"] / b.readings["vibration_mm_s"]
        assert np.allclose(ratio, PEAK_TO_PEAK, rtol=2e-3)  # only the vibration scale: peak-to-peak
        warmer = h.readings["ambient_temp_c"] - b.readings["ambient_temp_c"]
        assert np.allclose(warmer, HEAT_WAVE_C, atol=0.11)
        bearing = h.readings["bearing_temp_c"] - b.readings["bearing_temp_c"]
        assert np.allclose(bearing, 0.7 * HEAT_WAVE_C, atol=0.11)  # the bearings run warmer with the hall
        pd.testing.assert_series_equal(b.readings["vibration_mm_s"], h.readings["vibration_mm_s"])


def test_the_demos_live_drift_rescales_vibration_only() -> None:
    plan = SIMULATION.demo
    reading = simulate(SMALL)[0].readings.to_dict("records")[0]
    drifted = plan.live_drift(dict(reading))
    assert {k for k in reading if drifted[k] != reading[k]} == {"vibration_mm_s"}
    assert drifted["vibration_mm_s"] == pytest.approx(reading["vibration_mm_s"] * PEAK_TO_PEAK, abs=1e-3)
    assert plan.options["bad"] in SIMULATION.bad_kinds and plan.days > 2 + 7  # labelled days to train on


def _simulate_cli(*argv: str) -> int:
    """``loopline simulate ARGV``, through the CLI's own entry point."""
    from loopline.cli.main import main

    return main(["simulate", *argv])


def test_loopline_simulate_writes_the_use_cases_world(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ("--use-case", "maintenance", "--days", "3", "--seed", "5", "--option", "machines=30")
    more = ("--drift", "sensor_firmware", "--drift-from", "1", "--bad", "missing_column")
    assert _simulate_cli(*argv, *more, "--out", str(tmp_path), "--json") == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    assert out[0].startswith("Simulated 3 days (2026-01-01 .. 2026-01-03, seed 5): ")
    assert summary["drift"] == {"kind": "sensor_firmware", "from_day": 1}
    readings = sorted((tmp_path / "readings").glob("readings_*.parquet"))
    assert (
        summary["files"] == len(list(tmp_path.rglob("*.parquet"))) == 3 + 1 + 1
    )  # readings, 1 label day, bad
    assert summary["bad_files"] == [
        str(tmp_path / "readings" / "readings_2026-01-01_bad-missing_column.parquet")
    ]
    good = [p for p in readings if str(p) not in summary["bad_files"]]
    assert summary["readings"] == sum(len(pd.read_parquet(p)) for p in good) > 3 * 30 * 5
    assert "bearing_temp_c" not in pd.read_parquet(summary["bad_files"][0]).columns


# --- its features ---------------------------------------------------------------------------------------------

DAY3 = pd.Timestamp(SMALL.day(2), tz="UTC")
HANDMADE_MACHINE = "mc_9999"
# (reading id, time, vibration): a machine the simulation does not have, read at hand-picked times.
HANDMADE = [
    ("rd_900000000001", DAY3 + pd.Timedelta(hours=1), 2.0),
    ("rd_900000000002", DAY3 + pd.Timedelta(hours=5), 4.0),
    ("rd_900000000003", DAY3 + pd.Timedelta(hours=9), 3.0),
    ("rd_900000000004", DAY3 + pd.Timedelta(hours=9), 5.0),  # the same instant as the one before
    ("rd_900000000005", DAY3 + pd.Timedelta(hours=13), 6.0),
]


def _handmade_readings() -> pd.DataFrame:
    readings = simulate(SMALL)[2].readings.head(len(HANDMADE)).copy().reset_index(drop=True)
    readings["reading_id"] = pd.array([r[0] for r in HANDMADE], dtype="string")
    readings["read_at"] = pd.Series([r[1] for r in HANDMADE]).astype("datetime64[us, UTC]")
    readings["machine_id"] = pd.array([HANDMADE_MACHINE] * len(HANDMADE), dtype="string")
    readings["vibration_mm_s"] = [r[2] for r in HANDMADE]
    readings["bearing_temp_c"] = 40.0
    return readings


def test_the_table_holds_the_state_after_each_reading_hand_checked() -> None:
    rows = compute_aggregates(_handmade_readings())[MACHINE_CONDITION.name]
    # One row per (machine, instant): the two readings at 09:00 share one, the state after both.
    assert rows["event_timestamp"].tolist() == sorted({r[1] for r in HANDMADE})
    assert rows["mc_readings_24h"].tolist() == [1, 2, 4, 5]
    assert rows["mc_vibration_mean_24h"].tolist() == pytest.approx([2.0, 3.0, 3.5, 4.0])
    assert rows["mc_bearing_temp_mean_7d"].tolist() == pytest.approx([40.0] * 4)
    assert [str(d) for d in rows.dtypes] == [
        "string",
        "datetime64[us, UTC]",
        *MACHINE_CONDITION.features.values(),
    ]


@pytest.fixture(scope="module")
def maintenance_world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Four simulated days and the hand-made readings, ingested and materialised through the Feast repo the
    package ships; a training set with the labels known at noon of the last day."""
    state = tmp_path_factory.mktemp("maintenance") / "state"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LOOPLINE_STATE_DIR", str(state))
        settings = Settings(state_dir=state, use_case="maintenance")
        written = write_days(SMALL, settings.state.landing)
        handmade = settings.state.landing / "readings" / "handmade.parquet"
        write_frame(_handmade_readings(), handmade, "parquet")
        results = [ingest_file(settings, path) for path in [*written, handmade]]
        assert {r.status for r in results} == {"published"}, [r.summary() for r in results]
        span = curated_time_range(settings)
        assert span is not None
        materialize(settings, span[0], span[1])
        labels_as_of = pd.Timestamp(SMALL.day(3), tz="UTC") + pd.Timedelta(hours=12)
        out = tmp_path_factory.mktemp("sets") / "maintenance.parquet"
        manifest = build_training_set(settings, out, labels_as_of=labels_as_of.to_pydatetime())
        curated = settings.state.curated
        yield {
            "manifest": manifest,
            "frame": pd.read_parquet(out),
            "readings": pd.concat(
                [pd.read_parquet(p) for p in sorted((curated / "readings").rglob("*.parquet"))],
                ignore_index=True,
            ),
            "failures": pd.concat(
                [pd.read_parquet(p) for p in sorted((curated / "failures").rglob("*.parquet"))],
                ignore_index=True,
            ),
            "labels_as_of": labels_as_of,
        }


def test_one_training_row_per_reading_with_the_labels_known_then(maintenance_world: Any) -> None:
    frame, readings, failures = (maintenance_world[k] for k in ("frame", "readings", "failures"))
    manifest, as_of = maintenance_world["manifest"], maintenance_world["labels_as_of"]
    assert len(frame) == len(readings) == manifest.rows
    assert frame["reading_id"].is_unique and set(frame["reading_id"]) == set(readings["reading_id"])
    assert manifest.feature_service == "machine_failure_v1"
    assert set(MACHINE_CONDITION.features) | {
        "vibration_rise",
        "bearing_temp_rise",
        "has_machine_history",
    } <= set(frame.columns)
    known = failures[failures["failure_known_at"] <= as_of].set_index("reading_id")["failed_within_48h"]
    later = failures[failures["failure_known_at"] > as_of]
    assert len(known) and len(later)
    got = frame.set_index("reading_id")["failed_within_48h"]
    assert got.notna().sum() == len(known) == manifest.labelled_rows
    assert manifest.positive_rows == int(known.sum()) > 0
    assert (got.reindex(known.index).astype("int64") == known).all()
    assert got.reindex(later["reading_id"]).isna().all()  # known after labels_as_of: not yet


def test_the_hand_made_readings_see_only_the_readings_before_them(maintenance_world: Any) -> None:
    rows = maintenance_world["frame"].set_index("reading_id").loc[[r[0] for r in HANDMADE]]
    # Joined at T - 1 µs: the first has no history; 05:00 sees 01:00; both 09:00 ones see 01:00 and 05:00,
    # never themselves nor each other; 13:00 sees all four before it.
    assert rows["mc_readings_24h"].astype("Int64").tolist() == [pd.NA, 1, 2, 2, 4]
    means = rows["mc_vibration_mean_24h"].tolist()
    assert np.isnan(means[0]) and means[1:] == pytest.approx([2.0, 3.0, 3.0, 3.5])
    assert rows["has_machine_history"].tolist() == [0, 1, 1, 1, 1]
    # The on-demand rise: the reading's own vibration over the week before it.
    assert rows["vibration_rise"].tolist() == pytest.approx([1.0, 4.0 / 2.0, 3.0 / 3.0, 5.0 / 3.0, 6.0 / 3.5])


def test_the_features_are_point_in_time_correct_for_every_reading(maintenance_world: Any) -> None:
    """By brute force: per reading at T, the machine's readings strictly before T in the windows ending at its
    newest one (null without history or older than the 7-day TTL)."""
    frame, readings = maintenance_world["frame"].set_index("reading_id"), maintenance_world["readings"]
    checked = 0
    for _, group in readings.groupby("machine_id"):
        times = group["read_at"].to_numpy()
        vibration = group["vibration_mm_s"].to_numpy()
        for reading_id, t in zip(group["reading_id"], times, strict=True):
            row = frame.loc[reading_id]
            before = times < t
            if not before.any():
                assert pd.isna(row["mc_readings_24h"])
                continue
            newest = times[before].max()
            day = before & (times > newest - np.timedelta64(24, "h"))
            week = before & (times > newest - np.timedelta64(7, "D"))
            assert row["mc_readings_24h"] == day.sum()
            assert row["mc_vibration_mean_24h"] == pytest.approx(vibration[day].mean())
            assert row["mc_vibration_mean_7d"] == pytest.approx(vibration[week].mean())
            checked += 1
    assert checked > 0.9 * len(readings)


def test_fresh_state_equals_the_offline_table_row_for_row() -> None:
    readings = _all(simulate(SMALL), "readings")
    windows = EventWindows(STREAMING)
    windows.add(events_from_frame(readings.sample(frac=1.0, random_state=3)))  # any arrival order
    offline = compute_aggregates(readings)[MACHINE_CONDITION.name]
    assert len(offline) > 500
    for row in offline.to_dict("records"):
        state = windows.state(
            MACHINE_CONDITION.name, (str(row["machine_id"]),), epoch_us(row["event_timestamp"])
        )
        assert state is not None
        _, values = state
        for feature in MACHINE_CONDITION.features:
            assert values[feature] == pytest.approx(row[feature], rel=1e-9), feature
    # A served request is the same event as its curated row.
    request = {k: (v.isoformat() if isinstance(v, pd.Timestamp) else v) for k, v in readings.iloc[0].items()}
    assert STREAMING.event(request) == events_from_frame(readings.head(1))[0]


def test_every_start_day_and_seed_is_accepted_by_write(tmp_path: Path) -> None:
    request = SimulationRequest(
        out=tmp_path, days=3, start=date(2026, 3, 2), seed=11, options={"machines": 20}
    )
    summary = SIMULATION.write(request)
    assert summary["files"] == 3 + 1 and summary["bad_files"] == []
    assert summary["end"] == (date(2026, 3, 2) + timedelta(days=2)).isoformat()
    assert "20 machines" in SIMULATION.describe(summary)
    with pytest.raises(ValueError, match="unknown drift kind 'flood'"):
        SIMULATION.write(replace(request, drift="flood"))
    with pytest.raises(ValueError, match="unknown bad-batch kind 'wet'"):
        SIMULATION.write(replace(request, options={"bad": "wet"}))

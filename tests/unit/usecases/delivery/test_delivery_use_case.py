"""The delivery-time use case (a regression problem) through the platform's interface: its simulated city
keeps its own data contract, its batches pass its own Great Expectations suites, and the platform's ingest
publishes and quarantines them with no code of its own for this use case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopline.config import Settings
from loopline.config.use_case import load_use_case
from loopline.data.batch_files import write_frame
from loopline.data.ingest import ingest_file, landed_files
from loopline.data.validation import validate_frame
from loopline.usecases.delivery.simulator import DeliveryConfig, DeliveryDrift, simulate, write_days

USE_CASE = load_use_case("delivery")
SMALL = DeliveryConfig(seed=3, days=3, orders_per_day=400, restaurants=40)


@pytest.fixture
def settings(state_dir: Path) -> Settings:
    return Settings(state_dir=state_dir, use_case="delivery")


def test_a_seed_is_one_world_and_each_batch_keeps_the_contract() -> None:
    first, again = simulate(SMALL), simulate(SMALL)
    for day, same in zip(first, again, strict=True):
        pd.testing.assert_frame_equal(day.orders, same.orders)
        pd.testing.assert_frame_equal(day.deliveries, same.deliveries)
        assert {c: str(t) for c, t in day.orders.dtypes.items()} == dict(USE_CASE.event_columns)
        assert {c: str(t) for c, t in day.deliveries.dtypes.items()} == dict(USE_CASE.label_columns)
        assert (day.deliveries["delivered_at"] > day.orders["ordered_at"]).all()  # ground truth comes later
    other = simulate(DeliveryConfig(seed=4, days=1, orders_per_day=400, restaurants=40))
    assert not first[0].orders["distance_km"].equals(other[0].orders["distance_km"])


def test_the_simulated_batches_pass_their_own_suites() -> None:
    day = simulate(SMALL)[0]
    for kind, frame in (("orders", day.orders), ("deliveries", day.deliveries)):
        outcome = validate_frame(frame, kind, USE_CASE.expectations_dir)
        assert outcome.passed and not outcome.warnings, (kind, outcome.blocking, outcome.warnings)


def test_the_platform_ingests_the_use_case_and_quarantines_its_broken_batch(settings: Settings) -> None:
    written = write_days(SMALL, settings.state.landing)
    assert sorted(landed_files(settings)) == sorted(written)
    results = [ingest_file(settings, path) for path in written]
    assert {r.status for r in results} == {"published"}, [r.summary() for r in results]
    orders = pd.concat(
        pd.read_parquet(p) for p in sorted((settings.state.curated / "orders").rglob("*.parquet"))
    )
    deliveries = pd.concat(
        pd.read_parquet(p) for p in sorted((settings.state.curated / "deliveries").rglob("*.parquet"))
    )
    assert len(orders) == sum(len(d.orders) for d in simulate(SMALL))
    assert set(deliveries["order_id"]) <= set(orders["order_id"])  # the last night's deliveries come later

    broken = simulate(SMALL)[0].orders.head(50).copy()
    broken["order_id"] = [f"o_{9_000_000_000 + i:012d}" for i in range(50)]
    broken.loc[:4, "distance_km"] = -1.0
    path = settings.state.landing / "orders" / "broken.parquet"
    write_frame(broken, path, "parquet")
    result = ingest_file(settings, path)
    assert result.status == "quarantined"
    assert [(f["column"], f["count"]) for f in result.failures] == [("distance_km", 5)]


def test_a_batch_outside_the_use_cases_folders_names_them(settings: Settings) -> None:
    path = settings.state.landing / "transactions" / "day.parquet"
    write_frame(simulate(SMALL)[0].orders, path, "parquet")
    result = ingest_file(settings, path)
    assert result.status == "quarantined"
    assert "deliver it under landing/orders/ or landing/deliveries/" in result.failures[0]["message"]


def test_the_drift_scenarios_change_the_world_as_documented() -> None:
    base = DeliveryConfig(seed=11, days=20, orders_per_day=300, restaurants=40)
    rainy = DeliveryConfig(**{**base.__dict__, "drift": DeliveryDrift("weather", from_day=10)})
    slower = DeliveryConfig(**{**base.__dict__, "drift": DeliveryDrift("slower_couriers", from_day=10)})

    def wet_days(days: list) -> int:
        return sum(d.orders["weather_condition"].iloc[0] in ("rain", "snow") for d in days)

    assert wet_days(simulate(rainy)[10:]) > wet_days(simulate(base)[10:])
    before, after = simulate(base)[10:], simulate(slower)[10:]
    for b, a in zip(before, after, strict=True):
        pd.testing.assert_frame_equal(b.orders, a.orders)  # the same orders: only the outcome changed
        hit = b.orders["dropoff_zone"].isin(["old_town", "harbour"]).to_numpy()
        gap = a.deliveries["delivery_minutes"].to_numpy() - b.deliveries["delivery_minutes"].to_numpy()
        assert np.mean(gap[hit]) > 3.0 and np.allclose(gap[~hit], 0.0, atol=0.11)


def _simulate_cli(*argv: str) -> int:
    """``loopline simulate ARGV``, through the CLI's own entry point."""
    from loopline.cli.main import main

    return main(["simulate", *argv])


def test_loopline_simulate_writes_the_use_cases_world(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    argv = ("--use-case", "delivery", "--days", "3", "--seed", "5", "--option", "orders_per_day=200")
    drift = ("--drift", "slower_couriers", "--drift-from", "1")
    assert _simulate_cli(*argv, *drift, "--out", str(tmp_path), "--json") == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    assert out[0].startswith("Simulated 3 days (2026-01-01 .. 2026-01-03, seed 5):")
    assert summary["drift"] == {"kind": "slower_couriers", "from_day": 1}
    orders = sorted((tmp_path / "orders").glob("orders_*.parquet"))
    assert summary["order_files"] == [str(p) for p in orders] and len(orders) == 3
    assert summary["orders"] == sum(len(pd.read_parquet(p)) for p in orders) > 3 * 150
    assert (tmp_path / "deliveries").is_dir() and not (tmp_path / "transactions").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--bad", "missing_column"],
            "the delivery simulator does not take bad (its options: orders_per_day)",
        ),
        (
            ["--drift", "covariate", "--drift-from", "1"],
            "unknown kind 'covariate' (choose from weather, slower_couriers)",
        ),
        (["--option", "orders"], "expected NAME=VALUE"),
    ],
)
def test_loopline_simulate_refuses_what_the_use_case_does_not_have(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as caught:
        _simulate_cli("--use-case", "delivery", "--days", "3", "--out", str(tmp_path), *argv)
    assert caught.value.code == 2 and message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_an_unknown_use_case_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _simulate_cli("--use-case", "churn", "--days", "1", "--out", str(tmp_path))
    assert "no use case 'churn'" in capsys.readouterr().err


def test_every_installed_use_case_has_a_simulator_that_satisfies_the_interface() -> None:
    from loopline.config.use_case import WorldSimulator, available_use_cases

    for name in available_use_cases():
        simulation = load_use_case(name).load_simulator()
        assert isinstance(simulation, WorldSimulator) and simulation.drift_kinds

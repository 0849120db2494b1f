"""A simulated city of food deliveries: orders with their context, and each delivery's minutes arriving later.

Deterministic for a seed. Delivery time = the restaurant's preparation time + travel (distance over the
zone's speed, slower in rain and snow and at rush hours) + waiting for a courier (grows steeply with the share
of busy couriers) + noise. A drift scenario changes the world from a given day:

* ``weather`` (covariate shift): a rainy season, rain and snow far more frequent, and busier couriers;
* ``slower_couriers`` (concept shift): the same orders take longer (a new routing rule halves the speed
  in the old town and the harbour), so a model trained before it under-predicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pandas as pd

from loopline.config.use_case import DemoPlan, SimulationRequest
from loopline.data.batch_files import write_frame
from loopline.usecases.delivery.schema import (
    DELIVERY_COLUMNS,
    DISTANCE_MAX_KM,
    MINUTES_MAX,
    ORDER_COLUMNS,
    TIERS,
    WEATHER,
    ZONES,
)

DriftKind = Literal["weather", "slower_couriers"]
# Orders per hour of the day (local time = UTC here), lunch and dinner peaks.
HOURLY_SHARE = np.array([0.2, 0.1, 0.05, 0.05, 0.05, 0.1, 0.3, 0.6, 0.8, 0.9, 1.2, 2.5,
                         3.5, 2.5, 1.2, 0.9, 1.0, 1.6, 3.2, 4.0, 3.0, 1.6, 0.8, 0.4])  # fmt: skip
ZONE_SPEED_KMH = {"centre": 14.0, "old_town": 11.0, "harbour": 17.0, "university": 16.0,
                  "suburbs_north": 24.0, "suburbs_south": 22.0}  # fmt: skip
WEATHER_SLOWDOWN = {"clear": 1.0, "cloudy": 1.05, "rain": 1.35, "snow": 1.8}
WEATHER_ODDS = {"clear": 0.55, "cloudy": 0.3, "rain": 0.12, "snow": 0.03}
RAINY_SEASON_ODDS = {"clear": 0.2, "cloudy": 0.3, "rain": 0.38, "snow": 0.12}


@dataclass(frozen=True)
class DeliveryDrift:
    kind: DriftKind
    from_day: int  # index of the first drifted day (0 = the first simulated day)


@dataclass(frozen=True)
class DeliveryConfig:
    seed: int = 7
    start: date = date(2026, 1, 5)
    days: int = 14
    orders_per_day: int = 1500
    restaurants: int = 120
    drift: DeliveryDrift | None = None

    def day(self, index: int) -> date:
        return self.start + timedelta(days=index)


@dataclass
class DeliveryDay:
    day: date
    orders: pd.DataFrame
    deliveries: pd.DataFrame  # of this day's orders (delivered_at may fall on the next day)


@dataclass
class DeliveryWorld:
    """The restaurants (zone, preparation time) that stay fixed across days."""

    config: DeliveryConfig
    restaurant_zone: np.ndarray = field(init=False)
    prep_minutes: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng([self.config.seed, 0])
        n = self.config.restaurants
        self.restaurant_zone = rng.choice(np.array(ZONES), n, p=[0.3, 0.2, 0.12, 0.14, 0.12, 0.12])
        self.prep_minutes = rng.gamma(6.0, 2.5, n)  # ~15 min, some slow kitchens

    def simulate_day(self, index: int) -> DeliveryDay:
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, 1, index])
        drift = cfg.drift if cfg.drift and index >= cfg.drift.from_day else None
        n = int(rng.poisson(cfg.orders_per_day))
        day_start = datetime.combine(cfg.day(index), datetime.min.time(), tzinfo=UTC)
        hours = rng.choice(24, n, p=HOURLY_SHARE / HOURLY_SHARE.sum())
        seconds = hours * 3600 + rng.integers(0, 3600, n)
        order = np.argsort(seconds, kind="stable")
        hours, seconds = hours[order], seconds[order]
        ordered_at = pd.to_datetime(day_start) + pd.to_timedelta(seconds, unit="s")

        restaurant = rng.integers(0, cfg.restaurants, n)
        pickup = self.restaurant_zone[restaurant]
        same_zone = rng.random(n) < 0.55
        dropoff = np.where(same_zone, pickup, rng.choice(np.array(ZONES), n))
        distance = np.clip(np.where(same_zone, rng.gamma(2.0, 0.9, n), rng.gamma(3.0, 1.6, n)), 0.3, 25.0)
        odds = RAINY_SEASON_ODDS if drift and drift.kind == "weather" else WEATHER_ODDS
        weather = rng.choice(np.array(WEATHER), p=np.array(list(odds.values())))  # one sky per day and city
        weather_by_order = np.full(n, weather)
        rush = np.isin(hours, (12, 13, 18, 19, 20))
        busy = np.clip(
            rng.beta(2.0, 3.0, n) + 0.25 * rush + (0.15 if weather in ("rain", "snow") else 0.0), 0, 1
        )
        items = 1 + rng.poisson(1.6, n)
        value = np.round(items * rng.gamma(4.0, 3.2, n) + 2.5, 2)
        tier = rng.choice(np.array(TIERS), n, p=[0.25, 0.55, 0.2])

        speed = np.array([ZONE_SPEED_KMH[z] for z in dropoff]) / WEATHER_SLOWDOWN[weather]
        speed = speed * np.where(rush, 0.8, 1.0)
        if drift and drift.kind == "slower_couriers":
            speed = speed * np.where(np.isin(dropoff, ("old_town", "harbour")), 0.5, 1.0)
        travel = 60.0 * distance / speed
        wait = 3.0 + 25.0 * busy**3
        prep = self.prep_minutes[restaurant] * (1.0 + 0.06 * (items - 1))
        minutes = np.clip(prep + travel + wait + rng.normal(0.0, 3.0, n), 8.0, MINUTES_MAX)
        minutes = np.round(minutes, 1)

        first = index * 10_000_000
        ids = pd.array([f"o_{first + i:012d}" for i in range(n)], dtype="string")
        orders = pd.DataFrame(
            {
                "order_id": ids,
                "ordered_at": ordered_at.astype("datetime64[us, UTC]"),
                "restaurant_id": pd.array([f"r_{r:04d}" for r in restaurant], dtype="string"),
                "pickup_zone": pd.array(pickup, dtype="string"),
                "dropoff_zone": pd.array(dropoff, dtype="string"),
                "distance_km": np.round(distance, 2).astype("float64"),
                "item_count": items.astype("int64"),
                "order_value_eur": value.astype("float64"),
                "weather_condition": pd.array(weather_by_order, dtype="string"),
                "couriers_busy_share": np.round(busy, 3).astype("float64"),
                "customer_tier": pd.array(tier, dtype="string"),
            }
        )[list(ORDER_COLUMNS)]
        delivered_at = ordered_at + pd.to_timedelta(minutes, unit="m")
        deliveries = pd.DataFrame(
            {
                "order_id": ids,
                "delivery_minutes": minutes.astype("float64"),
                "delivered_at": delivered_at.astype("datetime64[us, UTC]").floor("s"),
            }
        )[list(DELIVERY_COLUMNS)]
        return DeliveryDay(cfg.day(index), orders, deliveries)


def simulate(config: DeliveryConfig) -> list[DeliveryDay]:
    world = DeliveryWorld(config)
    return [world.simulate_day(i) for i in range(config.days)]


def write_days(config: DeliveryConfig, landing: Path, fmt: str = "parquet") -> list[Path]:
    """Each day's orders and the deliveries completed by the end of that day, as the landing zone takes them
    (``landing/orders/``, ``landing/deliveries/``). A delivery finished after midnight lands the next day."""
    return list(_write_batches(config, landing, fmt))


def _write_batches(config: DeliveryConfig, landing: Path, fmt: str) -> dict[Path, int]:
    """``write_days``, with the rows written to each file (in writing order)."""
    written: dict[Path, int] = {}
    carried = pd.DataFrame({c: pd.Series(dtype=d) for c, d in DELIVERY_COLUMNS.items()})
    for day in simulate(config):
        end = pd.Timestamp(datetime.combine(day.day + timedelta(days=1), datetime.min.time(), tzinfo=UTC))
        due = pd.concat([carried, day.deliveries], ignore_index=True)
        done, carried = due[due["delivered_at"] < end], due[due["delivered_at"] >= end]
        for kind, frame in (("orders", day.orders), ("deliveries", done.reset_index(drop=True))):
            path = landing / kind / f"{kind}_{day.day.isoformat()}.{fmt}"
            write_frame(frame, path, fmt)
            written[path] = len(frame)
    return written


DRIFT_KINDS: dict[str, str] = {
    "weather": "a rainy season: rain and snow far more often, couriers busier (the inputs shift)",
    "slower_couriers": "the same orders take longer in the old town and the harbour (only the minutes show it)",
}


def new_far_area(order: dict[str, Any]) -> dict[str, Any]:
    """A new service area far out of town goes live: every order travels three times as far (within the
    contract's 30 km), with couriers busier for it. Unlike a storm (the simulated city has whole rainy and
    snowy days, so one is ordinary weather to a monitor calibrated on past days), no past day looks like
    this: the demo's live drift."""
    return {
        **order,
        "distance_km": round(min(DISTANCE_MAX_KM, 3.0 * float(order["distance_km"])), 2),
        "couriers_busy_share": round(min(1.0, 0.35 + 0.65 * float(order["couriers_busy_share"])), 3),
    }


class DeliveryWorldSimulation:
    """The delivery use case's :class:`~loopline.config.use_case.WorldSimulator` (``loopline simulate``)."""

    drift_kinds = DRIFT_KINDS
    options = {"orders_per_day": "mean number of orders a day (default 1500)"}
    bad_kinds: dict[str, str] = {}
    # Minutes are known within hours of the order: two weeks give twelve labelled training days and a
    # matured holdout.
    demo = DemoPlan(
        days=14,
        epochs=12,
        live_drift=new_far_area,
        live_drift_description="a new far-out service area: every order travels 3x as far",
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
            drift = DeliveryDrift(cast(DriftKind, request.drift), request.drift_from)
        config = DeliveryConfig(
            seed=request.seed,
            start=request.start,
            days=request.days,
            orders_per_day=int(request.options.get("orders_per_day") or DeliveryConfig.orders_per_day),
            drift=drift,
        )
        out = Path(request.out)
        written = _write_batches(config, out, request.fmt)
        orders = [p for p in written if p.parent.name == "orders"]
        deliveries = [p for p in written if p.parent.name == "deliveries"]
        return {
            "out": str(out),
            "days": config.days,
            "start": config.start.isoformat(),
            "end": config.day(config.days - 1).isoformat(),
            "seed": config.seed,
            "format": request.fmt,
            "orders": sum(written[p] for p in orders),  # counted as written, not read back
            "order_files": [str(p) for p in orders],
            "delivery_files": [str(p) for p in deliveries],
            "drift": None if drift is None else {"kind": drift.kind, "from_day": drift.from_day},
            "files": len(written),
            "bad_files": [],
        }

    def describe(self, summary: dict[str, Any]) -> str:
        lines = [
            f"Simulated {summary['days']} days ({summary['start']} .. {summary['end']}, seed {summary['seed']}): "
            f"{summary['orders']:,} orders",
            f"  {len(summary['order_files'])} order batches in {summary['out']}/orders",
            f"  {len(summary['delivery_files'])} delivery batches in {summary['out']}/deliveries",
        ]
        if summary["drift"]:
            kind = summary["drift"]["kind"]
            lines.append(f"  drift: {kind} from day {summary['drift']['from_day']}: {DRIFT_KINDS[kind]}")
        return "\n".join(lines)


SIMULATION = DeliveryWorldSimulation()

"""Delivery-time data for the regression decisions (gate fairness, canary quality, concept drift): days of the
delivery simulator's city and a small least-squares estimator of the minutes, trained on the first days.

The estimator knows what the simulator's minutes depend on (distance over the drop-off zone's speed, the
weather, rush hours, busy couriers, the restaurant's kitchen), so it is about as good as a trained model:
its MAE is ~3 minutes on the noise of the world. ``slower_couriers`` halves the speed in two zones and the
estimator, trained before, under-predicts those orders.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from loopline.config.use_case import load_use_case
from loopline.usecases.delivery.schema import ZONES
from loopline.usecases.delivery.simulator import (
    WEATHER_SLOWDOWN,
    DeliveryConfig,
    DeliveryDrift,
    DeliveryWorld,
)

DELIVERY = load_use_case("delivery")
START = date(2026, 1, 5)


def days(seed: int, first: int, last: int, drift: str | None = None, drift_from: int = 0) -> pd.DataFrame:
    """Orders of days ``first`` .. ``last - 1`` joined with their minutes (one frame, ordered by time)."""
    config = DeliveryConfig(
        seed=seed,
        start=START,
        days=last,
        orders_per_day=900,
        drift=DeliveryDrift(drift, drift_from) if drift else None,  # type: ignore[arg-type]
    )
    world = DeliveryWorld(config)
    frames = []
    for index in range(first, last):
        day = world.simulate_day(index)
        frames.append(day.orders.merge(day.deliveries, on="order_id"))
    return pd.concat(frames, ignore_index=True)


def _design(frame: pd.DataFrame, restaurants: list[str]) -> np.ndarray:
    hours = frame["ordered_at"].dt.hour.to_numpy()
    rush = np.isin(hours, (12, 13, 18, 19, 20)).astype(float)
    distance = frame["distance_km"].to_numpy(dtype=float)
    columns = [
        np.ones(len(frame)),
        frame["couriers_busy_share"].to_numpy(dtype=float) ** 3,
        frame["item_count"].to_numpy(dtype=float),
    ]
    # Travel minutes per km depend on the drop-off zone and the rush hour, scaled by how much the weather slows
    # traffic (known, like a routing service's estimate: snow is rare, and a fit of its own would need it).
    slowdown = frame["weather_condition"].astype(str).map(WEATHER_SLOWDOWN).to_numpy(dtype=float)
    for zone in ZONES:
        in_zone = (frame["dropoff_zone"].to_numpy() == zone).astype(float) * distance * slowdown
        columns += [in_zone, in_zone * rush]
    kitchen = frame["restaurant_id"].astype(str).to_numpy()
    columns += [(kitchen == r).astype(float) for r in restaurants]
    return np.column_stack(columns)


@dataclass(frozen=True)
class Estimator:
    coef: np.ndarray
    restaurants: list[str]

    @classmethod
    def fit(cls, frame: pd.DataFrame) -> Estimator:
        restaurants = sorted(frame["restaurant_id"].astype(str).unique())
        coef, *_ = np.linalg.lstsq(
            _design(frame, restaurants), frame["delivery_minutes"].to_numpy(), rcond=None
        )
        return cls(coef, restaurants)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.clip(_design(frame, self.restaurants) @ self.coef, 1.0, None)


def scored(frame: pd.DataFrame, predictions: np.ndarray) -> pd.DataFrame:
    """The concept check's / the holdout scores' layout: id, unit, score (the prediction), time, label."""
    return pd.DataFrame(
        {
            DELIVERY.id_column: frame[DELIVERY.id_column].astype(str).to_numpy(),
            "unit": frame[DELIVERY.unit_column].astype(str).to_numpy(),
            "score": predictions,
            "ts": frame[DELIVERY.time_column].to_numpy(),
            DELIVERY.label_column: frame[DELIVERY.label_column].to_numpy(dtype=float),
        }
    )

"""Simulated traffic shared by the monitoring tests (built once per session: the simulator takes ~1 s)."""

from __future__ import annotations

import pandas as pd
import pytest
from monitoring_testkit import traffic


def _halves(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return (frame[frame["day"] < 4].reset_index(drop=True), frame[frame["day"] >= 4].reset_index(drop=True))


@pytest.fixture(scope="session")
def undrifted() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(days 0-3, days 4-7) of one simulated world without drift."""
    return _halves(traffic(days=8))


@pytest.fixture(scope="session")
def covariate() -> pd.DataFrame:
    """Days 4-7 of the same world under the simulator's covariate drift (more online, higher amounts)."""
    return _halves(traffic(days=8, drift="covariate", from_day=4))[1]


@pytest.fixture(scope="session")
def new_category() -> pd.DataFrame:
    """Days 4-7 of the same world where a new merchant category takes ~5 % of the volume."""
    return _halves(traffic(days=8, drift="new_category", from_day=4))[1]

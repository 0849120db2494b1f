"""Random draws shared by the world, the days and the runs.

Every generator is keyed by ``(seed, stream, ...)`` (:func:`_rng`): that is why the same configuration gives
the same data. Plus a per-row weighted choice, random hex fingerprints and country probabilities. Internal
to the simulator package.
"""

from __future__ import annotations

import numpy as np

from loopline.usecases.fraud.simulator.calibration import _CTRY


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def _row_choice(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One index per row of ``weights`` (n, k), drawn with the row's (unnormalised) weights."""
    cdf = np.cumsum(weights, axis=1)
    u = rng.random((weights.shape[0], 1)) * cdf[:, -1:]
    choice: np.ndarray = np.minimum((u >= cdf).sum(axis=1), weights.shape[1] - 1)
    return choice


def _hex_ids(rng: np.random.Generator, prefix: str, n: int, digits: int) -> np.ndarray:
    """``n`` distinct random hex fingerprints, e.g. ``dev_3fa29c0b11d2``."""
    values = rng.choice(16**digits, size=n, replace=False) if n else np.empty(0, dtype=np.int64)
    return np.array([f"{prefix}{v:0{digits}x}" for v in values.tolist()], dtype=object)


def _probs(table: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    idx = np.array([_CTRY[c] for c in table])
    p = np.array(list(table.values()))
    return idx, p / p.sum()

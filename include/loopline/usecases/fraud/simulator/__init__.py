"""The transaction simulator: card traffic of a (German) card issuer, with fraud, labels and drift.

A :class:`World` holds what stays fixed for a run: customers (age band, region, home country, cards,
devices, activity and spending level), merchants (category, country, online or physical, popularity,
risk level, terminals) and the schedule of merchant breaches. A :class:`Simulator` walks the days of a
run and yields one :class:`DayBatch` per day: that day's transactions in the exact column contract of
:mod:`loopline.usecases.fraud.schema`, the label rows that land that day, and the ground truth of which fraud
pattern produced each transaction (for tests and reports; it is not part of the contract).

Everything is drawn from numpy generators keyed by ``(seed, stream, day)``: the same configuration
gives the same data, and a drift changes nothing before its first day (days before ``drift.from_day``
are identical to a run without drift).

Realism, in short (numbers are for the default 2,000 customers):

* ~6k transactions a day; the daily rhythm follows Europe/Berlin local time (timestamps are UTC):
  quiet nights, lunch and evening peaks; more on Friday/Saturday, shops closed on Sunday (grocery and
  fashion drop, online and restaurants rise).
* Amounts are lognormal by category (grocery ~EUR 38 median, fuel ~60, travel ~380, electronics ~240,
  digital goods ~11 ...), scaled by the customer's spending level, rounded to cents, shop prices often
  ending in .99; ATM withdrawals are round sums. ATMs are recorded at the merchant hosting them
  (supermarkets, fuel and transport stations), with an ATM terminal id as ``device_id``.
* Channels: contactless for small in-store payments (German PIN-free limit EUR 50), chip above,
  online for digital goods, travel, utilities and gambling, ATM rare (~2 %). ``device_id`` is one of
  the customer's 1-3 devices online (rarely a new one: a new phone), a terminal id in store.
* Customers travel: a few per cent are abroad on any day and pay in store there.
* Fraud (~0.8 % of transactions), in four patterns: stolen-card bursts, card testing, account
  takeover on a new device, and breached merchants whose card-present customers see card-not-present
  fraud and cloned-card withdrawals abroad days later. Fraud leans to night, abroad, risky merchants
  and electronics, but each signal also occurs in genuine traffic.

The modules, each importing only those above it:

* :mod:`~loopline.usecases.fraud.simulator.calibration`: the vocabularies and calibration tables;
* :mod:`~loopline.usecases.fraud.simulator.config`: :class:`SimulationConfig`, :class:`Drift`, the clock;
* :mod:`~loopline.usecases.fraud.simulator.draws`: keyed generators and the shared random draws;
* :mod:`~loopline.usecases.fraud.simulator.world`: the :class:`World` of a seed;
* :mod:`~loopline.usecases.fraud.simulator.day`: one day's rows, the :class:`Simulator`, :func:`conform`;
* :mod:`~loopline.usecases.fraud.simulator.bad_batches`: deliberately broken batches (for validation);
* :mod:`~loopline.usecases.fraud.simulator.runs`: whole runs, in memory or written to a landing directory.
"""

from __future__ import annotations

from loopline.usecases.fraud.simulator.bad_batches import BAD_KINDS, make_bad_batch, write_bad_batch
from loopline.usecases.fraud.simulator.calibration import CATEGORIES, NEW_CATEGORY, PATTERNS
from loopline.usecases.fraud.simulator.config import (
    DEFAULT_CUSTOMERS,
    DEFAULT_SEED,
    DEFAULT_START,
    DRIFT_KINDS,
    Drift,
    SimulationConfig,
    day_start_us,
    utc_offset_hours,
)
from loopline.usecases.fraud.simulator.day import DayBatch, DayParams, Simulator, conform
from loopline.usecases.fraud.simulator.runs import Simulation, batch_path, simulate, write_run
from loopline.usecases.fraud.simulator.world import World

__all__ = [
    "BAD_KINDS",
    "CATEGORIES",
    "DEFAULT_CUSTOMERS",
    "DEFAULT_SEED",
    "DEFAULT_START",
    "DRIFT_KINDS",
    "NEW_CATEGORY",
    "PATTERNS",
    "DayBatch",
    "DayParams",
    "Drift",
    "Simulation",
    "SimulationConfig",
    "Simulator",
    "World",
    "batch_path",
    "conform",
    "day_start_us",
    "make_bad_batch",
    "simulate",
    "utc_offset_hours",
    "write_bad_batch",
    "write_run",
]

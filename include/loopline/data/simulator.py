"""The transaction simulator: card traffic of a (German) card issuer, with fraud, labels and drift.

A :class:`World` holds what stays fixed for a run: customers (age band, region, home country, cards,
devices, activity and spending level), merchants (category, country, online or physical, popularity,
risk level, terminals) and the schedule of merchant breaches. A :class:`Simulator` walks the days of a
run and yields one :class:`DayBatch` per day: that day's transactions in the exact column contract of
:mod:`loopline.data.schema`, the label rows that land that day, and the ground truth of which fraud
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
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from loopline.data.bad_batches import BAD_KINDS, write_bad_batch
from loopline.data.batch_files import BATCH_FORMATS, write_frame
from loopline.data.schema import (
    AGE_BANDS,
    AMOUNT_MAX,
    AMOUNT_MIN,
    CHANNELS,
    LABEL_COLUMNS,
    MERCHANT_CATEGORIES,
    MERCHANT_COUNTRIES,
    REGIONS,
    TRANSACTION_COLUMNS,
)

DEFAULT_START = date(2026, 1, 1)
DEFAULT_SEED = 42
DEFAULT_CUSTOMERS = 2_000
LOCAL_TZ = ZoneInfo("Europe/Berlin")

#: The category that appears with ``new_category`` drift (not in the contract's vocabulary).
NEW_CATEGORY = "crypto_exchange"
CATEGORIES: tuple[str, ...] = (*MERCHANT_CATEGORIES, NEW_CATEGORY)

DRIFT_KINDS: dict[str, str] = {
    "covariate": "more online payments and ~40 % higher amounts (digital goods, electronics, travel up)",
    "new_category": f"a new merchant category '{NEW_CATEGORY}' appears with ~5 % of the volume",
    "concept": "fraud moves to scams on the customers' own devices (mostly 60+, daytime, domestic): "
    "only labels show it",
    "prior": "the fraud rate triples (every pattern three times as frequent)",
}

PATTERNS: tuple[str, ...] = (
    "genuine",
    "stolen_card",
    "card_testing",
    "account_takeover",
    "merchant_compromise",
    "scam",
)
GENUINE, STOLEN, TESTING, TAKEOVER, COMPROMISE, SCAM = range(len(PATTERNS))

US_PER_HOUR = 3_600_000_000
US_PER_DAY = 24 * US_PER_HOUR
_EPOCH = date(1970, 1, 1)

_CH = {name: i for i, name in enumerate(CHANNELS)}
CHIP, CONTACTLESS, ONLINE, ATM = _CH["chip"], _CH["contactless"], _CH["online"], _CH["atm"]
_CAT = {name: i for i, name in enumerate(CATEGORIES)}
_CTRY = {name: i for i, name in enumerate(MERCHANT_COUNTRIES)}
DE = _CTRY["DE"]

# --- category table -------------------------------------------------------------------------------
# name: (median EUR, lognormal sigma, share of transactions, merchants, share of them online-only,
#        channel weights (chip, contactless, online, atm), share of online spend abroad, in-store rhythm)
_CATEGORY_TABLE: dict[
    str, tuple[float, float, float, int, float, tuple[float, float, float, float], float, str]
] = {
    "grocery": (38.0, 0.65, 0.260, 45, 0.10, (0.14, 0.78, 0.04, 0.04), 0.02, "retail"),
    "restaurant": (27.0, 0.65, 0.130, 60, 0.10, (0.14, 0.78, 0.08, 0.00), 0.05, "dining"),
    "fuel": (60.0, 0.35, 0.075, 25, 0.00, (0.30, 0.62, 0.00, 0.08), 0.00, "commute"),
    "transport": (9.0, 0.90, 0.100, 18, 0.30, (0.05, 0.53, 0.40, 0.02), 0.05, "commute"),
    "travel": (380.0, 0.90, 0.015, 22, 0.75, (0.15, 0.03, 0.82, 0.00), 0.25, "retail"),
    "electronics": (240.0, 1.00, 0.022, 22, 0.45, (0.30, 0.15, 0.55, 0.00), 0.15, "retail"),
    "fashion": (62.0, 0.70, 0.060, 35, 0.40, (0.20, 0.40, 0.40, 0.00), 0.10, "retail"),
    "digital_goods": (11.0, 0.95, 0.100, 30, 1.00, (0.00, 0.00, 1.00, 0.00), 0.30, "online"),
    "entertainment": (28.0, 0.75, 0.050, 25, 0.40, (0.10, 0.45, 0.45, 0.00), 0.15, "dining"),
    "health": (24.0, 0.80, 0.050, 20, 0.15, (0.18, 0.72, 0.10, 0.00), 0.05, "retail"),
    "utilities": (85.0, 0.55, 0.035, 10, 0.90, (0.05, 0.00, 0.95, 0.00), 0.00, "retail"),
    "gambling": (55.0, 1.00, 0.015, 12, 0.90, (0.08, 0.02, 0.90, 0.00), 0.25, "online"),
    NEW_CATEGORY: (150.0, 1.10, 0.000, 8, 1.00, (0.00, 0.00, 1.00, 0.00), 0.50, "online"),
}
_T = [_CATEGORY_TABLE[c] for c in CATEGORIES]
CAT_MEDIAN = np.array([t[0] for t in _T])
CAT_SIGMA = np.array([t[1] for t in _T])
CAT_WEIGHT = np.array([t[2] for t in _T])
CAT_MERCHANTS = np.array([t[3] for t in _T])
CAT_ECOM_SHARE = np.array([t[4] for t in _T])
CAT_CHANNEL = np.array([t[5] for t in _T])
CAT_ONLINE_ABROAD = np.array([t[6] for t in _T])
_PRICE_POINT_CATS = np.isin(
    np.arange(len(CATEGORIES)), [_CAT[c] for c in ("electronics", "fashion", "digital_goods")]
)
_SUNDAY_CLOSED = [_CAT[c] for c in ("grocery", "fashion", "electronics", "health")]

# Share of transactions in a category by age band, as multipliers of CAT_WEIGHT (rows: AGE_BANDS).
AGE_CATEGORY = np.array(
    [  # groc rest fuel trans trav elec fash digi ent  hlth util gamb crypto
        [0.80, 1.20, 0.70, 1.60, 0.80, 1.10, 1.30, 1.80, 1.50, 0.60, 0.60, 1.60, 2.5],  # 18-25
        [1.00, 1.10, 1.00, 1.10, 1.10, 1.10, 1.10, 1.20, 1.10, 0.80, 1.00, 1.10, 1.4],  # 26-40
        [1.05, 1.00, 1.10, 0.90, 1.10, 1.00, 1.00, 0.80, 0.90, 1.10, 1.10, 0.90, 0.7],  # 41-60
        [1.30, 0.90, 0.90, 0.70, 1.00, 0.70, 0.80, 0.40, 0.70, 1.80, 1.20, 0.50, 0.2],  # 60+
    ]
)
AGE_PROBS = np.array([0.13, 0.33, 0.34, 0.20])
AGE_ACTIVITY = np.array([0.90, 1.10, 1.05, 0.80])
AGE_SPEND = np.array([0.75, 1.00, 1.15, 0.95])
AGE_ONLINE = np.array([1.50, 1.20, 0.90, 0.60])
REGION_PROBS = np.array([0.21, 0.32, 0.16, 0.31])
REGION_SPEND = np.array([1.00, 1.08, 0.90, 1.02])
_HOME = {"DE": 0.92, "AT": 0.025, "PL": 0.02, "NL": 0.01, "FR": 0.01, "BE": 0.005, "IT": 0.005, "ES": 0.005}
_TRIP = {"AT": 0.16, "ES": 0.16, "IT": 0.14, "FR": 0.12, "NL": 0.09, "TR": 0.08, "PL": 0.06, "GB": 0.06,
         "US": 0.05, "BE": 0.04}  # fmt: skip
_ECOM_ABROAD = {"NL": 0.20, "GB": 0.20, "US": 0.25, "CN": 0.12, "FR": 0.07, "IT": 0.03, "ES": 0.03,
                "RU": 0.03, "TR": 0.03, "NG": 0.02, "BR": 0.02}  # fmt: skip
_HIGH_RISK_COUNTRIES = [_CTRY[c] for c in ("NG", "RU", "BR", "CN", "TR")]
_TOURIST_CATEGORIES = [
    _CAT[c] for c in ("grocery", "restaurant", "fuel", "transport", "fashion", "entertainment", "health")
]
_CATEGORY_RISK = {"gambling": 2.0, "digital_goods": 1.5, "electronics": 1.2, "travel": 1.0, NEW_CATEGORY: 2.0}
RISK_LEVELS = ("low", "medium", "high")
_RISK_WEIGHT = np.array([1.0, 3.0, 10.0])  # how much more often fraudsters pick a merchant by risk level

# Transactions per customer and day, Monday..Sunday (relative).
WEEKDAY_VOLUME = np.array([0.93, 0.95, 0.97, 1.00, 1.14, 1.16, 0.82])
WEEKDAY_CATEGORY = np.ones((7, len(CATEGORIES)))
for _dow, _mult in {
    4: {"restaurant": 1.25, "entertainment": 1.35, "fuel": 1.05, "gambling": 1.2},
    5: {"grocery": 1.25, "fashion": 1.6, "electronics": 1.35, "restaurant": 1.3, "entertainment": 1.5,
        "transport": 0.7, "utilities": 0.3, "fuel": 1.1},
    6: {"grocery": 0.25, "fashion": 0.55, "electronics": 0.6, "health": 0.4, "restaurant": 1.35,
        "entertainment": 1.6, "transport": 0.65, "travel": 1.3, "digital_goods": 1.3, "gambling": 1.3,
        "utilities": 0.3, "fuel": 0.8},
}.items():  # fmt: skip
    for _name, _m in _mult.items():
        WEEKDAY_CATEGORY[_dow, _CAT[_name]] = _m

# Local-time rhythms (relative weight per hour 0..23).
_PROFILES: dict[str, list[float]] = {
    "retail": [0.2, 0.1, 0.05, 0.05, 0.05, 0.1, 0.4, 1.5, 3, 5, 6.5, 7, 7.5, 6.5, 6, 6, 6.5, 7.5, 7.5, 5.5, 3,
               1.2, 0.6, 0.3],
    "dining": [1.2, 0.7, 0.4, 0.2, 0.1, 0.1, 0.3, 1.2, 2, 2, 2.5, 5, 9, 8, 3, 2.5, 3, 4.5, 7.5, 9, 8, 5.5, 3.5,
               2],
    "commute": [0.4, 0.2, 0.1, 0.1, 0.2, 0.8, 3, 6.5, 7, 5, 4.5, 4.5, 5, 4.5, 4.5, 5.5, 7, 8, 6.5, 4.5, 3, 2,
                1.3, 0.8],
    "online": [2.5, 1.6, 1, 0.6, 0.4, 0.4, 0.8, 1.8, 3, 3.8, 4.2, 4.5, 5, 4.8, 4.5, 4.5, 4.8, 5.3, 6, 6.8, 7.5,
               7.5, 6, 4],
    "atm": [0.5, 0.3, 0.2, 0.1, 0.1, 0.2, 0.6, 2, 3.5, 4.5, 5.5, 6, 6.5, 6, 5.5, 5.5, 6, 7, 7, 6, 4.5, 3, 2,
            1],
    "fraud": [4.5, 4.5, 4, 3.5, 3, 2.5, 2.5, 3, 3.5, 4, 4.5, 4.5, 4.5, 4.5, 4.5, 4.5, 4.5, 5, 5, 5.5, 5.5,
              5.5, 5, 5],
}  # fmt: skip
_PROFILE_NAMES = tuple(_PROFILES)
_PROFILE = {name: i for i, name in enumerate(_PROFILE_NAMES)}
_PROFILE_MATRIX = np.array([_PROFILES[n] for n in _PROFILE_NAMES])
CAT_POS_PROFILE = np.array([_PROFILE[t[7]] for t in _T])

ATM_AMOUNTS = np.array([20.0, 50.0, 100.0, 150.0, 200.0, 300.0, 400.0])
ATM_PROBS = np.array([0.12, 0.30, 0.25, 0.10, 0.13, 0.06, 0.04])

# Fraud intensities per 2,000 customers and day (incidents), and what they produce.
FRAUD_INCIDENTS = {STOLEN: 4.5, TESTING: 1.5, TAKEOVER: 6.0}
COMPROMISE_VICTIMS = 8.0  # cards abused later, per 2,000 customers and day a merchant is breached
_TX_PER_INCIDENT = {STOLEN: 4.5, TESTING: 7.0, TAKEOVER: 2.0, SCAM: 1.5}
_COMPROMISE_TX_PER_DAY = 7.0  # long-run average of breach fraud, for the concept-drift budget
CONCEPT_OLD_SHARE = 0.2  # what is left of the old patterns under concept drift
PRIOR_FACTOR = 3.0


# --- configuration ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drift:
    """A drift that starts on day ``from_day`` (0-based index into the run) and lasts to the end."""

    kind: str
    from_day: int


@dataclass(frozen=True)
class SimulationConfig:
    days: int
    start: date = DEFAULT_START
    seed: int = DEFAULT_SEED
    n_customers: int = DEFAULT_CUSTOMERS
    drift: Drift | None = None

    def validate(self) -> None:
        if not isinstance(self.days, int) or self.days < 1:
            raise ValueError(f"days must be a whole number >= 1, got {self.days!r}")
        if not isinstance(self.n_customers, int) or self.n_customers < 1:
            raise ValueError(f"customers must be a whole number >= 1, got {self.n_customers!r}")
        if self.drift is not None:
            if self.drift.kind not in DRIFT_KINDS:
                raise ValueError(
                    f"unknown drift kind {self.drift.kind!r}; valid kinds: {', '.join(DRIFT_KINDS)}"
                )
            if not 0 <= self.drift.from_day < self.days:
                raise ValueError(
                    f"drift must start within the run (day 0..{self.days - 1}, "
                    f"{self.day(0)}..{self.day(self.days - 1)}), got day {self.drift.from_day}"
                )

    def day(self, index: int) -> date:
        return self.start + timedelta(days=index)

    @property
    def end(self) -> date:
        """The last simulated day."""
        return self.day(self.days - 1)


def day_start_us(day: date) -> int:
    """Microseconds since the epoch at 00:00 UTC of ``day``."""
    return (day - _EPOCH).days * US_PER_DAY


def utc_offset_hours(day: date) -> int:
    """Europe/Berlin's offset from UTC at noon of ``day`` (1 in winter, 2 in summer)."""
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    offset = noon.astimezone(LOCAL_TZ).utcoffset()
    assert offset is not None  # a ZoneInfo-aware datetime always has an offset
    return int(offset.total_seconds() // 3600)


# --- helpers ---------------------------------------------------------------------------------------


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


# --- the world -------------------------------------------------------------------------------------


@dataclass
class World:
    """Customers, cards, devices, merchants, terminals and breaches: fixed for a seed."""

    seed: int
    n_customers: int
    # customers
    customer_ids: np.ndarray
    age: np.ndarray
    region: np.ndarray
    home: np.ndarray
    activity: np.ndarray
    spend: np.ndarray
    card_offset: np.ndarray
    n_cards: np.ndarray
    card_ids: np.ndarray
    device_offset: np.ndarray
    n_devices: np.ndarray
    device_ids: np.ndarray
    # merchants
    merchant_ids: np.ndarray
    merchant_category: np.ndarray
    merchant_country: np.ndarray
    merchant_ecom: np.ndarray
    merchant_popularity: np.ndarray
    merchant_risk: np.ndarray
    terminal_offset: np.ndarray
    n_terminals: np.ndarray
    terminal_ids: np.ndarray
    atm_ids: np.ndarray
    fraud_devices: np.ndarray
    breaches: list[tuple[int, int, int]] = field(default_factory=list)  # (first day, last day, merchant)
    _breach_rng: np.random.Generator | None = None
    _pools: dict[tuple[int, bool, int, bool, bool], tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict
    )

    @classmethod
    def build(cls, seed: int, n_customers: int) -> World:
        rng = _rng(seed, 0)
        n = n_customers
        age = rng.choice(len(AGE_BANDS), size=n, p=AGE_PROBS)
        region = rng.choice(len(REGIONS), size=n, p=REGION_PROBS)
        home_idx, home_p = _probs(_HOME)
        home = home_idx[rng.choice(len(home_idx), size=n, p=home_p)]
        activity = rng.gamma(2.0, 1.5, size=n) * AGE_ACTIVITY[age]
        spend = rng.lognormal(0.0, 0.45, size=n) * AGE_SPEND[age] * REGION_SPEND[region]
        width = max(5, len(str(n - 1)))
        customer_ids = np.array([f"c_{i:0{width}d}" for i in range(n)], dtype=object)

        n_cards = rng.choice([1, 2, 3], size=n, p=[0.60, 0.30, 0.10])
        card_offset = np.concatenate([[0], np.cumsum(n_cards)[:-1]])
        card_ids = np.array(
            [f"card_{i:0{width}d}_{k + 1}" for i, m in enumerate(n_cards.tolist()) for k in range(m)],
            dtype=object,
        )
        n_devices = rng.choice([1, 2, 3], size=n, p=[0.50, 0.35, 0.15])
        device_offset = np.concatenate([[0], np.cumsum(n_devices)[:-1]])
        n_fraud_devices = 80
        devices = _hex_ids(rng, "dev_", int(n_devices.sum()) + n_fraud_devices, 12)
        device_ids, fraud_devices = devices[: int(n_devices.sum())], devices[int(n_devices.sum()) :]

        m_cat, m_country, m_ecom = cls._merchant_layout(rng)
        order = rng.permutation(len(m_cat))  # ids say nothing about category or country
        m_cat, m_country, m_ecom = m_cat[order], m_country[order], m_ecom[order]
        # the new category's merchants come last: they exist in every run, used only under drift
        crypto_country = np.array([_CTRY[c] for c in ("DE", "DE", "GB", "GB", "US", "NL", "AT", "FR")])
        n_crypto = int(CAT_MERCHANTS[_CAT[NEW_CATEGORY]])
        m_cat = np.concatenate([m_cat, np.full(n_crypto, _CAT[NEW_CATEGORY])])
        m_country = np.concatenate([m_country, crypto_country[:n_crypto]])
        m_ecom = np.concatenate([m_ecom, np.ones(n_crypto, dtype=bool)])
        n_m = len(m_cat)
        popularity = rng.lognormal(0.0, 1.0, size=n_m)
        risk_score = (
            np.array([_CATEGORY_RISK.get(CATEGORIES[c], 0.3) for c in m_cat])
            + np.isin(m_country, _HIGH_RISK_COUNTRIES) * 1.0
            + rng.normal(0.0, 0.5, size=n_m)
        )
        risk = np.digitize(risk_score, [0.8, 1.6])
        n_terminals = np.where(m_ecom, 0, np.clip(1 + rng.poisson(2.0 * popularity), 1, 12))
        terminal_offset = np.concatenate([[0], np.cumsum(n_terminals)[:-1]])
        terminal_ids = _hex_ids(rng, "T", int(n_terminals.sum()), 7)
        atm_ids = np.array(
            [f"ATM{v:06d}" for v in rng.choice(1_000_000, size=n_m, replace=False).tolist()], dtype=object
        )
        merchant_ids = np.array([f"m_{i:04d}" for i in range(n_m)], dtype=object)

        return cls(
            seed=seed,
            n_customers=n,
            customer_ids=customer_ids,
            age=age,
            region=region,
            home=home,
            activity=activity,
            spend=spend,
            card_offset=card_offset,
            n_cards=n_cards,
            card_ids=card_ids,
            device_offset=device_offset,
            n_devices=n_devices,
            device_ids=device_ids,
            merchant_ids=merchant_ids,
            merchant_category=m_cat,
            merchant_country=m_country,
            merchant_ecom=m_ecom,
            merchant_popularity=popularity,
            merchant_risk=risk,
            terminal_offset=terminal_offset,
            n_terminals=n_terminals,
            terminal_ids=terminal_ids,
            atm_ids=atm_ids,
            fraud_devices=fraud_devices,
            _breach_rng=_rng(seed, 6),
        )

    @staticmethod
    def _merchant_layout(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Categories, countries and online-only flags of the regular merchants."""
        abroad_idx, abroad_p = _probs(_ECOM_ABROAD)
        neighbours = np.array([_CTRY[c] for c in ("AT", "NL", "FR", "PL", "BE")])
        cats, countries, ecoms = [], [], []
        for c in range(len(MERCHANT_CATEGORIES)):
            k = int(CAT_MERCHANTS[c])
            ecom = rng.random(k) < CAT_ECOM_SHARE[c]
            has_online, has_store = (
                CAT_CHANNEL[c, ONLINE] > 0,
                CAT_CHANNEL[c, [CHIP, CONTACTLESS, ATM]].sum() > 0,
            )
            # at least two German merchants of every kind the category's channels need
            ecom[:2] = has_online if not has_store else True
            ecom[2:4] = not has_store
            abroad = rng.random(k) < np.where(ecom, CAT_ONLINE_ABROAD[c] * 1.3, 0.03)
            abroad[:4] = False
            if has_online and CAT_ONLINE_ABROAD[c] > 0:  # and a few foreign web shops
                ecom[4:7], abroad[4:7] = True, True
            country = np.full(k, DE)
            n_ecom_abroad = int((abroad & ecom).sum())
            country[abroad & ecom] = abroad_idx[rng.choice(len(abroad_idx), size=n_ecom_abroad, p=abroad_p)]
            country[abroad & ~ecom] = rng.choice(neighbours, size=int((abroad & ~ecom).sum()))
            cats.append(np.full(k, c))
            countries.append(country)
            ecoms.append(ecom)
        # shops in the countries customers travel to, so that card-present payments abroad have a place
        for country_name in _TRIP:
            for c in _TOURIST_CATEGORIES:
                cats.append(np.array([c]))
                countries.append(np.array([_CTRY[country_name]]))
                ecoms.append(np.array([False]))
        return np.concatenate(cats), np.concatenate(countries), np.concatenate(ecoms)

    # -- merchant choice --

    def _pool(
        self, cat: int, ecom: bool, country: int, abroad: bool, risky: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        key = (cat, ecom, country, abroad, risky)
        if key not in self._pools:
            in_cat = self.merchant_category == cat
            kind = self.merchant_ecom == ecom
            where = (self.merchant_country != country) if abroad else (self.merchant_country == country)
            members = np.flatnonzero(in_cat & kind & where)
            # nothing of that kind in a small home market: the issuer's (German) market, then anything
            fallbacks = (in_cat & kind & (self.merchant_country == DE), in_cat & kind, in_cat)
            for fallback in fallbacks:
                if members.size:
                    break
                members = np.flatnonzero(fallback)
            weight = self.merchant_popularity[members]
            if risky:
                weight = weight * _RISK_WEIGHT[self.merchant_risk[members]]
            self._pools[key] = (members, np.cumsum(weight))
        return self._pools[key]

    def pick_merchants(
        self,
        rng: np.random.Generator,
        cat: np.ndarray,
        ecom: np.ndarray,
        country: np.ndarray,
        abroad: np.ndarray,
        risky: bool = False,
    ) -> np.ndarray:
        """A merchant per row: of category ``cat``, online-only or not, in ``country`` (or, where
        ``abroad``, anywhere but ``country``), weighted by popularity (and risk, for fraudsters)."""
        n = len(cat)
        out = np.empty(n, dtype=np.int64)
        u = rng.random(n)
        key = ((cat.astype(np.int64) * 2 + ecom) * len(MERCHANT_COUNTRIES) + country) * 2 + abroad
        keys, inverse = np.unique(key, return_inverse=True)
        for j, k in enumerate(keys.tolist()):
            rows = np.flatnonzero(inverse == j)
            k, a = divmod(k, 2)
            k, ctry = divmod(k, len(MERCHANT_COUNTRIES))
            c, e = divmod(k, 2)
            members, cdf = self._pool(c, bool(e), ctry, bool(a), risky)
            out[rows] = members[
                np.minimum(np.searchsorted(cdf, u[rows] * cdf[-1], side="right"), members.size - 1)
            ]
        return out

    def terminals(self, rng: np.random.Generator, merchant: np.ndarray, channel: np.ndarray) -> np.ndarray:
        """The in-store device of a payment: a POS terminal of the merchant, or its ATM."""
        k = np.maximum(self.n_terminals[merchant], 1)
        slot = self.terminal_offset[merchant] + (rng.random(len(merchant)) * k).astype(np.int64)
        slot = np.minimum(slot, len(self.terminal_ids) - 1)
        terminal: np.ndarray = np.where(channel == ATM, self.atm_ids[merchant], self.terminal_ids[slot])
        return terminal

    def customer_devices(self, rng: np.random.Generator, cust: np.ndarray) -> np.ndarray:
        """One of the customer's usual devices (the first one most of the time)."""
        k = self.n_devices[cust]
        other = 1 + (rng.random(len(cust)) * np.maximum(k - 1, 1)).astype(np.int64)
        idx = np.where((rng.random(len(cust)) < 0.7) | (k == 1), 0, np.minimum(other, k - 1))
        devices: np.ndarray = self.device_ids[self.device_offset[cust] + idx]
        return devices

    def customer_cards(self, rng: np.random.Generator, cust: np.ndarray) -> np.ndarray:
        """One of the customer's cards (the main card three times in four)."""
        k = self.n_cards[cust]
        other = 1 + (rng.random(len(cust)) * np.maximum(k - 1, 1)).astype(np.int64)
        idx = np.where((rng.random(len(cust)) < 0.75) | (k == 1), 0, np.minimum(other, k - 1))
        cards: np.ndarray = self.card_offset[cust] + idx
        return cards

    @property
    def card_customer(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_customers), self.n_cards)

    def breach_on(self, day_index: int) -> int | None:
        """The merchant breached (skimmer / hacked terminal) on that day, if any."""
        assert self._breach_rng is not None
        while not self.breaches or self.breaches[-1][0] <= day_index:
            rng = self._breach_rng
            first = (
                int(rng.integers(0, 3))
                if not self.breaches
                else self.breaches[-1][0] + int(rng.integers(7, 13))
            )
            last = first + int(rng.integers(3, 7)) - 1
            candidates = np.flatnonzero(
                np.isin(self.merchant_category, [_CAT["fuel"], _CAT["restaurant"], _CAT["grocery"]])
                & ~self.merchant_ecom
                & (self.merchant_country == DE)
            )
            weight = self.merchant_popularity[candidates] ** 2  # busy places: more cards to skim
            self.breaches.append((first, last, int(rng.choice(candidates, p=weight / weight.sum()))))
        for first, last, merchant in self.breaches:
            if first <= day_index <= last:
                return merchant
        return None


# --- one day ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DayParams:
    amount: float = 1.0
    online: float = 1.0
    category: np.ndarray = field(default_factory=lambda: np.ones(len(CATEGORIES)))
    fraud: float = 1.0  # multiplies every fraud pattern (prior drift)
    old_patterns: float = 1.0  # what is left of the usual patterns (concept drift)
    scam: float = 0.0  # scam incidents per 2,000 customers and day (concept drift)
    new_category: bool = False

    @classmethod
    def for_drift(cls, kind: str | None) -> DayParams:
        category = np.ones(len(CATEGORIES))
        if kind == "covariate":
            category[[_CAT["digital_goods"], _CAT["electronics"], _CAT["travel"]]] = 1.4
            return cls(amount=1.4, online=2.0, category=category)
        if kind == "new_category":
            return cls(new_category=True)
        if kind == "prior":
            return cls(fraud=PRIOR_FACTOR)
        if kind == "concept":
            usual = (
                sum(FRAUD_INCIDENTS[p] * _TX_PER_INCIDENT[p] for p in FRAUD_INCIDENTS)
                + _COMPROMISE_TX_PER_DAY
            )
            return cls(
                old_patterns=CONCEPT_OLD_SHARE, scam=(1 - CONCEPT_OLD_SHARE) * usual / _TX_PER_INCIDENT[SCAM]
            )
        return cls()


_NEW_CATEGORY_SHARE = 0.05


def _category_weights(params: DayParams) -> np.ndarray:
    weights: np.ndarray = CAT_WEIGHT * params.category
    if params.new_category:
        weights = weights.copy()
        weights[_CAT[NEW_CATEGORY]] = _NEW_CATEGORY_SHARE / (1 - _NEW_CATEGORY_SHARE) * CAT_WEIGHT.sum()
    return weights


class _Rows:
    """Column pieces of one day, concatenated at the end."""

    NAMES = ("cust", "card", "merchant", "amount", "channel", "device", "ts", "pattern")

    def __init__(self) -> None:
        self.parts: list[dict[str, np.ndarray]] = []

    def add(self, **cols: np.ndarray | int) -> None:
        n = len(np.asarray(cols["cust"]))
        if n:
            self.parts.append(
                {k: np.asarray(cols[k]) if np.ndim(cols[k]) else np.full(n, cols[k]) for k in self.NAMES}
            )

    def concat(self) -> dict[str, np.ndarray]:
        if not self.parts:
            empty = {"device": np.empty(0, dtype=object), "amount": np.empty(0)}
            return {k: empty.get(k, np.empty(0, dtype=np.int64)) for k in self.NAMES}
        return {k: np.concatenate([p[k] for p in self.parts]) for k in self.NAMES}


@dataclass
class DayBatch:
    """One simulated day."""

    index: int
    day: date
    transactions: pd.DataFrame  #: the day's transactions batch (the contract, sorted by time)
    labels: pd.DataFrame  #: the labels batch that lands this day (label_timestamp on this day)
    transaction_labels: pd.DataFrame  #: the label of each of this day's transactions, whenever it lands
    patterns: pd.Series  #: ground truth: the pattern behind each transaction (aligned with transactions)


class Simulator:
    """Walks the days of a run; see the module docstring."""

    def __init__(self, config: SimulationConfig) -> None:
        config.validate()
        self.config = config
        self.world = World.build(config.seed, config.n_customers)
        self.scale = config.n_customers / DEFAULT_CUSTOMERS
        self._next_tx = 1
        self._victims: dict[int, list[np.ndarray]] = {}  # day -> cards of breached customers hit that day
        self._victimised: set[int] = set()
        self._trip_country = np.full(config.n_customers, -1)
        self._trip_left = np.zeros(config.n_customers, dtype=np.int64)
        self._pending = (
            np.empty(0, dtype=np.int64),
            np.empty(0, dtype=np.int64),
            np.empty(0, dtype=np.int64),
        )
        self._init_trips()

    # -- public --

    def days(self) -> Iterator[DayBatch]:
        for index in range(self.config.days):
            yield self._day(index)

    def params(self, index: int) -> DayParams:
        drift = self.config.drift
        active = drift is not None and index >= drift.from_day
        return DayParams.for_drift(drift.kind if active and drift else None)

    # -- trips --

    def _init_trips(self) -> None:
        rng = _rng(self.config.seed, 5)
        travelling = rng.random(self.config.n_customers) < 0.02
        self._start_trips(rng, travelling)
        self._trip_left[travelling] = rng.integers(1, 8, size=int(travelling.sum()))

    def _start_trips(self, rng: np.random.Generator, starting: np.ndarray) -> None:
        idx, p = _probs(_TRIP)
        k = int(starting.sum())
        country = idx[rng.choice(len(idx), size=k, p=p)]
        home = self.world.home[starting]
        instead = np.where(home == _CTRY["ES"], _CTRY["IT"], _CTRY["ES"])  # nobody travels home
        country = np.where(country == home, instead, country)
        self._trip_country[starting] = country
        self._trip_left[starting] = rng.integers(2, 11, size=k)

    def _advance_trips(self, index: int) -> None:
        rng = _rng(self.config.seed, 5, index + 1)
        self._trip_left = np.maximum(self._trip_left - 1, 0)
        self._trip_country[self._trip_left == 0] = -1
        starting = (self._trip_country < 0) & (rng.random(self.config.n_customers) < 0.004)
        self._start_trips(rng, starting)

    # -- the day --

    def _hours(self, rng: np.random.Generator, profile: np.ndarray, day: date) -> np.ndarray:
        """Microseconds since midnight UTC, drawn from local-time rhythms ``profile`` (per row)."""
        shifted = np.roll(_PROFILE_MATRIX, -utc_offset_hours(day), axis=1)  # [h_utc] = local[h_utc + offset]
        hour = _row_choice(rng, shifted[profile])
        return hour * US_PER_HOUR + rng.integers(0, US_PER_HOUR, size=len(profile))

    def _genuine(self, index: int, day: date, params: DayParams, rows: _Rows) -> None:
        w = self.world
        rng = _rng(self.config.seed, 1, index)
        dow = day.weekday()
        counts = rng.poisson(w.activity * WEEKDAY_VOLUME[dow])
        cust = np.repeat(np.arange(w.n_customers), counts)
        n = cust.size
        age = w.age[cust]

        cat_w = _category_weights(params) * WEEKDAY_CATEGORY[dow]
        cat = _row_choice(rng, cat_w[None, :] * AGE_CATEGORY[age])

        ch_w = CAT_CHANNEL[cat].copy()
        ch_w[:, ONLINE] *= AGE_ONLINE[age] * params.online
        if dow == 6:  # shops are closed on Sunday: what is bought is bought online
            ch_w[np.isin(cat, _SUNDAY_CLOSED), ONLINE] *= 3.0
        trip = self._trip_country[cust]
        ch_w[trip >= 0, ONLINE] *= 0.5
        channel = _row_choice(rng, ch_w)

        amount = rng.lognormal(np.log(CAT_MEDIAN[cat] * w.spend[cust] * params.amount), CAT_SIGMA[cat])
        priced = _PRICE_POINT_CATS[cat] & (amount < 2000) & (rng.random(n) < 0.55)
        amount = np.where(priced, np.ceil(amount) - 0.01, amount)
        big_tap = (channel == CONTACTLESS) & (amount > 50) & (rng.random(n) < 0.4)
        channel = np.where(big_tap, CHIP, channel)  # above the PIN-free limit many insert the card
        atm = channel == ATM
        amount[atm] = rng.choice(ATM_AMOUNTS, size=int(atm.sum()), p=ATM_PROBS)
        amount = np.round(np.clip(amount, 0.5, AMOUNT_MAX), 2)

        online = channel == ONLINE
        in_store_abroad = (trip >= 0) & ~online
        country = np.where(in_store_abroad, trip, w.home[cust])
        abroad = online & (rng.random(n) < CAT_ONLINE_ABROAD[cat])
        merchant = w.pick_merchants(rng, cat, online, country, abroad)

        device = w.terminals(rng, merchant, channel)
        device[online] = w.customer_devices(rng, cust[online])
        new_device = online & (rng.random(n) < 0.004)  # a new phone, a work laptop: genuine, yet new
        device[new_device] = _hex_ids(rng, "dev_", int(new_device.sum()), 12)

        profile = np.where(online, _PROFILE["online"], np.where(atm, _PROFILE["atm"], CAT_POS_PROFILE[cat]))
        ts = day_start_us(day) + self._hours(rng, profile, day)
        rows.add(
            cust=cust, card=w.customer_cards(rng, cust), merchant=merchant, amount=amount, channel=channel,
            device=device, ts=ts, pattern=GENUINE,
        )  # fmt: skip

    # fraud ------------------------------------------------------------------------------------------

    def _start_time(self, rng: np.random.Generator, day: date, span_us: int, daytime: bool = False) -> int:
        """When an incident starts (fraud rhythm), moved earlier so that it ends the same day."""
        profile = np.array([_PROFILE["online" if daytime else "fraud"]])
        start = int(self._hours(rng, profile, day)[0])
        return day_start_us(day) + max(0, min(start, US_PER_DAY - 1 - span_us))

    def _n_incidents(self, rng: np.random.Generator, rate: float) -> int:
        return int(rng.poisson(rate * self.scale))

    def _fraud(self, index: int, day: date, params: DayParams, rows: _Rows) -> None:
        rng = _rng(self.config.seed, 2, index)
        base = params.fraud * params.old_patterns
        for _ in range(self._n_incidents(rng, FRAUD_INCIDENTS[STOLEN] * base)):
            self._stolen_card(rng, day, params, rows)
        for _ in range(self._n_incidents(rng, FRAUD_INCIDENTS[TESTING] * base)):
            self._card_testing(rng, day, params, rows)
        for _ in range(self._n_incidents(rng, FRAUD_INCIDENTS[TAKEOVER] * base)):
            self._account_takeover(rng, day, params, rows)
        for cards in self._victims.pop(index, []):
            self._compromised_cards(rng, day, cards, rows)
        if params.scam:
            scam_rng = _rng(self.config.seed, 3, index)
            for _ in range(self._n_incidents(scam_rng, params.scam * params.fraud)):
                self._scam(scam_rng, day, rows)

    def _fraud_categories(
        self, rng: np.random.Generator, table: dict[str, float], k: int, params: DayParams
    ) -> np.ndarray:
        names = [n for n in table if n != NEW_CATEGORY or params.new_category]
        p = np.array([table[n] for n in names])
        return np.array([_CAT[n] for n in names])[rng.choice(len(names), size=k, p=p / p.sum())]

    def _stolen_card(self, rng: np.random.Generator, day: date, params: DayParams, rows: _Rows) -> None:
        """A lost/stolen card or skimmed card data: a quick burst of purchases, often high value."""
        w = self.world
        cust = int(rng.choice(w.n_customers, p=w.activity / w.activity.sum()))
        card = w.card_offset[cust] + int(rng.integers(0, w.n_cards[cust]))
        k = int(rng.integers(2, 8))
        present = rng.random() < 0.55
        abroad = rng.random() < 0.4
        table = {"electronics": 0.22, "fashion": 0.18, "digital_goods": 0.10, "gambling": 0.08, "travel": 0.05,
                 "entertainment": 0.05, "grocery": 0.20 if present else 0.05, "fuel": 0.06 if present else 0.0,
                 "restaurant": 0.03, "transport": 0.04, "health": 0.02, NEW_CATEGORY: 0.05}  # fmt: skip
        cat = self._fraud_categories(rng, table, k, params)
        amount = rng.lognormal(np.log(CAT_MEDIAN[cat] * 1.5), 0.6)
        if present:
            channel = np.where(amount <= 50, CONTACTLESS, CHIP)
            withdraw = (cat == _CAT["grocery"]) & (rng.random(k) < 0.7)  # cash at the supermarket's ATM
            channel[withdraw] = ATM
            amount[withdraw] = rng.choice([200.0, 250.0, 300.0, 400.0, 500.0], size=int(withdraw.sum()))
            channel[CAT_CHANNEL[cat, ONLINE] >= 1.0] = ONLINE  # digital goods are online even with the card
        else:
            channel = np.full(k, ONLINE)
        online = channel == ONLINE
        merchant = w.pick_merchants(
            rng, cat, online, np.full(k, w.home[cust]), np.full(k, abroad), risky=True
        )
        device = w.terminals(rng, merchant, channel)
        device[online] = w.fraud_devices[int(rng.integers(0, len(w.fraud_devices)))]
        gaps = rng.exponential(15 * 60e6, size=k).astype(np.int64) + 30_000_000
        gaps[0] = 0
        offsets = np.cumsum(gaps)
        ts = self._start_time(rng, day, int(offsets[-1])) + offsets
        rows.add(cust=np.full(k, cust), card=np.full(k, card), merchant=merchant, amount=np.round(amount, 2),
                 channel=channel, device=device, ts=ts, pattern=STOLEN)  # fmt: skip

    def _card_testing(self, rng: np.random.Generator, day: date, params: DayParams, rows: _Rows) -> None:
        """Card testing: tiny online payments at digital-goods shops, then the real purchase."""
        w = self.world
        card = int(rng.integers(0, len(w.card_ids)))
        cust = int(w.card_customer[card])
        tests = int(rng.integers(3, 9))
        cashouts = int(rng.integers(1, 3))
        k = tests + cashouts
        abroad = np.full(k, rng.random() < 0.5)
        cat = np.full(k, _CAT["digital_goods"])
        table = {"electronics": 0.4, "travel": 0.2, "gambling": 0.2, "digital_goods": 0.2, NEW_CATEGORY: 0.2}
        cat[tests:] = self._fraud_categories(rng, table, cashouts, params)
        merchant = w.pick_merchants(
            rng, cat, np.ones(k, dtype=bool), np.full(k, w.home[cust]), abroad, risky=True
        )
        merchant[1:tests] = np.where(rng.random(tests - 1) < 0.7, merchant[0], merchant[1:tests])  # same shop
        amount = np.empty(k)
        amount[:tests] = np.where(rng.random(tests) < 0.3, 1.0, rng.uniform(0.5, 2.0, size=tests))
        amount[tests:] = rng.lognormal(np.log(350.0), 0.6, size=cashouts)
        gaps = np.empty(k, dtype=np.int64)
        gaps[:tests] = rng.integers(5_000_000, 90_000_000, size=tests)
        gaps[tests:] = rng.integers(5 * 60_000_000, 60 * 60_000_000, size=cashouts)
        gaps[0] = 0
        offsets = np.cumsum(gaps)
        ts = self._start_time(rng, day, int(offsets[-1])) + offsets
        device = np.full(k, w.fraud_devices[int(rng.integers(0, len(w.fraud_devices)))], dtype=object)
        rows.add(cust=np.full(k, cust), card=np.full(k, card), merchant=merchant, amount=np.round(amount, 2),
                 channel=ONLINE, device=device, ts=ts, pattern=TESTING)  # fmt: skip

    def _account_takeover(self, rng: np.random.Generator, day: date, params: DayParams, rows: _Rows) -> None:
        """Phished online-banking / wallet credentials: a new device, online, high amounts."""
        w = self.world
        weight = np.array([1.0, 0.8, 1.0, 2.0])[w.age]  # older customers are phished more often
        cust = int(rng.choice(w.n_customers, p=weight / weight.sum()))
        card = int(w.card_offset[cust])
        k = int(rng.integers(1, 4))
        table = {"electronics": 0.28, "travel": 0.15, "digital_goods": 0.20, "gambling": 0.10, "fashion": 0.12,
                 "entertainment": 0.05, "utilities": 0.03, NEW_CATEGORY: 0.15}  # fmt: skip
        cat = self._fraud_categories(rng, table, k, params)
        abroad = np.full(k, rng.random() < 0.25)
        merchant = w.pick_merchants(
            rng, cat, np.ones(k, dtype=bool), np.full(k, w.home[cust]), abroad, risky=True
        )
        amount = rng.lognormal(np.log(450.0), 0.7, size=k)
        if rng.random() < 0.4:
            device = _hex_ids(rng, "dev_", 1, 12)[0]  # a brand-new fingerprint
        else:
            device = w.fraud_devices[int(rng.integers(0, len(w.fraud_devices)))]  # a fraud ring's device
        offsets = np.cumsum(np.concatenate([[0], rng.integers(2 * 60_000_000, 40 * 60_000_000, size=k - 1)]))
        ts = self._start_time(rng, day, int(offsets[-1])) + offsets
        rows.add(cust=np.full(k, cust), card=np.full(k, card), merchant=merchant, amount=np.round(amount, 2),
                 channel=ONLINE, device=np.full(k, device, dtype=object), ts=ts, pattern=TAKEOVER)  # fmt: skip

    def _compromised_cards(self, rng: np.random.Generator, day: date, cards: np.ndarray, rows: _Rows) -> None:
        """Cards skimmed at a breached merchant days ago: online fraud and cloned-card cash abroad."""
        w = self.world
        k = rng.integers(1, 4, size=len(cards))
        card = np.repeat(cards, k)
        cust = w.card_customer[card]
        n = card.size
        cloned = np.repeat(rng.random(len(cards)) < 0.4, k)
        table = np.array([0.30, 0.25, 0.12, 0.12, 0.08, 0.08, 0.05])
        names = "electronics digital_goods travel gambling fashion transport entertainment".split()
        cnp_cats = np.array([_CAT[c] for c in names])
        cat = np.where(cloned, _CAT["grocery"], cnp_cats[rng.choice(len(names), size=n, p=table)])
        channel = np.where(cloned, ATM, ONLINE)
        amount = np.where(
            cloned,
            rng.choice([200.0, 300.0, 400.0, 500.0], size=n),
            rng.lognormal(np.log(CAT_MEDIAN[cat] * 1.5), 0.6),
        )
        online = channel == ONLINE
        abroad = cloned | (rng.random(n) < 0.5)
        merchant = w.pick_merchants(rng, cat, online, w.home[cust], abroad, risky=True)
        device = w.terminals(rng, merchant, channel)
        fraudster = np.repeat(
            rng.integers(0, len(w.fraud_devices), size=len(cards)), k
        )  # one per stolen card
        device[online] = w.fraud_devices[fraudster[online]]
        start = np.repeat(
            np.array(
                [self._start_time(rng, day, 2 * US_PER_HOUR) for _ in range(len(cards))], dtype=np.int64
            ),
            k,
        )
        within = rng.integers(0, 2 * US_PER_HOUR, size=n)
        rows.add(cust=cust, card=card, merchant=merchant, amount=np.round(amount, 2), channel=channel,
                 device=device, ts=start + within, pattern=COMPROMISE)  # fmt: skip

    def _scam(self, rng: np.random.Generator, day: date, rows: _Rows) -> None:
        """Concept drift: scams on the customer's own device (mostly 60+), daytime, domestic, ordinary amounts."""
        w = self.world
        weight = np.array([0.3, 0.5, 1.5, 8.0])[w.age]
        cust = int(rng.choice(w.n_customers, p=weight / weight.sum()))
        k = int(rng.integers(1, 3))
        names = ("electronics", "digital_goods", "fashion", "travel", "entertainment")
        cat = np.array([_CAT[c] for c in names])[rng.choice(5, size=k, p=[0.3, 0.25, 0.15, 0.15, 0.15])]
        amount = rng.lognormal(np.log(CAT_MEDIAN[cat] * w.spend[cust] * 1.3), 0.5)
        merchant = w.pick_merchants(
            rng, cat, np.ones(k, dtype=bool), np.full(k, w.home[cust]), np.zeros(k, dtype=bool)
        )
        device = np.full(k, w.device_ids[w.device_offset[cust]], dtype=object)
        offsets = np.cumsum(np.concatenate([[0], rng.integers(10 * 60_000_000, 3 * US_PER_HOUR, size=k - 1)]))
        ts = self._start_time(rng, day, int(offsets[-1]), daytime=True) + offsets
        rows.add(cust=np.full(k, cust), card=np.full(k, int(w.card_offset[cust])), merchant=merchant,
                 amount=np.round(amount, 2), channel=ONLINE, device=device, ts=ts, pattern=SCAM)  # fmt: skip

    def _record_breach(self, index: int, params: DayParams, cols: dict[str, np.ndarray]) -> None:
        """Cards used in store at a breached merchant today: some are abused 1-10 days later."""
        merchant = self.world.breach_on(index)
        if merchant is None:
            return
        rng = _rng(self.config.seed, 4, index)
        hit = (cols["merchant"] == merchant) & (cols["pattern"] == GENUINE) & (cols["channel"] != ONLINE)
        cards = np.unique(cols["card"][hit])
        cards = cards[
            ~np.isin(cards, np.fromiter(self._victimised, dtype=np.int64, count=len(self._victimised)))
        ]
        k = min(
            cards.size, int(rng.poisson(COMPROMISE_VICTIMS * self.scale * params.fraud * params.old_patterns))
        )
        cards = np.sort(rng.choice(cards, size=k, replace=False))
        self._victimised.update(cards.tolist())
        delay = rng.integers(1, 11, size=cards.size)
        for d in np.unique(delay).tolist():
            self._victims.setdefault(index + d, []).append(cards[delay == d])

    # labels ----------------------------------------------------------------------------------------

    def _label_times(self, rng: np.random.Generator, ts: np.ndarray, fraud: np.ndarray) -> np.ndarray:
        """Chargebacks arrive 1-21 days after the event (mostly 3-10); genuine transactions count as
        confirmed after a 7-day maturity window (+ up to 6 h of batch jitter)."""
        n = ts.size
        chargeback = np.clip(rng.lognormal(np.log(6.0), 0.55, size=n), 1.0, 21.0) * US_PER_DAY
        maturity = 7 * US_PER_DAY + rng.integers(0, 6 * US_PER_HOUR, size=n)
        return ts + np.where(fraud, chargeback.astype(np.int64), maturity)

    # assembling -----------------------------------------------------------------------------------

    def _day(self, index: int) -> DayBatch:
        day = self.config.day(index)
        params = self.params(index)
        self._advance_trips(index)
        rows = _Rows()
        self._genuine(index, day, params, rows)
        self._fraud(index, day, params, rows)
        cols = rows.concat()
        rng = _rng(self.config.seed, 7, index)
        order = np.lexsort((rng.random(cols["ts"].size), cols["ts"]))
        cols = {k: v[order] for k, v in cols.items()}
        cols["amount"] = np.round(np.clip(cols["amount"], AMOUNT_MIN, AMOUNT_MAX), 2)
        self._record_breach(index, params, cols)

        w = self.world
        n = cols["ts"].size
        numbers = np.arange(self._next_tx, self._next_tx + n, dtype=np.int64)
        self._next_tx += n
        tx_ids = _tx_ids(numbers)
        cat = w.merchant_category[cols["merchant"]]
        cust = cols["cust"]
        transactions = pd.DataFrame(
            {
                "transaction_id": tx_ids,
                "event_timestamp": _timestamps(cols["ts"]),
                "customer_id": w.customer_ids[cust],
                "card_id": w.card_ids[cols["card"]],
                "merchant_id": w.merchant_ids[cols["merchant"]],
                "merchant_category": np.array(CATEGORIES, dtype=object)[cat],
                "merchant_country": np.array(MERCHANT_COUNTRIES, dtype=object)[
                    w.merchant_country[cols["merchant"]]
                ],
                "amount": cols["amount"].astype(np.float64),
                "channel": np.array(CHANNELS, dtype=object)[cols["channel"]],
                "device_id": cols["device"],
                "customer_age_band": np.array(AGE_BANDS, dtype=object)[w.age[cust]],
                "customer_region": np.array(REGIONS, dtype=object)[w.region[cust]],
            }
        )
        transactions = conform(transactions, TRANSACTION_COLUMNS)

        fraud = (cols["pattern"] != GENUINE).astype(np.int64)
        label_ts = self._label_times(rng, cols["ts"], fraud.astype(bool))
        own_labels = _label_frame(numbers, fraud, label_ts)
        # labels landing today: all of them are known now (later events label later)
        pending_n, pending_f, pending_t = (
            np.concatenate([a, b]) for a, b in zip(self._pending, (numbers, fraud, label_ts), strict=True)
        )
        today = pending_t < day_start_us(day) + US_PER_DAY
        self._pending = (pending_n[~today], pending_f[~today], pending_t[~today])
        order = np.lexsort((pending_n[today], pending_t[today]))
        landing = _label_frame(pending_n[today][order], pending_f[today][order], pending_t[today][order])
        patterns = pd.Series(
            np.array(PATTERNS, dtype=object)[cols["pattern"]], name="pattern", dtype="string"
        )
        return DayBatch(index, day, transactions, landing, own_labels, patterns)


def _tx_ids(numbers: np.ndarray) -> np.ndarray:
    if numbers.size == 0:
        return np.empty(0, dtype=object)
    return np.char.add("tx_", np.char.zfill(numbers.astype(str), 12)).astype(object)


def _timestamps(us: np.ndarray) -> pd.Series:
    return pd.Series(pd.DatetimeIndex(us.astype("datetime64[us]")).tz_localize("UTC"))


def _label_frame(numbers: np.ndarray, fraud: np.ndarray, label_us: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "transaction_id": _tx_ids(numbers),
            "is_fraud": fraud.astype(np.int64),
            "label_timestamp": _timestamps(label_us),
        }
    )
    return conform(frame, LABEL_COLUMNS)


def conform(frame: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """``frame`` with exactly the contract's columns, in order, with its dtypes."""
    data = {
        name: frame[name].astype(dtype)  # type: ignore[call-overload]
        for name, dtype in columns.items()
    }
    return pd.DataFrame(data).reset_index(drop=True)


# --- whole runs ------------------------------------------------------------------------------------


@dataclass
class Simulation:
    """A whole run in memory (tests, notebooks)."""

    config: SimulationConfig
    days: list[DayBatch]

    @functools.cached_property
    def transactions(self) -> pd.DataFrame:
        return pd.concat([d.transactions for d in self.days], ignore_index=True)

    @functools.cached_property
    def labels(self) -> pd.DataFrame:
        """The label of every transaction (also those landing after the run)."""
        return pd.concat([d.transaction_labels for d in self.days], ignore_index=True)

    @functools.cached_property
    def landed_labels(self) -> pd.DataFrame:
        """The label batches that land within the run, concatenated."""
        return pd.concat([d.labels for d in self.days], ignore_index=True)

    @functools.cached_property
    def patterns(self) -> pd.Series:
        patterns: pd.Series = pd.concat([d.patterns for d in self.days], ignore_index=True)
        return patterns


def simulate(config: SimulationConfig) -> Simulation:
    return Simulation(config, list(Simulator(config).days()))


def batch_path(out: Path, kind: str, day: date, fmt: str, suffix: str = "") -> Path:
    """``out/<kind>/<kind>_<YYYY-MM-DD><suffix>.<fmt>``, the landing layout."""
    return (Path(out) if isinstance(out, str) else out) / kind / f"{kind}_{day.isoformat()}{suffix}.{fmt}"


def write_run(
    config: SimulationConfig,
    out: Path,
    fmt: str = "parquet",
    bad: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Simulate ``config`` into ``out`` (the landing layout) and return a summary.

    One transactions batch per day; one labels batch per day on which labels land (days without any,
    such as the first day of a run, get no file; labels landing after the last day are not written).
    With ``bad``, the bad batch of that kind made from the first day's transactions is written next to
    it as ``transactions_<first day>_bad-<kind>.<fmt>``.
    """
    from tqdm import tqdm

    if fmt not in BATCH_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid formats: {', '.join(BATCH_FORMATS)}")
    if bad is not None:
        if bad not in BAD_KINDS:
            raise ValueError(f"unknown bad-batch kind {bad!r}; valid kinds: {', '.join(BAD_KINDS)}")
    config.validate()
    out = Path(out).resolve() if isinstance(out, str | Path) else out  # or a path on object storage
    transaction_files: list[str] = []
    label_files: list[str] = []
    rows = fraud = label_rows = 0
    bad_file: str | None = None
    days = tqdm(
        Simulator(config).days(),
        total=config.days,
        unit="day",
        desc="simulate",
        disable=not progress,
        leave=False,
    )
    for batch in days:
        path = batch_path(out, "transactions", batch.day, fmt)
        write_frame(batch.transactions, path, fmt)
        transaction_files.append(str(path))
        rows += len(batch.transactions)
        fraud += int(batch.transaction_labels["is_fraud"].sum())
        if len(batch.labels):
            path = batch_path(out, "labels", batch.day, fmt)
            write_frame(batch.labels, path, fmt)
            label_files.append(str(path))
            label_rows += len(batch.labels)
        if bad is not None and batch.index == 0:
            path = batch_path(out, "transactions", batch.day, fmt, suffix=f"_bad-{bad}")
            write_bad_batch(bad, batch.transactions, path, fmt, _rng(config.seed, 99))
            bad_file = str(path)
    drift = None
    if config.drift is not None:
        drift = {
            "kind": config.drift.kind,
            "from_day": config.drift.from_day,
            "from_date": config.day(config.drift.from_day).isoformat(),
            "description": DRIFT_KINDS[config.drift.kind],
        }
    return {
        "out": str(out),
        "days": config.days,
        "start": config.start.isoformat(),
        "end": config.end.isoformat(),
        "seed": config.seed,
        "customers": config.n_customers,
        "format": fmt,
        "transactions": rows,
        "fraud_transactions": fraud,
        "fraud_rate": round(fraud / rows, 6) if rows else 0.0,
        "label_files": len(label_files),
        "label_rows": label_rows,
        "transaction_files": transaction_files,
        "bad_file": bad_file,
        "drift": drift,
    }

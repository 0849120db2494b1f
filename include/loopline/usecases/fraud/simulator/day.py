"""One simulated day: the drift's parameters for it, its transactions, labels and ground truth.

A :class:`Simulator` walks the days of a run and yields one :class:`DayBatch` per day: that day's
transactions in the exact column contract of :mod:`loopline.usecases.fraud.schema`, the label rows that land that day,
and the ground truth of which fraud pattern produced each transaction (for tests and reports; it is not part
of the contract). Genuine traffic, the four fraud patterns (and scams under concept drift), merchant breaches
and the late labels are drawn here; :func:`conform` puts a frame into the contract's columns and dtypes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from loopline.usecases.fraud.schema import (
    AGE_BANDS,
    AMOUNT_MAX,
    AMOUNT_MIN,
    CHANNELS,
    LABEL_COLUMNS,
    MERCHANT_COUNTRIES,
    REGIONS,
    TRANSACTION_COLUMNS,
)
from loopline.usecases.fraud.simulator.calibration import (
    _CAT,
    _COMPROMISE_TX_PER_DAY,
    _CTRY,
    _PRICE_POINT_CATS,
    _PROFILE,
    _PROFILE_MATRIX,
    _SUNDAY_CLOSED,
    _TRIP,
    _TX_PER_INCIDENT,
    AGE_CATEGORY,
    AGE_ONLINE,
    ATM,
    ATM_AMOUNTS,
    ATM_PROBS,
    CAT_CHANNEL,
    CAT_MEDIAN,
    CAT_ONLINE_ABROAD,
    CAT_POS_PROFILE,
    CAT_SIGMA,
    CAT_WEIGHT,
    CATEGORIES,
    CHIP,
    COMPROMISE,
    COMPROMISE_VICTIMS,
    CONCEPT_OLD_SHARE,
    CONTACTLESS,
    FRAUD_INCIDENTS,
    GENUINE,
    NEW_CATEGORY,
    ONLINE,
    PATTERNS,
    PRIOR_FACTOR,
    SCAM,
    STOLEN,
    TAKEOVER,
    TESTING,
    WEEKDAY_CATEGORY,
    WEEKDAY_VOLUME,
)
from loopline.usecases.fraud.simulator.config import (
    DEFAULT_CUSTOMERS,
    US_PER_DAY,
    US_PER_HOUR,
    SimulationConfig,
    day_start_us,
    utc_offset_hours,
)
from loopline.usecases.fraud.simulator.draws import _hex_ids, _probs, _rng, _row_choice
from loopline.usecases.fraud.simulator.world import World


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
    """Walks the days of a run; see the module docstring and :mod:`loopline.usecases.fraud.simulator`."""

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

"""The world of a run: what stays fixed for a seed.

A :class:`World` holds the customers (age band, region, home country, cards, devices, activity and spending
level), the merchants (category, country, online or physical, popularity, risk level, terminals) and the
schedule of merchant breaches, and picks merchants, terminals, devices and cards for the day's payments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from loopline.usecases.fraud.schema import AGE_BANDS, MERCHANT_CATEGORIES, MERCHANT_COUNTRIES, REGIONS
from loopline.usecases.fraud.simulator.calibration import (
    _CAT,
    _CATEGORY_RISK,
    _CTRY,
    _ECOM_ABROAD,
    _HIGH_RISK_COUNTRIES,
    _HOME,
    _RISK_WEIGHT,
    _TOURIST_CATEGORIES,
    _TRIP,
    AGE_ACTIVITY,
    AGE_PROBS,
    AGE_SPEND,
    ATM,
    CAT_CHANNEL,
    CAT_ECOM_SHARE,
    CAT_MERCHANTS,
    CAT_ONLINE_ABROAD,
    CATEGORIES,
    CHIP,
    CONTACTLESS,
    DE,
    NEW_CATEGORY,
    ONLINE,
    REGION_PROBS,
    REGION_SPEND,
)
from loopline.usecases.fraud.simulator.draws import _hex_ids, _probs, _rng


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

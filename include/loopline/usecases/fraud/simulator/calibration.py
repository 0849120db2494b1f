"""What the simulated traffic is drawn from: the vocabularies and the calibration tables.

Vocabularies: the merchant categories (the contract's and the one that appears under drift), the fraud
patterns, and the index of each channel, category and country. Tables: per category the amount, channel mix,
online share and daily rhythm; spending and category mix by age band and region; home, trip and web-shop
countries; merchant risk; the weekday and hourly rhythms; ATM sums; fraud intensities and the drift factors.

Constants only. Names with a leading underscore are internal to the simulator package (its modules share
them; callers do not).
"""

from __future__ import annotations

import numpy as np

from loopline.usecases.fraud.schema import CHANNELS, MERCHANT_CATEGORIES, MERCHANT_COUNTRIES

#: The category that appears with ``new_category`` drift (not in the contract's vocabulary).
NEW_CATEGORY = "crypto_exchange"
CATEGORIES: tuple[str, ...] = (*MERCHANT_CATEGORIES, NEW_CATEGORY)

PATTERNS: tuple[str, ...] = (
    "genuine",
    "stolen_card",
    "card_testing",
    "account_takeover",
    "merchant_compromise",
    "scam",
)
GENUINE, STOLEN, TESTING, TAKEOVER, COMPROMISE, SCAM = range(len(PATTERNS))

_CH = {name: i for i, name in enumerate(CHANNELS)}
CHIP, CONTACTLESS, ONLINE, ATM = _CH["chip"], _CH["contactless"], _CH["online"], _CH["atm"]
_CAT = {name: i for i, name in enumerate(CATEGORIES)}
_CTRY = {name: i for i, name in enumerate(MERCHANT_COUNTRIES)}
DE = _CTRY["DE"]

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

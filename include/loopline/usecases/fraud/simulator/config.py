"""A run's configuration and clock: :class:`SimulationConfig` (days, start, seed, customers, drift), the
drift kinds, and day boundaries in microseconds since the epoch with Europe/Berlin's offset from UTC (the
daily rhythms are local time; timestamps are UTC)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from loopline.usecases.fraud.simulator.calibration import NEW_CATEGORY

DEFAULT_START = date(2026, 1, 1)
DEFAULT_SEED = 42
DEFAULT_CUSTOMERS = 2_000
LOCAL_TZ = ZoneInfo("Europe/Berlin")

DRIFT_KINDS: dict[str, str] = {
    "covariate": "more online payments and ~40 % higher amounts (digital goods, electronics, travel up)",
    "new_category": f"a new merchant category '{NEW_CATEGORY}' appears with ~5 % of the volume",
    "concept": "fraud moves to scams on the customers' own devices (mostly 60+, daytime, domestic): "
    "only labels show it",
    "prior": "the fraud rate triples (every pattern three times as frequent)",
}

US_PER_HOUR = 3_600_000_000
US_PER_DAY = 24 * US_PER_HOUR
_EPOCH = date(1970, 1, 1)


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

"""Validate a batch with the use case's Great Expectations suite for its kind (``<expectations_dir>/<kind>.json``;
fraud's are in ``include/loopline/usecases/fraud/expectations/``).

Each expectation carries GX's own ``severity``: ``critical`` ones block the batch (quarantine),
``warning`` ones let it publish and are recorded. The outcome is a small frozen dataclass with one
:class:`Failure` per failed expectation — name, column, count and a sample of the bad values — so a
person can see what to fix without opening GX.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations import ValidationDefinition

# Clocks disagree a little; a transaction a few minutes "in the future" is skew, not bad data.
CLOCK_SKEW = timedelta(minutes=5)
SAMPLE_SIZE = 5


@dataclass(frozen=True)
class Failure:
    expectation: str
    column: str | None
    severity: str
    count: int | None
    sample: list[Any]
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ValidationOutcome:
    suite: str
    evaluated: int
    failures: tuple[Failure, ...] = field(default_factory=tuple)

    @property
    def blocking(self) -> tuple[Failure, ...]:
        return tuple(f for f in self.failures if f.severity == "critical")

    @property
    def warnings(self) -> tuple[Failure, ...]:
        return tuple(f for f in self.failures if f.severity != "critical")

    @property
    def passed(self) -> bool:
        return not self.blocking


def suite_path(suites_dir: Path, kind: str) -> Path:
    return suites_dir / f"{kind}.json"


def load_suite_spec(suites_dir: Path, kind: str) -> dict[str, Any]:
    path = suite_path(suites_dir, kind)
    if not path.exists():
        raise FileNotFoundError(f"no expectation suite for {kind!r} batches at {path}")
    spec: dict[str, Any] = json.loads(path.read_text())
    return spec


def _jsonable(value: Any) -> Any:
    """A JSON-safe version of a value GX observed (missing values become None, not NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is _pd_na():
        return None
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return str(value)


def _pd_na() -> Any:
    import pandas as pd

    return pd.NA


def _rule(kwargs: dict[str, Any]) -> str:
    """The expectation's own terms, e.g. "min_value=0.01, max_value=50000.0"."""
    parts = []
    for key in ("min_value", "max_value", "value_set", "type_list", "regex"):
        if key in kwargs and kwargs[key] is not None:
            value = kwargs[key]
            if isinstance(value, list) and len(value) > 8:
                value = [*value[:8], "..."]
            parts.append(f"{key}={_jsonable(value)}")
    return ", ".join(parts)


def _describe(kind: str, kwargs: dict[str, Any], observed: Any, count: int | None) -> str:
    column = kwargs.get("column")
    what = kind.removeprefix("expect_").replace("_", " ")
    subject = f"column {column!r}: " if column else ""
    rule = _rule(kwargs)
    detail = []
    if count:
        detail.append(f"{count} bad value{'s' if count != 1 else ''}")
    if observed is not None and not count:
        detail.append(f"observed {observed}")
    return f"{subject}{what}" + (f" [{rule}]" if rule else "") + (f": {', '.join(detail)}" if detail else "")


def _naive_utc(frame: pd.DataFrame) -> pd.DataFrame:
    """GX cannot type-check tz-aware columns: hand it UTC instants as naive UTC (same values)."""
    import pandas as pd

    converted: dict[str, Any] = {
        cast(str, name): column.dt.tz_convert("UTC").dt.tz_localize(None)
        for name, column in frame.items()
        if isinstance(column.dtype, pd.DatetimeTZDtype)
    }
    return frame.assign(**converted) if converted else frame


@lru_cache(maxsize=4)
def _validator(suites_dir: str, kind: str) -> tuple[ValidationDefinition, str]:
    """A GX validation definition for one suite, built once per process (context set-up costs ~1 s)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    spec = load_suite_spec(Path(suites_dir), kind)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_definition = (
        context.data_sources.add_pandas(f"{kind}_batches")
        .add_dataframe_asset(f"{kind}_frame")
        .add_batch_definition_whole_dataframe("whole_batch")
    )
    suite = gx.ExpectationSuite(name=spec["name"])
    for item in spec["expectations"]:
        config = ExpectationConfiguration(
            type=item["type"], kwargs=item["kwargs"], meta=item.get("meta", {}), severity=item.get("severity")
        )
        suite.add_expectation(config.to_domain_obj())
    suite = context.suites.add(suite)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{kind}_validation", data=batch_definition, suite=suite)
    )
    return definition, spec["name"]


def validate_frame(
    frame: pd.DataFrame, kind: str, suites_dir: Path, now: datetime | None = None
) -> ValidationOutcome:
    """Run the ``kind`` suite on ``frame``. Expectations on columns the frame lacks are not repeated:
    the column-set expectation already names every missing column."""
    definition, suite_name = _validator(str(suites_dir), kind)
    now = now or datetime.now(UTC)
    latest = (now + CLOCK_SKEW).astimezone(UTC).replace(tzinfo=None)
    result = definition.run(
        batch_parameters={"dataframe": _naive_utc(frame)},
        expectation_parameters={"latest_allowed_time": latest},
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE_SIZE},
    )
    present = set(frame.columns)
    failures = []
    for item in result.results:
        if item.success:
            continue
        config = item.expectation_config
        assert config is not None  # a suite's results carry their expectations' configurations
        kwargs = dict(config.kwargs)
        column = kwargs.get("column")
        if column is not None and column not in present:
            continue
        details = item.result or {}
        count = details.get("unexpected_count")
        sample = [_jsonable(v) for v in (details.get("partial_unexpected_list") or [])[:SAMPLE_SIZE]]
        observed = details.get("observed_value")
        if kwargs.get("column_set") is not None and isinstance(observed, list):
            wanted = set(kwargs["column_set"])
            missing, extra = sorted(wanted - present), sorted(present - wanted)
            message = "columns do not match the contract: " + "; ".join(
                part
                for part in (f"missing {missing}" if missing else "", f"unexpected {extra}" if extra else "")
                if part
            )
            sample = [*missing, *extra]
        else:
            message = _describe(config.type, kwargs, _jsonable(observed), count)
        failures.append(
            Failure(
                expectation=config.type,
                column=column,
                severity=str(getattr(config.severity, "value", config.severity) or "critical"),
                count=count,
                sample=sample,
                message=message,
            )
        )
    return ValidationOutcome(suite=suite_name, evaluated=len(result.results), failures=tuple(failures))

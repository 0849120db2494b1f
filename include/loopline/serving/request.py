"""What ``/v1/predict`` accepts and answers, built from the use case (``loopline.config.use_case``).

One event to score is a model made from the use case's ``event_columns`` (``event_model``): each column's
pandas dtype gives its type (``string`` → str, ``float64`` → float, ``int64`` → int, ``datetime64`` → an aware
datetime between ``EARLIEST`` and ``LATEST``; no zone means UTC), and the use case's events expectation suite
(``<expectations_dir>/<events batch name>.json``, the contract every landed batch is held to) gives the
constraints that hold for one event as well:

* a closed vocabulary (a ``critical`` ``expect_column_values_to_be_in_set``) → one of its values;
* an open one (the same at ``warning``: new values are recorded, not blocked) → lower-case words, at most 64;
* a pattern (``critical`` ``expect_column_values_to_match_regex``) → that pattern — except on the id and unit
  columns, whose values the gate's probes and the warm-up make up;
* a number the contract keeps positive (a lower bound > 0) → > 0, non-negative (0) → >= 0; every number is
  finite and within ±1e9 (upper bounds of the suite are batch plausibility checks, not the edge's business);
* every other text (ids, names) → letters, digits and ``_ . : -``, at most 128: what reaches the prediction
  log, reports and dashboards carries no markup.

The id, time and unit columns and every other event column are required, except the use case's group
columns (accepted, never model inputs) and its ``optional_request_columns``. Extra fields are ignored. A request is
``{"<events batch name>": [event, ...]}`` (fraud: ``transactions``, delivery: ``orders``); each answer is keyed
by the id column's name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from loopline.config.use_case import UseCase

# pandas (the feature lookup) cannot represent times outside ~1677-2262; no model has a use for them.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
# Request fields that reach the prediction log, and from there drift reports (HTML), dashboards and joins, are
# restricted to characters that mean nothing in HTML, JSON, SQL or a URL: markup in them is refused at the
# edge with a 422 instead of being stored (issue 19). Every id the simulators, the curated data and the gate's
# probes produce fits ("tx_000000123456", "dev_3fa29c0b11d2", "T0a1b2c3", "gate_probe_v3_tx_...").
ID_PATTERN = r"^[A-Za-z0-9_.:\-]+$"
CATEGORY_PATTERN = r"^[a-z0-9_\-]+$"  # an open vocabulary: "grocery", "digital_goods", "crypto_exchange"
NUMBER_LIMIT = 1e9


def _plausible(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"must be between {EARLIEST.year} and {LATEST.year}")
    return value


@dataclass(frozen=True)
class ColumnRules:
    """What the events suite says of one column (see the module docstring)."""

    values: tuple[Any, ...] = ()  # a closed vocabulary
    open_values: tuple[Any, ...] = ()  # an open one (its known values)
    pattern: str | None = None
    lower: float | None = None  # the smallest value allowed


@dataclass(frozen=True)
class EventContract:
    """The request contract of one use case: what ``event_model`` validates and the warm-up and traffic
    replay send."""

    use_case: UseCase
    rules: Mapping[str, ColumnRules] = field(default_factory=dict)

    @property
    def list_key(self) -> str:
        """The request's list of events: the events batch name (``{"transactions": [...]}``)."""
        return self.use_case.batch_names["events"]

    @property
    def model_name(self) -> str:
        """One event's schema name: the batch name in the singular, capitalised (``Transaction``, ``Order``)."""
        return "".join(part.title() for part in self.list_key.removesuffix("s").split("_")) or "Event"

    @property
    def unit_column(self) -> str:
        """What routing is sticky by: the unit, else each event."""
        return self.use_case.unit_column or self.use_case.id_column

    @property
    def optional(self) -> tuple[str, ...]:
        """Event columns a request may leave out: the groups and the use case's optional request columns."""
        return (*self.use_case.group_columns, *self.use_case.optional_request_columns)

    @property
    def required(self) -> tuple[str, ...]:
        """Event columns every request must carry, in the use case's order."""
        optional = set(self.optional)
        return tuple(c for c in self.use_case.event_columns if c not in optional)

    def model_inputs(self, columns: list[str]) -> tuple[str, ...]:
        """Of a model's input ``columns``, those an event carries itself (never its id, time or groups)."""
        use_case = self.use_case
        never = {use_case.id_column, use_case.time_column, *use_case.group_columns}
        return tuple(c for c in columns if c in use_case.event_columns and c not in never)

    def example_value(self, column: str, i: int) -> Any:
        """A valid value of ``column`` for made-up events (the warm-up): unknown entities, known vocabularies."""
        use_case, rules = self.use_case, self.rules.get(column, ColumnRules())
        dtype = str(use_case.event_columns[column]).lower()
        if column == use_case.id_column:
            return f"warmup_{i}"
        if dtype.startswith("datetime"):
            return datetime.now(UTC).isoformat()
        lower = max(rules.lower or 0.0, 1.0)
        if dtype.startswith("float"):
            return lower * 10 + i
        if dtype.startswith(("int", "uint")):
            return int(lower) + i
        if dtype.startswith("bool"):
            return False
        known = rules.values or rules.open_values
        if known:
            return known[0]
        suffix = f"{i}" if column == use_case.unit_column else ""
        return f"__warmup_{column}{suffix}"


def _suite_rules(use_case: UseCase) -> dict[str, ColumnRules]:
    """Per column, what the use case's events expectation suite holds every event to (a missing or unreadable
    suite: none; ``UseCase`` itself checks that it exists)."""
    path = use_case.expectations_dir / f"{use_case.batch_names['events']}.json"
    try:
        suite = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    found: dict[str, dict[str, Any]] = {}
    for expectation in suite.get("expectations", []):
        kind = expectation.get("type") or expectation.get("expectation_type")
        kwargs = expectation.get("kwargs") or {}
        column = kwargs.get("column")
        if not isinstance(column, str) or column not in use_case.event_columns:
            continue
        critical = expectation.get("severity", "critical") == "critical"
        rules = found.setdefault(column, {})
        if kind == "expect_column_values_to_be_in_set" and isinstance(kwargs.get("value_set"), list):
            rules["values" if critical else "open_values"] = tuple(kwargs["value_set"])
        elif (
            kind == "expect_column_values_to_match_regex"
            and critical
            and isinstance(kwargs.get("regex"), str)
        ):
            rules["pattern"] = kwargs["regex"]
        elif kind == "expect_column_values_to_be_between" and critical:
            low = kwargs.get("min_value")
            if isinstance(low, int | float) and not isinstance(low, bool):
                rules["lower"] = float(low)
    return {column: ColumnRules(**rules) for column, rules in found.items()}


# id(use case) -> (the use case, its contract, its event model): built once per use case (a UseCase holds dicts,
# so it cannot be a cache key itself).
_BUILT: dict[int, tuple[UseCase, EventContract, type[BaseModel]]] = {}


def _built(use_case: UseCase) -> tuple[UseCase, EventContract, type[BaseModel]]:
    found = _BUILT.get(id(use_case))
    if found is None or found[0] is not use_case:
        made = EventContract(use_case, _suite_rules(use_case))
        found = _BUILT[id(use_case)] = (use_case, made, _event_model(made))
    return found


def contract(use_case: UseCase) -> EventContract:
    """The use case's request contract (its suite read once per use case)."""
    return _built(use_case)[1]


def _field(contract: EventContract, column: str, required: bool) -> tuple[Any, Any]:
    use_case = contract.use_case
    rules = contract.rules.get(column, ColumnRules())
    dtype = str(use_case.event_columns[column]).lower()
    default: Any = ... if required else None
    python: Any
    if dtype.startswith("datetime"):
        python = Annotated[datetime, AfterValidator(_plausible)]
        spec = Field(default, description="ISO 8601; no zone means UTC")
    elif dtype.startswith(("float", "int", "uint")):
        python = float if dtype.startswith("float") else int
        bounds: dict[str, Any]  # gt / ge, and allow_inf_nan for a float
        if rules.lower is not None and rules.lower > 0:
            bounds = {"gt": 0}
        elif rules.lower is not None and rules.lower == 0:
            bounds = {"ge": 0}
        else:
            bounds = {"ge": -NUMBER_LIMIT}
        if python is float:
            bounds["allow_inf_nan"] = False
        spec = Field(default, le=NUMBER_LIMIT, **bounds)
    elif dtype.startswith("bool"):
        python, spec = bool, Field(default)
    else:
        python = str
        entity = column in (use_case.id_column, use_case.unit_column)
        if rules.values and not entity:
            python = Literal.__getitem__(rules.values)
            spec = Field(default, description="one of its vocabulary")
        elif rules.pattern is not None and not entity:
            spec = Field(default, pattern=rules.pattern, description=f"matches {rules.pattern}")
        elif rules.open_values and not entity:
            spec = Field(
                default,
                min_length=1,
                max_length=64,
                pattern=CATEGORY_PATTERN,
                description="lower-case letters, digits, _ and - (at most 64)",
            )
        else:
            spec = Field(
                default,
                min_length=1,
                max_length=128,
                pattern=ID_PATTERN,
                description="letters, digits and _ . : - (at most 128)",
            )
    return (python if required else python | None), spec


def event_model(use_case: UseCase) -> type[BaseModel]:
    """One event to score, as the use case defines it (the module docstring has the rules)."""
    return _built(use_case)[2]


def _event_model(contract: EventContract) -> type[BaseModel]:
    required = set(contract.required)
    fields = {
        column: _field(contract, column, column in required) for column in contract.use_case.event_columns
    }
    model: type[BaseModel] = create_model(  # type: ignore[call-overload]
        contract.model_name,
        __config__=ConfigDict(extra="ignore"),
        __doc__=f"One event of use case {contract.use_case.name!r} to score. Extra fields are ignored.",
        **fields,
    )
    return model


def request_model(use_case: UseCase, max_events: int) -> type[BaseModel]:
    """``{"<events batch name>": [event, ...]}`` with this app's batch limit in its schema."""
    events = contract(use_case).list_key
    fields: dict[str, Any] = {
        events: (
            list[event_model(use_case)],  # type: ignore[misc]
            Field(min_length=1, max_length=max_events, description=f"1 to {max_events} {events}"),
        )
    }
    model: type[BaseModel] = create_model("PredictRequest", **fields)
    return model


def prediction_model(use_case: UseCase) -> type[BaseModel]:
    """One answer (documentation: the service writes its answers itself). A classifier's ``score`` is a
    probability and ``decision`` says whether it reached the threshold; a regressor's ``score`` is its
    prediction in the label's units and ``decision`` is null (it makes none)."""
    classifier = use_case.task == "binary_classification"
    score = (
        Field(ge=0, le=1, description=f"the probability of {use_case.label_column}")
        if classifier
        else Field(description=f"the predicted {use_case.label_column}")
    )
    decision = (
        Field(description="score >= the configured threshold")
        if classifier
        else Field(default=None, description="always null: a regressor makes no threshold decision")
    )
    fields: dict[str, Any] = {
        use_case.id_column: (str, Field(description="the event's id, as sent")),
        "score": (float, score),
        "decision": (bool if classifier else bool | None, decision),
        "model_version": (str, ...),
        "variant": (Literal["champion", "challenger"], ...),
        "request_id": (str, ...),
    }
    model: type[BaseModel] = create_model("Prediction", **fields)
    return model

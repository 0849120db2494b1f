"""The use-case interface: what the platform needs to know about one prediction problem.

A use case is a package that defines ``USE_CASE = UseCase(...)``: the data contract
of the batches that land (events, and labels that arrive later), which columns are the event id, the event
time, the label and the fairness groups, and the task type that decides which metrics the gate, the canary
and the concept-drift check compute. The platform packages never import a use case; they call
:func:`load_use_case` with ``Settings().use_case`` (env ``LOOPLINE_USE_CASE``, default ``fraud``).

Two kinds are found by name: the built-in ones, ``loopline.usecases.<name>``, and any installed package that
registers itself under the entry-point group ``loopline.use_cases`` (``<name> = "its_package"`` in its
``pyproject.toml``): a team adds its use case without editing Loopline.

``docs/bring-your-own-model.md`` walks through adding one.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

USE_CASES_PACKAGE = "loopline.usecases"
# The entry-point group other packages register their use cases under: name -> "module" (or "module:attribute").
ENTRY_POINT_GROUP = "loopline.use_cases"
TaskType = Literal["binary_classification", "regression"]
TASK_TYPES: tuple[TaskType, ...] = ("binary_classification", "regression")
# The two kinds of batch every use case lands: events to score, and their ground truth arriving later.
BatchKind = Literal["events", "labels"]


def training_experiment(model_name: str) -> str:
    """The MLflow experiment the training runs of registered model ``model_name`` go to."""
    return f"{model_name}_training"


def monitoring_experiment(model_name: str) -> str:
    """The MLflow experiment the drift checks of registered model ``model_name`` go to."""
    return f"{model_name}_monitoring"


class UseCaseError(ValueError):
    """A use case is missing or does not satisfy the interface; the message names the piece and the fix."""


@dataclass(frozen=True)
class SimulationRequest:
    """What ``loopline simulate`` (and the demo) ask a use case's simulator for: ``days`` days from ``start``
    into the landing layout under ``out`` (``out/<batch name>/...``), the same data for the same request.
    ``drift``: one of the simulator's ``drift_kinds``, from day index ``drift_from`` on. ``options``: the
    simulator's own knobs, by the names in its ``options`` (e.g. fraud's ``customers``, ``bad``)."""

    out: Path
    days: int
    start: date
    seed: int
    drift: str | None = None
    drift_from: int = 0
    fmt: str = "parquet"
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoPlan:
    """How ``loopline demo`` runs a use case's world: ``days`` of history up to yesterday written with the
    simulator's ``options`` (enough for labelled training days and a matured holdout; a bad-batch option
    makes the demo show a quarantine), the first model trained for ``epochs``, then ``live_drift`` applied
    to every replayed event to stand for a shift in live traffic that the drift monitor must catch."""

    days: int
    epochs: int
    live_drift: Callable[[dict[str, Any]], dict[str, Any]]
    live_drift_description: str  # what it does, e.g. "amounts x6, online, abroad"
    options: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class WorldSimulator(Protocol):
    """A use case's simulated world, for demos, tests and trying Loopline without data of one's own."""

    drift_kinds: Mapping[str, str]  # kind -> what it changes in the world
    options: Mapping[str, str]  # the simulator's own options -> what each does
    # Kinds of deliberately broken batch it can write (option "bad") -> what is wrong; {} when none.
    bad_kinds: Mapping[str, str]
    demo: DemoPlan  # what `loopline demo` simulates and which live drift it injects

    def write(self, request: SimulationRequest, progress: bool = False) -> dict[str, Any]:
        """Write the batches; a JSON-able summary with at least ``out``, ``days``, ``start``, ``end``,
        ``files`` (how many batch files were written) and ``bad_files`` (the paths of those written broken on
        purpose, which ingest must quarantine)."""
        ...

    def describe(self, summary: dict[str, Any]) -> str:
        """``write``'s summary as lines a person reads."""
        ...


@dataclass(frozen=True)
class UseCase:
    """One prediction problem, as the platform sees it.

    ``event_columns`` / ``label_columns``: column -> pandas dtype of each batch kind, as written to parquet
    (timestamps ``datetime64[us, UTC]``). ``batch_names``: the folder name each kind lands under
    (``landing/<name>/``), e.g. fraud's events land as ``transactions``.
    """

    name: str
    task: TaskType
    event_columns: Mapping[str, str]
    label_columns: Mapping[str, str]
    id_column: str  # unique per event, in both kinds of batch: labels refer to events by it
    time_column: str  # when the event happened (point-in-time joins, drift windows)
    label_column: str  # the ground truth in label batches (0/1 for a classifier, a number for a regressor)
    label_time_column: str  # when the label became known (labels are joined as of then, never earlier)
    # Great Expectations suites, one per landing folder: <expectations_dir>/<batch name>.json
    expectations_dir: Path
    # The MLflow registered model its versions go to (experiments: <model_name>_training, _monitoring).
    model_name: str
    group_columns: tuple[str, ...] = ()  # fairness groups: never model inputs, judged by the gate
    # Event columns a prediction request may leave out although every landed batch carries them (fraud: the
    # card id, which not every client knows); the group columns are always optional in a request.
    optional_request_columns: tuple[str, ...] = ()
    # The independent unit (a customer, a restaurant): the canary routes by it (sticky), and the canary's and
    # the concept check's bootstraps resample whole units, since errors cluster on one. None: each event.
    unit_column: str | None = None
    batch_names: Mapping[BatchKind, str] = field(
        default_factory=lambda: {"events": "events", "labels": "labels"}
    )
    # "module:attribute" of its WorldSimulator, imported only when asked for (numpy and pandas stay unloaded).
    simulator: str | None = None
    # "module:attribute" of its feature definitions (Feast service, entity and request columns, how its
    # aggregate tables are computed).
    features: str | None = None
    # Its Feast repository (entities, views, services, feature_store*.yaml); None: the platform's
    # feature_repo/<name>/ (the built-in use cases'). A use case in its own package ships it as package data.
    feature_repo: Path | None = None
    # Its training, gate, canary and drift policies (<policies_dir>/training.yaml, gate.yaml, ...);
    # None: the platform's defaults in include/config/. Serving and Kubernetes settings stay platform.
    policies_dir: Path | None = None
    description: str = ""

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise UseCaseError(f"use case {self.name!r} is invalid: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        out = []
        if not self.model_name.replace("_", "").replace("-", "").isalnum():
            out.append(
                f"model_name {self.model_name!r} must be letters, digits, '_' or '-' (an MLflow model name)"
            )
        if self.task not in TASK_TYPES:
            out.append(f"task {self.task!r} is not one of {', '.join(TASK_TYPES)}")
        for what, column, columns in (
            ("id_column", self.id_column, self.event_columns),
            ("time_column", self.time_column, self.event_columns),
            ("id_column", self.id_column, self.label_columns),
            ("label_column", self.label_column, self.label_columns),
            ("label_time_column", self.label_time_column, self.label_columns),
        ):
            if column not in columns:
                kind = "event_columns" if columns is self.event_columns else "label_columns"
                out.append(f"{what} {column!r} is not in {kind}")
        out += [
            f"optional request column {c!r} is not in event_columns"
            for c in self.optional_request_columns
            if c not in self.event_columns
        ]
        if self.unit_column is not None and self.unit_column not in self.event_columns:
            out.append(f"unit_column {self.unit_column!r} is not in event_columns")
        out += [
            f"group column {g!r} is not in event_columns"
            for g in self.group_columns
            if g not in self.event_columns
        ]
        if self.feature_repo is not None and not (self.feature_repo / "feature_store.yaml").is_file():
            out.append(f"its feature_repo {self.feature_repo} has no feature_store.yaml (a Feast repository)")
        if set(self.batch_names) != {"events", "labels"}:
            out.append("batch_names must name exactly 'events' and 'labels'")
        elif len(set(self.batch_names.values())) != 2:
            out.append("batch_names must give events and labels different folder names")
        else:
            out += [
                f"no expectation suite {self.expectations_dir / name}.json for its {name} batches"
                for name in self.batch_names.values()
                if not (self.expectations_dir / f"{name}.json").is_file()
            ]
        return out

    def load_simulator(self) -> WorldSimulator:
        """The use case's simulator; a UseCaseError naming the piece when it has none or it is not one."""
        if self.simulator is None:
            raise UseCaseError(
                f"use case {self.name!r} has no simulator: deliver its batches to the landing zone"
            )
        module_name, _, attribute = self.simulator.partition(":")
        try:
            found = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise UseCaseError(
                f"use case {self.name!r}: its simulator {self.simulator!r} cannot be loaded ({exc}); "
                "name it as 'package.module:attribute'"
            ) from exc
        if not isinstance(found, WorldSimulator):
            raise UseCaseError(
                f"use case {self.name!r}: {self.simulator} is not a WorldSimulator (it needs drift_kinds, "
                "options, bad_kinds, demo, write(request) and describe(summary); see loopline.config.use_case.WorldSimulator)"
            )
        return found

    def load_features(self) -> object:
        """The use case's feature definitions (a ``loopline.features.definitions.FeatureDefinitions``, which the
        features layer checks: config sits below it); a UseCaseError naming the piece when it has none."""
        if self.features is None:
            raise UseCaseError(
                f"use case {self.name!r} has no feature definitions: set features='package.module:attribute' "
                "on its USE_CASE (see loopline.features.definitions.FeatureDefinitions)"
            )
        module_name, _, attribute = self.features.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise UseCaseError(
                f"use case {self.name!r}: its features {self.features!r} cannot be loaded ({exc}); "
                "name them as 'package.module:attribute'"
            ) from exc

    @property
    def training_experiment(self) -> str:
        """The MLflow experiment its training runs go to."""
        return training_experiment(self.model_name)

    @property
    def monitoring_experiment(self) -> str:
        """The MLflow experiment its drift checks go to."""
        return monitoring_experiment(self.model_name)

    def policy_file(self, kind: str, default_dir: Path) -> Path:
        """Its ``<kind>.yaml`` policy (training, gate, canary, drift) when ``policies_dir`` holds one, else the
        platform default ``<default_dir>/<kind>.yaml``: a use case overrides only the policies it needs to."""
        if self.policies_dir is not None and (self.policies_dir / f"{kind}.yaml").is_file():
            return self.policies_dir / f"{kind}.yaml"
        return default_dir / f"{kind}.yaml"

    @property
    def batch_kinds(self) -> tuple[str, str]:
        """The landing folder names, events first (``landing/<name>/<file>``)."""
        return self.batch_names["events"], self.batch_names["labels"]

    def columns_for(self, batch_name: str) -> dict[str, str]:
        """The column contract of the batches landing under ``batch_name``."""
        by_name = {
            self.batch_names["events"]: self.event_columns,
            self.batch_names["labels"]: self.label_columns,
        }
        if batch_name not in by_name:
            raise UseCaseError(
                f"use case {self.name!r} lands no batches named {batch_name!r}: it lands {', '.join(by_name)}"
            )
        return dict(by_name[batch_name])


def built_in_use_cases() -> list[str]:
    """The use cases that ship with Loopline: the packages under ``loopline.usecases``."""
    # By name, like load_use_case: config sits below every use case and never imports one.
    package = importlib.import_module(USE_CASES_PACKAGE)
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.ispkg)


def registered_use_cases() -> dict[str, str]:
    """The use cases installed packages register (entry-point group ``loopline.use_cases``): name -> module."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_use_cases() -> list[str]:
    """Every use case that can run: the built-in ones and those installed packages register."""
    return sorted({*built_in_use_cases(), *registered_use_cases()})


@cache
def load_use_case(name: str) -> UseCase:
    """The ``USE_CASE`` of use case ``name`` (built in, or registered by an installed package), checked
    against the interface."""
    registered = registered_use_cases()
    if name in registered:
        module_name, _, attribute = registered[name].partition(":")
        where = f"the entry point {name} = {registered[name]!r} (group {ENTRY_POINT_GROUP})"
        if name in built_in_use_cases():
            raise UseCaseError(
                f"use case {name!r} is built in and also registered by {where}: give the registered one "
                "another name"
            )
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UseCaseError(
                f"use case {name!r} is registered by {where}, but {module_name} cannot be imported ({exc}): "
                "install its package with its dependencies into every environment Loopline runs in"
            ) from exc
        where_to_fix = f"{module_name} ({module.__file__})"
    else:
        module_name, attribute = f"{USE_CASES_PACKAGE}.{name}", "USE_CASE"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name not in (module_name, USE_CASES_PACKAGE):
                raise  # the package exists but one of its own imports is missing: show that error as it is
            raise UseCaseError(
                f"no use case {name!r}: expected a package {module_name} (include/loopline/usecases/{name}/) "
                f"or an installed package registering it (entry-point group {ENTRY_POINT_GROUP}); installed: "
                f"{', '.join(available_use_cases()) or 'none'}. Set LOOPLINE_USE_CASE to one of them."
            ) from exc
        where_to_fix = f"include/loopline/usecases/{name}/__init__.py"
    attribute = attribute or "USE_CASE"
    use_case = getattr(module, attribute, None)
    if not isinstance(use_case, UseCase):
        raise UseCaseError(
            f"{module_name} defines no {attribute}: add `{attribute} = UseCase(...)` "
            f"(loopline.config.use_case.UseCase) to {where_to_fix}"
        )
    if use_case.name != name:
        raise UseCaseError(
            f"{module_name}.{attribute} is named {use_case.name!r}: name it {name!r}, as it is registered"
            if name in registered
            else f"{module_name}.USE_CASE is named {use_case.name!r}: name it {name!r}, as its package"
        )
    return use_case

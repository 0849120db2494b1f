"""The gate's holdout: the newest labelled days, after the training window, with point-in-time features.

The train_model DAG builds its training set with ``end = holdout_start`` and gates on the holdout, so
no holdout transaction (nor anything later) can have been trained on.

How long: at least ``holdout.days``; grown one day at a time (up to ``holdout.max_days``, never leaving
training fewer than ``holdout.min_train_days``) until every group of every ``fairness.group_columns``
attribute has ``fairness.min_group_size`` labelled rows and (a classifier) ``fairness.min_group_positives``
positive rows.
Fraud is rare and bursty: on a fixed two-day holdout most groups hold a handful of frauds, so their
true-positive rate cannot be judged and a model blind to a whole group would pass unnoticed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from loopline.config import Settings
from loopline.config.use_case import UseCase, load_use_case
from loopline.features.curated import read_curated_event_frame, read_labels
from loopline.features.training_sets import TrainingSetManifest, build_training_set
from loopline.gating.policy import GatePolicy

if TYPE_CHECKING:
    import pandas as pd

# The holdout manifest's record of each fairness attribute's values in the labelled history: the gate lists
# a group that has none of its rows in the holdout instead of leaving it out of the fairness table.
FAIRNESS_GROUPS_KEY = "fairness_groups"


class HoldoutError(RuntimeError):
    """No usable holdout: too little labelled data, or nothing left to train on before it."""


class Windows(NamedTuple):
    train_end: datetime
    holdout_start: datetime
    holdout_end: datetime


@dataclass(frozen=True)
class GroupCount:
    """Labelled rows and positive rows of one group in the planned holdout, and whether that is enough."""

    attribute: str
    group: str
    rows: int
    positives: int
    enough: bool


@dataclass(frozen=True)
class HoldoutPlan:
    """The chosen holdout window, how many days it spans, and the per-group counts that decided it."""

    windows: Windows
    days: float
    groups: tuple[GroupCount, ...] = field(default_factory=tuple)
    why: str = ""

    @property
    def short(self) -> tuple[GroupCount, ...]:
        """Groups still below the fairness minimums at the chosen length (reported, not judged)."""
        return tuple(g for g in self.groups if not g.enough)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["windows"] = {k: v.isoformat() for k, v in self.windows._asdict().items()}
        return data


def _labelled_events(
    settings: Settings, use_case: UseCase, labels_as_of: datetime | None, columns: list[str]
) -> pd.DataFrame:
    """Curated events (id, event time and ``columns``) joined with their labels known at ``labels_as_of``."""
    id_column = use_case.id_column

    labels = read_labels(settings, labels_as_of or datetime.now(UTC))
    if labels.empty:
        raise HoldoutError("the curated store has no labels yet: ingest label batches before gating")
    events = read_curated_event_frame(
        settings.state.curated, columns=[id_column, use_case.time_column, *columns], use_case=use_case
    )
    missing = [c for c in columns if c not in events.columns]
    if missing:
        raise HoldoutError(
            f"fairness.group_columns {missing} are not columns of the {use_case.name} use case's events: "
            "fix the gate policy"
        )
    return events.merge(labels[[id_column, use_case.label_column]], on=id_column, how="inner")


def _range_of(joined: pd.DataFrame, use_case: UseCase) -> tuple[datetime, datetime]:
    import pandas as pd

    time = use_case.time_column
    if use_case.task == "regression":  # every label is complete when it lands: the newest labelled event
        labelled = joined[joined[use_case.label_column].notna()]
        if labelled.empty:
            raise HoldoutError("no event has a label yet: ingest label batches before gating")
        first = pd.Timestamp(labelled[time].min()).to_pydatetime().astimezone(UTC)
        last = pd.Timestamp(labelled[time].max()).to_pydatetime().astimezone(UTC)
        return first, last + timedelta(microseconds=1)
    genuine = joined[joined[use_case.label_column] == 0]
    if genuine.empty:
        raise HoldoutError(
            f"none of the {len(joined)} labelled events is a confirmed negative one yet: "
            "wait for the label maturity window to pass"
        )
    first = pd.Timestamp(joined[time].min()).to_pydatetime().astimezone(UTC)
    last = pd.Timestamp(genuine[time].max()).to_pydatetime().astimezone(UTC)
    return first, last + timedelta(microseconds=1)


def labelled_range(settings: Settings, labels_as_of: datetime | None = None) -> tuple[datetime, datetime]:
    """[first labelled event, last *confirmed-genuine* labelled event + 1 µs); a regressor, whose labels
    are complete when they land: [first, last labelled event + 1 µs).

    Chargebacks (fraud) arrive within days, confirmations of genuine transactions only after a maturity
    window: beyond the newest confirmed-genuine transaction the labels present are nearly all fraud, and
    a holdout there would be biased. Ending at that frontier keeps the holdout's labels complete."""
    use_case = load_use_case(settings.use_case)
    return _range_of(_labelled_events(settings, use_case, labels_as_of, []), use_case)


def _group_counts(
    window: pd.DataFrame,
    groups: dict[str, list[str]],
    label: str,
    min_rows: int,
    min_positives: int,
    classifier: bool = True,
) -> tuple[GroupCount, ...]:
    """Rows and positive rows per group; enough with ``min_rows`` rows and (a classifier) ``min_positives``."""
    out = []
    for attribute, values in groups.items():
        column = window[attribute].astype("string").fillna("<missing>")
        rows = column.value_counts()
        positives = column[window[label].to_numpy() == 1].value_counts() if classifier else rows.iloc[:0]
        for group in values:
            n, k = int(rows.get(group, 0)), int(positives.get(group, 0))
            enough = n >= min_rows and (k >= min_positives or not classifier)
            out.append(GroupCount(attribute, group, n, k, enough))
    return tuple(out)


def choose_holdout(
    labelled: pd.DataFrame, first: datetime, end: datetime, policy: GatePolicy, use_case: UseCase
) -> HoldoutPlan:
    """Pure: the holdout ``[end - d days, end)`` over ``labelled`` rows (the use case's event time and
    label, and the fairness group columns: ``policy.fairness.columns(use_case)``).

    ``d`` starts at ``holdout.days`` and grows a day at a time while a group of a fairness attribute
    (any value seen in the labelled history) has fewer than ``min_group_size`` rows or
    ``min_group_positives`` fraud rows, up to ``holdout.max_days`` and never past the point where
    training would keep less than ``holdout.min_train_days``. At the limit the still-short groups are
    listed in the plan (the gate reports them as not judged)."""
    import pandas as pd

    h, f = policy.holdout, policy.fairness
    group_columns, label = f.columns(use_case), use_case.label_column
    classifier = use_case.task == "binary_classification"
    room = (end - first).total_seconds() / 86400 - h.min_train_days  # days the holdout may take
    if h.days >= room:
        left = (
            "nothing would be left to train on"
            if h.min_train_days == 0
            else f"training would keep less than holdout.min_train_days ({h.min_train_days:g} days)"
        )
        raise HoldoutError(
            f"labelled data spans {first.isoformat()} .. {end.isoformat()}; with a {h.days:g}-day holdout "
            f"{left} (simulate/ingest more days, or shorten holdout.days / holdout.min_train_days in the gate "
            "policy)"
        )
    stamps = pd.to_datetime(labelled[use_case.time_column], utc=True)
    groups = {
        c: sorted(labelled[c].astype("string").fillna("<missing>").unique().tolist()) for c in group_columns
    }
    # Whole-day steps from `days` (a fractional tail would only add a partial, hour-of-day-skewed day).
    longest = min(h.longest(), room)
    steps = [h.days + k for k in range(math.floor(longest - h.days + 1e-9) + 1)]
    if h.longest() <= room and h.longest() not in steps:
        steps.append(h.longest())
    for days in steps:
        start = end - timedelta(days=days)
        window = labelled[
            (stamps >= pd.Timestamp(start)).to_numpy() & (stamps < pd.Timestamp(end)).to_numpy()
        ]
        counts = _group_counts(window, groups, label, f.min_group_size, f.min_group_positives, classifier)
        if all(g.enough for g in counts):
            break
    short = [g for g in counts if not g.enough]
    if not short:
        why = f"{days:g} days: every group of {', '.join(group_columns) or 'no attribute'} has at least " + (
            f"{f.min_group_size} rows and {f.min_group_positives} positive rows ({label!r} = 1)"
            if classifier
            else f"{f.min_group_size} rows"
        )
    elif not classifier:
        limit = (
            "holdout.max_days" if longest >= h.longest() else f"holdout.min_train_days ({h.min_train_days:g})"
        )
        why = (
            f"{days:g} days (the limit set by {limit}): "
            + ", ".join(f"{g.attribute}={g.group} has {g.rows} rows" for g in short)
            + f", short of {f.min_group_size} rows: not judged"
        )
    else:
        limit = (
            "holdout.max_days" if longest >= h.longest() else f"holdout.min_train_days ({h.min_train_days:g})"
        )
        why = (
            f"{days:g} days (the limit set by {limit}): "
            + ", ".join(
                f"{g.attribute}={g.group} has {g.positives} positive rows in {g.rows} rows" for g in short
            )
            + f", short of {f.min_group_positives} positive rows ({label!r} = 1) / {f.min_group_size} rows: "
            "not judged"
        )
    return HoldoutPlan(
        Windows(train_end=start, holdout_start=start, holdout_end=end), float(days), counts, why
    )


def plan_holdout(settings: Settings, policy: GatePolicy, labels_as_of: datetime | None = None) -> HoldoutPlan:
    """Read the labelled history and choose the holdout (see ``choose_holdout``) for the configured use case."""
    use_case = load_use_case(settings.use_case)
    labelled = _labelled_events(settings, use_case, labels_as_of, policy.fairness.columns(use_case))
    first, end = _range_of(labelled, use_case)
    return choose_holdout(labelled, first, end, policy, use_case)


def plan_windows(settings: Settings, policy: GatePolicy, labels_as_of: datetime | None = None) -> Windows:
    """(train_end, holdout_start, holdout_end): the holdout is the newest labelled days (``plan_holdout``);
    training uses everything before it (``train_end == holdout_start``)."""
    return plan_holdout(settings, policy, labels_as_of).windows


def _record_fairness_groups(
    settings: Settings,
    use_case: UseCase,
    policy: GatePolicy,
    out: Path,
    end: datetime,
    labels_as_of: datetime | None,
) -> None:
    """Add each fairness attribute's values in the labelled history before ``end`` to ``out``'s manifest."""
    import json

    import pandas as pd

    columns = policy.fairness.columns(use_case)
    history = _labelled_events(settings, use_case, labels_as_of, columns)
    history = history[history[use_case.time_column] < pd.Timestamp(end)]
    path = out.with_name(out.name + ".manifest.json")
    manifest = json.loads(path.read_text())
    manifest[FAIRNESS_GROUPS_KEY] = {
        c: sorted(history[c].dropna().astype(str).unique().tolist()) for c in columns
    }
    path.write_text(json.dumps(manifest, indent=2))


def build_holdout(
    settings: Settings,
    policy: GatePolicy,
    out: Path,
    labels_as_of: datetime | None = None,
    windows: Windows | None = None,
) -> TrainingSetManifest:
    """Build the holdout parquet (+ manifest) for ``windows`` (default: planned now) with
    ``build_training_set``, and refuse one with too few labelled or fraud rows to judge a model on.

    Pass the windows the training set was built with: planned again later, newly landed labels could
    move the window, and a holdout that starts before ``train_end`` would hold trained-on rows."""
    use_case = load_use_case(settings.use_case)
    if windows is None:
        windows = plan_windows(settings, policy, labels_as_of)
    manifest = build_training_set(
        settings, Path(out), start=windows.holdout_start, end=windows.holdout_end, labels_as_of=labels_as_of
    )
    _record_fairness_groups(settings, use_case, policy, Path(out), windows.holdout_end, labels_as_of)
    h = policy.holdout
    if use_case.task == "regression":
        if manifest.labelled_rows < h.min_labelled_rows:
            raise HoldoutError(
                f"the holdout [{manifest.start}, {manifest.end}) has {manifest.labelled_rows} labelled rows; "
                f"the gate policy needs at least {h.min_labelled_rows} (raise holdout.days / "
                "holdout.max_days or lower holdout.min_labelled_rows in the gate policy)"
            )
        return manifest
    if manifest.labelled_rows < h.min_labelled_rows or manifest.positive_rows < h.min_positive_rows:
        raise HoldoutError(
            f"the holdout [{manifest.start}, {manifest.end}) has {manifest.labelled_rows} labelled rows and "
            f"{manifest.positive_rows} positive rows ({use_case.label_column!r} = 1); the gate policy needs at "
            f"least {h.min_labelled_rows} and "
            f"{h.min_positive_rows} (raise holdout.days / holdout.max_days or lower the minimums in "
            "the gate policy)"
        )
    return manifest

"""The use-case interface: a use case is found by name, checked against the interface, and every mistake in
it is reported with the piece to fix."""

from __future__ import annotations

import json
import sys
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from loopline.config import Settings
from loopline.config.use_case import UseCase, UseCaseError, available_use_cases, load_use_case

EVENTS = {
    "order_id": "string",
    "ordered_at": "datetime64[us, UTC]",
    "region": "string",
    "distance_km": "float64",
}
LABELS = {"order_id": "string", "minutes": "float64", "delivered_at": "datetime64[us, UTC]"}
# A suite per landing folder (the content does not matter to the interface, only that each kind has one).
SUITES = Path(tempfile.mkdtemp(prefix="use-case-suites-"))
for _name in ("orders", "deliveries"):
    (SUITES / f"{_name}.json").write_text(json.dumps({"name": _name, "expectations": []}))


def _use_case(**overrides: object) -> UseCase:
    fields: dict[str, object] = dict(
        name="delivery",
        task="regression",
        event_columns=EVENTS,
        label_columns=LABELS,
        id_column="order_id",
        time_column="ordered_at",
        label_column="minutes",
        label_time_column="delivered_at",
        expectations_dir=SUITES,
        model_name="delivery_time",
        group_columns=("region",),
        batch_names={"events": "orders", "labels": "deliveries"},
    )
    return UseCase(**{**fields, **overrides})  # type: ignore[arg-type]


@pytest.fixture
def installed() -> Iterator[dict[str, types.ModuleType]]:
    """Fake use-case packages under loopline.usecases, removed afterwards."""
    added: dict[str, types.ModuleType] = {}
    yield added
    for name in added:
        sys.modules.pop(f"loopline.usecases.{name}", None)
    load_use_case.cache_clear()


def _install(installed: dict[str, types.ModuleType], name: str, **attributes: object) -> None:
    module = types.ModuleType(f"loopline.usecases.{name}")
    module.__dict__.update(attributes)
    sys.modules[module.__name__] = module
    installed[name] = module
    load_use_case.cache_clear()


def test_fraud_is_the_default_use_case_and_satisfies_the_interface() -> None:
    use_case = load_use_case(Settings().use_case)
    assert use_case.name == "fraud" and use_case.task == "binary_classification"
    assert use_case.batch_kinds == ("transactions", "labels")
    assert use_case.columns_for("labels")[use_case.label_column] == "int64"
    assert set(use_case.group_columns) <= set(use_case.event_columns)
    assert "fraud" in available_use_cases()


def test_a_valid_use_case_is_loaded_by_name(installed: dict[str, types.ModuleType]) -> None:
    _install(installed, "delivery", USE_CASE=_use_case())
    use_case = load_use_case("delivery")
    assert use_case.columns_for("orders") == EVENTS
    with pytest.raises(
        UseCaseError, match="lands no batches named 'transactions': it lands orders, deliveries"
    ):
        use_case.columns_for("transactions")


def test_an_unknown_use_case_names_the_package_and_the_installed_ones() -> None:
    with pytest.raises(UseCaseError) as error:
        load_use_case("churn")
    message = str(error.value)
    assert "expected a package loopline.usecases.churn (include/loopline/usecases/churn/)" in message
    assert "or an installed package registering it (entry-point group loopline.use_cases)" in message
    assert "installed: " in message and "fraud" in message and "LOOPLINE_USE_CASE" in message


def test_a_package_without_use_case_says_what_to_add(installed: dict[str, types.ModuleType]) -> None:
    _install(installed, "delivery")
    with pytest.raises(UseCaseError, match=r"defines no USE_CASE: add `USE_CASE = UseCase\(...\)`"):
        load_use_case("delivery")
    _install(installed, "other", USE_CASE={"name": "other"})  # a dict is not the interface
    with pytest.raises(UseCaseError, match="defines no USE_CASE"):
        load_use_case("other")


def test_a_use_case_named_unlike_its_package_is_refused(installed: dict[str, types.ModuleType]) -> None:
    _install(installed, "eta", USE_CASE=_use_case())
    with pytest.raises(UseCaseError, match="is named 'delivery': name it 'eta'"):
        load_use_case("eta")


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"task": "ranking"}, "task 'ranking' is not one of binary_classification, regression"),
        ({"model_name": "eta model"}, "model_name 'eta model' must be letters, digits, '_' or '-'"),
        ({"id_column": "id"}, "id_column 'id' is not in event_columns"),
        ({"time_column": "created"}, "time_column 'created' is not in event_columns"),
        ({"label_column": "eta"}, "label_column 'eta' is not in label_columns"),
        ({"label_time_column": "ordered_at"}, "label_time_column 'ordered_at' is not in label_columns"),
        ({"group_columns": ("city",)}, "group column 'city' is not in event_columns"),
        ({"unit_column": "courier"}, "unit_column 'courier' is not in event_columns"),
        ({"optional_request_columns": ("tip",)}, "optional request column 'tip' is not in event_columns"),
        ({"batch_names": {"events": "orders"}}, "batch_names must name exactly 'events' and 'labels'"),
        ({"batch_names": {"events": "x", "labels": "x"}}, "different folder names"),
        (
            {"batch_names": {"events": "orders", "labels": "returns"}},
            f"no expectation suite {SUITES}/returns.json for its returns batches",
        ),
    ],
)
def test_each_broken_piece_is_named(overrides: dict[str, object], problem: str) -> None:
    with pytest.raises(UseCaseError, match="use case 'delivery' is invalid") as error:
        _use_case(**overrides)
    assert problem in str(error.value)


def test_the_setting_accepts_package_names_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPLINE_USE_CASE", "../fraud")
    with pytest.raises(ValueError, match="use_case"):
        Settings()


def test_a_missing_or_broken_simulator_is_named() -> None:
    with pytest.raises(UseCaseError, match="has no simulator: deliver its batches to the landing zone"):
        _use_case().load_simulator()
    with pytest.raises(UseCaseError, match="its simulator 'loopline.nowhere:SIM' cannot be loaded"):
        _use_case(simulator="loopline.nowhere:SIM").load_simulator()
    with pytest.raises(UseCaseError, match="loopline.config.use_case:UseCaseError is not a WorldSimulator"):
        _use_case(simulator="loopline.config.use_case:UseCaseError").load_simulator()


def _register(root: Path, name: str, target: str, module_source: str | None) -> None:
    """An installed distribution (as pip leaves it: a package and its .dist-info on sys.path) that registers
    use case ``name`` as ``target`` under the ``loopline.use_cases`` entry points."""
    dist = root / f"acme_{name}-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: acme-{name}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[loopline.use_cases]\n{name} = {target}\n")
    if module_source is not None:
        package = root / target.partition(":")[0]
        package.mkdir()
        (package / "__init__.py").write_text(module_source)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A site-packages folder on sys.path; what was imported from it is forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    load_use_case.cache_clear()
    yield tmp_path
    for module in [m for m in sys.modules if m.startswith("acme_")]:
        del sys.modules[module]
    load_use_case.cache_clear()


_CHURN_SOURCE = f"""
from pathlib import Path
from loopline.config.use_case import UseCase

USE_CASE = UseCase(
    name="churn",
    task="binary_classification",
    event_columns={EVENTS!r},
    label_columns={LABELS!r},
    id_column="order_id",
    time_column="ordered_at",
    label_column="minutes",
    label_time_column="delivered_at",
    expectations_dir=Path({str(SUITES)!r}),
    model_name="churn",
    feature_repo=Path(__file__).parent / "feature_repo",
    batch_names={{"events": "orders", "labels": "deliveries"}},
)
"""


def test_an_installed_package_registers_a_use_case_without_editing_loopline(site: Path) -> None:
    repo = site / "acme_churn" / "feature_repo"
    _register(site, "churn", "acme_churn", _CHURN_SOURCE)
    repo.mkdir()
    (repo / "feature_store.yaml").write_text("project: acme_churn\n")

    assert "churn" in available_use_cases() and "fraud" in available_use_cases()
    use_case = load_use_case("churn")
    assert use_case.task == "binary_classification" and use_case.feature_repo == repo
    # Its Feast repo travels with its package; the built-in ones stay under feature_repo/.
    assert Settings(use_case="churn").feature_repo_dir == repo
    assert Settings(use_case="fraud").feature_repo_dir.parts[-2:] == ("feature_repo", "fraud")


def test_a_registered_use_case_points_at_what_to_fix(site: Path) -> None:
    _register(site, "churn", "acme_churn", "")  # the package defines nothing
    with pytest.raises(UseCaseError) as error:
        load_use_case("churn")
    assert "acme_churn defines no USE_CASE: add `USE_CASE = UseCase(...)`" in str(error.value)
    assert str(site / "acme_churn" / "__init__.py") in str(error.value)

    _register(site, "eta", "acme_missing", None)  # registered, but its package is not installed
    with pytest.raises(UseCaseError) as error:
        load_use_case("eta")
    assert "use case 'eta' is registered by the entry point eta = 'acme_missing'" in str(error.value)
    assert "install its package" in str(error.value)

    # A registered name must not shadow a built-in use case.
    _register(site, "fraud", "acme_fraud", "")
    with pytest.raises(UseCaseError, match="'fraud' is built in and also registered"):
        load_use_case("fraud")


def test_a_feature_repo_without_feast_config_is_named(tmp_path: Path) -> None:
    with pytest.raises(UseCaseError, match=f"its feature_repo {tmp_path} has no feature_store.yaml"):
        _use_case(feature_repo=tmp_path)

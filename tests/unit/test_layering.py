"""The domain package imports no Airflow: DAGs in ``dags/`` and the glue in ``plugins/loopline_airflow`` import
``loopline``, never the other way (``airflow_client``, the REST client package, is not Airflow)."""

from __future__ import annotations

import ast
from pathlib import Path

INCLUDE = Path(__file__).resolve().parents[2] / "include" / "loopline"
FORBIDDEN = ("airflow", "loopline_airflow")


def _imported_modules(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_no_module_under_include_imports_airflow_or_the_plugin() -> None:
    offenders = [
        f"{path.relative_to(INCLUDE.parent)}: {name}"
        for path in sorted(INCLUDE.rglob("*.py"))
        for name in _imported_modules(path)
        if name.split(".")[0] in FORBIDDEN
    ]
    assert offenders == []
    assert len(list(INCLUDE.rglob("*.py"))) > 50  # the scan reads the package, not an empty folder

"""The test tree has no __init__.py files, so pytest imports test modules by basename: two with the same
name in different folders break collection of the whole suite. Catch that here, with the names."""

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_module_basenames_are_unique():
    names = Counter(p.name for p in TESTS.rglob("*.py") if p.name not in {"conftest.py", "__init__.py"})
    assert [n for n, count in names.items() if count > 1] == []

"""The use-case boundary: platform code (include/loopline outside usecases/, the Airflow plugin, the DAGs) names
no use case's columns, entities or labels; it reads them through ``loopline.config.use_case``.

Fraud detection was woven through the platform before the boundary existed, so the check is a ratchet:
``ALLOWED`` lists, per file, how many such names it still holds (each kept for compatibility with what earlier
versions stored, or the one default). A new file with one fails, a file with more than allowed fails, and a
file with fewer fails too until its allowance is lowered, so the list only shrinks and always tells the truth.
Code identifiers and string literals count; comments and docstrings (which may use the use case as an example)
do not.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

from loopline.config.use_case import available_use_cases, load_use_case

ROOT = Path(__file__).resolve().parents[2]
PLATFORM_DIRS = (ROOT / "include" / "loopline", ROOT / "plugins", ROOT / "dags")
USE_CASES_DIR = ROOT / "include" / "loopline" / "usecases"

# Use-case names per platform file that stay, each for a reason (the list can only shrink):
ALLOWED: dict[str, int] = {
    "include/loopline/config/drift_policy.py": 1,  # refuses the renamed key min_fraud_rows, naming the new one
    "include/loopline/config/settings.py": 1,  # DEFAULT_USE_CASE: the built-in example, named once
    "include/loopline/features/tables.py": 1,  # the aggregate tables' time column in every Feast schema
    "include/loopline/gating/card.py": 1,  # reads fraud_rows of training-set manifests written before the rename
    "include/loopline/gating/policy.py": 2,  # refuses min_fraud_rows and missed_fraud_cost, naming the new keys
    "include/loopline/serving/prediction_log.py": 2,  # the stored column names of existing prediction logs
    "include/loopline/training/model.py": 2,  # FraudModel, FraudMLP: aliases that unpickle registered versions
    "include/loopline/training/pyfunc.py": 2,  # the bundle artifact key and FraudDetectorModel, likewise
    "plugins/loopline_airflow/ui/render.py": 1,  # shows served-feature checks recorded before event_id
}


def use_case_words() -> re.Pattern[str]:
    """Every installed use case's column names, label and name, as whole identifiers (the name also inside one:
    ``FraudModel``, ``missed_fraud_cost``)."""
    exact: set[str] = set()
    inside: set[str] = set()
    for name in available_use_cases():
        use_case = load_use_case(name)
        exact |= set(use_case.event_columns) | set(use_case.label_columns)
        # Its events' folder name is its entity in the plural (fraud's "transactions", delivery's "orders");
        # label folders are left out, since fraud's is the generic "labels".
        exact.add(use_case.batch_names["events"])
        inside.add(name)
    exact_words = "|".join(sorted(map(re.escape, exact), key=len, reverse=True))
    inside_words = "|".join(map(re.escape, sorted(inside)))
    return re.compile(rf"(?<![A-Za-z0-9_])(?:{exact_words})(?![A-Za-z0-9_])|{inside_words}", re.IGNORECASE)


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return lines


def named_use_case_words(path: Path, words: re.Pattern[str]) -> list[str]:
    """The use-case words in ``path``'s identifiers and string literals (not comments, not docstrings)."""
    source = path.read_text()
    docstrings = _docstring_lines(ast.parse(source, str(path)))
    counted = {tokenize.NAME, tokenize.STRING}  # Python 3.11: an f-string is one STRING token
    return [
        match
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type in counted and token.start[0] not in docstrings
        for match in words.findall(token.string)
    ]


def platform_files() -> list[Path]:
    return sorted(
        path
        for folder in PLATFORM_DIRS
        for path in folder.rglob("*.py")
        if USE_CASES_DIR not in path.parents and "__pycache__" not in path.parts
    )


def test_platform_code_names_no_use_case_words_beyond_the_shrinking_allowance() -> None:
    words = use_case_words()
    found = {
        str(path.relative_to(ROOT)): len(hits)
        for path in platform_files()
        if (hits := named_use_case_words(path, words))
    }
    grew = {f: (n, ALLOWED.get(f, 0)) for f, n in found.items() if n > ALLOWED.get(f, 0)}
    shrank = {f: (found.get(f, 0), n) for f, n in ALLOWED.items() if found.get(f, 0) < n}
    assert not grew, (
        "platform code names a use case's columns or labels; read them from loopline.config.use_case "
        f"instead (file: (found, allowed)): {grew}"
    )
    assert not shrank, (
        f"fewer use-case names than allowed: lower ALLOWED to match (file: (found, allowed)): {shrank}"
    )


def test_the_scan_counts_code_and_strings_but_not_docstrings_or_comments(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""Scores card transactions (fraud) by amount."""\n'
        "# the fraud label is is_fraud\n"
        "def score(frame):\n"
        '    """Uses amount and customer_id."""\n'
        '    return frame["amount"] * frame.is_fraud, f"{frame}customer_id"\n'
        "class FraudModel: ...\n"
        "amounts = 1  # a different identifier\n"
    )
    assert sorted(w.lower() for w in named_use_case_words(sample, use_case_words())) == [
        "amount",
        "customer_id",
        "fraud",
        "is_fraud",
    ]


def test_the_scan_reads_the_platform() -> None:
    files = platform_files()
    assert len(files) > 80
    assert not [f for f in files if USE_CASES_DIR in f.parents]
    assert ROOT / "dags" / "train_model.py" in files

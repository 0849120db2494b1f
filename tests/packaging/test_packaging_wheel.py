"""The images install Loopline with ``pip install .`` (not the checkout): the wheel must carry every file the
package reads at run time, above all each use case's data files (its Great Expectations suites)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from packaging_files import REPO_ROOT

from loopline.config.use_case import built_in_use_cases, load_use_case


def build_wheel(source: Path, out: Path, pattern: str) -> Path:
    """``pip wheel`` of the project at ``source`` (a copy, so setuptools' build/ stays out of the checkout)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            ".",
        ],
        cwd=source,
        check=True,
        timeout=300,
    )
    (wheel,) = out.glob(pattern)
    return wheel


def test_the_wheel_carries_every_use_case_and_its_suites(tmp_path: Path) -> None:
    # Built from a copy of what the images copy, so setuptools' build/ folder stays out of the checkout.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    for name in ("include", "plugins"):
        shutil.copytree(
            REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
    wheel = build_wheel(source, tmp_path, "loopline-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    include = REPO_ROOT / "include"
    for name in built_in_use_cases():  # a registered use case ships in its own package's wheel
        use_case = load_use_case(name)
        assert f"loopline/usecases/{name}/__init__.py" in names
        for batch in use_case.batch_kinds:
            suite = (use_case.expectations_dir / f"{batch}.json").relative_to(include)
            assert suite.as_posix() in names, (
                f"{suite} is not in the wheel: add it to package-data in pyproject.toml"
            )
        # The trainer image runs from the wheel: each use case's policies (its training.yaml) must be in it.
        policies = sorted(use_case.policies_dir.glob("*.yaml")) if use_case.policies_dir else []
        for policy in policies:
            assert policy.relative_to(include).as_posix() in names, (
                f"{policy} is not in the wheel: add it to package-data in pyproject.toml"
            )
        assert use_case.policy_file("training", include / "config") in policies, (
            f"use case {name} ships no training policy: the trainer image could not train it"
        )


def test_a_use_case_of_its_own_ships_everything_in_its_wheel(tmp_path: Path) -> None:
    """The example use case's wheel, what an image installs on top of Loopline: its suites, policies and Feast
    repository, and the entry point that registers it."""
    import configparser

    source = tmp_path / "source"
    shutil.copytree(
        REPO_ROOT / "examples" / "maintenance",
        source,
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"),
    )
    wheel = build_wheel(source, tmp_path, "loopline_maintenance-*.whl")
    archive = zipfile.ZipFile(wheel)
    names = set(archive.namelist())
    package = REPO_ROOT / "examples" / "maintenance" / "loopline_maintenance"
    use_case = load_use_case("maintenance")
    assert use_case.feature_repo is not None and use_case.policies_dir is not None
    needed = [
        *(use_case.expectations_dir / f"{batch}.json" for batch in use_case.batch_kinds),
        *use_case.policies_dir.glob("*.yaml"),
        *use_case.feature_repo.glob("*.py"),
        *use_case.feature_repo.glob("*.yaml"),
    ]
    missing = [
        str(p.relative_to(package.parent))
        for p in needed
        if p.relative_to(package.parent).as_posix() not in names
    ]
    assert not missing, f"not in the wheel: {missing} (add them to its package-data)"
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(archive.read(entry_points).decode())
    assert dict(parser["loopline.use_cases"]) == {"maintenance": "loopline_maintenance"}

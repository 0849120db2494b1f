"""How a training run is launched: the exact argv of the trainer entry point, whatever runs it.

The local launcher runs it as a subprocess of the Airflow worker; the Kubernetes launcher (to come:
KubernetesPodOperator on a GPU node) runs the same argv in the trainer image. Keeping the argv in one
place keeps the two code paths identical.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

# Run parameters a person may set when triggering training, and the config keys they override.
PARAM_TO_CONFIG = {"epochs": "epochs", "learning_rate": "lr"}


class TrainingLaunchFailed(RuntimeError):
    """The trainer exited non-zero; the message carries the end of its output."""


def trainer_argv(
    training_set: str, config_path: str, result_json: str, params: dict[str, Any], tracking_uri: str | None = None,
    python: str = "python",
) -> list[str]:
    """``python -m loopline.training.train ...`` with run parameters as ``--set`` overrides."""
    argv = [python, "-m", "loopline.training.train", "--training-set", training_set, "--config", config_path,
            "--result-json", result_json]
    for param, key in PARAM_TO_CONFIG.items():
        if params.get(param) is not None:
            argv += ["--set", f"{key}={params[param]}"]
    if tracking_uri:
        argv += ["--tracking-uri", tracking_uri]
    return argv


def run_local(argv: list[str], result_json: Path, timeout_s: float = 3600) -> dict[str, Any]:
    """Run the trainer as a local process (this interpreter) and return its result JSON."""
    argv = [sys.executable, *argv[1:]] if argv[0] == "python" else argv
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    print(done.stdout[-4000:])
    if done.returncode != 0:
        raise TrainingLaunchFailed(
            f"the trainer exited with {done.returncode}: {(done.stderr or done.stdout)[-2000:].strip()}"
        )
    return json.loads(Path(result_json).read_text())

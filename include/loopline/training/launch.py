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

TRAINER_MODULE = "loopline.training.train"
# Run parameters a person may set when triggering training, and the config keys they override.
PARAM_TO_CONFIG = {"epochs": "epochs", "learning_rate": "lr", "hpo_trials": "hpo.trials"}
# Run parameters that are trainer flags rather than config values.
PARAM_TO_FLAG = {"reason": "--reason"}


class TrainingLaunchFailed(RuntimeError):
    """The trainer exited non-zero; the message carries the end of its output."""


def trainer_argv(
    training_set: str,
    config_path: str | None,
    result_json: str,
    params: dict[str, Any],
    tracking_uri: str | None = None,
    python: str = "python",
    use_case: str | None = None,
) -> list[str]:
    """``python -m loopline.training.train ...``: run parameters (``epochs``, ``learning_rate``,
    ``hpo_trials``) become ``--set`` overrides, ``reason`` becomes ``--reason``; unset (None/empty) ones are
    left out so the config file decides. ``use_case`` is passed as ``--use-case``; without ``config_path``
    the trainer reads that use case's training policy where it runs (a pod: from the installed package)."""
    argv = [python, "-m", TRAINER_MODULE, "--training-set", training_set]
    if use_case:
        argv += ["--use-case", use_case]
    if config_path:
        argv += ["--config", config_path]
    argv += ["--result-json", result_json]
    for param, key in PARAM_TO_CONFIG.items():
        if params.get(param) is not None:
            argv += ["--set", f"{key}={params[param]}"]
    for param, flag in PARAM_TO_FLAG.items():
        if params.get(param) not in (None, ""):
            argv += [flag, str(params[param])]
    if tracking_uri:
        argv += ["--tracking-uri", tracking_uri]
    return argv


def trainer_command(argv: list[str], gpus: int) -> list[str]:
    """The pod's command for ``argv`` (from ``trainer_argv``) on ``gpus`` GPUs: unchanged for one (or none),
    ``torchrun --standalone --nproc-per-node N -m loopline.training.train ...`` for more (one process per
    GPU, data parallel; rank 0 writes the result JSON)."""
    if gpus < 0:
        raise ValueError(f"gpus must be >= 0, got {gpus}")
    if gpus <= 1:
        return list(argv)
    if argv[1:3] != ["-m", TRAINER_MODULE]:
        raise ValueError(f"not a trainer argv (expected <python> -m {TRAINER_MODULE} ...): {argv[:3]}")
    return ["torchrun", "--standalone", "--nproc-per-node", str(gpus), "-m", TRAINER_MODULE, *argv[3:]]


def _local_argv(argv: list[str]) -> list[str]:
    # This interpreter (its venv has loopline and torch) stands in for the image's python and torchrun.
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    if argv[0] == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", *argv[1:]]
    return argv


def run_local(argv: list[str], result_json: Path, timeout_s: float = 3600) -> dict[str, Any]:
    """Run the trainer (or its torchrun command) as a local process and return its result JSON."""
    argv = _local_argv(argv)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    print(done.stdout[-4000:])
    # The trainer's warnings and MLflow's registration messages go to stderr: keep them in the task log.
    print(done.stderr[-4000:], file=sys.stderr)
    if done.returncode != 0:
        raise TrainingLaunchFailed(
            f"the trainer exited with {done.returncode}: {(done.stderr or done.stdout)[-2000:].strip()}"
        )
    result: dict[str, Any] = json.loads(Path(result_json).read_text())
    return result

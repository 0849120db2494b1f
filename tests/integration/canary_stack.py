"""A real local stack for the canary's end-to-end tests: `loopline up` on a scratch project and free ports
(every Airflow component, MLflow, the prediction service), a champion serving, and a canary policy of the
test's choosing.

The data, the model and the client load are the deployment tests' own (tests/unit/deployment and
tests/unit/serving helpers, put on sys.path here as their conftests do); only the world is built in the
stack's state dir and MLflow server instead of a test-local SQLite one. The scratch project keeps just
``deploy_canary``: the other DAGs (the weekly training, the drift monitor, the landing-zone watcher) would
act on the seeded data and race the tests for the model aliases.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
for _path in (
    REPO / "tests" / "unit",
    REPO / "tests" / "unit" / "serving",
    REPO / "tests" / "unit" / "deployment",
):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from scratch_stack import processes_using, scratch_env, scratch_project  # noqa: E402
from serving_testkit import MODEL, request_rows, wait_until  # noqa: E402
from training.test_training import CONFIG_PATH, FAST  # noqa: E402

from loopline.config import Settings  # noqa: E402

LOOPLINE = str(Path(sys.executable).parent / "loopline")
KEPT_DAGS = ("deploy_canary.py",)


@dataclass(frozen=True)
class CanaryStack:
    env: dict[str, str]  # what a `loopline` command run by a user of this stack has
    settings: Settings  # the same view, in this process
    transactions: list[dict[str, Any]]  # request bodies of real customers, timed just after the features end
    model_uri: str  # the trained model (models:/m-...): every version registered here has its weights

    @property
    def serving_url(self) -> str:
        return self.settings.serving_base_url

    def loopline(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [LOOPLINE, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def api(self):
        from loopline.platform.stack import api_for

        return api_for(self.settings)

    def registry(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.settings.mlflow_uri, registry_uri=self.settings.mlflow_uri)

    def register_version(self) -> str:
        """A new version of ``fraud_detector`` with the trained weights (a challenger as good as the champion)."""
        import mlflow

        mlflow.set_tracking_uri(self.settings.mlflow_uri)
        mlflow.set_registry_uri(self.settings.mlflow_uri)
        return str(mlflow.register_model(self.model_uri, MODEL).version)

    def served(self, role: str) -> str | None:
        """The version the prediction service serves as ``champion`` or ``challenger`` (None: none)."""
        import httpx

        deployment = httpx.get(f"{self.serving_url}/readyz", timeout=5).json().get("deployment") or {}
        return (deployment.get(role) or {}).get("version")


def prepare_data(settings: Settings) -> tuple[list[dict[str, Any]], Path]:
    """The data of the serving tests' ``serving_world``, in ``settings``' state dir: 10 simulated days
    published and materialised, and a training set. Returns (request rows, training set path)."""
    from loopline.data.ingest import publish
    from loopline.features.curated import curated_time_range
    from loopline.features.materialize import materialize
    from loopline.features.training_sets import build_training_set
    from loopline.features.watermark import materialized_until
    from loopline.usecases.fraud.simulator import SimulationConfig, simulate

    settings.state.ensure()
    sim = simulate(SimulationConfig(days=10, n_customers=120, seed=7))
    publish(settings, sim.transactions, "transactions", "sim")
    publish(settings, sim.labels, "labels", "sim")
    materialize(settings, *curated_time_range(settings))
    training_set = settings.state.root / "train.parquet"
    build_training_set(settings, training_set)
    latest = sim.transactions.sort_values("event_timestamp").drop_duplicates("customer_id", keep="last")
    start = materialized_until(settings) + timedelta(minutes=1)
    return request_rows(latest, len(latest), start), training_set


def train_model(settings: Settings, training_set: Path) -> tuple[str, str]:
    """One small model (the training tests' fast config), registered; returns (version, model URI)."""
    from loopline.training.config import load_config
    from loopline.training.train import train

    result = train(
        training_set,
        load_config(CONFIG_PATH, FAST),
        tracking_uri=settings.mlflow_uri,
        config_path=CONFIG_PATH,
    )
    return str(result.version), result.logged_model_uri


@contextlib.contextmanager
def running_stack(root: Path, policy: dict[str, Any]) -> Iterator[CanaryStack]:
    """`loopline up` with ``policy`` as LOOPLINE_CANARY_POLICY, a model trained through the stack's MLflow
    and serving as the champion; `loopline down` afterwards, failing if anything is left running."""
    project = scratch_project(root)
    for dag_file in (project / "dags").glob("*.py"):
        if dag_file.name not in KEPT_DAGS:
            dag_file.unlink()
    policy_path = root / "canary.policy.yaml"
    policy_path.write_text(yaml.safe_dump(policy, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "LOOPLINE_"))}
    env.update(scratch_env(root, project), LOOPLINE_CANARY_POLICY=str(policy_path))
    settings = Settings(
        project_dir=project,
        state_dir=Path(env["LOOPLINE_STATE_DIR"]),
        airflow_port=int(env["LOOPLINE_AIRFLOW_PORT"]),
        mlflow_port=int(env["LOOPLINE_MLFLOW_PORT"]),
        serving_port=int(env["LOOPLINE_SERVING_PORT"]),
        canary_policy=policy_path,
    )
    # The stack starts (half a minute, mostly waiting) while the data is prepared beside it; the model
    # then goes through the stack's own MLflow server, as a trained model would.
    up = subprocess.Popen(
        [LOOPLINE, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        transactions, training_set = prepare_data(settings)
        output, _ = up.communicate(timeout=300)
        assert up.returncode == 0, f"loopline up failed:\n{output}"
        champion, model_uri = train_model(settings, training_set)
        stack = CanaryStack(env, settings, transactions, model_uri)
        stack.registry().set_registered_model_alias(MODEL, "champion", champion)
        wait_until(
            lambda: stack.served("champion") == champion, timeout=90, what=f"champion {champion} serving"
        )
        yield stack
    finally:
        if up.poll() is None:  # failed before `up` returned: `down` below stops what it started
            up.kill()
            up.wait()
        subprocess.run([LOOPLINE, "down"], env=env, capture_output=True, timeout=120)
        leftovers = processes_using(settings.state.root)
        for proc in leftovers:  # do not leak into the rest of the suite, but do fail
            proc.kill()
        assert leftovers == [], f"loopline down left processes running: {leftovers}"


def task_log_hint(stack: CanaryStack, run_id: str) -> str:
    """Where to look when a run went wrong: its task states and the stack's log dir."""
    states = stack.api().task_states("deploy_canary", run_id)
    return f"deploy_canary {run_id}: {json.dumps(states)}; logs under {stack.settings.state.logs}"

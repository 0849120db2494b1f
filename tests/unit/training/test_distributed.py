"""Data-parallel training: the torchrun context, and two gloo processes on CPU trained end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from loopline.config.use_case import load_use_case
from loopline.training.config import load_config
from loopline.training.data import feature_columns, labelled_split, read_training_set
from loopline.training.distributed import (
    SINGLE,
    DistributedContext,
    DistributedSetupError,
    backend_for,
    context_from_env,
    contiguous_share,
    my_share,
)
from loopline.training.launch import run_local, trainer_argv, trainer_command
from loopline.training.loop import fit
from loopline.usecases.fraud.synthetic import synthetic_training_set, write_training_set

REPO_ROOT = Path(__file__).resolve().parents[3]
CONFIG_PATH = REPO_ROOT / "include" / "loopline" / "usecases" / "fraud" / "policies" / "training.yaml"


def test_context_from_torchrun_environment() -> None:
    assert context_from_env({}) == SINGLE and not SINGLE.enabled and SINGLE.is_main
    ctx = context_from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"})
    assert ctx == DistributedContext(rank=2, world_size=4, local_rank=0) and ctx.enabled and not ctx.is_main
    assert not context_from_env({"WORLD_SIZE": "1", "RANK": "0"}).enabled
    for bad in ({"WORLD_SIZE": "2", "RANK": "2"}, {"WORLD_SIZE": "two"}, {"WORLD_SIZE": "0"}):
        with pytest.raises(DistributedSetupError, match="WORLD_SIZE"):
            context_from_env(bad)
    assert (backend_for("cuda"), backend_for("cpu")) == ("nccl", "gloo")


def test_shares_cover_every_row_once() -> None:
    rows = list(range(11))
    for world in (1, 2, 3, 4):
        contexts = [DistributedContext(rank=r, world_size=world) for r in range(world)]
        strided = [row for ctx in contexts for row in my_share(rows, ctx)]
        blocks = [row for ctx in contexts for row in rows[contiguous_share(len(rows), ctx)]]
        assert sorted(strided) == rows and blocks == rows  # blocks concatenate back in order
        assert (
            max(len(my_share(rows, c)) for c in contexts) - min(len(my_share(rows, c)) for c in contexts) <= 1
        )
    assert (
        my_share([5], DistributedContext(rank=1, world_size=2)) == []
    )  # a tail batch can leave a rank empty


@pytest.mark.integration  # ~18 s: three interpreters importing torch + MLflow on a 2-core box
def test_two_gloo_processes_train_like_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """torchrun, 2 CPU processes: one run, one registered version, one result JSON, and (without dropout,
    whose masks differ per rank) the same learning curve as a single process, up to float summation order."""
    from loopline.platform.mlflow_util import mlflow_client

    path = write_training_set(synthetic_training_set(n=1456, seed=3), tmp_path / "t.parquet")
    frame, manifest = read_training_set(path)
    base = ["device=cpu", "epochs=3", "model.hidden_sizes=[16]", "model.dropout=0.0"]
    fraud = load_use_case("fraud")
    train_rows, val_rows = labelled_split(frame, load_config(CONFIG_PATH, base).validation.fraction, fraud)
    # A batch size whose last batch holds one row: rank 1's share of it is empty, and must still step.
    batch = next(b for b in range(64, 600) if len(train_rows) % b == 1)
    overrides = [*base, f"batch_size={batch}"]
    config = load_config(CONFIG_PATH, overrides)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result_json = tmp_path / "xcom" / "return.json"
    argv = trainer_argv(
        str(path), str(CONFIG_PATH), str(result_json), {"reason": "ddp test"}, tracking_uri=uri
    )
    for override in overrides:
        argv += ["--set", override]
    result = run_local(trainer_command(argv, gpus=2), result_json, timeout_s=120)
    captured = capsys.readouterr()
    printed = captured.out
    assert printed.count('"result_json"') == 1  # only rank 0 wrote (and announced) a result

    assert result["world_size"] == 2 and result["version"] == "1" and result["reason"] == "ddp test"
    client = mlflow_client(uri)
    versions = client.search_model_versions("name='fraud_detector'")
    experiment = client.get_experiment_by_name("fraud_detector_training")
    runs = client.search_runs([experiment.experiment_id])
    # mlflow_client, not MlflowClient(tracking_uri=uri): the latter read the registry an earlier test of this
    # session had set process-wide, and found that test's two versions here.
    seen = [(v.version, v.run_id, v.source, v.creation_timestamp) for v in versions]
    assert [str(v.version) for v in versions] == ["1"], (
        seen,
        [r.info.run_id for r in runs],
        captured.err[-3000:],
    )
    assert [r.info.run_id for r in runs] == [result["run_id"]]
    assert runs[0].data.params["distributed.world_size"] == "2"
    ddp_curve = [m.value for m in client.get_metric_history(result["run_id"], "val_pr_auc")]
    ddp_loss = [m.value for m in client.get_metric_history(result["run_id"], "train_loss")]
    assert len(ddp_curve) == int(result["metrics"]["epochs_run"])

    categorical, numeric = feature_columns(config, manifest, fraud)
    single = fit(train_rows, val_rows, categorical, numeric, config, fraud.label_column)
    assert math.isfinite(result["metrics"]["best_val_pr_auc"])
    assert result["metrics"]["best_val_pr_auc"] > result["metrics"]["val_base_rate"]
    assert ddp_curve == pytest.approx([row["val_pr_auc"] for row in single.history], abs=2e-3)
    assert ddp_loss == pytest.approx([row["train_loss"] for row in single.history], rel=1e-4)
    assert json.loads(result_json.read_text()) == result

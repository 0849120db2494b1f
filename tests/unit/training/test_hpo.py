"""Optuna search: search-space validation, seeded sampling, best-trial choice, nested MLflow runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from loopline.training.config import TrainingConfigError, load_config, with_values
from loopline.training.hpo import run_study
from loopline.training.train import train
from loopline.usecases.fraud.synthetic import synthetic_training_set, write_training_set

REPO_ROOT = Path(__file__).resolve().parents[3]
CONFIG_PATH = REPO_ROOT / "include" / "loopline" / "usecases" / "fraud" / "policies" / "training.yaml"
SPACE = (
    "hpo.search_space={lr: {type: float, low: 0.0005, high: 0.02, log: true}, "
    "model.hidden_sizes: {type: categorical, choices: [[16], [32, 16]]}, "
    "batch_size: {type: int, low: 128, high: 512, step: 128}}"
)


def _config(*overrides: str):
    return load_config(CONFIG_PATH, ["device=cpu", SPACE, *overrides])


def test_shipped_config_has_search_off_and_a_valid_space() -> None:
    config = load_config(CONFIG_PATH)
    assert config.hpo.trials == 0 and config.hpo.search_space
    assert load_config(CONFIG_PATH, ["hpo.trials=2"]).hpo.trials == 2


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ("{lr: {type: float, low: 0.1, high: 0.01}}", "low .0.1. must be below high"),
        ("{lr: {type: float, low: 0.0, high: 0.01, log: true}}", "log range needs low > 0"),
        ("{epochs: {type: float, low: 1.5, high: 3}}", "epochs: candidate value 1.5 is not valid"),
        ("{model.dropout: {type: float, low: 0.1, high: 1.0}}", "model.dropout: candidate value 1.0"),
        ("{learning_rate: {type: float, low: 0.001, high: 0.1}}", "learning_rate: candidate value"),
        ("{seed: {type: int, low: 1, high: 9}}", "seed: this field cannot be searched"),
        ("{model.hidden_sizes: {type: categorical, choices: [[64], [0]]}}", r"candidate value \[0\]"),
        ("{lr: {type: categorical, choices: []}}", "choices"),
        ("{lr: {type: uniform, low: 0.1, high: 1}}", "does not match any of the expected tags"),
    ],
)
def test_bad_search_space_names_the_key(space: str, message: str) -> None:
    with pytest.raises(TrainingConfigError, match=message):
        load_config(CONFIG_PATH, [f"hpo.search_space={space}"])


def test_trials_need_a_search_space() -> None:
    with pytest.raises(TrainingConfigError, match="needs an hpo.search_space"):
        load_config(CONFIG_PATH, ["hpo.trials=2", "hpo.search_space={}"])


def test_study_is_seeded_and_keeps_the_best_trial() -> None:
    config = _config("hpo.trials=6", "hpo.seed=7")
    seen: list[dict] = []

    def evaluate(trial_config, number, values):  # a score the sampler cannot know: distance to lr=0.003
        assert trial_config == with_values(config, values) and number == len(seen)
        seen.append(values)
        return -abs(math.log(trial_config.lr / 0.003))

    first = run_study(config, evaluate)
    again = run_study(config, lambda c, n, v: -abs(math.log(c.lr / 0.003)))
    assert [t.params for t in first.trials] == [t.params for t in again.trials] == seen
    assert all(
        v["model.hidden_sizes"] in ([16], [32, 16]) and v["batch_size"] in (128, 256, 384, 512) for v in seen
    )
    best = max(first.trials, key=lambda t: t.value)
    assert (first.best_trial, first.best_params, first.best_value) == (best.number, best.params, best.value)
    other_seed = run_study(_config("hpo.trials=6", "hpo.seed=8"), lambda c, n, v: 0.0)
    assert [t.params for t in other_seed.trials] != seen

    lowest = run_study(
        _config("hpo.trials=6", "hpo.seed=7", "hpo.direction=minimize"),
        lambda c, n, v: -abs(math.log(c.lr / 0.003)),
    )
    assert lowest.best_value == min(t.value for t in lowest.trials)


def test_study_skips_failed_trials_and_fails_when_all_do() -> None:
    scores = iter([math.nan, 0.4, math.nan])
    summary = run_study(_config("hpo.trials=3"), lambda c, n, v: next(scores))
    assert summary.best_trial == 1 and [t.value for t in summary.trials] == [None, 0.4, None]
    with pytest.raises(ValueError, match="none of the 2 trials"):
        run_study(_config("hpo.trials=2"), lambda c, n, v: math.nan)


def test_search_logs_nested_trials_and_registers_the_best(tmp_path: Path) -> None:
    from loopline.platform.mlflow_util import mlflow_client

    path = write_training_set(synthetic_training_set(n=1500, seed=1), tmp_path / "t.parquet")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = _config("hpo.trials=3", "epochs=2")
    result = train(path, config, tracking_uri=uri)

    client = mlflow_client(uri)
    parent = client.get_run(result.run_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'"
    )
    assert len(children) == 3
    scores = {int(c.data.tags["hpo.trial"]): c.data.metrics["best_val_pr_auc"] for c in children}
    best_trial = max(scores, key=lambda n: (scores[n], -n))  # ties: the earlier trial
    assert parent.data.params["hpo.best_trial"] == str(best_trial) == str(result.hpo["best_trial"])
    assert parent.data.metrics["hpo.best_value"] == scores[best_trial] == result.metrics["best_val_pr_auc"]
    best_child = next(c for c in children if c.data.tags["hpo.trial"] == str(best_trial))
    for key in ("lr", "batch_size", "model.hidden_sizes"):  # the parent's params are the winner's values
        assert parent.data.params[key] == best_child.data.params[key] == parent.data.params[f"hpo.best.{key}"]
    assert {a.path for a in client.list_artifacts(result.run_id, "hpo")} == {"hpo/study.json"}
    assert [str(v.version) for v in client.search_model_versions("name='fraud_detector'")] == ["1"]
    assert client.get_model_version("fraud_detector", "1").run_id == result.run_id

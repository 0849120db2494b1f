"""The trainer is task-aware: the delivery use case's regressor trained end to end through ``train`` (MLflow,
registry, pyfunc), a config of the wrong task refused, and models pickled before the task existed load as
classifiers."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from loopline.config.use_case import load_use_case
from loopline.platform.mlflow_util import mlflow_client
from loopline.storage.file_helpers import sha256_file
from loopline.training import model as model_module
from loopline.training.config import TrainingConfig, TrainingConfigError, check_task, from_dict
from loopline.training.data import labelled_split
from loopline.training.model import Preprocessor, TabularModel
from loopline.training.tracking import TASK_TAG
from loopline.training.train import train
from loopline.usecases.delivery.simulator import DeliveryConfig, simulate

DELIVERY = load_use_case("delivery")
LABEL = DELIVERY.label_column
CATEGORICAL = ["pickup_zone", "dropoff_zone", "weather_condition"]
NUMERIC = ["distance_km", "item_count", "order_value_eur", "couriers_busy_share"]
REGISTERED = "delivery_eta"
SEEDS = [(7, 42), (11, 3)]  # (simulator seed, training seed)


def delivery_training_set(out: Path, seed: int, days: int = 8, orders_per_day: int = 1000) -> Path:
    """Simulated orders joined with their delivery minutes, written with a manifest as a built set is."""
    simulated = simulate(DeliveryConfig(seed=seed, days=days, orders_per_day=orders_per_day))
    orders = pd.concat([day.orders for day in simulated], ignore_index=True)
    deliveries = pd.concat([day.deliveries for day in simulated], ignore_index=True)
    frame = orders.merge(deliveries, on=DELIVERY.id_column, how="left")
    frame.to_parquet(out, index=False)
    manifest = {
        "path": str(out),
        "content_hash": sha256_file(out),
        "rows": len(frame),
        "labelled_rows": int(frame[LABEL].notna().sum()),
        "feature_service": "delivery_test",
        "feature_service_version": "1",
        "features": NUMERIC,
        "columns": list(frame.columns),
    }
    out.with_name(out.name + ".manifest.json").write_text(json.dumps(manifest))
    return out


def delivery_config(seed: int = 42, **overrides: Any) -> TrainingConfig:
    data: dict[str, Any] = {
        "seed": seed,
        "epochs": 12,
        "batch_size": 256,
        "lr": 0.003,
        "early_stopping": {"metric": "val_mae", "patience": 3},
        "model": {"hidden_sizes": [32, 16], "dropout": 0.0},
        "features": {
            "categorical": CATEGORICAL,
            "numeric_from_manifest": True,
            "extra_numeric": [],
            "log1p": [],
        },
        "device": "cpu",
        "hpo": {"metric": "val_mae", "direction": "minimize"},
    }
    data.update(overrides)
    return from_dict(data)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One delivery training set per seed, each trained and registered in a SQLite-backed MLflow."""
    root = tmp_path_factory.mktemp("regression")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    runs = []
    for sim_seed, train_seed in SEEDS:
        path = delivery_training_set(root / f"delivery_{sim_seed}.parquet", sim_seed)
        result = train(
            path,
            delivery_config(train_seed),
            tracking_uri=uri,
            register_name=REGISTERED,
            experiment="delivery_eta_training",
            use_case=DELIVERY,
        )
        assert result is not None
        runs.append({"path": path, "result": result, "seed": train_seed})
    return {"uri": uri, "runs": runs}


def _validation_rows(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = pd.read_parquet(path)
    return labelled_split(frame, delivery_config().validation.fraction, DELIVERY)


@pytest.mark.parametrize("index", range(len(SEEDS)))
def test_regressor_beats_the_mean_baseline_and_logs_its_task(trained: dict[str, Any], index: int) -> None:
    run_info = trained["runs"][index]
    result = run_info["result"]
    train_rows, val_rows = _validation_rows(run_info["path"])
    truth = val_rows[LABEL].to_numpy(dtype="float64")
    baseline_mae = float(np.mean(np.abs(truth - train_rows[LABEL].mean())))
    metrics = result.metrics
    assert metrics["val_baseline_mae"] == pytest.approx(baseline_mae)
    assert metrics["best_val_mae"] < 0.6 * baseline_mae, (metrics, baseline_mae)
    assert metrics["best_val_rmse"] >= metrics["best_val_mae"]
    assert not {"best_val_pr_auc", "best_val_roc_auc", "val_base_rate"} & set(metrics)  # nothing faked

    assert "customer_tier" not in result.feature_columns  # the fairness group is never an input
    assert set(result.feature_columns) == {*CATEGORICAL, *NUMERIC}

    run = mlflow_client(trained["uri"]).get_run(result.run_id)
    assert run.data.tags[TASK_TAG] == "regression"
    assert {"best_val_mae", "best_val_rmse", "val_mae", "val_rmse", "train_loss"} <= set(run.data.metrics)
    assert run.data.metrics["best_val_mae"] == pytest.approx(metrics["best_val_mae"])
    assert not [p for p in run.data.params if p.startswith("data.") and "rows" in p and "fraud" in p]
    assert run.data.params["early_stopping.metric"] == "val_mae"


def test_registered_pyfunc_predicts_minutes(trained: dict[str, Any]) -> None:
    import mlflow

    mlflow.set_tracking_uri(trained["uri"])
    run_info = trained["runs"][0]
    model = mlflow.pyfunc.load_model(f"models:/{REGISTERED}/{run_info['result'].version}")
    _, val_rows = _validation_rows(run_info["path"])
    from loopline.training.pyfunc import as_model_input

    rows = as_model_input(val_rows, CATEGORICAL, NUMERIC)
    predicted = model.predict(rows)
    assert list(predicted.columns) == ["score"] and len(predicted) == len(rows)
    minutes = predicted["score"].to_numpy()
    truth = val_rows[LABEL].to_numpy(dtype="float64")
    assert abs(minutes.mean() - truth.mean()) < 3.0, (minutes.mean(), truth.mean())  # minutes, not z-scores
    assert minutes.std() > 0.5 * truth.std() and np.isfinite(minutes).all()  # not a constant
    assert float(np.mean(np.abs(minutes - truth))) == pytest.approx(
        run_info["result"].metrics["best_val_mae"], rel=1e-4
    )

    bundle = model.unwrap_python_model().model
    assert bundle.task == "regression" and bundle.is_regressor
    assert np.allclose(bundle.predict(rows), minutes)
    with pytest.raises(TypeError, match=r"regressor.*predict\(frame\)"):
        bundle.predict_proba(rows)


def test_same_seed_same_regressor(tmp_path: Path) -> None:
    path = delivery_training_set(tmp_path / "d.parquet", 7, days=4, orders_per_day=500)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = delivery_config(epochs=3)
    first, second = (
        train(path, config, tracking_uri=uri, register_name=REGISTERED, use_case=DELIVERY) for _ in range(2)
    )
    assert first is not None and second is not None
    for key in ("best_val_mae", "best_val_rmse", "best_epoch", "epochs_run"):
        assert first.metrics[key] == second.metrics[key]


# --- a config of the other task -----------------------------------------------------------------------


def test_hpo_metric_of_the_wrong_task_is_refused(tmp_path: Path) -> None:
    path = delivery_training_set(tmp_path / "d.parquet", 7, days=2, orders_per_day=200)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    wrong = delivery_config(hpo={"metric": "val_pr_auc", "direction": "maximize"})
    with pytest.raises(
        TrainingConfigError, match=r"hpo\.metric: 'val_pr_auc'.*valid metrics: val_mae, val_rmse"
    ):
        train(path, wrong, tracking_uri=uri, use_case=DELIVERY)
    assert not (tmp_path / "mlflow.db").exists()  # refused before anything was trained or logged

    with pytest.raises(TrainingConfigError, match=r"early_stopping\.metric: 'val_pr_auc'.*'val_mae'"):
        check_task(delivery_config(early_stopping={"metric": "val_pr_auc"}), DELIVERY)
    fraud = load_use_case("fraud")
    with pytest.raises(TrainingConfigError, match=r"hpo\.metric: 'val_rmse'.*val_pr_auc, val_roc_auc"):
        check_task(from_dict({"hpo": {"metric": "val_rmse"}}), fraud)
    check_task(from_dict({}), fraud)  # the defaults are a classifier's
    space = {"lr": {"type": "float", "low": 0.001, "high": 0.01}}
    with pytest.raises(TrainingConfigError, match=r"hpo\.direction: 'maximize' contradicts.*'minimize'"):
        check_task(delivery_config(hpo={"metric": "val_mae", "trials": 2, "search_space": space}), DELIVERY)
    with pytest.raises(TrainingConfigError, match=r"hpo\.metric"):
        from_dict({"hpo": {"metric": "val_accuracy"}})


# --- models pickled before the task existed -----------------------------------------------------------


def _classifier() -> TabularModel:
    rows = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "c": ["a", "b", "a", None]})
    pre = Preprocessor(numeric=["x"], categorical=["c"]).fit(rows)
    bundle = TabularModel.create(pre, [2], [4], 0.0)
    torch.manual_seed(0)
    bundle.set_weights(bundle.build_module())
    return bundle


def test_old_classifier_pickle_loads_as_a_classifier() -> None:
    """A bundle pickled by an earlier version names loopline.training.model.FraudModel and has no task, no
    target statistics: it loads, is a classifier, and scores exactly as before."""
    bundle = _classifier()
    rows = pd.DataFrame({"x": [0.5, 2.5, np.nan], "c": ["a", "z", "b"]})
    expected = bundle.predict_proba(rows)

    old = object.__new__(TabularModel)
    old.__dict__.update(
        {k: v for k, v in bundle.__dict__.items() if k not in {"task", "target_mean", "target_std"}}
    )
    qualname = TabularModel.__qualname__
    TabularModel.__qualname__ = "FraudModel"  # pickle it under the old class name, as earlier versions did
    try:
        payload = pickle.dumps(old, protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        TabularModel.__qualname__ = qualname
    assert (
        b"FraudModel" in payload and b"target_std" not in payload and b"binary_classification" not in payload
    )

    loaded = pickle.loads(payload)
    assert isinstance(loaded, TabularModel) and model_module.FraudModel is TabularModel
    assert model_module.FraudMLP is model_module.TabularMLP
    assert loaded.task == "binary_classification" and not loaded.is_regressor
    assert "task" in loaded.__dict__  # filled in on load, not only read through the class default
    assert np.array_equal(loaded.predict_proba(rows), expected)
    assert np.array_equal(loaded.predict(rows), expected)


def test_regressor_bundle_round_trips_its_task_and_target() -> None:
    bundle = _classifier()
    bundle.task = "regression"
    bundle.fit_target(np.array([10.0, 20.0, 30.0]))
    assert bundle.target_mean == pytest.approx(20.0) and bundle.target_std == pytest.approx(
        np.std([10, 20, 30])
    )
    assert np.allclose(bundle.target(np.array([20.0, 30.0])), [0.0, 10.0 / np.std([10.0, 20.0, 30.0])])
    loaded = pickle.loads(pickle.dumps(bundle))
    assert (loaded.task, loaded.target_mean, loaded.target_std) == ("regression", 20.0, bundle.target_std)
    rows = pd.DataFrame({"x": [1.0], "c": ["a"]})
    assert np.array_equal(loaded.predict(rows), bundle.predict(rows))
    with pytest.raises(TypeError, match="predict"):
        loaded.predict_proba(rows)


@pytest.mark.integration  # ~20 s: three interpreters importing torch + MLflow
def test_two_gloo_processes_train_the_regressor_like_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torchrun, 2 CPU processes, the delivery use case: the summed MSE scaled as for BCE gives (without
    dropout) the single process's learning curve, up to float summation order."""
    import yaml

    from loopline.training.data import feature_columns, read_training_set
    from loopline.training.launch import run_local, trainer_argv, trainer_command
    from loopline.training.loop import fit

    path = delivery_training_set(tmp_path / "d.parquet", 7, days=4, orders_per_day=600)
    frame, manifest = read_training_set(path)
    config = delivery_config(epochs=3)
    train_rows, val_rows = labelled_split(frame, config.validation.fraction, DELIVERY)
    batch = next(b for b in range(64, 600) if len(train_rows) % b == 1)  # rank 1's last share is empty
    config = delivery_config(epochs=3, batch_size=batch)
    config_path = tmp_path / "delivery.yaml"
    config_path.write_text(yaml.safe_dump(config.model_dump()))

    monkeypatch.setenv("LOOPLINE_USE_CASE", "delivery")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result_json = tmp_path / "xcom" / "return.json"
    argv = trainer_argv(str(path), str(config_path), str(result_json), {"reason": "ddp"}, tracking_uri=uri)
    result = run_local(trainer_command(argv, gpus=2), result_json, timeout_s=180)
    assert result["world_size"] == 2 and "best_val_mae" in result["metrics"]

    client = mlflow_client(uri)
    ddp_mae = [m.value for m in client.get_metric_history(result["run_id"], "val_mae")]
    ddp_loss = [m.value for m in client.get_metric_history(result["run_id"], "train_loss")]
    categorical, numeric = feature_columns(config, manifest, DELIVERY)
    single = fit(train_rows, val_rows, categorical, numeric, config, LABEL, task="regression")
    assert ddp_mae == pytest.approx([row["val_mae"] for row in single.history], rel=1e-3)
    assert ddp_loss == pytest.approx([row["train_loss"] for row in single.history], rel=1e-4)


def test_the_command_line_trains_the_named_use_case_with_its_own_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--use-case delivery`` without ``--config``: the delivery policy (usecases/delivery/policies/
    training.yaml), its registered model and its experiment, whatever LOOPLINE_USE_CASE says."""
    from loopline.training.train import main

    monkeypatch.setenv("LOOPLINE_USE_CASE", "fraud")
    path = delivery_training_set(tmp_path / "d.parquet", 5, days=3, orders_per_day=400)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result_json = tmp_path / "result.json"
    argv = ["--training-set", str(path), "--use-case", "delivery", "--result-json", str(result_json)]
    assert main([*argv, "--set", "epochs=2", "--set", "device=cpu", "--tracking-uri", uri]) == 0

    result = json.loads(result_json.read_text())
    client = mlflow_client(uri)
    run = client.get_run(result["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == DELIVERY.training_experiment
    assert result["model_uri"].startswith(f"models:/{DELIVERY.model_name}/")
    assert run.data.params["early_stopping.metric"] == "val_mae"  # the delivery policy, not fraud's
    assert "restaurant_id" in json.loads(run.data.params["model.inputs.categorical"])
    assert DELIVERY.policy_file("training", tmp_path) == DELIVERY.policies_dir / "training.yaml"  # type: ignore[operator]

"""Training: config, preprocessing, a real (small) training run tracked in a SQLite MLflow, the pyfunc."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopline.config.use_case import load_use_case
from loopline.platform.mlflow_util import mlflow_client
from loopline.training.config import TrainingConfigError, from_dict, load_config
from loopline.training.data import TrainingError, feature_columns, read_training_set
from loopline.training.model import Preprocessor
from loopline.training.pyfunc import as_model_input
from loopline.training.tracking import REASON_TAG, TASK_TAG
from loopline.training.train import main, train
from loopline.usecases.fraud.synthetic import FEATURES, synthetic_training_set, write_training_set

REPO_ROOT = Path(__file__).resolve().parents[3]
CONFIG_PATH = REPO_ROOT / "include" / "loopline" / "usecases" / "fraud" / "policies" / "training.yaml"
FAST = [
    "epochs=6",
    "batch_size=256",
    "model.hidden_sizes=[32, 16]",
    "early_stopping.patience=3",
    "device=cpu",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """One training set, two runs with the same seed, both registered in a SQLite-backed MLflow."""
    root = tmp_path_factory.mktemp("training")
    path = write_training_set(synthetic_training_set(), root / "train.parquet")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    config = load_config(CONFIG_PATH, FAST)
    first = train(path, config, tracking_uri=uri, config_path=CONFIG_PATH, reason="weekly retrain")
    second = train(path, config, tracking_uri=uri, config_path=CONFIG_PATH)
    return {"root": root, "path": path, "uri": uri, "first": first, "second": second, "config": config}


# --- config -----------------------------------------------------------------------------------------


def test_config_file_loads_with_overrides() -> None:
    config = load_config(CONFIG_PATH, ["epochs=3", "model.hidden_sizes=[8]", "validation.fraction=0.3"])
    assert (config.epochs, config.model.hidden_sizes, config.validation.fraction) == (3, [8], 0.3)
    assert config.features.categorical == ["channel", "merchant_category", "merchant_country"]
    assert "customer_age_band" in config.features.excluded
    assert config.flat()["model.dropout"] == config.model.dropout


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("epochs=0", "epochs"),
        ("lr=-1", "lr"),
        ("validation.fraction=1.5", "validation.fraction"),
        ("model.hidden_sizes=[0]", "model.hidden_sizes"),
        ("bogus=1", "bogus"),
        ("class_weighting=x", "class_weighting"),
    ],
)
def test_bad_config_names_the_field(override: str, field: str) -> None:
    with pytest.raises(TrainingConfigError, match=field.replace(".", r"\.")):
        load_config(CONFIG_PATH, [override])


def test_group_columns_cannot_become_inputs() -> None:
    # The use case's fairness groups are refused where the use case is known; excluded columns at load.
    fraud = load_use_case("fraud")
    with pytest.raises(TrainingError, match="customer_region"):
        feature_columns(from_dict({"features": {"categorical": ["channel", "customer_region"]}}), {}, fraud)
    with pytest.raises(TrainingError, match="customer_age_band"):
        feature_columns(
            from_dict({"features": {"extra_numeric": ["amount", "customer_age_band"]}}), {}, fraud
        )
    with pytest.raises(TrainingConfigError, match="event_epoch_s"):
        from_dict({"features": {"extra_numeric": ["event_epoch_s"], "excluded": ["event_epoch_s"]}})


def test_preprocessor_imputes_flags_and_buckets_unknowns() -> None:
    train_rows = pd.DataFrame({"amount": [1.0, 3.0, np.nan, 5.0], "channel": ["a", "b", "a", None]})
    pre = Preprocessor(numeric=["amount"], categorical=["channel"], log1p=[]).fit(train_rows)
    assert pre.medians["amount"] == 3.0 and pre.vocab["channel"] == {"a": 1, "b": 2}
    num, cat = pre.transform(pd.DataFrame({"amount": [np.nan, 3.0], "channel": ["zzz", "b"]}))
    assert num[:, 1].tolist() == [1.0, 0.0]  # missing indicator
    assert num[0, 0] == num[1, 0]  # NaN imputed with the median
    assert cat[:, 0].tolist() == [0, 2]  # unseen → unknown bucket
    with pytest.raises(ValueError, match="amount"):
        pre.transform(pd.DataFrame({"channel": ["a"]}))


# --- training + MLflow ------------------------------------------------------------------------------


def test_registered_version_with_params_metrics_artifacts(trained) -> None:
    import mlflow

    client = mlflow_client(trained["uri"])
    first, second = trained["first"], trained["second"]
    assert (first.version, second.version) == ("1", "2")
    assert client.get_model_version("fraud_detector", first.version).run_id == first.run_id
    run = client.get_run(first.run_id)
    assert run.data.params["seed"] == "42" and run.data.params["epochs"] == "6"
    assert run.data.params["training_set.content_hash"] == first.training_set_hash
    assert run.data.params["git_sha"] and run.data.tags["git_sha"] == run.data.params["git_sha"]
    assert run.data.tags[REASON_TAG] == "weekly retrain" and first.reason == "weekly retrain"
    assert REASON_TAG not in client.get_run(second.run_id).data.tags  # no reason given, no tag
    assert run.data.tags[TASK_TAG] == "binary_classification"
    assert int(run.data.params["data.train_positive_rows"]) > 0  # a classifier's positives, still logged
    assert {"train_loss", "val_pr_auc", "val_roc_auc", "best_val_pr_auc"} <= set(run.data.metrics)
    assert len(client.get_metric_history(first.run_id, "val_pr_auc")) == int(first.metrics["epochs_run"])
    artifacts = {a.path for a in client.list_artifacts(first.run_id)}
    assert {"training_set", "config", "environment.json", "train_result.json"} <= artifacts
    mlflow.set_tracking_uri(trained["uri"])
    manifest = mlflow.artifacts.load_dict(f"runs:/{first.run_id}/training_set/manifest.json")
    assert manifest["content_hash"] == first.training_set_hash and manifest["features"] == FEATURES
    env = mlflow.artifacts.load_dict(f"runs:/{first.run_id}/environment.json")
    assert env["device"] == "cpu" and env["torch"]


def test_reference_sample_is_logged_with_the_run(trained) -> None:
    """The drift monitor's reference: the model's raw inputs, its scores on them, every validation row."""

    from loopline.monitoring.reference import load_reference

    first = trained["first"]
    mlflow_client(trained["uri"]).set_registered_model_alias("fraud_detector", "champion", first.version)
    reference = load_reference(trained["uri"], "fraud_detector")
    frame = reference.frame
    assert reference.version == first.version and reference.inputs == first.feature_columns
    assert {*first.feature_columns, "score", "is_fraud", "reference_split"} <= set(frame.columns)
    assert frame["score"].between(0, 1).all() and frame["score"].nunique() > 10
    labelled = synthetic_training_set()
    labelled = labelled[labelled["is_fraud"].notna()]
    expected_val = max(1, round(len(labelled) * trained["config"].validation.fraction))
    assert (frame["reference_split"] == "validation").sum() == expected_val
    assert len(frame) == min(len(labelled), 5000)


def test_model_learns_better_than_base_rate(trained) -> None:
    metrics = trained["first"].metrics
    assert metrics["best_val_pr_auc"] > 2 * metrics["val_base_rate"]
    assert metrics["best_val_roc_auc"] > 0.7


def test_same_seed_same_metrics(trained) -> None:
    client = mlflow_client(trained["uri"])
    first, second = trained["first"], trained["second"]
    for key in ("best_val_pr_auc", "best_val_roc_auc", "best_epoch", "epochs_run"):
        assert first.metrics[key] == second.metrics[key]
    for name in ("train_loss", "val_pr_auc"):
        a = [m.value for m in client.get_metric_history(first.run_id, name)]
        b = [m.value for m in client.get_metric_history(second.run_id, name)]
        assert a == b


def test_pyfunc_scores_raw_rows(trained) -> None:
    import mlflow

    mlflow.set_tracking_uri(trained["uri"])
    model = mlflow.pyfunc.load_model(f"models:/fraud_detector/{trained['first'].version}")
    inputs = [spec.name for spec in model.metadata.get_input_schema().inputs]
    assert set(inputs) == {"channel", "merchant_category", "merchant_country", "amount", *FEATURES}
    assert not {"customer_age_band", "customer_region", "is_fraud"} & set(inputs)
    assert [spec.name for spec in model.metadata.get_output_schema().inputs] == ["score"]

    raw = pd.read_parquet(trained["path"]).head(50)  # ints, bools, group columns, ids and labels included
    categorical = ["channel", "merchant_category", "merchant_country"]
    rows = as_model_input(raw, categorical, [c for c in inputs if c not in categorical])
    rows.loc[0, "merchant_category"] = "a_category_never_seen"
    rows.loc[1, "merchant_country"] = "ZZ"
    rows.loc[2, ["amount_zscore", "seconds_since_last_txn", "customer_txn_count_24h"]] = np.nan
    rows.loc[3, "channel"] = None
    scores = model.predict(rows)
    assert list(scores.columns) == ["score"] and len(scores) == len(rows)
    assert scores["score"].between(0, 1).all() and scores["score"].notna().all()

    # The unwrapped bundle scores the same rows identically, on CPU, without the group columns.
    bundle = model.unwrap_python_model().model
    assert not {"customer_age_band", "customer_region"} & set(bundle.preprocessor.input_columns)
    assert np.allclose(bundle.predict_proba(rows), scores["score"].to_numpy())
    # Raw training-set rows (ints, bools, extra columns) score through the bundle as the converted ones do
    # (rows 0-3 were edited above).
    assert np.allclose(bundle.predict_proba(raw)[4:], scores["score"].to_numpy()[4:])


def test_cli_writes_result_json(trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "result.json"
    args = [
        "--training-set",
        str(trained["path"]),
        "--config",
        str(CONFIG_PATH),
        "--result-json",
        str(out),
        "--tracking-uri",
        trained["uri"],
        "--register-name",
        "fraud_detector_cli",
    ]
    for override in [*FAST, "epochs=2"]:
        args += ["--set", override]
    assert main([*args, "--reason", "label backlog cleared"]) == 0
    result = json.loads(out.read_text())
    assert result["version"] == "1" and result["model_uri"] == "models:/fraud_detector_cli/1"
    assert result["reason"] == "label backlog cleared" and result["world_size"] == 1 and result["hpo"] is None
    assert result["training_set_hash"] == trained["first"].training_set_hash
    assert result["run_id"] and math.isfinite(result["metrics"]["best_val_pr_auc"])


def test_default_result_path_falls_back_outside_a_pod(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loopline.training import train as train_module

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train_module, "DEFAULT_RESULT_JSON", tmp_path / "airflow" / "xcom" / "return.json")
    path, note = train_module.resolve_result_path(None)
    assert path == tmp_path / "train_result.json" and "does not exist" in note
    (tmp_path / "airflow" / "xcom").mkdir(parents=True)
    assert train_module.resolve_result_path(None) == (tmp_path / "airflow" / "xcom" / "return.json", None)
    assert train_module.resolve_result_path(tmp_path / "x.json") == (tmp_path / "x.json", None)


@pytest.mark.parametrize(
    ("labelled", "fraud", "message"),
    [
        (False, True, "no labelled rows"),
        (True, False, "no positive rows ('is_fraud' = 1)"),
    ],
)
def test_unusable_training_set_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], labelled: bool, fraud: bool, message: str
) -> None:
    path = write_training_set(
        synthetic_training_set(n=300, labelled=labelled, fraud=fraud), tmp_path / "t.parquet"
    )
    with pytest.raises(TrainingError, match=re.escape(message)):
        train(path, load_config(CONFIG_PATH, FAST), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    code = main(
        [
            "--training-set",
            str(path),
            "--config",
            str(CONFIG_PATH),
            "--result-json",
            str(tmp_path / "r.json"),
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
        ]
    )
    assert code != 0 and message in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_changed_training_set_is_refused(tmp_path: Path) -> None:
    path = write_training_set(synthetic_training_set(n=300), tmp_path / "t.parquet")
    synthetic_training_set(n=301).to_parquet(path, index=False)
    with pytest.raises(TrainingError, match="changed since its manifest"):
        train(path, load_config(CONFIG_PATH, FAST), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


# --- training-set URIs -------------------------------------------------------------------------------


def test_training_set_is_read_from_file_and_object_storage_uris(tmp_path: Path, monkeypatch) -> None:
    import boto3
    from local_servers import s3_server

    path = write_training_set(synthetic_training_set(n=300), tmp_path / "t.parquet")
    local, manifest = read_training_set(path)
    via_file, file_manifest = read_training_set(path.as_uri())
    pd.testing.assert_frame_equal(local, via_file)
    assert file_manifest["content_hash"] == manifest["content_hash"]

    with s3_server("sets") as endpoint:  # a real S3 API (moto's server), as a trainer pod reads it
        monkeypatch.setenv("LOOPLINE_STORAGE_ENDPOINT_URL", endpoint)
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.upload_file(str(path), "sets", "t.parquet")
        s3.upload_file(str(tmp_path / "t.parquet.manifest.json"), "sets", "t.parquet.manifest.json")
        remote, remote_manifest = read_training_set("s3://sets/t.parquet")
        pd.testing.assert_frame_equal(local, remote)
        assert remote_manifest["content_hash"] == manifest["content_hash"]
        s3.put_object(
            Bucket="sets", Key="t.parquet", Body=synthetic_training_set(n=301).to_parquet(index=False)
        )
        with pytest.raises(TrainingError, match="changed since its manifest"):
            read_training_set("s3://sets/t.parquet")
        with pytest.raises(TrainingError, match="s3://sets/nope.parquet.manifest.json: not found"):
            read_training_set("s3://sets/nope.parquet")
    with pytest.raises(TrainingError, match="cannot read nosuchscheme://"):
        read_training_set("nosuchscheme://bucket/t.parquet")

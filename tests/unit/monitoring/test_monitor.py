"""The I/O shell end to end: a trained champion with its reference, a real prediction log, real MLflow."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from monitoring_testkit import NOW, settings

from loopline.lineage import history
from loopline.monitoring.monitor import run_check
from loopline.monitoring.reference import load_reference
from loopline.platform.mlflow_util import mlflow_client
from loopline.serving.prediction_log import LoggedPrediction, PredictionLog
from loopline.training.config import load_config
from loopline.training.train import train
from loopline.usecases.fraud.synthetic import synthetic_training_set, write_training_set


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    from training.test_training import CONFIG_PATH, FAST

    tmp = tmp_path_factory.mktemp("monitor")
    s = settings(tmp)
    path = write_training_set(synthetic_training_set(n=4000), tmp / "train.parquet")
    result = train(path, load_config(CONFIG_PATH, FAST), tracking_uri=s.mlflow_uri)
    mlflow_client(s.mlflow_uri).set_registered_model_alias("fraud_detector", "champion", result.version)
    return s, load_reference(s.mlflow_uri, "fraud_detector")


def log_window(s, reference, amount_factor: float) -> None:
    """The reference replayed as an hour of serving traffic, amounts and scores scaled by ``amount_factor``."""
    log = PredictionLog(s.state.prediction_log)
    rows = []
    for i, rec in enumerate(reference.frame.to_dict("records")):
        inputs = {c: rec[c] for c in reference.categorical}
        inputs.update(transaction_id=f"t{i}", amount=rec["amount"] * amount_factor)
        features = {c: rec[c] for c in reference.numeric if c != "amount"}
        rows.append(
            LoggedPrediction(
                f"r{i}",
                (NOW - timedelta(minutes=1 + i % 600)).timestamp(),
                f"t{i}",
                "c",
                inputs,
                features,
                min(1.0, rec["score"] * amount_factor),
                False,
                "champion",
                reference.version,
                1.0,
            )
        )
    log.append(rows)
    log.close()


@pytest.mark.integration  # trains a model and renders Evidently's report: ~20-40 s here
def test_a_drifted_window_requests_one_retrain_with_reports_in_state_dir_and_mlflow(champion) -> None:

    s, reference = champion
    log_window(s, reference, amount_factor=3.0)
    first = run_check(s, training_running=False, now=NOW)
    second = run_check(s, training_running=False, now=NOW + timedelta(hours=1))
    assert first.retrain and not second.retrain and "amount" in first.summary
    report = json.loads(
        (s.state.reports / "drift").joinpath(first.report_dir.split("/")[-1], "verdict.json").read_text()
    )
    assert report["reference_version"] == reference.version and "amount" in report["drifted_columns"]
    assert (
        s.state.reports / "drift" / first.report_dir.split("/")[-1] / "report.html"
    ).stat().st_size > 10_000
    client = mlflow_client(s.mlflow_uri)
    assert client.get_run(first.mlflow_run_id).data.tags["reasons"] == first.reason
    tags = client.get_model_version("fraud_detector", reference.version).tags
    assert tags["loopline.drift.last_run_id"] == second.mlflow_run_id
    kinds = [e.kind for e in history.read(s)]
    assert kinds.count("retrain_requested") == 1 and kinds.count("retrain_suppressed") == 1
    # The same window's served features could not be judged (nothing ingested or materialised): said so.
    assert report["served_features"]["judged"] is False and not report["served_features"]["alarm"]
    assert "served features not judged: nothing is materialised yet" in first.summary
    checked = history.read(s, kinds={"drift_checked"})[0]
    assert checked.details["served_features"]["waiting"] == checked.details["served_features"]["served"] > 0

"""The Predictor: a real registered model behind a real Feast online store."""

from __future__ import annotations

import math

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

from loopline.serving.predictor import (
    ModelLoadError,
    Predictor,
    model_columns,
    model_frame,
)
from loopline.training.pyfunc import as_model_input


def test_model_frame_is_exactly_as_model_input() -> None:
    rows = [
        {"channel": "online", "merchant_country": "DE", "a": 1, "b": True, "c": 2.5, "d": None},
        {"channel": None, "merchant_country": float("nan"), "a": None, "b": False, "c": float("nan"), "d": 7},
        {
            "channel": 3,
            "merchant_country": "FR",
            "a": np.int64(4),
            "b": None,
            "c": "1.5",
            "d": np.float64(0.25),
        },
        {"merchant_country": "NL", "a": 10**6, "b": 1, "c": "oops", "d": -0.0},  # a column missing entirely
    ]
    categorical, numeric = ["channel", "merchant_country"], ["a", "b", "c", "d"]
    expected = as_model_input(pd.DataFrame(rows), categorical, numeric)
    pd.testing.assert_frame_equal(model_frame(rows, categorical, numeric), expected)


@pytest.fixture(scope="module")
def predictor(serving_world) -> Predictor:
    version = serving_world.versions[0]
    return Predictor.load(
        f"models:/fraud_detector/{version}",
        version=version,
        variant="champion",
        settings=serving_world.settings,
        warmup_rounds=2,
    )


def test_predict_one_and_many(predictor: Predictor, serving_world) -> None:
    rows = serving_world.transactions[:20]
    one = predictor.predict(rows[:1])
    many = predictor.predict(rows)
    assert len(one) == 1 and len(many) == 20
    assert [r["transaction_id"] for r in many] == [r["transaction_id"] for r in rows]
    for result in many:
        assert set(result) == {"transaction_id", "score", "decision", "model_version", "variant"}
        assert 0.0 <= result["score"] <= 1.0 and not math.isnan(result["score"])
        assert result["decision"] == (result["score"] >= predictor.threshold)
        assert (result["model_version"], result["variant"]) == (serving_world.versions[0], "champion")
    # Batching does not change a row's score: the same transaction alone and within a batch.
    assert one[0]["score"] == pytest.approx(many[0]["score"], rel=1e-6)
    assert len({round(r["score"], 9) for r in many}) > 1, "different customers get different scores"


def test_the_direct_python_model_path_scores_exactly_like_mlflows_predict(
    predictor: Predictor, serving_world
) -> None:
    """Serving skips MLflow's per-call schema enforcement and the DataFrame (model_columns already builds the
    signature's types, predict_columns scores them); the scores must be the very ones ``PyFuncModel.predict``
    gives, missing features included."""
    rows = [
        {**tx, "customer_id": f"nobody_{i}"} if i % 3 == 0 else tx
        for i, tx in enumerate(serving_world.transactions[:25])
    ]
    looked_up = predictor.features.lookup(rows)
    inputs = [
        {**{k: tx.get(k) for k in predictor.event_inputs}, **f} for tx, f in zip(rows, looked_up, strict=True)
    ]
    python_model = predictor.model.unwrap_python_model()
    assert predictor._predict == python_model.predict_columns  # the fast path is taken for this signature
    direct = predictor._predict(model_columns(inputs, predictor.categorical, predictor.numeric))
    through_mlflow = predictor.model.predict(model_frame(inputs, predictor.categorical, predictor.numeric))
    assert direct.tolist() == through_mlflow["score"].to_numpy().tolist()
    assert [s.score for s in predictor.score(rows)] == direct.tolist()
    assert any(math.isnan(v) for v in model_columns(inputs, [], predictor.numeric)["cust_tx_count_30d"])


def test_a_model_without_predict_columns_is_scored_through_its_predict(
    predictor: Predictor, serving_world
) -> None:
    """Other pyfunc models (no ``predict_columns``) get the DataFrame and score the same rows alike."""

    class FrameOnly(mlflow.pyfunc.PythonModel):
        def __init__(self, wrapped) -> None:
            self.calls = 0
            self.wrapped = wrapped

        def predict(self, context, model_input, params=None):
            assert isinstance(model_input, pd.DataFrame)
            self.calls += 1
            return self.wrapped.predict(context, model_input)

    frame_only = FrameOnly(predictor.model.unwrap_python_model())

    class Loaded:  # a PyFuncModel's surface as the Predictor uses it
        metadata = predictor.model.metadata

        @staticmethod
        def unwrap_python_model():
            return frame_only

    other = Predictor(
        Loaded(),
        model_uri="x",
        version="x",
        variant="champion",
        features=predictor.features,
        threshold=predictor.threshold,
    )
    rows = serving_world.transactions[:10]
    assert [s.score for s in other.score(rows)] == [s.score for s in predictor.score(rows)]
    assert frame_only.calls == 1


def test_scores_use_the_online_features(predictor: Predictor, serving_world) -> None:
    known = serving_world.transactions[0]
    stranger = {**known, "customer_id": "never_seen", "device_id": "never_seen"}
    scored = predictor.score([known, stranger])
    assert scored[0].features["has_customer_history"] == 1 and scored[0].features["cust_tx_count_30d"]
    assert scored[1].features["has_customer_history"] == 0 and scored[1].features["cust_tx_count_30d"] is None


def test_threshold_decides(predictor: Predictor, serving_world) -> None:
    rows = serving_world.transactions[:30]
    scores = sorted(r["score"] for r in predictor.predict(rows))
    middle = (scores[10] + scores[11]) / 2
    strict = Predictor(
        predictor.model,
        model_uri=predictor.model_uri,
        version="x",
        variant="champion",
        features=predictor.features,
        threshold=middle,
    )
    flagged = sum(r["decision"] for r in strict.predict(rows))
    assert flagged == sum(s >= middle for s in scores) == 19


def test_a_missing_version_is_a_clear_load_error(serving_world) -> None:
    with pytest.raises(ModelLoadError, match="models:/fraud_detector/999"):
        Predictor.load(
            "models:/fraud_detector/999", version="999", variant="champion", settings=serving_world.settings
        )

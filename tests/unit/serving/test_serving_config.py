"""The shipped serving config loads; a bad one names the field to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopline.serving.config import ServingConfigError, load_serving_config

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_shipped_config_loads() -> None:
    config = load_serving_config(REPO_ROOT / "include" / "config" / "serving.yaml")
    assert 0 < config.decision_threshold < 1
    assert config.registry.model_name == "fraud_detector"
    assert config.registry.traffic_tag == "loopline.challenger_traffic"
    assert config.limits.max_body_bytes >= 1024 and config.batching.mode in ("inline", "threads")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("decision_threshold: 1.5", "decision_threshold"),
        ("batching: {mode: turbo}", "batching.mode"),
        ("limits: {max_body_bytes: 10}", "limits.max_body_bytes"),
        ("registry: {poll_interval_s: 0}", "registry.poll_interval_s"),
        ("surprise: 1", "surprise"),
        # renamed when the request's events stopped being card transactions only
        ("limits: {max_transactions_per_request: 10}", "was renamed `max_events_per_request`"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "serving.yaml"
    path.write_text(text)
    with pytest.raises(ServingConfigError, match=field.replace(".", r"\.")):
        load_serving_config(path)


def test_an_explicit_missing_file_is_an_error_not_the_defaults(tmp_path: Path) -> None:
    with pytest.raises(ServingConfigError, match="not found"):
        load_serving_config(tmp_path / "nope.yaml")
    assert load_serving_config(config_dir=tmp_path).decision_threshold == 0.5  # no default file: defaults

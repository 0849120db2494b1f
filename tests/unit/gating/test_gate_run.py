"""The gate end to end on a real world: curated data, Feast online store, SQLite MLflow, a trained model,
and real models that are worse, unfair, slow or unloadable."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from gate_testkit import MODEL_NAME, register_altered, set_champion

from loopline.gating.gate import run_gate, versions_summary
from loopline.gating.holdout import HoldoutError, plan_windows
from loopline.gating.policy import policy_from_dict

HAS_SERVER = importlib.util.find_spec("loopline.serving.__main__") is not None


def needs_server(test):
    """Starts the serving app in a process (~8-12 s each): integration, and only once it exists."""
    test = pytest.mark.skipif(not HAS_SERVER, reason="loopline.serving has no __main__ yet")(test)
    return pytest.mark.integration(test)


# Every check configured; the trained model passes it (asserted in the first test).
POLICY = {
    "operating_point": {"threshold": 0.5},
    "quality": {
        "roc_auc": {"min": 0.75, "max_regression": 0.02},
        "pr_auc": {"min": 0.05, "max_regression": 0.05},
        "recall_at_fpr": {"fpr": 0.01, "min": 0.05},
        "brier": {"max": 0.3},
        "expected_cost": {"missed_positive_cost": 150, "false_alarm_cost": 5, "max": 10.0},
    },
    "fairness": {"min_group_size": 200, "min_group_positives": 3, "max_fpr_gap": 0.3},
    "latency": {"enabled": True, "requests": 40, "warmup": 5, "p95_ms": 250.0},
    "infra": {"enabled": False},
}


def gate_policy(**changes):
    return policy_from_dict({**POLICY, **changes})


def client(settings):
    from loopline.platform.mlflow_util import mlflow_client

    return mlflow_client(settings.mlflow_uri)


def tags(settings, version: str) -> dict[str, str]:
    return client(settings).get_model_version(MODEL_NAME, version).tags


def test_holdout_is_the_newest_labelled_days_after_the_training_window(gate_world) -> None:
    windows, train_set, holdout = gate_world["windows"], gate_world["train_set"], gate_world["holdout"]
    assert windows.train_end == windows.holdout_start
    assert (windows.holdout_end - windows.holdout_start).days == 3
    train = pd.read_parquet(train_set.path)
    held = pd.read_parquet(holdout.path)
    assert (
        train["event_timestamp"].max() < pd.Timestamp(windows.holdout_start) <= held["event_timestamp"].min()
    )
    assert held["event_timestamp"].max() < pd.Timestamp(windows.holdout_end)
    assert not set(train["transaction_id"]) & set(held["transaction_id"])
    # Labels are complete up to the end: genuine confirmations exist up to the last holdout day.
    assert held["is_fraud"].notna().all() and holdout.positive_rows >= 10
    assert {"customer_age_band", "customer_region", *train_set.features} <= set(held.columns)
    with pytest.raises(HoldoutError, match="nothing would be left to train on"):
        plan_windows(gate_world["settings"], policy_from_dict({"holdout": {"days": 30}}))


def test_first_model_passes_on_value_thresholds(gate_world) -> None:
    settings, version = gate_world["settings"], gate_world["base"].version
    set_champion(settings, None)
    verdict = run_gate(settings, version, gate_world["holdout"].path, policy=gate_policy())
    assert verdict.passed, verdict.why
    assert "no champion" in verdict.why and verdict.checks["quality"].details["champion"] is False
    roc = verdict.checks["quality"].details["metrics"]["roc_auc"]
    assert roc["rules"][1]["passed"] is None, "change thresholds do not apply without a champion"
    assert verdict.checks["latency"].details["measured"]["requests"] == 40
    t = tags(settings, version)
    assert t["loopline.gate.passed"] == "true" and "loopline.rejected" not in t
    assert json.loads(t["loopline.gate.checks"]) == {
        "quality": True,
        "fairness": True,
        "latency": True,
        "infra": True,
    }
    assert str(client(settings).get_model_version_by_alias(MODEL_NAME, "challenger").version) == version
    # Report and card: in the state dir and as artifacts of the candidate's run.
    folder = settings.state.reports / "gate" / version
    report = json.loads((folder / "gate_report.json").read_text())
    assert report["holdout"]["content_hash"] == gate_world["holdout"].content_hash
    assert report["lineage"]["params"]["training_set.content_hash"] == gate_world["base"].training_set_hash
    card = (folder / "model_card.md").read_text()
    assert "PASSED" in card and gate_world["base"].training_set_hash in card and "| customer_region |" in card
    assert report["holdout"]["label"] == "is_fraud" and "positive (`is_fraud` = 1)" in card
    import mlflow

    assert mlflow.artifacts.load_text(t["loopline.model_card"]) == card
    assert mlflow.artifacts.load_dict(t["loopline.gate.report"])["verdict"]["passed"] is True


def test_worse_model_is_rejected_against_the_champion(gate_world) -> None:
    settings, base = gate_world["settings"], gate_world["base"].version
    worse = register_altered(settings, base, "noisy")
    set_champion(settings, base)
    challenger_before = str(client(settings).get_model_version_by_alias(MODEL_NAME, "challenger").version)
    # Change thresholds only: the rejection can only come from the comparison with the champion.
    policy = gate_policy(
        quality={"roc_auc": {"max_regression": 0.02}, "pr_auc": {"max_regression": 0.05}},
        fairness={},
        latency={"enabled": False},
    )
    verdict = run_gate(settings, worse, gate_world["holdout"].path, policy=policy)
    assert not verdict.passed and verdict.checks_passed()["quality"] is False
    assert any("against the champion" in r for r in verdict.checks["quality"].reasons)
    metrics = verdict.checks["quality"].details["metrics"]["roc_auc"]
    assert metrics["candidate"] < metrics["champion"] - 0.02
    t = tags(settings, worse)
    assert t["loopline.rejected"] == "true" and "roc_auc" in t["loopline.rejected.reasons"]
    # Both versions' scores on the same rows are kept: the canary allows the shift the gate already saw.
    from loopline.gating.gate import read_holdout_scores

    where, scored = read_holdout_scores(settings.mlflow_uri, MODEL_NAME, worse)
    assert f"gate holdout of v{worse}" in where
    assert set(scored["champion_version"]) == {str(base)} and scored["champion_score"].notna().all()
    assert not np.allclose(scored["score"], scored["champion_score"]), "the noisy version scores differently"
    assert (
        str(client(settings).get_model_version_by_alias(MODEL_NAME, "challenger").version)
        == challenger_before
    )
    set_champion(settings, None)


def test_unfair_model_is_rejected(gate_world) -> None:
    settings, base = gate_world["settings"], gate_world["base"].version
    unfair = register_altered(settings, base, "unfair", group_column="customer_region", group_value="north")
    set_champion(settings, None)
    verdict = run_gate(
        settings, unfair, gate_world["holdout"].path, policy=gate_policy(latency={"enabled": False})
    )
    assert not verdict.passed and verdict.checks_passed() == {
        "quality": True,
        "fairness": False,
        "latency": True,
        "infra": True,
    }
    assert verdict.checks["fairness"].reasons[0].startswith("customer_region: FPR gap")
    north = [g for g in verdict.checks["fairness"].details["table"]["groups"] if g["group"] == "north"]
    assert north[0]["fpr"] == 1.0


def test_slow_model_is_rejected_on_latency(gate_world) -> None:
    settings, base = gate_world["settings"], gate_world["base"].version
    slow = register_altered(settings, base, "slow", delay_s=0.12)  # the base model's p95 is ~15-30 ms here
    set_champion(settings, None)
    policy = gate_policy(latency={"enabled": True, "requests": 10, "warmup": 0, "p95_ms": 100.0})
    verdict = run_gate(settings, slow, gate_world["holdout"].path, policy=policy)
    assert not verdict.passed and verdict.checks_passed()["latency"] is False
    assert verdict.checks_passed()["quality"] is True, "same scores as the base model: only latency fails"
    assert verdict.checks["latency"].details["measured"]["p95_ms"] > 120
    assert "exceeds the budget of 100.0 ms" in verdict.checks["latency"].reasons[0]


def test_empty_policy_passes_nothing(gate_world) -> None:
    settings, version = gate_world["settings"], gate_world["base"].version
    policy = policy_from_dict({"latency": {"enabled": False}, "infra": {"enabled": False}})
    verdict = run_gate(settings, version, gate_world["holdout"].path, policy=policy)
    assert not verdict.passed and "no thresholds" in verdict.why
    assert tags(settings, version)["loopline.rejected"] == "true"
    aliases = client(settings).get_model_version(MODEL_NAME, version).aliases
    assert "challenger" not in aliases, "a version that fails a re-gate loses the challenger alias"


def test_gate_cli_prints_the_verdict_and_exits_by_it(gate_world, tmp_path, monkeypatch, capsys) -> None:
    import argparse

    import yaml

    from loopline.cli import gate as gate_cli

    settings = gate_world["settings"]
    monkeypatch.setenv("LOOPLINE_STATE_DIR", str(settings.state.root))
    monkeypatch.setenv("LOOPLINE_MLFLOW_TRACKING_URI", settings.mlflow_uri)
    parser = argparse.ArgumentParser(prog="loopline")
    gate_cli.add_parser(parser.add_subparsers(dest="command"))
    version = gate_world["base"].version
    for data, expected in (
        (gate_policy(latency={"enabled": False}).model_dump(), 0),
        ({"latency": {"enabled": False}, "infra": {"enabled": False}}, 1),
    ):
        (tmp_path / "gate.yaml").write_text(yaml.safe_dump(data))
        args = parser.parse_args(
            [
                "gate",
                version,
                "--holdout",
                gate_world["holdout"].path,
                "--policy",
                str(tmp_path / "gate.yaml"),
                "--json",
            ]
        )
        assert args.func(args) == expected
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert summary["passed"] is (expected == 0) and set(summary["checks"]) == {
            "quality",
            "fairness",
            "latency",
            "infra",
        }
        assert summary["comparison"]["kind"] in {"vs_champion", "value_only_no_champion"}
    args = parser.parse_args(
        ["gate", "999", "--holdout", gate_world["holdout"].path, "--policy", str(tmp_path / "gate.yaml")]
    )
    assert args.func(args) == 2 and "no version 999" in capsys.readouterr().err


def test_versions_summary_lists_gate_results_and_model_cards(gate_world) -> None:
    summary = {v["version"]: v for v in versions_summary(gate_world["settings"], MODEL_NAME)}
    base = summary[gate_world["base"].version]
    assert base["run_id"] == gate_world["base"].run_id
    assert set(base["gate"]["checks"]) == {"quality", "fairness", "latency", "infra"}
    assert base["model_card"].startswith("runs:/") and Path(base["model_card_path"]).exists()
    assert versions_summary(gate_world["settings"], "no_such_model") == []


@needs_server
def test_infra_validation_serves_the_candidate(gate_world) -> None:
    settings, version = gate_world["settings"], gate_world["base"].version
    set_champion(settings, None)
    policy = gate_policy(
        latency={"enabled": False}, infra={"enabled": True, "timeout_s": 120, "sample_requests": 5}
    )
    verdict = run_gate(settings, version, gate_world["holdout"].path, policy=policy)
    infra = verdict.checks["infra"]
    assert verdict.passed and infra.passed, verdict.why
    assert {p["name"] for p in infra.details["probes"]} >= {
        "sample",
        "unknown_unit",
        "missing_optional_fields",
        "malformed_json",
        "wrong_shape",
    }
    assert all(p["passed"] for p in infra.details["probes"])
    from scratch_stack import processes_using

    assert not [
        p for p in processes_using(settings.state.root) if "loopline.serving" in " ".join(p.cmdline())
    ]


@needs_server
def test_unloadable_model_is_rejected_on_infra(gate_world) -> None:
    settings, base = gate_world["settings"], gate_world["base"].version
    broken = register_altered(settings, base, "broken")
    policy = gate_policy(
        latency={"enabled": True, "requests": 10, "p95_ms": 250.0}, infra={"enabled": True, "timeout_s": 120}
    )
    verdict = run_gate(settings, broken, gate_world["holdout"].path, policy=policy)
    assert not verdict.passed
    assert verdict.checks_passed() == {"quality": False, "fairness": False, "latency": False, "infra": False}
    assert "cannot load" in verdict.checks["infra"].reasons[0]
    assert verdict.checks["infra"].details["log_tail"], "the server's log tail is kept for the report"
    assert tags(settings, broken)["loopline.rejected"] == "true"
    card = (settings.state.reports / "gate" / broken / "model_card.md").read_text()
    assert "REJECTED" in card and "Serving log (tail)" in card

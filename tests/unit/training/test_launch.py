import json
import sys

import pytest

from loopline.training.launch import TrainingLaunchFailed, run_local, trainer_argv, trainer_command


def _sets(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]


def test_trainer_argv_maps_run_params_to_config_overrides():
    argv = trainer_argv(
        "ts.parquet",
        "training.yaml",
        "out.json",
        {"epochs": 7, "learning_rate": 0.01, "reason": "drift"},
        tracking_uri="http://x",
    )
    assert argv[:3] == ["python", "-m", "loopline.training.train"]
    assert argv[argv.index("--training-set") + 1] == "ts.parquet"
    assert _sets(argv) == ["epochs=7", "lr=0.01"]
    assert argv[argv.index("--reason") + 1] == "drift"
    assert argv[-2:] == ["--tracking-uri", "http://x"]
    assert "--set" not in trainer_argv("a", "b", "c", {"epochs": None, "learning_rate": None})


def test_trainer_argv_maps_hpo_trials_and_leaves_out_unset_params():
    argv = trainer_argv("s3://bucket/ts.parquet", "c.yaml", "r.json", {"hpo_trials": 5, "reason": ""})
    assert _sets(argv) == ["hpo.trials=5"]
    assert "--reason" not in argv and "--tracking-uri" not in argv
    assert argv[argv.index("--training-set") + 1] == "s3://bucket/ts.parquet"
    assert _sets(trainer_argv("a", "b", "c", {"hpo_trials": 0})) == ["hpo.trials=0"]  # 0 is a value: off


def test_trainer_argv_names_the_use_case_and_leaves_the_policy_to_the_trainer_without_a_config():
    argv = trainer_argv("ts.parquet", None, "out.json", {}, use_case="delivery")
    assert argv[argv.index("--use-case") + 1] == "delivery"
    assert "--config" not in argv  # the trainer reads the use case's policy where it runs
    assert "--use-case" not in trainer_argv("ts.parquet", "c.yaml", "out.json", {})


def test_trainer_command_uses_torchrun_for_more_than_one_gpu():
    argv = trainer_argv("ts.parquet", "training.yaml", "out.json", {"epochs": 3}, python="python3")
    assert trainer_command(argv, 0) == argv and trainer_command(argv, 1) == argv
    command = trainer_command(argv, 4)
    assert command[:7] == [
        "torchrun",
        "--standalone",
        "--nproc-per-node",
        "4",
        "-m",
        "loopline.training.train",
        "--training-set",
    ]
    assert command[6:] == argv[3:]  # the trainer's own arguments are unchanged
    with pytest.raises(ValueError, match="not a trainer argv"):
        trainer_command(["python", "-m", "something.else"], 2)
    with pytest.raises(ValueError, match="gpus"):
        trainer_command(argv, -1)


def test_run_local_returns_the_result_json_or_raises_with_the_output(tmp_path):
    result = tmp_path / "r.json"
    ok = [sys.executable, "-c", f"import json; json.dump({{'version': '3'}}, open({str(result)!r}, 'w'))"]
    assert run_local(ok, result) == {"version": "3"}
    failing = [
        sys.executable,
        "-c",
        "import sys; print('training failed: no fraud rows', file=sys.stderr); sys.exit(2)",
    ]
    with pytest.raises(TrainingLaunchFailed, match="no fraud rows"):
        run_local(failing, tmp_path / "none.json")
    assert json.loads(result.read_text())["version"] == "3"

import json
import sys

import pytest

from loopline.training.launch import TrainingLaunchFailed, run_local, trainer_argv


def test_trainer_argv_maps_run_params_to_config_overrides():
    argv = trainer_argv("ts.parquet", "training.yaml", "out.json", {"epochs": 7, "learning_rate": 0.01,
                                                                    "reason": "drift"}, tracking_uri="http://x")
    assert argv[:3] == ["python", "-m", "loopline.training.train"]
    assert argv[argv.index("--training-set") + 1] == "ts.parquet"
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--set"] == ["epochs=7", "lr=0.01"]
    assert argv[-2:] == ["--tracking-uri", "http://x"]
    assert "--set" not in trainer_argv("a", "b", "c", {"epochs": None, "learning_rate": None})


def test_run_local_returns_the_result_json_or_raises_with_the_output(tmp_path):
    result = tmp_path / "r.json"
    ok = [sys.executable, "-c", f"import json; json.dump({{'version': '3'}}, open({str(result)!r}, 'w'))"]
    assert run_local(ok, result) == {"version": "3"}
    failing = [sys.executable, "-c", "import sys; print('training failed: no fraud rows', file=sys.stderr); sys.exit(2)"]
    with pytest.raises(TrainingLaunchFailed, match="no fraud rows"):
        run_local(failing, tmp_path / "none.json")
    assert json.loads(result.read_text())["version"] == "3"

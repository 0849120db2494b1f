"""MLflow clients that read the right store, without Feast's header plugin in processes that need no Feast."""

from __future__ import annotations

import json
import subprocess
import sys

FIRST_REST_CALL = """
import json, sys
from loopline.platform.mlflow_util import mlflow_client
mlflow_client("http://127.0.0.1:9")  # nothing listens: no request is made, only the REST client is loaded
import mlflow.utils.rest_utils
from mlflow.tracking.request_header.registry import _request_header_provider_registry as registry
print(json.dumps({"feast_imported": "feast" in sys.modules,
                  "providers": [type(p).__name__ for p in registry]}))
"""


def test_the_rest_client_loads_without_importing_feast() -> None:
    done = subprocess.run(
        [sys.executable, "-c", FIRST_REST_CALL],
        capture_output=True,
        text=True,
        timeout=120,
        env={"MLFLOW_DISABLE_TELEMETRY": "true", "PATH": ""},
        check=True,
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {
        "feast_imported": False,
        "providers": ["DatabricksRequestHeaderProvider", "DefaultRequestHeaderProvider"],
    }


def test_a_client_reads_its_own_registry_whatever_the_process_set_before(tmp_path) -> None:
    import mlflow

    from loopline.platform.mlflow_util import mlflow_client

    mlflow.set_registry_uri(f"sqlite:///{tmp_path / 'other.db'}")
    mine = f"sqlite:///{tmp_path / 'mine.db'}"
    try:
        assert mlflow_client(mine)._registry_uri == mine
    finally:
        mlflow.set_registry_uri(None)

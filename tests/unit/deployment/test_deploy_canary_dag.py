"""DAG ``deploy_canary`` end to end with ``dag.test()`` (tasks and the bake trigger run in-process) against
the real serving app under load and the real SQLite registry: the wiring (short-circuit, deferral and
resumption per step, the promotion branch) promotes a healthy challenger. Airflow gets its own metadata
DB in a subprocess, so this is an integration test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from canary_testkit import Load
from test_canary import champion_served, deployed, last_event_id, server  # noqa: F401 (fixtures)

from loopline.deployment.actions import read_state
from loopline.lineage import history

REPO = Path(__file__).resolve().parents[3]

SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])  # plugins, as Airflow puts them on sys.path
    import loopline_airflow.canary_triggers as glue
    from airflow.dag_processing.dagbag import DagBag

    loose = glue.policy_for_run
    def policy_for_run(params):  # few same-model customers per step: loosen only the noise-prone limits
        policy = loose(params)
        policy["analysis"]["score_shift"].update(max_psi=2.0, min_units=10)  # ~120 sticky customers in all
        policy["analysis"]["latency"].update(slack_ms=20.0, max_p95_ms=100.0)
        policy["bake"]["poll_seconds"] = 0.2
        return policy
    glue.policy_for_run = policy_for_run

    dag = DagBag(dag_folder=sys.argv[2]).dags["deploy_canary"]
    run = dag.test(run_conf={"bake_seconds": 0.5, "min_requests": 30, "max_bake_seconds": 40})
    print(json.dumps({"state": str(run.state),
                      "tasks": {ti.task_id: str(ti.state) for ti in run.get_task_instances()}}))
""")


@pytest.mark.integration
def test_the_dag_promotes_a_healthy_challenger_step_by_step(
    serving_world,
    server,  # noqa: F811 (a fixture imported above)
    deployed,  # noqa: F811
    tmp_path,
) -> None:
    champion, challenger = serving_world.versions
    env = {
        **os.environ,
        **serving_world.env(),
        "LOOPLINE_SERVING_URL": server,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
    }
    subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    deployed.set_registered_model_alias("fraud_detector", "challenger", challenger)
    first = last_event_id(serving_world.settings)
    with Load(server, serving_world.transactions) as load:
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(REPO / "plugins"), str(REPO / "dags")],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["tasks"] == {
        "start_canary": "success",
        "ramp_canary": "success",
        "decide_promotion": "success",
        "promote_challenger": "success",
        "roll_back_challenger": "skipped",
    }, result
    state = read_state(serving_world.settings)
    assert (state.champion, state.previous_champion, state.challenger) == (challenger, champion, None)
    kinds = [e.kind for e in history.read(serving_world.settings) if (e.id or 0) > first]
    assert kinds == ["canary_started", *["traffic_shifted"] * 4, "promoted"]
    assert not load.failed()

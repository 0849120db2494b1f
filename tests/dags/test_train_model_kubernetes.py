"""train_model on Kubernetes: the training pod as KubernetesPodOperator builds it for a real task context.

The pod is rendered from the real DAG file (parsed with ``LOOPLINE_TRAINING_BACKEND=kubernetes``), with
a Task SDK task instance and template context (Params validated, Jinja rendered), and
``build_pod_request_obj(dry_run=True)``: what a cluster would receive, without a cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from loopline.k8s.manifests import POD_RESULT_JSON, restricted_violations

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS_DIR = REPO_ROOT / "dags"
CONFIG = yaml.safe_load((REPO_ROOT / "include" / "config" / "kubernetes.yaml").read_text())
PREFIX = "s3://loopline-test/training-sets/"
TRAINING_SET = PREFIX + "manual__sample/training_set.parquet"
# Secret values present in the Airflow worker's environment must never be copied into the pod spec.
SECRET_VALUES = {
    "AWS_SECRET_ACCESS_KEY": "s3cr3t-key-never-in-a-pod",
    "MLFLOW_TRACKING_PASSWORD": "mlflow-pw-never-in-a-pod",
    "LOOPLINE_MLFLOW_TRACKING_URI": "https://user:tracking-pw-never@mlflow.example",
}
CONF = {"epochs": 7, "learning_rate": 0.002, "hpo_trials": 12, "reason": "new labels"}


@pytest.fixture(scope="module")
def pod() -> dict:
    from loopline_airflow.pod_render import render_training_pod

    saved = dict(os.environ)
    os.environ.update(SECRET_VALUES)
    try:
        return render_training_pod(TRAINING_SET, CONF, dags_dir=DAGS_DIR, training_set_uri_prefix=PREFIX)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _containers(pod: dict) -> dict[str, dict]:
    return {c["name"]: c for c in pod["spec"]["containers"]}


def test_pod_validates_strictly_against_the_kubernetes_schema(pod: dict) -> None:
    kubernetes_validate.validate(pod, "1.37.0", strict=True)


def test_pod_has_the_gpu_limit_tolerations_and_node_selector(pod: dict) -> None:
    trainer = _containers(pod)["base"]
    assert trainer["resources"]["limits"]["nvidia.com/gpu"] == str(CONFIG["trainer"]["gpus"])
    assert trainer["resources"]["requests"]["memory"] == CONFIG["trainer"]["resources"]["requests"]["memory"]
    assert {t["key"] for t in pod["spec"]["tolerations"]} >= {"nvidia.com/gpu"}
    assert pod["spec"]["nodeSelector"] == CONFIG["trainer"]["node_selector"]
    assert pod["metadata"]["namespace"] == CONFIG["namespace"]
    assert pod["spec"]["serviceAccountName"] == CONFIG["trainer"]["service_account"]
    assert trainer["image"] == CONFIG["trainer"]["image"]


def test_every_container_including_the_xcom_sidecar_meets_restricted(pod: dict) -> None:
    containers = _containers(pod)
    assert "airflow-xcom-sidecar" in containers, "do_xcom_push must add the sidecar that reads the result"
    assert restricted_violations(pod) == []
    for name, container in containers.items():
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, name
        assert sc["capabilities"]["drop"] == ["ALL"], name
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == CONFIG["trainer"]["security"]["run_as_user"]
        assert sc["seccompProfile"]["type"] == "RuntimeDefault", name
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_no_literal_secret_values_only_secret_refs(pod: dict) -> None:
    text = json.dumps(pod)
    for value in SECRET_VALUES.values():
        assert value not in text
    trainer = _containers(pod)["base"]
    assert {e["secretRef"]["name"] for e in trainer["envFrom"]} == set(CONFIG["trainer"]["secrets"].values())
    assert not {e["name"] for e in trainer.get("env") or []} & set(SECRET_VALUES)


def test_trainer_argv_carries_the_training_set_uri_and_validated_params(pod: dict) -> None:
    argv = [*_containers(pod)["base"]["command"], *_containers(pod)["base"]["args"]]
    assert argv[:3] == ["python", "-m", "loopline.training.train"]
    assert argv[argv.index("--training-set") + 1] == TRAINING_SET
    assert argv[argv.index("--result-json") + 1] == POD_RESULT_JSON
    assert {"epochs=7", "lr=0.002", "hpo.trials=12"} <= set(argv)
    assert argv[argv.index("--reason") + 1] == CONF["reason"]


def test_lineage_labels_and_annotations_name_the_run(pod: dict) -> None:
    labels, annotations = pod["metadata"]["labels"], pod["metadata"]["annotations"]
    assert labels["dag_id"] == "train_model" and labels["task_id"] == "train_candidate"
    assert labels["try_number"] == "1"
    assert annotations["loopline.io/run-id"].startswith("manual__")
    assert annotations["loopline.io/reason"] == CONF["reason"]


def test_invalid_params_are_rejected_before_a_pod_is_built() -> None:
    from airflow.sdk.exceptions import ParamValidationError

    from loopline_airflow.pod_render import render_training_pod

    with pytest.raises(ParamValidationError, match="hpo_trials"):
        render_training_pod(
            TRAINING_SET, {"hpo_trials": 201}, dags_dir=DAGS_DIR, training_set_uri_prefix=PREFIX
        )


def test_operator_is_deferrable_with_gpu_startup_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    monkeypatch.setenv("LOOPLINE_TRAINING_BACKEND", "kubernetes")
    monkeypatch.setenv("LOOPLINE_TRAINING_SET_URI_PREFIX", PREFIX)
    task = DagBag(dag_folder=str(DAGS_DIR / "train_model.py")).dags["train_model"].get_task("train_candidate")
    assert isinstance(task, KubernetesPodOperator)
    assert task.deferrable is True and task.do_xcom_push is True
    assert task.startup_timeout_seconds == CONFIG["trainer"]["startup_timeout_seconds"]
    assert task.on_finish_action.value == CONFIG["trainer"]["on_finish_action"]
    assert task.upstream_task_ids == {"build_training_set"}


def test_result_on_kubernetes_has_the_local_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    from loopline_airflow import trainer_pod
    from loopline_airflow.run_conf import training_result

    sidecar_output = {"run_id": "r1", "version": "3", "metrics": {"best_val_pr_auc": 0.5}}
    monkeypatch.setattr(KubernetesPodOperator, "trigger_reentry", lambda self, context, event: sidecar_output)
    operator = trainer_pod.TrainerPodOperator.__new__(trainer_pod.TrainerPodOperator)
    context = {"params": {"reason": "drift"}}
    result = operator.trigger_reentry(context, {"status": "success"})
    assert (
        result == training_result(sidecar_output, context["params"]) == {**sidecar_output, "reason": "drift"}
    )


def test_kubernetes_backend_without_object_store_is_a_dag_import_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("LOOPLINE_TRAINING_BACKEND", "kubernetes")
    monkeypatch.delenv("LOOPLINE_TRAINING_SET_URI_PREFIX", raising=False)
    dagbag = DagBag(dag_folder=str(DAGS_DIR / "train_model.py"))
    assert "train_model" not in dagbag.dags
    assert "LOOPLINE_TRAINING_SET_URI_PREFIX" in "\n".join(dagbag.import_errors.values())


_PARSE = """
import sys
sys.path.insert(0, sys.argv[2])
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(dag_folder=sys.argv[1]).dags["train_model"]
print(type(dag.get_task("train_candidate")).__name__)
print("airflow.providers.cncf.kubernetes.operators.pod" in sys.modules)
"""


def test_local_backend_is_the_default_and_does_not_import_the_provider() -> None:
    env = {k: v for k, v in os.environ.items() if k != "LOOPLINE_TRAINING_BACKEND"}
    out = subprocess.run(
        [sys.executable, "-c", _PARSE, str(DAGS_DIR / "train_model.py"), str(REPO_ROOT / "plugins")],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.split()
    assert out[-2:] == ["_PythonDecoratedOperator", "False"]


def test_k8s_manifests_cli_writes_every_object_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from loopline.cli import k8s as k8s_cli

    parser = argparse.ArgumentParser(prog="loopline")
    k8s_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        [
            "k8s",
            "manifests",
            "--out",
            str(tmp_path),
            "--training-set-uri-prefix",
            PREFIX,
            "--conf",
            json.dumps({"epochs": 3}),
            "--json",
        ]
    )
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    docs = [d for f in report["files"] for d in yaml.safe_load_all(Path(f).read_text())]
    kinds = sorted(d["kind"] for d in docs)
    from loopline.config import get_settings
    from loopline.k8s.config import load_config
    from loopline.k8s.manifests import static_manifests

    static = [o for objs in static_manifests(load_config(get_settings())).values() for o in objs]
    # Every static object (namespace, RBAC, serving, network policies) plus the rendered training pod.
    assert kinds == sorted([o["kind"] for o in static] + ["Pod"])
    assert {
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "Pod",
    } <= set(kinds)
    for doc in docs:
        kubernetes_validate.validate(doc, "1.37.0", strict=True)
    (pod_doc,) = [d for d in docs if d["kind"] == "Pod"]
    assert "epochs=3" in pod_doc["spec"]["containers"][0]["args"]


def test_local_launcher_runs_the_same_argv_and_returns_the_same_shape(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from loopline.training import launch
    from loopline_airflow.launchers import train_locally
    from loopline_airflow.run_conf import training_result

    calls: list[list[str]] = []
    trainer_output = {"run_id": "r1", "version": "3", "metrics": {"best_val_pr_auc": 0.5}}
    monkeypatch.setattr(launch, "run_local", lambda argv, result_json: calls.append(argv) or trainer_output)
    parquet = str(tmp_path / "set.parquet")
    result = train_locally.function({"path": parquet, "uri": parquet}, params=CONF)
    assert result == training_result(trainer_output, CONF)
    (argv,) = calls
    assert argv[argv.index("--training-set") + 1] == parquet
    assert {"epochs=7", "lr=0.002", "hpo.trials=12"} <= set(argv)
    assert "--tracking-uri" in argv  # locally the endpoint comes from settings, not a Secret


def test_k8s_manifests_cli_says_why_the_training_pod_cannot_be_rendered() -> None:
    """The pod is rendered by the Airflow glue in its own process; a conf the DAG refuses comes back as the
    reason, not as a traceback."""
    from loopline.cli.k8s import ManifestError, sample_training_pod
    from loopline.config import get_settings

    with pytest.raises(ManifestError, match="hpo_trials"):
        sample_training_pod(get_settings(), PREFIX, {"hpo_trials": 201})

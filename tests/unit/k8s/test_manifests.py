"""The static Kubernetes objects: schema-valid (strict), "restricted", wired to each other."""

from __future__ import annotations

import copy
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from loopline.k8s import manifests
from loopline.k8s.config import parse_config

REPO_ROOT = Path(__file__).resolve().parents[3]
CONFIG = parse_config(yaml.safe_load((REPO_ROOT / "include" / "config" / "kubernetes.yaml").read_text()))
SCHEMA = "1.37.0"
ALL = [obj for group in manifests.static_manifests(CONFIG).values() for obj in group]


@pytest.mark.parametrize("obj", ALL, ids=lambda o: o["kind"])
def test_every_static_object_validates_strictly_and_is_restricted(obj: dict) -> None:
    kubernetes_validate.validate(obj, SCHEMA, strict=True)
    assert manifests.restricted_violations(obj) == []


def test_the_kinds_loopline_creates() -> None:
    kinds = {o["kind"] for o in ALL}
    assert kinds == {"Namespace", "ServiceAccount", "Role", "RoleBinding", "Deployment", "Service",
                     "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"}


def test_namespace_enforces_restricted() -> None:
    labels = manifests.namespace(CONFIG)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_airflow_namespace_warns_about_restricted_without_blocking_the_chart() -> None:
    launcher = CONFIG.trainer.launcher_service_account
    airflow = manifests.airflow_namespace(CONFIG)
    assert airflow is not None and airflow["metadata"]["name"] == launcher.namespace != CONFIG.namespace
    labels = airflow["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/warn"] == labels["pod-security.kubernetes.io/audit"] == "restricted"
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    same_namespace = CONFIG.trainer.model_copy(update={"launcher_service_account": launcher.model_copy(
        update={"namespace": None})})
    assert manifests.airflow_namespace(CONFIG.model_copy(update={"trainer": same_namespace})) is None


def _policies() -> dict[str, dict]:
    return {p["metadata"]["name"]: p for p in manifests.network_policies(CONFIG)}


def _selects(policy: dict, pod_labels: dict[str, str]) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return wanted.items() <= pod_labels.items()


def test_network_policies_deny_by_default_and_every_pod_may_resolve_names() -> None:
    policies = _policies()
    deny = policies["loopline-default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert deny["ingress"] == [] and deny["egress"] == []
    dns = policies["loopline-allow-dns"]["spec"]
    assert dns["podSelector"] == {} and dns["policyTypes"] == ["Egress"]
    assert {(p["protocol"], p["port"]) for p in dns["egress"][0]["ports"]} == {("UDP", 53), ("TCP", 53)}
    assert all(p["metadata"]["namespace"] == CONFIG.namespace for p in policies.values())


def test_serving_policy_admits_its_port_and_reaches_feast_and_mlflow() -> None:
    deployment = manifests.serving_deployment(CONFIG)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selecting = [p for p in _policies().values() if p["spec"]["podSelector"] and _selects(p, pod_labels)]
    assert [p["metadata"]["name"] for p in selecting] == [manifests.SERVING_NAME]
    (rule,) = selecting[0]["spec"]["ingress"]
    port_names = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {p["port"] for p in rule["ports"]} <= port_names
    egress_ports = {p["port"] for p in selecting[0]["spec"]["egress"][0]["ports"]}
    assert {5000, 5432, 6379} <= egress_ports  # MLflow, Feast registry (Postgres), Feast online (Redis)


def test_training_pods_get_no_ingress_and_only_mlflow_and_object_store_egress() -> None:
    pod_labels = manifests.trainer_pod_template(CONFIG)["metadata"]["labels"]
    selecting = [p for p in _policies().values() if p["spec"]["podSelector"] and _selects(p, pod_labels)]
    assert len(selecting) == 1
    spec = selecting[0]["spec"]
    assert spec["ingress"] == []
    assert {p["port"] for p in spec["egress"][0]["ports"]} == set(manifests.OBJECT_STORE_AND_MLFLOW_PORTS)
    assert 5432 not in manifests.OBJECT_STORE_AND_MLFLOW_PORTS  # the trainer never talks to Postgres


def test_serving_pod_is_configured_like_the_compose_service() -> None:
    spec = manifests.serving_deployment(CONFIG)["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["FEAST_FS_YAML_FILE_PATH"] == manifests.FEAST_PRODUCTION_YAML
    assert (REPO_ROOT / "feature_repo" / manifests.FEAST_PRODUCTION_YAML).is_file()
    # The same prediction log as the canary and the drift monitor read (the Airflow side loads it too).
    assert {e["secretRef"]["name"] for e in container["envFrom"]} == {
        CONFIG.trainer.secrets.mlflow, manifests.FEAST_SECRET, manifests.DATABASE_SECRET}
    # Read-only root: everything written goes to a mounted emptyDir.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", env["LOOPLINE_STATE_DIR"]} <= mounts
    assert container["args"][container["args"].index("--port") + 1] == str(CONFIG.serving.port)
    assert set(container["resources"]) == {"requests", "limits"}


def test_hpa_scales_on_cpu_and_pdb_keeps_one_pod() -> None:
    hpa = manifests.serving_hpa(CONFIG)["spec"]
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["averageUtilization"] == CONFIG.serving.target_cpu_utilization
    assert manifests.serving_pdb(CONFIG)["spec"]["minAvailable"] == CONFIG.serving.min_available == 1


def test_trainer_role_runs_pods_in_its_namespace_only() -> None:
    account, role, binding = manifests.trainer_rbac(CONFIG)
    assert role["kind"] == "Role" and role["metadata"]["namespace"] == CONFIG.namespace  # not a ClusterRole
    rules = {tuple(r["resources"]): set(r["verbs"]) for r in role["rules"]}
    assert rules == {("pods",): {"create", "get", "list", "watch", "delete"}, ("pods/log",): {"get"}}
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    bound = {(s["name"], s["namespace"]) for s in binding["subjects"]}
    assert (account["metadata"]["name"], CONFIG.namespace) in bound
    assert account["automountServiceAccountToken"] is False


def test_serving_objects_point_at_the_deployment() -> None:
    deployment = manifests.serving_deployment(CONFIG)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for obj in (manifests.serving_service(CONFIG), manifests.serving_pdb(CONFIG)):
        selector = obj["spec"]["selector"].get("matchLabels", obj["spec"]["selector"])
        assert selector.items() <= pod_labels.items(), f"{obj['kind']} selects no serving pod"
    assert manifests.serving_hpa(CONFIG)["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["ports"][0]["containerPort"] == CONFIG.serving.port


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c, p: c.update(allowPrivilegeEscalation=True), "allowPrivilegeEscalation"),
        (lambda c, p: c["capabilities"].update(drop=["NET_RAW"]), "capabilities.drop"),
        (lambda c, p: c["capabilities"].update(add=["SYS_ADMIN"]), "capabilities.add"),
        (lambda c, p: (c.pop("runAsNonRoot"), p.pop("runAsNonRoot")), "runAsNonRoot"),
        (lambda c, p: (c.pop("seccompProfile"), p.pop("seccompProfile")), "seccompProfile"),
        (lambda c, p: c.update(privileged=True), "privileged"),
        (lambda c, p: c.update(runAsUser=0), "runAsUser"),
    ],
)
def test_restricted_checker_catches_each_violation(mutate, expected: str) -> None:
    deployment = copy.deepcopy(manifests.serving_deployment(CONFIG))
    spec = deployment["spec"]["template"]["spec"]
    mutate(spec["containers"][0]["securityContext"], spec["securityContext"])
    problems = manifests.restricted_violations(deployment)
    assert any(expected in p for p in problems), problems


def test_restricted_checker_rejects_host_paths_and_host_network() -> None:
    deployment = copy.deepcopy(manifests.serving_deployment(CONFIG))
    spec = deployment["spec"]["template"]["spec"]
    spec["hostNetwork"] = True
    spec["volumes"].append({"name": "data", "hostPath": {"path": "/srv"}})
    problems = manifests.restricted_violations(deployment)
    assert any("hostNetwork" in p for p in problems) and any("hostPath" in p for p in problems)


def test_trainer_pod_template_is_restricted_with_secret_refs_only() -> None:
    pod = manifests.trainer_pod_template(CONFIG)
    assert manifests.restricted_violations(pod) == []
    base = pod["spec"]["containers"][0]
    assert base["resources"]["limits"]["nvidia.com/gpu"] == str(CONFIG.trainer.gpus)
    assert {e["secretRef"]["name"] for e in base["envFrom"]} == {
        CONFIG.trainer.secrets.mlflow, CONFIG.trainer.secrets.object_store}
    assert all("valueFrom" not in e and not e["name"].endswith(("PASSWORD", "SECRET_ACCESS_KEY"))
               for e in base["env"])


def test_trainer_pod_command_is_the_local_argv_with_the_pod_result_path() -> None:
    command = manifests.trainer_pod_command(CONFIG, "s3://b/set.parquet", {"epochs": 7, "reason": "x"})
    assert command[command.index("--training-set") + 1] == "s3://b/set.parquet"
    assert command[command.index("--result-json") + 1] == manifests.POD_RESULT_JSON
    assert command[command.index("--config") + 1] == CONFIG.trainer.config_path
    assert "epochs=7" in command
    assert "--tracking-uri" not in command  # from the MLflow Secret, not the argv


def test_more_than_one_gpu_runs_torchrun_with_one_process_per_gpu() -> None:
    config = CONFIG.model_copy(update={"trainer": CONFIG.trainer.model_copy(update={"gpus": 4})})
    command = manifests.trainer_pod_command(config, "s3://b/set.parquet", {})
    assert command[:4] == ["torchrun", "--standalone", "--nproc-per-node", "4"]
    assert manifests.trainer_pod_template(config)["spec"]["containers"][0]["resources"]["limits"][
        "nvidia.com/gpu"] == "4"


DEPLOY_DIR = REPO_ROOT / "deploy" / "kubernetes"


@pytest.mark.parametrize("group", sorted(manifests.static_manifests(CONFIG)))
def test_committed_examples_match_the_builders(group: str) -> None:
    """deploy/kubernetes is rendered output: re-run `loopline k8s manifests --out deploy/kubernetes` if this fails."""
    committed = list(yaml.safe_load_all((DEPLOY_DIR / f"{group}.yaml").read_text()))
    assert committed == manifests.static_manifests(CONFIG)[group]


def test_committed_training_pod_example_validates() -> None:
    (pod,) = yaml.safe_load_all((DEPLOY_DIR / "training-pod.yaml").read_text())
    kubernetes_validate.validate(pod, SCHEMA, strict=True)
    assert manifests.restricted_violations(pod) == []

"""The static Kubernetes objects: schema-valid (strict), "restricted", wired to each other."""

from __future__ import annotations

import copy
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from loopline.config.use_case import load_use_case
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
    assert kinds == {
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "Job",
    }


def test_namespace_enforces_restricted() -> None:
    labels = manifests.namespace(CONFIG)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_airflow_namespace_warns_about_restricted_without_blocking_the_chart() -> None:
    launchers = CONFIG.trainer.launcher_service_accounts
    (airflow,) = manifests.airflow_namespaces(CONFIG)  # worker and triggerer share the release's namespace
    assert airflow["metadata"]["name"] == launchers[0].namespace != CONFIG.namespace
    labels = airflow["metadata"]["labels"]
    assert (
        labels["pod-security.kubernetes.io/warn"]
        == labels["pod-security.kubernetes.io/audit"]
        == "restricted"
    )
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    same_namespace = CONFIG.trainer.model_copy(
        update={
            "launcher_service_accounts": [ref.model_copy(update={"namespace": None}) for ref in launchers]
        }
    )
    assert manifests.airflow_namespaces(CONFIG.model_copy(update={"trainer": same_namespace})) == []


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
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert env["FEAST_FS_YAML_FILE_PATH"] == manifests.FEAST_PRODUCTION_YAML
    assert (REPO_ROOT / "feature_repo" / "fraud" / manifests.FEAST_PRODUCTION_YAML).is_file()
    # Serving's own identities only: never the trainer's/Airflow's MLflow writer, Feast or database Secrets.
    assert [e["secretRef"]["name"] for e in container["envFrom"]] == [CONFIG.serving.secrets.credentials]
    assert not {CONFIG.trainer.secrets.mlflow, manifests.FEAST_SECRET, manifests.DATABASE_SECRET} & {
        e["secretRef"]["name"] for e in container["envFrom"]
    }
    # Read-only root: everything written goes to a mounted emptyDir.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", env["LOOPLINE_STATE_DIR"]} <= mounts
    assert container["args"][container["args"].index("--port") + 1] == str(CONFIG.serving.port)
    assert set(container["resources"]) == {"requests", "limits"}


def test_serving_reads_the_shared_curated_store_and_watermark_with_its_own_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fresh features in Kubernetes: the storage URL the tasks write to is in the pod's env; the object-store
    credentials and the state DB URL come from serving's own Secret only (never the tasks' or the trainer's)."""
    from loopline.config import Settings

    (container,) = manifests.serving_deployment(CONFIG)["spec"]["template"]["spec"]["containers"]
    env = _env(container)
    assert env["LOOPLINE_STORAGE_URL"] == {"name": "LOOPLINE_STORAGE_URL", "value": CONFIG.storage_url}
    assert CONFIG.storage_url
    secrets = {e["secretRef"]["name"] for e in container["envFrom"]}
    assert secrets == {CONFIG.serving.secrets.credentials}
    assert not {CONFIG.trainer.secrets.object_store, manifests.DATABASE_SECRET} & secrets
    assert not {"LOOPLINE_STATE_DB_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env)
    # What the pod's Settings read from that env (the Secret's keys are the settings' own names).
    for name, item in env.items():
        if "value" in item:
            monkeypatch.setenv(name, item["value"])
    monkeypatch.setenv("LOOPLINE_STATE_DB_URL", "postgresql://serving:pw@postgres.example:5432/loopline")
    monkeypatch.setenv(manifests.STORAGE_ENDPOINT_KEY, "https://minio.example")
    settings = Settings()
    assert (settings.mode, settings.storage_url) == ("kubernetes", CONFIG.storage_url)
    assert settings.state_db_url and settings.storage_endpoint_url == "https://minio.example"


def test_without_a_storage_url_serving_keeps_fresh_features_off_and_stays_valid() -> None:
    raw = yaml.safe_load((REPO_ROOT / "include" / "config" / "kubernetes.yaml").read_text())
    config = parse_config(raw, {"storage_url": "", "mlflow": {"artifacts_destination": "s3://ml/artifacts"}})
    deployment = manifests.serving_deployment(config)
    kubernetes_validate.validate(deployment, SCHEMA, strict=True)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "LOOPLINE_STORAGE_URL" not in _env(container)


def test_the_docs_put_what_fresh_features_need_in_serving_s_own_secret() -> None:
    """docs/deploy-kubernetes.md creates loopline-serving with the state DB URL of the role serving and the
    read-only object-store keys, and the roles script lets that role read the watermark."""
    doc = (REPO_ROOT / "docs" / "deploy-kubernetes.md").read_text()
    start = doc.index(f"create secret generic {CONFIG.serving.secrets.credentials} ")
    block = doc[start : doc.index("```", start)]
    for key in (
        "LOOPLINE_STATE_DB_URL=postgresql://serving:",
        "AWS_ACCESS_KEY_ID=",
        "AWS_SECRET_ACCESS_KEY=",
        "AWS_DEFAULT_REGION=",
        f"{manifests.STORAGE_ENDPOINT_KEY}=",
    ):
        assert key in block, key
    roles = (REPO_ROOT / "docker" / "postgres" / "10-loopline-roles.sh").read_text()
    assert "GRANT SELECT ON watermarks TO serving;" in roles


def test_hpa_scales_on_cpu_and_pdb_keeps_one_pod() -> None:
    hpa = manifests.serving_hpa(CONFIG)["spec"]
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["averageUtilization"] == CONFIG.serving.target_cpu_utilization
    assert manifests.serving_pdb(CONFIG)["spec"]["minAvailable"] == CONFIG.serving.min_available == 1


def _rules(role: dict) -> dict[str, set[str]]:
    return {
        resource: set(rule["verbs"])
        for rule in role["rules"]
        for resource in rule["resources"]
        if rule["apiGroups"] == [""]
    }


def test_the_launcher_role_can_run_a_deferrable_pod_with_an_xcom_sidecar_in_its_namespace_only() -> None:
    account, role, binding = manifests.trainer_rbac(CONFIG)
    assert role["kind"] == "Role" and role["metadata"]["namespace"] == CONFIG.namespace  # not a ClusterRole
    assert all(rule["apiGroups"] == [""] for rule in role["rules"])  # core objects only
    rules = _rules(role)
    # Create, find again, label as checked, delete; the log; the XCom sidecar's result (exec); failure events.
    assert rules["pods"] == {"create", "get", "list", "watch", "patch", "delete"}
    assert rules["pods/log"] == {"get"}
    assert {"create", "get"} <= rules["pods/exec"]
    assert rules["events"] <= {"get", "list", "watch"}
    assert set(rules) == {"pods", "pods/log", "pods/exec", "events"}
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }


def test_the_worker_and_the_triggerer_launch_pods_and_the_trainer_pod_cannot() -> None:
    account, _role, binding = manifests.trainer_rbac(CONFIG)
    bound = {(s["kind"], s["name"], s["namespace"]) for s in binding["subjects"]}
    launchers = {
        ("ServiceAccount", ref.name, ref.namespace) for ref in CONFIG.trainer.launcher_service_accounts
    }
    assert bound == launchers
    # The official chart's accounts of the release `airflow`: KubernetesPodOperator in the worker's pod, and
    # (deferrable=True) its trigger in the triggerer.
    assert {name for _, name, _ in bound} == {"airflow-worker", "airflow-triggerer"}
    # The training pod's own account is bound to nothing and has no token: it cannot create or delete pods.
    assert ("ServiceAccount", account["metadata"]["name"], CONFIG.namespace) not in bound
    assert account["metadata"]["name"] == manifests.trainer_pod_template(CONFIG)["spec"]["serviceAccountName"]
    assert account["automountServiceAccountToken"] is False
    assert manifests.trainer_pod_template(CONFIG)["spec"]["automountServiceAccountToken"] is False
    subjects = [
        s for obj in ALL if obj["kind"] in ("RoleBinding", "ClusterRoleBinding") for s in obj["subjects"]
    ]
    assert all(s["name"] != account["metadata"]["name"] for s in subjects)


def test_the_launcher_role_is_what_the_training_operator_needs() -> None:
    """The train_model operator is deferrable (its trigger watches the pod from the triggerer: bound) and
    pushes XCom through the sidecar (read with exec: pods/exec), as the pod's own account."""
    from loopline_airflow.trainer_pod import trainer_pod_operator

    operator = trainer_pod_operator(CONFIG, task_id="train", training_set_task_id="build_training_set")
    assert operator.deferrable is True and operator.do_xcom_push is True
    assert (
        operator.namespace == CONFIG.namespace == manifests.trainer_rbac(CONFIG)[1]["metadata"]["namespace"]
    )
    assert operator.service_account_name == CONFIG.trainer.service_account
    (pod,) = yaml.safe_load_all((DEPLOY_DIR / "training-pod.yaml").read_text())
    assert "airflow-xcom-sidecar" in {c["name"] for c in pod["spec"]["containers"]}


def test_without_launchers_only_the_trainer_account_is_rendered() -> None:
    trainer = CONFIG.trainer.model_copy(update={"launcher_service_accounts": []})
    objects = manifests.trainer_rbac(CONFIG.model_copy(update={"trainer": trainer}))
    assert [o["kind"] for o in objects] == ["ServiceAccount"]


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
        CONFIG.trainer.secrets.mlflow,
        CONFIG.trainer.secrets.object_store,
    }
    assert all(
        "valueFrom" not in e and not e["name"].endswith(("PASSWORD", "SECRET_ACCESS_KEY"))
        for e in base["env"]
    )


def test_trainer_pod_command_is_the_local_argv_with_the_pod_result_path() -> None:
    command = manifests.trainer_pod_command(CONFIG, "s3://b/set.parquet", {"epochs": 7, "reason": "x"})
    assert command[command.index("--training-set") + 1] == "s3://b/set.parquet"
    assert command[command.index("--result-json") + 1] == manifests.POD_RESULT_JSON
    # No --config: the trainer reads the named use case's training policy from the installed package.
    assert "--config" not in command and CONFIG.trainer.config_path is None
    assert command[command.index("--use-case") + 1] == CONFIG.use_case == "fraud"
    assert "epochs=7" in command
    assert "--tracking-uri" not in command  # from the MLflow Secret, not the argv


def test_more_than_one_gpu_runs_torchrun_with_one_process_per_gpu() -> None:
    config = CONFIG.model_copy(update={"trainer": CONFIG.trainer.model_copy(update={"gpus": 4})})
    command = manifests.trainer_pod_command(config, "s3://b/set.parquet", {})
    assert command[:4] == ["torchrun", "--standalone", "--nproc-per-node", "4"]
    assert (
        manifests.trainer_pod_template(config)["spec"]["containers"][0]["resources"]["limits"][
            "nvidia.com/gpu"
        ]
        == "4"
    )


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


# --- issue 19: serving's own identity and API key, MLflow with authentication ---------------------------------


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container["env"]}


def test_serving_requires_the_api_key_from_its_own_secret() -> None:
    from loopline.serving.config import API_KEY_ENV

    assert manifests.SERVING_API_KEY_ENV == API_KEY_ENV
    (container,) = manifests.serving_deployment(CONFIG)["spec"]["template"]["spec"]["containers"]
    ref = _env(container)[API_KEY_ENV]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": CONFIG.serving.secrets.api_key, "key": manifests.API_KEY_ACCEPTED}
    # The probes stay open (the app exempts them); /metrics and /v1/predict need the key.
    assert {container[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe")} == {
        "/readyz",
        "/healthz",
    }


def test_no_secret_value_is_written_into_any_object() -> None:
    for obj in ALL:
        spec = (obj.get("spec") or {}).get("template", {}).get("spec") or {}
        for container in spec.get("containers", []):
            for entry in container.get("env", []):
                if any(word in entry["name"] for word in ("PASSWORD", "SECRET", "_KEY")):
                    assert "valueFrom" in entry, (
                        f"{obj['metadata']['name']}: {entry['name']} is written in the object"
                    )


def _mlflow_container() -> dict:
    (container,) = manifests.mlflow_deployment(CONFIG)["spec"]["template"]["spec"]["containers"]
    return container


def test_mlflow_runs_the_basic_auth_wrapper_with_its_own_secret() -> None:
    container = _mlflow_container()
    assert container["command"][:3] == ["python", manifests.MLFLOW_WRAPPER, "serve"]
    assert "--serve-artifacts" in container["command"]
    assert container["command"][container["command"].index("--port") + 1] == str(CONFIG.mlflow.port)
    dockerfile = (REPO_ROOT / "docker" / "mlflow" / "Dockerfile").read_text()
    assert f"COPY docker/mlflow/loopline_mlflow.py {manifests.MLFLOW_WRAPPER}" in dockerfile
    assert [e["secretRef"]["name"] for e in container["envFrom"]] == [
        CONFIG.mlflow.secrets.server,
        CONFIG.trainer.secrets.object_store,
    ]
    # /health is the one path the auth app leaves open: the probes use it.
    assert {container[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe", "startupProbe")} == {
        "/health"
    }
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    hosts = _env(container)["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
    assert f"{manifests.MLFLOW_NAME}.{CONFIG.namespace}.svc:*" in hosts and "localhost:*" in hosts
    service = manifests.mlflow_service(CONFIG)
    assert (
        service["spec"]["selector"].items()
        <= manifests.mlflow_deployment(CONFIG)["spec"]["template"]["metadata"]["labels"].items()
    )
    assert (
        manifests.mlflow_url(CONFIG) == f"http://loopline-mlflow.{CONFIG.namespace}.svc:{CONFIG.mlflow.port}"
    )


def test_mlflow_keeps_nothing_on_its_disk_artifacts_in_the_object_store_and_runs_in_postgres() -> None:
    container = _mlflow_container()
    command = container["command"]
    destination = command[command.index("--artifacts-destination") + 1]
    assert destination == f"{CONFIG.storage_url}/mlflow-artifacts" and destination.startswith("s3://")
    env = _env(container)
    # The S3-compatible endpoint comes from the object-store Secret (absent for AWS S3: optional).
    assert env["MLFLOW_S3_ENDPOINT_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": CONFIG.trainer.secrets.object_store,
        "key": manifests.STORAGE_ENDPOINT_KEY,
        "optional": True,
    }
    # Runs/registry and users: required keys of the server's Secret (no fallback to a local file store).
    for name in ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_AUTH_DATABASE_URI"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": CONFIG.mlflow.secrets.server, "key": name}
    # Its only volume is a size-limited /tmp (the auth config it writes), not an artifact store.
    volumes = manifests.mlflow_deployment(CONFIG)["spec"]["template"]["spec"]["volumes"]
    assert volumes == [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]


def test_mlflow_artifacts_destination_can_be_set_apart_from_the_storage_url() -> None:
    config = CONFIG.model_copy(
        update={
            "mlflow": CONFIG.mlflow.model_copy(
                update={"artifacts_destination": "s3://ml-artifacts/loopline/"}
            )
        }
    )
    command = manifests.mlflow_deployment(config)["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--artifacts-destination") + 1] == "s3://ml-artifacts/loopline"


def test_mlflow_init_reads_each_password_from_the_secret_of_whoever_logs_in_with_it() -> None:
    job = manifests.mlflow_init_job(CONFIG)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", manifests.MLFLOW_WRAPPER, "init"]
    env = _env(container)
    refs = {
        name: env[name]["valueFrom"]["secretKeyRef"]
        for name in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_LOOPLINE_PASSWORD", "MLFLOW_SERVING_PASSWORD")
    }
    assert refs == {
        "MLFLOW_AUTH_ADMIN_PASSWORD": {
            "name": CONFIG.mlflow.secrets.server,
            "key": "MLFLOW_AUTH_ADMIN_PASSWORD",
        },
        "MLFLOW_LOOPLINE_PASSWORD": {
            "name": CONFIG.trainer.secrets.mlflow,
            "key": "MLFLOW_TRACKING_PASSWORD",
        },
        "MLFLOW_SERVING_PASSWORD": {
            "name": CONFIG.serving.secrets.credentials,
            "key": "MLFLOW_TRACKING_PASSWORD",
        },
    }
    assert env["MLFLOW_TRACKING_URI"]["value"] == manifests.mlflow_url(CONFIG)
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")


def test_mlflow_init_grants_what_compose_grants_and_what_the_code_uses() -> None:
    """One model and set of experiments for both stacks, and they are the use case's: its registered model,
    the trainer's experiment and the drift monitor's."""
    fraud = load_use_case("fraud")
    grants = CONFIG.mlflow_grants()
    assert grants.model == fraud.model_name
    assert grants.experiments == [fraud.training_experiment, fraud.monitoring_experiment]
    assert grants.serving_experiments == [fraud.training_experiment]
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yaml").read_text())["services"]["mlflow-init"][
        "environment"
    ]
    assert compose["LOOPLINE_MLFLOW_MODEL"] == grants.model
    assert compose["LOOPLINE_MLFLOW_EXPERIMENTS"] == ",".join(grants.experiments)
    assert compose["LOOPLINE_MLFLOW_SERVING_EXPERIMENTS"] == ",".join(grants.serving_experiments)


def test_mlflow_grants_follow_the_use_case_unless_configured() -> None:
    delivery = load_use_case("delivery")
    grants = CONFIG.model_copy(update={"use_case": "delivery"}).mlflow_grants()
    assert grants == (
        "delivery_time",
        [delivery.training_experiment, delivery.monitoring_experiment],
        [delivery.training_experiment],
    )
    own = CONFIG.model_copy(update={"mlflow": CONFIG.mlflow.model_copy(update={"model": "eta"})})
    assert own.mlflow_grants().model == "eta"


def test_mlflow_policies_admit_serving_trainer_init_and_airflow_only() -> None:
    policies = _policies()
    mlflow = policies[manifests.MLFLOW_NAME]["spec"]
    (rule,) = mlflow["ingress"]
    selected = [peer["podSelector"]["matchLabels"] for peer in rule["from"] if "podSelector" in peer]
    serving_labels = manifests.serving_deployment(CONFIG)["spec"]["template"]["metadata"]["labels"]
    trainer_labels = manifests.trainer_pod_template(CONFIG)["metadata"]["labels"]
    init_labels = manifests.mlflow_init_job(CONFIG)["spec"]["template"]["metadata"]["labels"]
    for pod in (serving_labels, trainer_labels, init_labels):
        assert any(sel.items() <= pod.items() for sel in selected)
    namespaces = [
        peer["namespaceSelector"]["matchLabels"] for peer in rule["from"] if "namespaceSelector" in peer
    ]
    assert namespaces == [
        {"kubernetes.io/metadata.name": CONFIG.trainer.launcher_service_accounts[0].namespace}
    ]
    assert {p["port"] for p in mlflow["egress"][0]["ports"]} == {443, 9000, 5432}
    init = policies[manifests.MLFLOW_INIT_NAME]["spec"]
    assert init["ingress"] == []
    (egress,) = init["egress"]
    assert egress["to"] == [{"podSelector": {"matchLabels": manifests._mlflow_selector()}}]
    # Serving and the trainer reach MLflow's port (their policies allow it by port).
    for name in (manifests.SERVING_NAME, "loopline-trainer"):
        assert CONFIG.mlflow.port in {p["port"] for p in policies[name]["spec"]["egress"][0]["ports"]}


def test_an_mlflow_of_your_own_leaves_out_the_server_and_its_policies() -> None:
    config = CONFIG.model_copy(update={"mlflow": CONFIG.mlflow.model_copy(update={"enabled": False})})
    groups = manifests.static_manifests(config)
    assert "mlflow" not in groups
    names = {p["metadata"]["name"] for p in groups["network-policies"]}
    assert not names & {manifests.MLFLOW_NAME, manifests.MLFLOW_INIT_NAME}


def test_the_prometheus_scrape_configs_send_the_key_to_the_serving_pods() -> None:
    deployment = manifests.serving_deployment(CONFIG)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    monitor = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus" / "serving-podmonitor.yaml").read_text())
    assert monitor["metadata"]["namespace"] == CONFIG.namespace
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"
    assert endpoint["authorization"]["credentials"] == {
        "name": CONFIG.serving.secrets.api_key,
        "key": manifests.API_KEY_CURRENT,
    }
    plain = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus" / "serving-scrape-config.yaml").read_text())
    (job,) = plain["scrape_configs"]
    assert job["authorization"]["credentials_file"].endswith(
        f"/{CONFIG.serving.secrets.api_key}/{manifests.API_KEY_CURRENT}"
    )
    assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == [CONFIG.namespace]
    keep = {r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"}
    assert pod_labels["app.kubernetes.io/name"] in keep and keep & port_names

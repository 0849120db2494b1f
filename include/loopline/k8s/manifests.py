"""Pure builders of the Kubernetes objects Loopline creates, as plain dicts (the API's camelCase).

No client library and no Airflow: the launcher turns the trainer parts into KubernetesPodOperator
arguments, ``loopline k8s manifests`` writes the rest as YAML for review and GitOps, and tests
validate every object against the Kubernetes schema.
"""

from __future__ import annotations

import copy
from typing import Any

from loopline.k8s.config import KubernetesConfig, Security

PART_OF = "loopline"
TRAINER_COMPONENT = "training"
SERVING_COMPONENT = "serving"
SERVING_NAME = "loopline-serving"
# The MLflow server (docker/mlflow, basic-auth app always on) and the Job that creates its users.
MLFLOW_COMPONENT = "tracking"
MLFLOW_NAME = "loopline-mlflow"
MLFLOW_INIT_NAME = "loopline-mlflow-init"
MLFLOW_WRAPPER = "/opt/loopline/loopline_mlflow.py"
# The serving API key (include/loopline/serving/config.py reads this variable; a test checks the name).
SERVING_API_KEY_ENV = "LOOPLINE_SERVING_API_KEY"
# Keys of the API-key Secret: what serving accepts (comma-separated while rotating: "new,old") and the one
# key clients and Prometheus send.
API_KEY_ACCEPTED, API_KEY_CURRENT = "accepted-keys", "api-key"
# Pod Security admission levels the namespace enforces (and warns/audits about) on every pod.
POD_SECURITY_LEVEL = "restricted"
# Airflow's Secrets (deploy/helm/airflow-values.yaml): its Feast variables (LOOPLINE_FEAST_REGISTRY_URL,
# LOOPLINE_FEAST_PG_*, LOOPLINE_FEAST_REDIS: see the top of feature_repo/<use case>/feature_store.production.yaml) with
# the Postgres role feast, and Loopline's own Postgres URLs with the role loopline: LOOPLINE_PREDICTION_LOG_URL
# (the canary and the drift monitor read the log) and LOOPLINE_HISTORY_URL (the decisions). Serving has its
# own credentials instead (serving.secrets.credentials: role serving, MLflow user serving).
FEAST_SECRET = "loopline-feast"
DATABASE_SECRET = "loopline-database"
# The Feast config the serving pods read (Postgres registry, Redis online store), relative to the use case's feature_repo/<use case>/.
FEAST_PRODUCTION_YAML = "feature_store.production.yaml"
# Where the serving pods keep scratch state: an emptyDir, as the root is read-only (predictions go to Postgres).
SERVING_STATE_DIR = "/var/lib/loopline"
# Egress the NetworkPolicies allow, by port (destinations live outside the namespace, often outside the
# cluster, so they cannot be selected by label): HTTPS, MLflow's port, MinIO; serving also Postgres
# (Feast's SQL registry) and Redis (Feast's online store).
OBJECT_STORE_AND_MLFLOW_PORTS = (443, 5000, 9000)
SERVING_EGRESS_PORTS = (*OBJECT_STORE_AND_MLFLOW_PORTS, 5432, 6379)
# Volume types the "restricted" Pod Security Standard allows.
_RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def labels(component: str, name: str) -> dict[str, str]:
    """The recommended ``app.kubernetes.io`` labels: what this is and that Loopline made it."""
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": PART_OF,
    }


def pod_security_context(security: Security) -> dict[str, Any]:
    """Pod-level part of the "restricted" standard: non-root numeric IDs and the runtime's seccomp profile."""
    return {
        "runAsNonRoot": True,
        "runAsUser": security.run_as_user,
        "runAsGroup": security.run_as_group,
        "fsGroup": security.fs_group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(security: Security, read_only_root: bool = False) -> dict[str, Any]:
    """Container-level part of "restricted", repeated per container so none relies on the pod default."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": read_only_root,
        "runAsNonRoot": True,
        "runAsUser": security.run_as_user,
        "runAsGroup": security.run_as_group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def secret_env_from(*secret_names: str) -> list[dict[str, Any]]:
    """Every key of each Secret as an environment variable: values never pass through Airflow or git."""
    return [{"secretRef": {"name": name}} for name in secret_names]


def trainer_labels() -> dict[str, str]:
    return labels(TRAINER_COMPONENT, "loopline-trainer")


def namespace(config: KubernetesConfig) -> dict[str, Any]:
    """The namespace, with Pod Security admission enforcing "restricted" on everything in it."""
    pss = {f"pod-security.kubernetes.io/{mode}": POD_SECURITY_LEVEL for mode in ("enforce", "audit", "warn")}
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": config.namespace, "labels": {**pss, "app.kubernetes.io/part-of": PART_OF}},
    }


def launcher_namespaces(config: KubernetesConfig) -> list[str]:
    """The namespaces of the accounts that launch training pods, other than Loopline's own (in order)."""
    found: list[str] = []
    for ref in config.trainer.launcher_service_accounts:
        if ref.namespace is not None and ref.namespace not in (config.namespace, *found):
            found.append(ref.namespace)
    return found


def airflow_namespaces(config: KubernetesConfig) -> list[dict[str, Any]]:
    """The namespace of the Airflow release that launches the training pods, unless it is Loopline's own.

    It enforces "baseline" and warns/audits "restricted": the official chart's pods are made restricted by
    deploy/helm/airflow-values.yaml, but a chart upgrade adding a container without a securityContext
    should show up as a warning, not as an Airflow that cannot start.
    """
    labels = {
        "pod-security.kubernetes.io/enforce": "baseline",
        "pod-security.kubernetes.io/audit": POD_SECURITY_LEVEL,
        "pod-security.kubernetes.io/warn": POD_SECURITY_LEVEL,
        "app.kubernetes.io/part-of": PART_OF,
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels)}}
        for name in launcher_namespaces(config)
    ]


# What launching a training pod with KubernetesPodOperator takes, in the training namespace only: create the
# pod, find it again (list by labels, get, watch), label it as checked (patch), follow its log, read the XCom
# sidecar's result with exec (create: POST and WebSocket exec alike on current API servers; get: older ones),
# log its events when it fails, and delete it when done. Nothing on any other kind of object.
LAUNCHER_RULES: tuple[dict[str, Any], ...] = (
    {
        "apiGroups": [""],
        "resources": ["pods"],
        "verbs": ["create", "get", "list", "watch", "patch", "delete"],
    },
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create", "get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
)
LAUNCHER_ROLE = "loopline-training-launcher"


def trainer_rbac(config: KubernetesConfig) -> list[dict[str, Any]]:
    """The training pod's ServiceAccount, and the Role that launches training pods with its binding.

    The training pod needs no API access: its account has no Role and no token mounted, so code in the pod
    cannot create or delete pods. The launcher Role is bound to the accounts that run KubernetesPodOperator:
    the Airflow worker (creates the pod, reads its result through the XCom sidecar with exec, deletes it)
    and the triggerer (the deferred operator watches the pod and reads its log and events from there).
    """
    trainer = config.trainer
    meta = {"namespace": config.namespace, "labels": trainer_labels()}
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": trainer.service_account, **meta},
        "automountServiceAccountToken": False,
    }
    launchers = trainer.launcher_service_accounts
    if not launchers:
        return [account]
    launcher_meta = {"namespace": config.namespace, "labels": labels(TRAINER_COMPONENT, LAUNCHER_ROLE)}
    subjects = [
        {"kind": "ServiceAccount", "name": ref.name, "namespace": ref.namespace or config.namespace}
        for ref in launchers
    ]
    return [
        account,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": LAUNCHER_ROLE, **launcher_meta},
            "rules": copy.deepcopy(list(LAUNCHER_RULES)),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": LAUNCHER_ROLE, **launcher_meta},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": LAUNCHER_ROLE},
            "subjects": subjects,
        },
    ]


def _serving_meta(config: KubernetesConfig) -> dict[str, Any]:
    return {
        "name": SERVING_NAME,
        "namespace": config.namespace,
        "labels": labels(SERVING_COMPONENT, SERVING_NAME),
    }


def _selector() -> dict[str, str]:
    return {"app.kubernetes.io/name": SERVING_NAME, "app.kubernetes.io/component": SERVING_COMPONENT}


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def secret_key_env(name: str, secret: str, key: str, optional: bool = False) -> dict[str, Any]:
    """One environment variable from one key of a Secret (the pod does not start without it unless optional)."""
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def serving_deployment(config: KubernetesConfig) -> dict[str, Any]:
    """The model server: probes on /readyz (model loaded) and /healthz (process alive), restricted.

    Configured like the compose service, with serving's own identities only (serving.secrets.credentials:
    MLflow user serving with READ on the model, Postgres role serving, Feast's production store) and the
    API key that /v1/predict and /metrics require; scratch state on an emptyDir (read-only root).

    Fresh features need what the Airflow tasks share: the curated store under ``storage_url``
    (``LOOPLINE_STORAGE_URL``, read with the read-only object-store credentials of serving's Secret) and the
    materialisation watermark (that Secret's ``LOOPLINE_STATE_DB_URL``, role serving: SELECT on the watermark
    only). Without ``storage_url`` they stay off, and serving logs which setting is missing.
    """
    serving = config.serving
    shared_files = (
        [{"name": "LOOPLINE_STORAGE_URL", "value": config.storage_url}] if config.storage_url else []
    )
    container = {
        "name": "serving",
        "image": serving.image,
        "imagePullPolicy": serving.image_pull_policy,
        # Listen on the pod IP (the settings default is loopback, right for the embedded mode only).
        "args": ["--host", "0.0.0.0", "--port", str(serving.port)],
        "ports": [{"name": "http", "containerPort": serving.port, "protocol": "TCP"}],
        "env": [
            {"name": "LOOPLINE_MODE", "value": "kubernetes"},
            {"name": "LOOPLINE_STATE_DIR", "value": SERVING_STATE_DIR},
            *shared_files,
            {"name": "FEAST_FS_YAML_FILE_PATH", "value": FEAST_PRODUCTION_YAML},
            {"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"},
            {"name": "DO_NOT_TRACK", "value": "true"},
            secret_key_env(SERVING_API_KEY_ENV, serving.secrets.api_key, API_KEY_ACCEPTED),
        ],
        "envFrom": secret_env_from(serving.secrets.credentials),
        "resources": serving.resources.as_dict(),
        # Loading a model from the registry takes seconds: readiness gates traffic, liveness restarts.
        "readinessProbe": _probe("/readyz", period=5, failures=3),
        "livenessProbe": _probe("/healthz", period=10, failures=3),
        "startupProbe": _probe("/healthz", period=5, failures=24),
        "securityContext": container_security_context(serving.security, read_only_root=True),
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "state", "mountPath": SERVING_STATE_DIR},
        ],
    }
    pod_meta = {
        "labels": labels(SERVING_COMPONENT, SERVING_NAME),
        # For a Prometheus that discovers pods by annotation (the Operator uses a PodMonitor instead);
        # /metrics needs the API key: deploy/prometheus/ has both scrape configs with it.
        "annotations": {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(serving.port),
            "prometheus.io/path": "/metrics",
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _serving_meta(config),
        "spec": {
            "replicas": serving.replicas,
            "selector": {"matchLabels": _selector()},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": pod_meta,
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security_context(serving.security),
                    # uvicorn drains in-flight requests for up to 10 s after SIGTERM.
                    "terminationGracePeriodSeconds": 30,
                    # Replicas on different nodes where possible: one node drain never takes all of them.
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": _selector()},
                        }
                    ],
                    "containers": [container],
                    "volumes": [
                        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                        {"name": "state", "emptyDir": {"sizeLimit": "1Gi"}},
                    ],
                },
            },
        },
    }


def serving_service(config: KubernetesConfig) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _serving_meta(config),
        "spec": {
            "type": "ClusterIP",
            "selector": _selector(),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def serving_hpa(config: KubernetesConfig) -> dict[str, Any]:
    serving = config.serving
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _serving_meta(config),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": SERVING_NAME},
            "minReplicas": serving.min_replicas,
            "maxReplicas": serving.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": serving.target_cpu_utilization,
                        },
                    },
                }
            ],
            # Scale up at once, down slowly: a replica loads and warms the model before it serves.
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": 300,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                }
            },
        },
    }


def serving_pdb(config: KubernetesConfig) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _serving_meta(config),
        "spec": {"minAvailable": config.serving.min_available, "selector": {"matchLabels": _selector()}},
    }


def _mlflow_selector() -> dict[str, str]:
    return {"app.kubernetes.io/name": MLFLOW_NAME, "app.kubernetes.io/component": MLFLOW_COMPONENT}


def _mlflow_init_selector() -> dict[str, str]:
    return {"app.kubernetes.io/name": MLFLOW_INIT_NAME, "app.kubernetes.io/component": MLFLOW_COMPONENT}


def mlflow_url(config: KubernetesConfig) -> str:
    """The MLflow Service's URL inside the cluster (LOOPLINE_MLFLOW_TRACKING_URI of every Secret)."""
    return f"http://{MLFLOW_NAME}.{config.namespace}.svc:{config.mlflow.port}"


def mlflow_allowed_hosts(config: KubernetesConfig) -> str:
    """Host headers MLflow accepts (it rejects others: DNS rebinding): its Service's names, localhost
    (kubectl port-forward) and ``mlflow.extra_allowed_hosts``."""
    service = [
        MLFLOW_NAME,
        f"{MLFLOW_NAME}.{config.namespace}",
        f"{MLFLOW_NAME}.{config.namespace}.svc",
        f"{MLFLOW_NAME}.{config.namespace}.svc.cluster.local",
        "localhost",
        "127.0.0.1",
    ]
    return ",".join(
        [h for host in service for h in (host, f"{host}:*")] + list(config.mlflow.extra_allowed_hosts)
    )


def _telemetry_off() -> list[dict[str, str]]:
    return [
        {"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"},
        {"name": "DO_NOT_TRACK", "value": "true"},
        {"name": "HOME", "value": "/tmp"},
    ]


# The object-store Secret's key for an S3-compatible endpoint (MinIO, ...; absent for AWS S3): Loopline's own
# setting, which the MLflow server reads as MLFLOW_S3_ENDPOINT_URL.
STORAGE_ENDPOINT_KEY = "LOOPLINE_STORAGE_ENDPOINT_URL"


def mlflow_deployment(config: KubernetesConfig) -> dict[str, Any]:
    """The MLflow server with its basic-auth app: every request but /health needs a login, a user sees only
    what it was granted. Nothing lives on the pod's disk: runs, the registry and users are in Postgres (role
    mlflow; the Secret's URLs are required keys, so a missing one stops the pod instead of MLflow falling back
    to a local file store), artifacts in the object store (``--artifacts-destination s3://...``, proxied by
    the server, at the endpoint of the object-store Secret)."""
    mlflow = config.mlflow
    server_secret = mlflow.secrets.server
    container = {
        "name": "mlflow",
        "image": mlflow.image,
        "imagePullPolicy": mlflow.image_pull_policy,
        "command": [
            "python",
            MLFLOW_WRAPPER,
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            str(mlflow.port),
            "--serve-artifacts",
            "--artifacts-destination",
            config.mlflow_artifacts_destination(),
            "--workers",
            str(mlflow.workers),
        ],
        "ports": [{"name": "http", "containerPort": mlflow.port, "protocol": "TCP"}],
        "env": [
            *_telemetry_off(),
            {"name": "MLFLOW_AUTH_CONFIG_PATH", "value": "/tmp/loopline-mlflow-auth.ini"},
            {"name": "MLFLOW_AUTH_ADMIN_USERNAME", "value": "admin"},
            {"name": "MLFLOW_SERVER_ALLOWED_HOSTS", "value": mlflow_allowed_hosts(config)},
            {"name": "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "value": "false"},
            secret_key_env("MLFLOW_BACKEND_STORE_URI", server_secret, "MLFLOW_BACKEND_STORE_URI"),
            secret_key_env("MLFLOW_AUTH_DATABASE_URI", server_secret, "MLFLOW_AUTH_DATABASE_URI"),
            secret_key_env(
                "MLFLOW_S3_ENDPOINT_URL",
                config.trainer.secrets.object_store,
                STORAGE_ENDPOINT_KEY,
                optional=True,
            ),
        ],
        # The server's own Secret (stores, CSRF secret, admin password) and the object store's credentials.
        "envFrom": secret_env_from(mlflow.secrets.server, config.trainer.secrets.object_store),
        "resources": mlflow.resources.as_dict(),
        "readinessProbe": _probe("/health", period=5, failures=3),
        "livenessProbe": _probe("/health", period=10, failures=3),
        # The first start migrates both databases.
        "startupProbe": _probe("/health", period=5, failures=60),
        "securityContext": container_security_context(mlflow.security, read_only_root=True),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    meta = {
        "name": MLFLOW_NAME,
        "namespace": config.namespace,
        "labels": labels(MLFLOW_COMPONENT, MLFLOW_NAME),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": mlflow.replicas,
            "selector": {"matchLabels": _mlflow_selector()},
            "template": {
                "metadata": {"labels": labels(MLFLOW_COMPONENT, MLFLOW_NAME)},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security_context(mlflow.security),
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
                },
            },
        },
    }


def mlflow_service(config: KubernetesConfig) -> dict[str, Any]:
    meta = {
        "name": MLFLOW_NAME,
        "namespace": config.namespace,
        "labels": labels(MLFLOW_COMPONENT, MLFLOW_NAME),
    }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": "ClusterIP",
            "selector": _mlflow_selector(),
            "ports": [{"name": "http", "port": config.mlflow.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def mlflow_init_job(config: KubernetesConfig) -> dict[str, Any]:
    """MLflow's users and permissions (docker/mlflow/loopline_mlflow.py init; idempotent): user loopline
    (the trainer's and Airflow's Secret) MANAGE on the model and EDIT on the experiments, user serving
    (serving's Secret) READ on the model and the training experiment. Each password is read from the Secret
    of whoever logs in with it, so there is one copy of each. Re-run it after a change: delete the Job,
    apply again."""
    mlflow = config.mlflow
    grants = config.mlflow_grants()
    container = {
        "name": "init",
        "image": mlflow.image,
        "imagePullPolicy": mlflow.image_pull_policy,
        "command": ["python", MLFLOW_WRAPPER, "init"],
        "env": [
            *_telemetry_off(),
            {"name": "MLFLOW_TRACKING_URI", "value": mlflow_url(config)},
            {"name": "MLFLOW_AUTH_ADMIN_USERNAME", "value": "admin"},
            secret_key_env("MLFLOW_AUTH_ADMIN_PASSWORD", mlflow.secrets.server, "MLFLOW_AUTH_ADMIN_PASSWORD"),
            secret_key_env(
                "MLFLOW_LOOPLINE_PASSWORD", config.trainer.secrets.mlflow, "MLFLOW_TRACKING_PASSWORD"
            ),
            secret_key_env(
                "MLFLOW_SERVING_PASSWORD", config.serving.secrets.credentials, "MLFLOW_TRACKING_PASSWORD"
            ),
            {"name": "LOOPLINE_MLFLOW_MODEL", "value": grants.model},
            {"name": "LOOPLINE_MLFLOW_EXPERIMENTS", "value": ",".join(grants.experiments)},
            {"name": "LOOPLINE_MLFLOW_SERVING_EXPERIMENTS", "value": ",".join(grants.serving_experiments)},
        ],
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"cpu": "500m", "memory": "512Mi"},
        },
        "securityContext": container_security_context(mlflow.security, read_only_root=True),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    meta = {
        "name": MLFLOW_INIT_NAME,
        "namespace": config.namespace,
        "labels": labels(MLFLOW_COMPONENT, MLFLOW_INIT_NAME),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            # The script waits for the server (up to 5 min) itself; retries cover a server restarting.
            "backoffLimit": 6,
            "activeDeadlineSeconds": 1800,
            "template": {
                "metadata": {"labels": labels(MLFLOW_COMPONENT, MLFLOW_INIT_NAME)},
                "spec": {
                    "restartPolicy": "OnFailure",
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security_context(mlflow.security),
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
                },
            },
        },
    }


def _network_policy(
    config: KubernetesConfig,
    name: str,
    pod_selector: dict[str, str],
    ingress: list[dict[str, Any]] | None,
    egress: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    types = [t for t, rules in (("Ingress", ingress), ("Egress", egress)) if rules is not None]
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": pod_selector} if pod_selector else {},
        "policyTypes": types,
    }
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name,
            "namespace": config.namespace,
            "labels": {"app.kubernetes.io/part-of": PART_OF},
        },
        "spec": spec,
    }


def _tcp_ports(ports: tuple[int, ...]) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def network_policies(config: KubernetesConfig) -> list[dict[str, Any]]:
    """Default deny in the namespace, then exactly the traffic Loopline's pods need.

    - every pod: DNS to kube-dns only;
    - serving: ingress on its HTTP port from any namespace (clients and Prometheus; narrow the
      ``from`` to your ingress controller's namespace if you have one), egress to MLflow, the object
      store, Postgres and Redis by port;
    - training pods: no ingress at all (KubernetesPodOperator reads logs and XCom through the API
      server, not the pod network), egress to MLflow and the object store by port;
    - MLflow: ingress on its port from serving, the training pods and the init Job, and from the Airflow
      release's namespace (tasks log runs and move aliases); egress to Postgres and the object store;
    - the MLflow init Job: no ingress, egress to the MLflow pods only.
    """
    trainer_selector = {
        key: trainer_labels()[key] for key in ("app.kubernetes.io/name", "app.kubernetes.io/component")
    }
    dns = {
        "to": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }
        ],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
    return [
        _network_policy(config, "loopline-default-deny", {}, ingress=[], egress=[]),
        _network_policy(config, "loopline-allow-dns", {}, ingress=None, egress=[dns]),
        _network_policy(
            config,
            SERVING_NAME,
            _selector(),
            ingress=[{"from": [{"namespaceSelector": {}}], "ports": [{"protocol": "TCP", "port": "http"}]}],
            egress=[{"ports": _tcp_ports(SERVING_EGRESS_PORTS)}],
        ),
        _network_policy(
            config,
            "loopline-trainer",
            trainer_selector,
            ingress=[],
            egress=[{"ports": _tcp_ports(OBJECT_STORE_AND_MLFLOW_PORTS)}],
        ),
        *(_mlflow_network_policies(config, trainer_selector) if config.mlflow.enabled else []),
    ]


def _mlflow_network_policies(
    config: KubernetesConfig, trainer_selector: dict[str, str]
) -> list[dict[str, Any]]:
    clients: list[dict[str, Any]] = [
        {"podSelector": {"matchLabels": selector}}
        for selector in (_selector(), trainer_selector, _mlflow_init_selector())
    ]
    clients.extend(
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}
        for name in launcher_namespaces(config)
    )
    return [
        _network_policy(
            config,
            MLFLOW_NAME,
            _mlflow_selector(),
            ingress=[{"from": clients, "ports": [{"protocol": "TCP", "port": "http"}]}],
            egress=[{"ports": _tcp_ports((443, 9000, 5432))}],
        ),
        _network_policy(
            config,
            MLFLOW_INIT_NAME,
            _mlflow_init_selector(),
            ingress=[],
            egress=[
                {
                    "to": [{"podSelector": {"matchLabels": _mlflow_selector()}}],
                    "ports": [{"protocol": "TCP", "port": config.mlflow.port}],
                }
            ],
        ),
    ]


def static_manifests(config: KubernetesConfig) -> dict[str, list[dict[str, Any]]]:
    """Every object except the training pod (rendered by Airflow), grouped by the file it is written to."""
    groups = {
        "namespace": [namespace(config), *airflow_namespaces(config)],
        "trainer-rbac": trainer_rbac(config),
        "serving": [
            serving_deployment(config),
            serving_service(config),
            serving_hpa(config),
            serving_pdb(config),
        ],
        "network-policies": network_policies(config),
    }
    if config.mlflow.enabled:
        groups["mlflow"] = [mlflow_deployment(config), mlflow_service(config), mlflow_init_job(config)]
    return groups


def _pod_spec_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj.get("kind") == "Pod":
        return obj.get("spec") or {}
    template = (obj.get("spec") or {}).get("template")
    return (template or {}).get("spec") if template else None


def restricted_violations(obj: dict[str, Any]) -> list[str]:
    """What in a Pod (or a workload's pod template) breaks the "restricted" Pod Security Standard.

    Mirrors the checks of Pod Security admission (policy version latest) that a manifest can fail;
    an empty list means the namespace label ``pod-security.kubernetes.io/enforce: restricted`` admits it.
    """
    spec = _pod_spec_of(obj)
    if spec is None:
        return []
    problems: list[str] = []
    pod_sc = spec.get("securityContext") or {}
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(host):
            problems.append(f"pod: {host} must not be true")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= _RESTRICTED_VOLUME_TYPES:
            problems.append(
                f"volume {volume.get('name')}: type {sorted(kinds - _RESTRICTED_VOLUME_TYPES)} is not allowed"
            )
    if pod_sc.get("runAsUser") == 0:
        problems.append("pod: runAsUser must not be 0")
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    for container in containers:
        name = f"container {container.get('name')}"
        sc = container.get("securityContext") or {}
        if sc.get("privileged"):
            problems.append(f"{name}: privileged must not be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{name}: capabilities.drop must include ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: capabilities.add may only contain NET_BIND_SERVICE")
        run_as_non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        if run_as_non_root is not True:
            problems.append(f"{name}: runAsNonRoot must be true (container or pod)")
        if sc.get("runAsUser") == 0:
            problems.append(f"{name}: runAsUser must not be 0")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(
                f"{name}: seccompProfile.type must be RuntimeDefault or Localhost (container or pod)"
            )
    return problems


# Where the trainer writes its result in the pod: the file KubernetesPodOperator's XCom sidecar reads.
POD_RESULT_JSON = "/airflow/xcom/return.json"


def trainer_pod_command(config: KubernetesConfig, training_set_uri: str, params: dict[str, Any]) -> list[str]:
    """The container command of a training pod: the local launcher's argv, run in the image.

    No ``--tracking-uri``: the pod reads ``LOOPLINE_MLFLOW_TRACKING_URI`` from the MLflow Secret. More
    than one GPU wraps the argv in ``torchrun`` (one DDP process per GPU).
    """
    from loopline.training import launch

    argv = launch.trainer_argv(
        training_set_uri, config.trainer.config_path, POD_RESULT_JSON, params, use_case=config.use_case
    )
    return launch.trainer_command(argv, config.trainer.gpus)


def trainer_pod_annotations() -> dict[str, str]:
    """Lineage on the pod (Jinja, rendered per task instance): which DAG run and try made it, and why."""
    return {
        "loopline.io/dag-id": "{{ dag.dag_id }}",
        "loopline.io/run-id": "{{ run_id }}",
        "loopline.io/try-number": "{{ ti.try_number }}",
        "loopline.io/reason": "{{ params.reason }}",
    }


def trainer_pod_template(config: KubernetesConfig) -> dict[str, Any]:
    """The Pod parts of a training pod that do not depend on the run, as the API's dict.

    The launcher turns it into KubernetesPodOperator arguments; container 0 is the trainer, container 1
    the XCom sidecar's security context and resources (KubernetesPodOperator adds the sidecar itself).
    """
    trainer = config.trainer
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "namespace": config.namespace,
            "labels": trainer_labels(),
            "annotations": trainer_pod_annotations(),
        },
        "spec": {
            "serviceAccountName": trainer.service_account,
            "automountServiceAccountToken": False,
            "nodeSelector": dict(trainer.node_selector),
            "tolerations": [t.as_dict() for t in trainer.tolerations],
            "securityContext": pod_security_context(trainer.security),
            "activeDeadlineSeconds": trainer.active_deadline_seconds,
            "containers": [
                {
                    "name": "base",
                    "image": trainer.image,
                    "imagePullPolicy": trainer.image_pull_policy,
                    "resources": trainer.container_resources(),
                    "envFrom": secret_env_from(trainer.secrets.mlflow, trainer.secrets.object_store),
                    "env": [
                        {"name": "LOOPLINE_MODE", "value": "kubernetes"},
                        {"name": "PYTHONUNBUFFERED", "value": "1"},
                    ],
                    "securityContext": container_security_context(trainer.security),
                },
                {
                    "name": "airflow-xcom-sidecar",
                    "resources": trainer.xcom_sidecar.resources.as_dict(),
                    "securityContext": container_security_context(trainer.security, read_only_root=True),
                },
            ],
        },
    }

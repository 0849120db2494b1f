"""The training task on Kubernetes: a KubernetesPodOperator that runs the trainer on a GPU node.

Imported only when ``LOOPLINE_TRAINING_BACKEND=kubernetes`` (the provider costs ~1 s to import).
Every setting comes from ``include/config/kubernetes.yaml`` through ``loopline.k8s``; this module only
translates it into operator arguments and computes the trainer argv per run.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator
from airflow.providers.cncf.kubernetes.utils.xcom_sidecar import PodDefaults
from airflow.sdk.exceptions import AirflowException
from kubernetes.client import models as k8s

from loopline.k8s.config import KubernetesConfig
from loopline.k8s.manifests import trainer_pod_command, trainer_pod_template
from loopline_airflow.run_conf import run_params, training_result


class TrainerPodOperator(KubernetesPodOperator):
    """KubernetesPodOperator whose container command is the trainer argv of this run.

    The argv is built at render time from the run's Params and the training-set URI in the upstream
    task's XCom, with the same ``trainer_argv`` the local launcher uses; it is set before the pod is
    built, so it shows in the rendered-template view and in ``build_pod_request_obj``.
    """

    def __init__(self, *, k8s_config: KubernetesConfig, training_set_task_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.k8s_config = k8s_config
        self.training_set_task_id = training_set_task_id

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        super().render_template_fields(context, jinja_env)
        training_set = context["ti"].xcom_pull(task_ids=self.training_set_task_id)
        if not isinstance(training_set, dict) or not training_set.get("uri"):
            raise AirflowException(
                f"{self.training_set_task_id} returned no training-set 'uri' ({training_set!r}): the pod "
                "can only read a training set published to the object store"
            )
        # Kept for the result: the same params (and reason) the argv was built from.
        self.run_params = run_params(context, training_set)
        command = trainer_pod_command(self.k8s_config, training_set["uri"], self.run_params)
        self.cmds, self.arguments = command[:1], command[1:]

    def build_pod_request_obj(self, context: Any = None, *, dry_run: bool = False) -> k8s.V1Pod:
        pod = super().build_pod_request_obj(context, dry_run=dry_run)
        # The provider sets the sidecar's resources from the connection only; quotas want them set.
        sidecar_resources = _template_pod(self.k8s_config).spec.containers[1].resources
        for container in pod.spec.containers:
            if container.name == PodDefaults.SIDECAR_CONTAINER_NAME and sidecar_resources is not None:
                container.resources = sidecar_resources
        return pod

    def execute(self, context: Any) -> Any:
        return self._with_reason(super().execute(context), context)

    def trigger_reentry(self, context: Any, event: dict[str, Any]) -> Any:
        return self._with_reason(super().trigger_reentry(context, event), context)

    def _with_reason(self, result: Any, context: Any) -> Any:
        # Deferred execute returns None (the pod runs on); the result comes with trigger_reentry.
        if not isinstance(result, dict):
            return result
        return training_result(result, getattr(self, "run_params", None) or run_params(context, None))


def _template_pod(config: KubernetesConfig) -> k8s.V1Pod:
    return PodGenerator.deserialize_model_dict(trainer_pod_template(config))


def trainer_pod_operator(
    config: KubernetesConfig, *, task_id: str, training_set_task_id: str, **kwargs: Any
) -> TrainerPodOperator:
    """The training task as a pod on a GPU node, configured from ``config`` (kubernetes.yaml + env)."""
    pod = _template_pod(config)
    trainer, sidecar = pod.spec.containers
    return TrainerPodOperator(
        task_id=task_id,
        k8s_config=config,
        training_set_task_id=training_set_task_id,
        name="loopline-train",  # + a random suffix per try
        namespace=config.namespace,
        image=trainer.image,
        image_pull_policy=trainer.image_pull_policy,
        service_account_name=pod.spec.service_account_name,
        automount_service_account_token=pod.spec.automount_service_account_token,
        container_resources=trainer.resources,
        node_selector=pod.spec.node_selector,
        tolerations=pod.spec.tolerations,
        security_context=pod.spec.security_context,
        container_security_context=trainer.security_context,
        xcom_sidecar_container_security_context=sidecar.security_context,
        env_vars=trainer.env,
        env_from=trainer.env_from,
        labels=pod.metadata.labels,
        annotations=pod.metadata.annotations,
        active_deadline_seconds=pod.spec.active_deadline_seconds,
        startup_timeout_seconds=config.trainer.startup_timeout_seconds,
        on_finish_action=config.trainer.on_finish_action,
        deferrable=True,
        do_xcom_push=True,
        get_logs=True,
        log_events_on_failure=True,
        **kwargs,
    )

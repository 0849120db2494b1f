"""
### Train a candidate fraud model

Runs weekly (Monday 03:00 UTC), whenever `loopline.retrain_requested` is emitted (drift, a person), or
when triggered over REST with validated parameters:

```
loopline trigger train_model --conf '{"epochs": 20, "learning_rate": 0.0005, "reason": "new labels"}' --wait
```

| task | does |
|---|---|
| `plan_windows` | the newest labelled days are held out for the gate: at least `holdout.days`, grown up to `holdout.max_days` until every fairness group can be judged (the use case's gate.yaml); training gets everything before |
| `build_training_set` | labelled transactions + point-in-time features of `fraud_detection_v1` → parquet + manifest (uploaded to the object store for a training pod) |
| `train_candidate` | `python -m loopline.training.train` on it → MLflow run + a new version of `fraud_detector`. `LOOPLINE_TRAINING_BACKEND=local` (default): a local process; `kubernetes`: the same argv in a GPU pod (KubernetesPodOperator, settings in `include/config/kubernetes.yaml`) |

| `build_holdout` | the planned held-out window (the same one training ended at) with the same point-in-time features |
| `gate_candidate` | the benchmark gate: quality vs the champion, fairness, latency, serving infra. Pass → alias `challenger` and asset `loopline.challenger`; fail → the version is tagged rejected and this task fails with the reasons. Either way it returns the verdict (decision, reasons, checks, metrics) as its `return_value` XCom |

One run at a time.
"""

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from loopline_airflow.assets import CHALLENGER, RETRAIN_REQUESTED, challenger_extra, trigger_reason
from loopline_airflow.defaults import START_DATE, default_args
from loopline_airflow.launchers import training_launcher
from loopline_airflow.run_conf import reject_unknown_conf, run_moment


def _run_reason(context) -> str:
    """Why this run trains: the reason of the asset event that started it (drift, a person), else the
    ``reason`` Param (its default says "scheduled")."""
    return trigger_reason(context) or context["params"]["reason"]


def _record_failure(context) -> None:
    """DAG-level failure callback: a run that never got to ``trained`` ends as ``training_failed`` in the
    history, so the drift monitor's "is training running?" never waits on a dead run."""
    from loopline.config import get_settings
    from loopline.lineage import history

    history.record_training_failed(
        get_settings(), context["run_id"], str(context.get("reason") or "a task failed")
    )


def _dataset_path(settings, run_id: str, kind: str):
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
    return settings.state.root / "training" / f"{safe}.{kind}.parquet"


@dag(
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 3 * * 1", timezone="UTC"), assets=RETRAIN_REQUESTED
    ),
    start_date=START_DATE,
    catchup=False,
    tags=["loopline", "training"],
    doc_md=__doc__,
    default_args=default_args(retries=1),
    max_active_runs=1,
    on_failure_callback=_record_failure,
    params={
        "epochs": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=500,
            description="Override the config's epochs (null: keep the use case's training policy)",
        ),
        "learning_rate": Param(
            None,
            type=["null", "number"],
            exclusiveMinimum=0,
            maximum=1,
            description="Override the config's learning rate",
        ),
        "hpo_trials": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            maximum=200,
            description="Optuna trials (null: the config's; 0: no search); the best trial's model is registered",
        ),
        "reason": Param(
            "scheduled",
            type="string",
            minLength=1,
            maxLength=500,
            description="Why this model is trained; recorded with the run",
        ),
    },
)
def train_model():
    @task(multiple_outputs=False)
    def plan_windows(**context) -> dict:
        """Split the labelled history: the newest days are the gate's holdout, the rest is for training."""
        from airflow.sdk.exceptions import AirflowSkipException

        from loopline.config import get_settings
        from loopline.gating.holdout import HoldoutError, plan_holdout
        from loopline.gating.policy import load_policy
        from loopline.lineage import history

        reject_unknown_conf(context)
        settings = get_settings()
        reason = _run_reason(context)
        labels_as_of = run_moment(context)  # the run's instant, not the wall clock: a re-run plans the same
        try:
            plan = plan_holdout(settings, load_policy(settings.policy_file("gate")), labels_as_of)
        except HoldoutError as exc:
            # Not an error of the platform: e.g. the weekly schedule's first run on a fresh install (Airflow
            # starts the latest missed cron run on un-pause) before any labelled data. Nothing to retry.
            history.record(
                settings,
                "training_failed",
                reason=f"nothing to train on: {exc}",
                dag_run_id=context["run_id"],
            )
            raise AirflowSkipException(f"nothing to train on yet: {exc}") from None
        history.record(settings, "training_started", reason=reason, dag_run_id=context["run_id"])
        windows = plan.windows
        print(
            f"train before {windows.train_end}, hold out [{windows.holdout_start}, {windows.holdout_end}): {plan.why}"
        )
        return {
            "labels_as_of": labels_as_of.isoformat(),
            "reason": reason,
            **{k: v.isoformat() for k, v in windows._asdict().items()},
        }

    @task(multiple_outputs=False)
    def build_training_set(windows: dict, **context) -> dict:
        from datetime import datetime

        from loopline.config import get_settings
        from loopline.features.training_sets import build_training_set as build
        from loopline.k8s.storage import publish_training_set

        settings = get_settings()
        manifest = build(
            settings,
            _dataset_path(settings, context["run_id"], "train"),
            end=datetime.fromisoformat(windows["train_end"]),
            labels_as_of=datetime.fromisoformat(windows["labels_as_of"]),
        )
        print(f"{manifest.rows} rows, {manifest.labelled_rows} labelled, {manifest.positive_rows} positive")
        # The reason rides along to the launcher, which records it with the MLflow run.
        return {
            **publish_training_set(settings, manifest.to_dict(), context["run_id"]),
            "reason": windows["reason"],
        }

    @task(multiple_outputs=False)
    def build_holdout(windows: dict, **context) -> dict:
        from datetime import datetime

        from loopline.config import get_settings
        from loopline.gating.holdout import Windows
        from loopline.gating.holdout import build_holdout as build
        from loopline.gating.policy import load_policy
        from loopline.storage.files import SharedFiles

        settings = get_settings()
        # The planned window, not a fresh plan: labels landing meanwhile must not move it past train_end.
        planned = Windows(*(datetime.fromisoformat(windows[k]) for k in Windows._fields))
        path = _dataset_path(settings, context["run_id"], "holdout")
        manifest = build(
            settings,
            load_policy(settings.policy_file("gate")),
            path,
            labels_as_of=datetime.fromisoformat(windows["labels_as_of"]),
            windows=planned,
        )
        print(f"holdout: {manifest.labelled_rows} labelled rows, {manifest.positive_rows} positive")
        # The gate may run on another worker: hand it a shared-storage URI (on one machine, the file itself).
        return {
            **manifest.to_dict(),
            "uri": SharedFiles.of(settings).put_dataset(path, "training", path.name),
        }

    @task(outlets=[CHALLENGER], multiple_outputs=False)
    def gate_candidate(trained: dict, holdout: dict, **context) -> dict:
        """Quality vs the champion, fairness, latency, infra: pass → alias challenger + asset event."""
        from airflow.sdk.exceptions import AirflowFailException

        from loopline.config import get_settings
        from loopline.gating.gate import DEFAULT_MODEL_NAME, run_gate
        from loopline.gating.verdict import verdict_summary
        from loopline.lineage import history

        settings = get_settings()
        history.record(
            settings,
            "trained",
            version=trained["version"],
            reason=trained.get("reason") or "",
            run_id=trained["run_id"],
            dag_run_id=context["run_id"],
            metrics=trained.get("metrics"),
        )
        verdict = run_gate(settings, trained["version"], holdout.get("uri") or holdout["path"])
        print(verdict.why)
        summary = verdict_summary(
            verdict, model_name=DEFAULT_MODEL_NAME, version=trained["version"], run_id=trained["run_id"]
        )
        if not verdict.passed:
            # No retry can change a verdict: fail now. The verdict is still this task's return_value XCom
            # (pushed before failing), so an API client reads the reasons without the log.
            context["ti"].xcom_push(key="return_value", value=summary)
            raise AirflowFailException(f"version {trained['version']} rejected by the gate: {verdict.why}")
        context["outlet_events"][CHALLENGER].extra = challenger_extra(trained)
        return summary

    windows = plan_windows()
    trained = training_launcher(build_training_set(windows), task_id="train_candidate")
    gate_candidate(trained.output, build_holdout(windows))


train_model()

"""
### Train a candidate fraud model

Runs weekly (Monday 03:00 UTC), whenever `loopline.retrain_requested` is emitted (drift, a person), or
when triggered over REST with validated parameters:

```
loopline trigger train_model --conf '{"epochs": 20, "learning_rate": 0.0005, "reason": "new labels"}' --wait
```

| task | does |
|---|---|
| `build_training_set` | labelled transactions + point-in-time features of `fraud_detection_v1` → parquet + manifest |
| `train_candidate` | `python -m loopline.training.train` on it (a local process here; the same argv in a GPU pod on Kubernetes) → MLflow run + a new version of `fraud_detector` |

One run at a time. The benchmark gate that decides whether the version may ever serve is the next stage.
"""

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from loopline_airflow.assets import RETRAIN_REQUESTED
from loopline_airflow.defaults import START_DATE, default_args


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
    params={
        "epochs": Param(None, type=["null", "integer"], minimum=1, maximum=500,
                        description="Override the config's epochs (null: keep include/config/training.yaml)"),
        "learning_rate": Param(None, type=["null", "number"], exclusiveMinimum=0, maximum=1,
                               description="Override the config's learning rate"),
        "reason": Param("scheduled", type="string", minLength=1, maxLength=500,
                        description="Why this model is trained; recorded with the run"),
    },
)
def train_model():
    @task(multiple_outputs=False)
    def build_training_set(**context) -> dict:
        from loopline.config import get_settings
        from loopline.features.store import build_training_set as build

        settings = get_settings()
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in context["run_id"])
        manifest = build(settings, settings.state.root / "training" / f"{safe}.parquet")
        print(f"{manifest.rows} rows, {manifest.labelled_rows} labelled, {manifest.fraud_rows} fraud")
        return manifest.to_dict()

    @task(multiple_outputs=False)
    def train_candidate(manifest: dict, **context) -> dict:
        from pathlib import Path

        from loopline.config import get_settings
        from loopline.training.launch import run_local, trainer_argv

        settings = get_settings()
        result_json = Path(manifest["path"]).with_suffix(".result.json")
        argv = trainer_argv(
            manifest["path"], str(settings.config_dir / "training.yaml"), str(result_json),
            dict(context["params"]), tracking_uri=settings.mlflow_uri,
        )
        result = run_local(argv, result_json)
        return {**result, "reason": context["params"]["reason"]}

    train_candidate(build_training_set())


train_model()

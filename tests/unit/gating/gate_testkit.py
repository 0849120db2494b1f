"""Helpers the gate tests import (a module of its own: several test folders have a ``conftest``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loopline.config import Settings

HERE = Path(__file__).resolve().parent
MODEL_NAME = "fraud_detector"


def register_altered(settings: Settings, base_version: str, mode: str, **kwargs: Any) -> str:
    """Register a new version that wraps the base version's trained bundle in ``gate_models.AlteredModel``."""
    import mlflow
    from gate_models import AlteredModel

    from loopline.platform.mlflow_util import use_experiment
    from loopline.training.pyfunc import BUNDLE_ARTIFACT, save_bundle, signature_for

    mlflow.set_registry_uri(settings.mlflow_uri)
    use_experiment("gate_tests", settings.mlflow_uri)
    base = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/{base_version}")
    specs = base.metadata.get_input_schema().inputs
    categorical = [s.name for s in specs if s.type.name == "string"]
    numeric = [s.name for s in specs if s.type.name != "string"]
    if kwargs.get("group_column"):  # the unfair model sees the group attribute
        categorical.append(kwargs["group_column"])
    bundle_dir = settings.state.root / "bundles" / f"{mode}-{base_version}"
    bundle_dir.mkdir(parents=True, exist_ok=True)
    path = save_bundle(base.unwrap_python_model().model, bundle_dir / "fraud_model.pkl")
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=AlteredModel(mode, **kwargs),
            artifacts={BUNDLE_ARTIFACT: str(path)},
            signature=signature_for(categorical, numeric),
            registered_model_name=MODEL_NAME,
            code_paths=[str(HERE / "gate_models.py")],
            pip_requirements=["mlflow"],
        )
    return str(info.registered_model_version)


def set_champion(settings: Settings, version: str | None) -> None:
    """Point the alias ``champion`` at ``version``, or remove it (None)."""
    from loopline.platform.mlflow_util import mlflow_client

    client = mlflow_client(settings.mlflow_uri)
    if version is None:
        try:
            client.delete_registered_model_alias(MODEL_NAME, "champion")
        except Exception:  # noqa: BLE001 - no alias to delete
            pass
    else:
        client.set_registered_model_alias(MODEL_NAME, "champion", version)

"""MLflow helpers shared by every stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

FEAST_HEADER_PLUGIN = "feast."  # module prefix of Feast's mlflow.request_header_provider entry point


def drop_feast_header_plugin() -> None:
    """Keep Feast's MLflow request-header plugin from loading with MLflow's REST client.

    Feast registers an ``mlflow.request_header_provider`` entry point that only adds a header inside its own
    MLflow data sources (which Loopline does not use), but loading it imports all of Feast: 5-10 s on the
    first MLflow REST call of every process that has no other use for Feast (canary and gate tasks,
    ``loopline status``, the UI plugin). MLflow reads the entry points once, when its header registry is first
    imported, so this must run before that; afterwards it changes nothing."""
    import mlflow.utils.plugins as plugins

    if getattr(plugins.get_entry_points, "_loopline", False):
        return
    original = plugins.get_entry_points

    def get_entry_points(group: str) -> Any:
        found = original(group)
        if group == "mlflow.request_header_provider":
            return [ep for ep in found if not ep.value.startswith(FEAST_HEADER_PLUGIN)]
        return found

    get_entry_points._loopline = True  # type: ignore[attr-defined]
    plugins.get_entry_points = get_entry_points


def use_experiment(name: str, tracking_uri: str) -> Any:
    """``mlflow.set_experiment`` that keeps artifacts beside a SQLite tracking DB.

    With a ``sqlite:///`` URI (tests, one-off runs without the server) MLflow would otherwise put
    artifacts in ``./mlruns`` of whatever directory the process runs in. Through a tracking server the
    server decides (``--artifacts-destination``), so nothing changes there.
    """
    drop_feast_header_plugin()
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    # Loopline keeps runs and the registry in one store; a registry URI left over from an earlier call
    # in this process (another store) would register the model somewhere else.
    mlflow.set_registry_uri(tracking_uri)
    if tracking_uri.startswith("sqlite:///") and mlflow.get_experiment_by_name(name) is None:
        root = Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts"
        mlflow.create_experiment(name, artifact_location=root.resolve().as_uri())
    return mlflow.set_experiment(name)


def mlflow_client(uri: str) -> Any:
    """An ``MlflowClient`` whose runs AND registry are at ``uri``.

    ``MlflowClient(tracking_uri=uri)`` alone is not enough: its registry is whatever ``mlflow.set_registry_uri``
    last set in this process (``use_experiment`` sets it), before ``uri``. A process that has touched two
    stores — a test session, a script comparing two worlds — would read another store's model versions.
    """
    drop_feast_header_plugin()
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)

"""``python -m loopline.serving --host 127.0.0.1 --port P [--model-uri URI]``: run the prediction service.

With ``--model-uri`` it serves exactly that model as the champion and never reads or writes registry
aliases; without it, it follows the registry (aliases champion/challenger, the traffic tag).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loopline.serving.engine import Engine


def build_parser(prog: str = "python -m loopline.serving") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="bind address (default: Loopline settings, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--model-uri",
        default=None,
        help="serve exactly this model (models:/<name>/3, runs:/..., a path) as the "
        "champion; default: follow the registry's aliases",
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="serving YAML (default include/config/serving.yaml)"
    )
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--fresh-features",
        choices=["on", "off"],
        default=None,
        help="override the config's fresh_features.enabled (off: a probe server, e.g. the gate's, "
        "whose requests are not real events)",
    )


def _drop_inherited_feast_metrics_dir() -> None:
    """Importing ``feast.metrics`` exports ``PROMETHEUS_MULTIPROC_DIR`` (a fresh ``feast_metrics_*`` temp dir)
    into its process's environment; a service started by such a process (the benchmark, a test, an Airflow
    task) inherits it, and prometheus_client then keeps every metric of this one-process service in mmap
    files: slower per update (measured: 4 % of the event loop at concurrency 32) and files left behind."""
    for name in ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR"):
        if Path(os.environ.get(name, "")).name.startswith("feast_metrics_"):
            del os.environ[name]


def serve(args: argparse.Namespace) -> int:
    _drop_inherited_feast_metrics_dir()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # The registry is polled every few seconds: MLflow's default retries (7, exponential backoff) would
    # keep one poll hanging for minutes while /readyz cannot say why.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    import torch
    import uvicorn

    from loopline.config import get_settings
    from loopline.serving import collector
    from loopline.serving.app import create_app
    from loopline.serving.config import ServingConfigError, load_serving_config
    from loopline.serving.registry import FixedModel, RegistryReconciler

    settings = get_settings()
    try:
        config = load_serving_config(args.config, settings.config_dir)
    except ServingConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.fresh_features is not None:
        config = config.model_copy(
            update={
                "fresh_features": config.fresh_features.model_copy(
                    update={"enabled": args.fresh_features == "on"}
                )
            }
        )
    if config.batching.mode == "threads":
        # The loop, scoring and log threads hand the GIL to each other per batch: the default 5 ms switch
        # interval makes each hand-off wait up to 5 ms (measured: half the throughput at concurrency 8).
        sys.setswitchinterval(0.0005)
    # Batches are a few rows: torch's intra-op threads cannot speed them up, and their workers spin between
    # batches (measured: a second thread at 60 % of a core at concurrency 32, taken from the event loop).
    torch.set_num_threads(1)
    collector.freeze_survivors_of_full_collections()
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.model_uri:

        def source(engine: Engine) -> FixedModel | RegistryReconciler:
            return FixedModel(engine, args.model_uri, settings, config)
    else:

        def source(engine: Engine) -> FixedModel | RegistryReconciler:
            return RegistryReconciler(engine, settings, config)

    app = create_app(settings, config, source_factory=source)
    # One worker: the engine batches concurrent requests itself; uvloop + httptools for cheap HTTP.
    uvicorn.run(
        app,
        host=args.host or settings.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=10,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return serve(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

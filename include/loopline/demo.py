"""``loopline demo``: the loop on embedded defaults, unattended, narrated as a timeline.

The stack starts, the smoke DAG proves every service, the use case's simulated world (``UseCase.simulator``
and its ``DemoPlan``: fraud's three weeks of card traffic plus one deliberately broken batch, delivery's two
weeks of orders) lands, the ingest DAG — started by the landing-zone watcher, not by this script —
publishes the good batches and quarantines the bad ones, the features DAG (scheduled by the ingest's asset
events) materialises them, the demo checks online against offline features, and ``train_model``
(triggered over REST) builds a point-in-time training set and holdout, trains the first model and gates it.
Then the loop closes: the first model becomes champion, live traffic drifts (the plan's ``live_drift``), the
drift monitor requests a retrain, the retrained model passes the gate and earns traffic through the canary.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from loopline.config import Settings
from loopline.config.use_case import DemoPlan, SimulationRequest, load_use_case

DEMO_SEED = 42


class DemoFailed(RuntimeError):
    """A step of the demo did not do what it should; the message says which and where to look."""


def wait_for_ingest(
    settings: Settings, expected: int, timeout: float, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Wait until the landing zone is empty and ``expected`` new batches are in the ledger."""
    from loopline.data.ingest import IngestLedger, landed_files

    ledger = IngestLedger.of(settings)
    before = len(ledger.history(limit=1_000_000))
    deadline = time.monotonic() + timeout
    logged = 0
    while time.monotonic() < deadline:
        history = ledger.history(limit=1_000_000)  # newest first
        new = history[: len(history) - before]
        for entry in reversed(new[: len(new) - logged]):
            log(f"          {entry['status']:<17} {entry['rows']:>6} rows  {entry['batch_id']}")
        logged = len(new)
        if logged >= expected and not landed_files(settings):
            return new
        time.sleep(1)
    raise DemoFailed(
        f"only {logged} of {expected} landed batches were ingested within {timeout:.0f} s; see the "
        f"ingest_landing runs in the Airflow UI and {settings.state.logs}"
    )


def run_demo(
    settings: Settings,
    trigger_and_follow: Callable[..., int],
    log: Callable[[str], None] = print,
    profile: str = "embedded",
) -> int:
    from loopline.platform import stack

    use_case = load_use_case(settings.use_case)
    simulator = use_case.load_simulator()
    plan = simulator.demo
    claim_state_dir(settings)
    if settings.canary_policy is None:
        # Canary steps that bake in seconds on the demo's clients (the stack's processes inherit it).
        settings = settings.model_copy(update={"canary_policy": settings.policy_file("canary.demo")})
    started = time.monotonic()

    def step(text: str) -> None:
        log(f"[{time.monotonic() - started:6.1f} s] {text}")

    step("starting the local stack" + (f" ({profile} profile)" if profile != "embedded" else ""))
    stack.up(settings, log=lambda line: log(f"          {line}"), profile=profile)
    # From here on this process is a client of the stack: with the distributed profile, of its Postgres,
    # object store, Redis and MLflow (nothing the tasks share is on this process's disk).
    settings = stack.use_running_profile(settings)
    # Every task of the distributed profile starts in a fresh process on a Celery worker and talks to
    # Postgres and the object store: the same steps take longer there.
    patience = PATIENCE.get(profile, 1)
    step("platform smoke test over the REST API")
    if trigger_and_follow("platform_smoke", {}, wait=True, timeout=600) != 0:
        raise DemoFailed("platform_smoke failed: a service is broken (see its task logs in the Airflow UI)")

    step(
        f"simulating {plan.days} days of the {use_case.name} world into the landing zone"
        + "".join(f", {name}={value}" for name, value in plan.options.items())
    )
    summary = simulator.write(
        # History up to yesterday: the traffic that follows is "now", continuous with it (the online
        # features' TTLs would otherwise null every aggregate of an entity last seen months ago).
        SimulationRequest(
            out=settings.state.landing,
            days=plan.days,
            start=date.today() - timedelta(days=plan.days),
            seed=DEMO_SEED,
            options=plan.options,
        )
    )
    files = int(summary["files"])
    for line in simulator.describe(summary).splitlines():
        log(f"          {line}")
    step(f"{files} files landed; the landing-zone watcher starts ingest_landing")
    entries = wait_for_ingest(settings, expected=files, timeout=300 * patience, log=log)
    quarantined = [e for e in entries if e["status"] == "quarantined"]
    check_quarantined(quarantined, summary["bad_files"])
    for entry in quarantined:
        log(f"          quarantined as it should be: report {entry['report'].replace('.json', '.html')}")
    step(f"ingest done: {len(entries) - len(quarantined)} batches published into {settings.state.curated}")

    step("waiting for materialize_features (scheduled by loopline.validated_batch) to load the online store")
    wait_for_features(settings, until=summary["end"], timeout=240 * patience)
    from loopline.features.skew import check_skew
    from loopline.features.training_sets import build_training_set

    skew = check_skew(settings, sample=100)
    step(
        f"training/serving skew: {skew.mismatches} mismatches in {skew.compared} entities x {skew.features} features"
    )
    if skew.mismatches:
        raise DemoFailed(f"online and offline features disagree: {skew.examples[:2]}")
    manifest = build_training_set(settings, settings.state.root / "training" / "demo_training_set.parquet")
    step(
        f"point-in-time training set: {manifest.rows:,} rows, {manifest.labelled_rows:,} labelled, "
        f"{len(manifest.features)} features of {manifest.feature_service} -> {manifest.path}"
    )

    trained_since = datetime.now(
        UTC
    )  # deploy_canary (asset-triggered) may start before train_model's --wait returns
    step("training the first model over REST: train_model (training set, holdout, trainer, benchmark gate)")
    conf = {"reason": "demo: first model", "epochs": plan.epochs}
    if trigger_and_follow("train_model", conf, wait=True, timeout=900 * patience) != 0:
        raise DemoFailed(f"train_model failed: {why_training_failed(settings)}")
    first = report_gate(settings, step, log)
    close_the_loop(settings, trigger_and_follow, step, log, first, trained_since, plan, patience)
    return 0


USE_CASE_MARKER = "use_case"  # in the state dir: the use case whose data it holds


def claim_state_dir(settings: Settings) -> None:
    """Mark the state dir as the configured use case's, or refuse one holding another use case's data
    (its ledger, features and registry would mix two worlds)."""
    marker = settings.state.root / USE_CASE_MARKER
    holder = marker.read_text().strip() if marker.is_file() else None
    if holder is not None and holder != settings.use_case:
        raise DemoFailed(
            f"the state dir {settings.state.root} holds the {holder!r} use case's data, not "
            f"{settings.use_case!r}'s: stop its stack and set LOOPLINE_STATE_DIR to another folder "
            f"(e.g. .loopline-{settings.use_case}), or remove {settings.state.root} for a full reset"
        )
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(settings.use_case + "\n")


def check_quarantined(quarantined: list[dict[str, Any]], bad_files: list[str]) -> None:
    """Exactly the batches the simulator wrote broken on purpose were quarantined (by file name)."""
    from pathlib import Path

    expected = sorted(Path(f).stem for f in bad_files)
    got = sorted(e["batch_id"] for e in quarantined)
    # A batch id is <kind>__<file stem>__<content hash> (loopline.data.ingest.batch_id_for).
    matched = len(got) == len(expected) and all(any(f"__{stem}__" in b for b in got) for stem in expected)
    if not matched:
        raise DemoFailed(f"expected exactly the broken batches {expected} to be quarantined, got {got}")


def close_the_loop(
    settings: Settings,
    trigger_and_follow: Callable[..., int],
    step: Callable[[str], None],
    log: Callable[[str], None],
    first: str,
    since: datetime,
    plan: DemoPlan,
    patience: float = 1,
) -> None:
    """Champion v1 serves → drift injected → detected → retrain → gate → canary → champion v2."""
    import asyncio

    from loopline.lineage import history
    from loopline.platform.stack import api_for
    from loopline.serving.traffic import load_events, replay, run_traffic

    api = api_for(settings)
    step("deploy_canary (scheduled by loopline.challenger): the first model has no champion to beat")
    wait_for_dag_run(api, "deploy_canary", since, timeout=300 * patience, log=log)
    champion = wait_for_champion(settings, first, timeout=180 * patience)
    step(f"champion v{champion} serves {settings.serving_base_url}: {DEMO_TRAFFIC_S} s of simulated traffic")
    # Recorded replays: the newest day at its own times, so only the injected drift differs from it.
    log(
        "          "
        + run_traffic(settings, DEMO_RPS, DEMO_TRAFFIC_S, batch=DEMO_BATCH, recorded=True).describe()
    )

    step(f"drift injected: {DEMO_TRAFFIC_S * 2} s of traffic with {plan.live_drift_description}")
    drifted = [plan.live_drift(tx) for tx in load_events(settings, recorded=True)]
    report = asyncio.run(
        replay(settings.serving_base_url, drifted, DEMO_RPS, DEMO_TRAFFIC_S * 2, batch=DEMO_BATCH)
    )
    log("          " + report.describe())

    since = datetime.now(UTC)
    step("monitor_drift over REST (it also runs hourly)")
    if trigger_and_follow("monitor_drift", {}, wait=True, timeout=600 * patience) != 0:
        raise DemoFailed("monitor_drift failed: see its task logs in the Airflow UI")
    checked = history.last(settings, {"drift_checked"})
    requested = history.last(settings, {"retrain_requested"}, since=since)
    log(f"          verdict: {checked.reason if checked else '?'}")
    if requested is None:
        raise DemoFailed(
            "the drift monitor did not request a retrain for the injected drift; see the report "
            f"in {settings.state.reports / 'drift'}"
        )
    step(f"retrain requested ({requested.reason}); train_model starts on loopline.retrain_requested")
    try:
        wait_for_dag_run(api, "train_model", since, timeout=900 * patience, log=log)
    except DemoFailed as failed:
        raise DemoFailed(f"{failed}; {why_training_failed(settings)}") from None
    second = report_gate(settings, step, log)

    step("deploy_canary: the challenger earns live traffic step by step while clients keep sending")
    with background_traffic(settings):
        wait_for_dag_run(api, "deploy_canary", since, timeout=600 * patience, log=log)
    champion = wait_for_champion(settings, second, timeout=120 * patience)
    step(f"champion v{champion} serves; v1 stays as previous_champion for a one-step rollback")


PATIENCE = {"distributed": 4}  # how much longer each wait may take than on the embedded profile
DEMO_RPS = 20
DEMO_BATCH = 5  # events per request: the drift check needs >= 1000 predictions in its window
DEMO_TRAFFIC_S = 10


def wait_for_dag_run(
    api: Any, dag_id: str, since: datetime, timeout: float, log: Callable[[str], None]
) -> str:
    """Wait for the first run of ``dag_id`` started after ``since`` (asset-triggered) to finish."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [r for r in api.dag_runs(dag_id, limit=10) if r["start_date"] and r["start_date"] >= since]
        if runs:
            run_id: str = runs[-1]["run_id"]  # newest first: the last is the first after `since`
            result = api.wait(dag_id, run_id, timeout=max(1.0, deadline - time.monotonic()))
            log(
                f"          {dag_id} {run_id}: {result.state}  "
                + "  ".join(f"{t}={s}" for t, s in sorted(result.task_states.items()))
            )
            if not result.succeeded:
                raise DemoFailed(
                    f"{dag_id} run {run_id} ended {result.state}: see its task logs in the Airflow UI"
                )
            return run_id
        time.sleep(1)
    raise DemoFailed(f"no {dag_id} run started within {timeout:.0f} s of {since.isoformat()}")


def wait_for_champion(settings: Settings, version: str, timeout: float) -> str:
    """Until the registry's champion is ``version`` and the prediction service answers with it."""
    import httpx

    from loopline.status import loop_state

    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = (loop_state(settings)["champion"] or {}).get("version")
        if seen == version:
            try:
                ready = httpx.get(f"{settings.serving_base_url}/readyz", timeout=5)
                serving = ((ready.json().get("deployment") or {}).get("champion") or {}).get("version")
                if ready.status_code == 200 and str(serving) == version:
                    return version
            except httpx.HTTPError:
                pass
        time.sleep(1)
    raise DemoFailed(
        f"champion is v{seen}, not v{version}, or the prediction service did not load it within "
        f"{timeout:.0f} s (see {settings.state.logs / 'serving.log'})"
    )


class background_traffic:
    """Simulated clients at ``DEMO_RPS`` in a thread until the block ends (the canary bakes on them)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __enter__(self) -> background_traffic:
        import threading

        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        from loopline.serving.traffic import run_traffic

        while not self.stop.is_set():
            run_traffic(self.settings, DEMO_RPS, 5, batch=DEMO_BATCH, recorded=True)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def report_gate(settings: Settings, step: Callable[[str], None], log: Callable[[str], None]) -> str:
    """Narrate the newest version's gate verdict and where its model card is; returns that version."""
    from loopline.status import loop_state

    state = loop_state(settings)
    if not state["versions"]:
        raise DemoFailed(
            f"train_model succeeded but no version of {state['model_name']} is registered "
            f"({state.get('registry_error', 'see the train_candidate log')})"
        )
    newest = state["versions"][-1]
    gate = newest["gate"] or {}
    checks = "  ".join(f"{name} {'ok' if ok else 'FAILED'}" for name, ok in gate.get("checks", {}).items())
    step(f"{state['model_name']} v{newest['version']} passed the benchmark gate: {checks}")
    log(
        f"          aliases of v{newest['version']}: {', '.join(newest['aliases']) or 'none'}; "
        f"model card {newest.get('model_card_path') or newest.get('model_card')}"
    )
    if not gate.get("passed"):
        raise DemoFailed(f"v{newest['version']} was rejected by the gate: {gate.get('rejected_reasons')}")
    version: str = newest["version"]
    return version


def why_training_failed(settings: Settings) -> str:
    """The newest version's gate reasons when the gate rejected it, else where to look: a failed
    train_model run says why without a trip to the Airflow UI."""
    from loopline.status import loop_state

    try:
        versions = loop_state(settings)["versions"]
    except Exception as error:  # the registry itself may be what failed
        return f"the registry could not be read ({error}); see the task logs in the Airflow UI"
    gate = (versions[-1]["gate"] or {}) if versions else {}
    if gate and not gate.get("passed"):
        checks = ", ".join(name for name, ok in gate.get("checks", {}).items() if not ok)
        return (
            f"the gate rejected v{versions[-1]['version']} ({checks or 'no check passed'}): "
            f"{gate.get('rejected_reasons')}; report {gate.get('report')}"
        )
    return "see its task logs in the Airflow UI (no gate verdict was recorded for a new version)"


def wait_for_features(settings: Settings, until: str, timeout: float) -> None:
    """Wait until the online store is materialised through the last simulated day."""
    from loopline.features.watermark import materialized_until

    needed = datetime.fromisoformat(until).replace(tzinfo=UTC) + timedelta(days=1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = materialized_until(settings)
        if done is not None and done >= needed:
            return
        time.sleep(1)
    raise DemoFailed(
        f"features were not materialised through {until} within {timeout:.0f} s; see the "
        "materialize_features runs in the Airflow UI"
    )

"""``loopline demo``: the loop on embedded defaults, unattended, narrated as a timeline.

Today the loop reaches from the platform to the benchmark gate: the stack starts, the smoke DAG proves
every service, three weeks of simulated card traffic (plus one deliberately broken batch) land, the
ingest DAG — started by the landing-zone watcher, not by this script — publishes the good batches and
quarantines the bad one, the features DAG (scheduled by the ingest's asset events) materialises them,
the demo checks online against offline features, and ``train_model`` (triggered over REST) builds a
point-in-time training set and holdout, trains the first model and gates it, which makes it the
``challenger``. Later stages extend this script, not replace it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, date

from loopline.config import Settings

# Labels of genuine transactions mature after 7 days: three weeks leave two weeks of labelled history,
# the newest days of which are the gate's holdout.
DEMO_DAYS = 21
DEMO_CUSTOMERS = 1000
DEMO_BAD_KIND = "duplicate_ids"
DEMO_EPOCHS = 8  # enough for a model that clears the gate on this data, in well under a minute


class DemoFailed(RuntimeError):
    """A step of the demo did not do what it should; the message says which and where to look."""


def wait_for_ingest(settings: Settings, expected: int, timeout: float, log: Callable[[str], None]) -> list[dict]:
    """Wait until the landing zone is empty and ``expected`` new batches are in the ledger."""
    from loopline.data.ingest import IngestLedger, landed_files

    ledger = IngestLedger(settings.state.ingest_ledger)
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


def run_demo(settings: Settings, trigger_and_follow: Callable[..., int], log: Callable[[str], None] = print) -> int:
    from loopline.data.simulator import SimulationConfig, write_run
    from loopline.platform import stack

    started = time.monotonic()

    def step(text: str) -> None:
        log(f"[{time.monotonic() - started:6.1f} s] {text}")

    step("starting the local stack")
    stack.up(settings, log=lambda line: log(f"          {line}"))
    step("platform smoke test over the REST API")
    if trigger_and_follow("platform_smoke", {}, wait=True, timeout=600) != 0:
        raise DemoFailed("platform_smoke failed: a service is broken (see its task logs in the Airflow UI)")

    step(f"simulating {DEMO_DAYS} days of card traffic into the landing zone (+ one '{DEMO_BAD_KIND}' batch)")
    summary = write_run(
        SimulationConfig(days=DEMO_DAYS, start=date(2026, 1, 1), n_customers=DEMO_CUSTOMERS),
        settings.state.landing,
        bad=DEMO_BAD_KIND,
    )
    files = len(summary["transaction_files"]) + summary["label_files"] + 1
    step(f"{summary['transactions']:,} transactions (fraud rate {summary['fraud_rate']:.2%}) in {files} files; "
         "the landing-zone watcher starts ingest_landing")
    entries = wait_for_ingest(settings, expected=files, timeout=300, log=log)
    quarantined = [e for e in entries if e["status"] == "quarantined"]
    bad = {e["batch_id"] for e in entries if "_bad-" in e["batch_id"]}
    if {e["batch_id"] for e in quarantined} != bad or len(bad) != 1:
        raise DemoFailed(
            f"expected exactly the '{DEMO_BAD_KIND}' batch to be quarantined, got "
            f"{sorted(e['batch_id'] for e in quarantined)}"
        )
    for entry in quarantined:
        log(f"          quarantined as it should be: report {entry['report'].replace('.json', '.html')}")
    step(f"ingest done: {len(entries) - len(quarantined)} batches published into {settings.state.curated}")

    step("waiting for materialize_features (scheduled by loopline.validated_batch) to load the online store")
    wait_for_features(settings, until=summary["end"], timeout=240)
    from loopline.features.store import build_training_set, check_skew

    skew = check_skew(settings, sample=100)
    step(f"training/serving skew: {skew.mismatches} mismatches in {skew.compared} entities x {skew.features} features")
    if skew.mismatches:
        raise DemoFailed(f"online and offline features disagree: {skew.examples[:2]}")
    manifest = build_training_set(settings, settings.state.root / "training" / "demo_training_set.parquet")
    step(f"point-in-time training set: {manifest.rows:,} rows, {manifest.labelled_rows:,} labelled, "
         f"{len(manifest.features)} features of {manifest.feature_service} -> {manifest.path}")

    step("training the first model over REST: train_model (training set, holdout, trainer, benchmark gate)")
    conf = {"reason": "demo: first model", "epochs": DEMO_EPOCHS}
    if trigger_and_follow("train_model", conf, wait=True, timeout=900) != 0:
        raise DemoFailed("train_model failed: see its task logs in the Airflow UI (gate_candidate says why "
                         "a model was rejected)")
    report_gate(settings, step, log)
    return 0


def report_gate(settings: Settings, step: Callable[[str], None], log: Callable[[str], None]) -> None:
    """Narrate the newest version's gate verdict and where its model card is."""
    from loopline.lineage.state import loop_state

    state = loop_state(settings)
    if not state["versions"]:
        raise DemoFailed(f"train_model succeeded but no version of {state['model_name']} is registered "
                         f"({state.get('registry_error', 'see the train_candidate log')})")
    newest = state["versions"][-1]
    gate = newest["gate"] or {}
    checks = "  ".join(f"{name} {'ok' if ok else 'FAILED'}" for name, ok in gate.get("checks", {}).items())
    step(f"{state['model_name']} v{newest['version']} passed the benchmark gate: {checks}")
    log(f"          alias challenger -> v{(state['challenger'] or {}).get('version')}; "
        f"model card {newest.get('model_card_path') or newest.get('model_card')}")


def wait_for_features(settings: Settings, until: str, timeout: float) -> None:
    """Wait until the online store is materialised through the last simulated day."""
    from datetime import datetime, timedelta

    from loopline.features.store import materialized_until

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

"""The "Model loop" page: the loop state as one small, self-contained HTML page for people.

Pure: ``render_page(state, links)`` reads only its arguments, so tests render any state without a
stack. No scripts, fonts or styles from elsewhere (the machine may be offline); the page refreshes
itself every ``REFRESH_SECONDS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

REFRESH_SECONDS = 30

CANARY_KINDS = ("canary_started", "traffic_shifted", "promoted", "rolled_back")
DRIFT_KINDS = ("drift_checked", "retrain_requested", "retrain_suppressed", "served_features_skew")
# The drift check's served-features result (monitoring.served_check), carried by its drift_checked event.
SERVED_KEY = "served_features"
# The drift monitor's share of drifted features, as its drift_checked events carry it (plotted over time).
# The producer is loopline.monitoring.monitor.record_decision; tests/unit/ui renders events it wrote.
DRIFT_SHARE_KEY = "drifted_share"
# Events that name their DAG run (``dag_run_id``) without its DAG (the training failure callback's, and
# events recorded before ``history.record`` added the task's ``dag_id``): the one DAG that records them.
RECORDED_BY_DAG = {
    "training_started": "train_model",
    "trained": "train_model",
    "training_failed": "train_model",
}
GATE_KINDS = ("gate_passed", "gate_rejected")
# Details shown elsewhere on the page (links, the served-features section), never in the details column.
LINKED_DETAILS = frozenset(
    {"report", "dag_id", "dag_run_id", "run_id", "mlflow_run_id", SERVED_KEY, "examples"}
)
MAX_ITEMS = 12  # list or mapping items shown in a details cell before "… (+N more)"
MAX_TEXT = 300  # characters of one string value in a details cell
# A nested result with one of these (a canary verdict's "why") is shown as that sentence; the full
# structure stays in its report, the registry tags and the JSON.
SENTENCE_KEYS = ("why", "summary")
# The DAGs whose runs the page links to (Airflow UI paths are relative to the page at /loopline/).
DEFAULT_DAGS = ("train_model", "ingest_landing", "materialize_features", "platform_smoke")

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.2rem 2rem;color:#1d2430;background:#fff}
h1{font-size:1.35rem;margin:0 0 .2rem}h2{font-size:1.05rem;margin:1.6rem 0 .5rem;border-bottom:1px solid #dde}
.muted{color:#667}.cards{display:flex;gap:1rem;flex-wrap:wrap}
.card{border:1px solid #dde;border-radius:6px;padding:.7rem 1rem;min-width:15rem}
.card .big{font-size:1.6rem;font-weight:600}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #eef;vertical-align:top}
th{background:#f5f6fa;font-weight:600}.pass{color:#17803d;font-weight:600}.fail{color:#b42318;font-weight:600}
.bar{background:#eef;border-radius:3px;height:.6rem;width:12rem}.bar>span{display:block;height:100%;background:#3d6fd9;border-radius:3px}
.error{background:#fef3f2;border:1px solid #fda29b;padding:.5rem .8rem;border-radius:6px}
code{font-size:12px}a{color:#2c5cc5}.details div{margin:0 0 .1rem}.details .k{color:#445}
td.at,td.links a{white-space:nowrap}td.links a{display:block}
.chart text{font-size:11px;fill:#667}.chart .grid{stroke:#dde;stroke-width:1}
"""


def lexical_report_file(path: str) -> str | None:
    """Without a file system to ask: a path with a file suffix is the file; a directory (the drift monitor
    records its report directory) cannot be linked, since the route serves files only."""
    return path if Path(path).suffix else None


@dataclass(frozen=True)
class PageLinks:
    """Where the page's links point. ``mlflow_url`` is the MLflow tracking URI; only an http(s) one is a UI
    a browser can open (else every MLflow link is left out). ``airflow_prefix`` is the Airflow UI relative to
    the page; ``state_roots`` maps a URL area under ``files_prefix`` to the state directory it serves
    (reports, quarantine). ``report_file`` turns an event's ``report`` (a file or a report directory) into
    the file to link, or None; ``event_runs`` maps a history event id to the Airflow run that recorded it
    (``dag_id``, ``run_id``) where the event does not say so itself (see ``ui.runs``)."""

    mlflow_url: str
    airflow_prefix: str = ".."
    files_prefix: str = "files"
    state_roots: tuple[tuple[str, str], ...] = ()
    dags: tuple[str, ...] = DEFAULT_DAGS
    report_file: Callable[[str], str | None] = lexical_report_file
    event_runs: Mapping[int, tuple[str, str]] = field(default_factory=dict)

    @property
    def mlflow_ui(self) -> str | None:
        url = (self.mlflow_url or "").rstrip("/")
        return url if url.startswith(("http://", "https://")) else None

    def mlflow_run(self, run_id: str | None) -> str | None:
        # MLflow's UI resolves a bare run id to its experiment itself (route /runs/:runUuid).
        return f"{self.mlflow_ui}/#/runs/{quote(run_id)}" if run_id and self.mlflow_ui else None

    def mlflow_version(self, model_name: str, version: str) -> str | None:
        if not self.mlflow_ui:
            return None
        return f"{self.mlflow_ui}/#/models/{quote(model_name)}/versions/{quote(str(version))}"

    def mlflow_artifact(self, uri: str | None) -> str | None:
        """``runs:/<run>/<path>`` (how the gate tags its model card) → the run's page (Artifacts tab)."""
        if not uri or not uri.startswith("runs:/"):
            return None
        run_id = uri[len("runs:/") :].partition("/")[0]
        return self.mlflow_run(run_id)

    def dag_runs(self, dag_id: str) -> str:
        return f"{self.airflow_prefix}/dags/{quote(dag_id)}/runs"

    def dag_run(self, dag_id: str, run_id: str) -> str:
        # The Airflow 3 UI's route for one DAG run: dags/:dagId/runs/:runId.
        return f"{self.airflow_prefix}/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}"

    def state_file(self, path: str | None) -> str | None:
        """A file under one of the served state directories → its URL on this app; else None."""
        return state_file_href(path, self.state_roots, self.files_prefix)


def state_file_href(
    path: str | None, roots: tuple[tuple[str, str], ...], prefix: str = "files"
) -> str | None:
    """``<root>/a/b.html`` → ``<prefix>/<area>/a/b.html`` for the first root that holds ``path``.

    Lexical (no file system access): the serving route re-checks the resolved path.
    """
    if not path:
        return None
    candidate = Path(path)
    for area, root in roots:
        try:
            relative = candidate.relative_to(root)
        except ValueError:
            continue
        if ".." in relative.parts or not relative.parts:
            return None
        return f"{prefix}/{area}/" + "/".join(quote(part) for part in relative.parts)
    return None


def _a(href: str | None, text: str) -> str:
    return f'<a href="{escape(href)}">{escape(text)}</a>' if href else escape(text)


def _link(href: str | None, text: str) -> str:
    """A link, or nothing at all when there is no target (no dead "MLflow run" text)."""
    return _a(href, text) if href else ""


def _pct(share: float) -> str:
    return f"{share * 100:.1f}".rstrip("0").rstrip(".") + " %"


def _serving(state: dict[str, Any], links: PageLinks) -> str:
    name = state.get("model_name", "")
    champion, challenger = state.get("champion"), state.get("challenger")
    cards = []
    if champion:
        share = 1.0 - float((challenger or {}).get("traffic", 0.0))
        cards.append(
            f'<div class="card" id="champion"><div class="muted">champion</div>'
            f'<div class="big">version {_a(links.mlflow_version(name, champion["version"]), champion["version"])}</div>'
            f"<div>traffic {_pct(share)}</div><div>{_link(links.mlflow_run(champion.get('run_id')), 'MLflow run')}</div></div>"
        )
    else:
        cards.append(
            '<div class="card" id="champion"><div class="muted">champion</div>'
            '<div class="big">none yet</div><div>no version holds the alias <code>champion</code></div></div>'
        )
    if challenger:
        share = float(challenger.get("traffic", 0.0))
        cards.append(
            f'<div class="card" id="challenger"><div class="muted">challenger (canary)</div>'
            f'<div class="big">version {_a(links.mlflow_version(name, challenger["version"]), challenger["version"])}</div>'
            f'<div>traffic {_pct(share)} <div class="bar"><span style="width:{min(max(share, 0.0), 1.0) * 100:.1f}%">'
            f"</span></div></div><div>{_link(links.mlflow_run(challenger.get('run_id')), 'MLflow run')}</div></div>"
        )
    else:
        cards.append(
            '<div class="card" id="challenger"><div class="muted">challenger (canary)</div>'
            '<div class="big">none</div><div>no canary running</div></div>'
        )
    return '<div class="cards">' + "".join(cards) + "</div>"


def _verdict(gate: dict[str, Any] | None) -> str:
    if gate is None:
        return '<span class="muted">not gated</span>'
    return '<span class="pass">passed</span>' if gate.get("passed") else '<span class="fail">rejected</span>'


def _checks(gate: dict[str, Any] | None) -> str:
    if not gate or not gate.get("checks"):
        return ""
    return " ".join(
        f'<span class="{"pass" if ok else "fail"}">{"✓" if ok else "✗"} {escape(str(name))}</span>'
        for name, ok in gate["checks"].items()
    )


def _versions(state: dict[str, Any], links: PageLinks) -> str:
    versions = sorted(state.get("versions") or [], key=lambda v: int(v["version"]), reverse=True)
    if not versions:
        return '<p class="muted">No model version registered yet.</p>'
    name = state.get("model_name", "")
    rows = []
    for v in versions:
        gate = v.get("gate")
        card = links.state_file(v.get("model_card_path")) or links.mlflow_artifact(v.get("model_card"))
        report = links.mlflow_artifact((gate or {}).get("report"))
        rows.append(
            f'<tr id="version-{escape(v["version"])}"><td>{_a(links.mlflow_version(name, v["version"]), v["version"])}</td>'
            f"<td>{escape(', '.join(v.get('aliases') or []))}</td><td>{_verdict(gate)}</td><td>{_checks(gate)}</td>"
            f"<td>{escape((gate or {}).get('rejected_reasons') or '')}</td>"
            f"<td>{_a(card, 'model card') if card else ''} {_a(report, 'gate report') if report else ''}</td>"
            f"<td>{_link(links.mlflow_run(v.get('run_id')), 'run')}</td></tr>"
        )
    return (
        "<table><tr><th>version</th><th>aliases</th><th>gate</th><th>checks</th><th>reasons</th>"
        "<th>reports</th><th>MLflow</th></tr>" + "".join(rows) + "</table>"
    )


def airflow_run_of(event: dict[str, Any], links: PageLinks) -> tuple[str, str] | None:
    """(dag_id, run_id) of the Airflow run that recorded ``event``: named in its details (``dag_run_id``,
    with ``dag_id`` or the one DAG that records its kind), else as ``links.event_runs`` found it."""
    details = event.get("details") or {}
    dag_id = details.get("dag_id") or RECORDED_BY_DAG.get(str(event.get("kind")))
    if dag_id and details.get("dag_run_id"):
        return str(dag_id), str(details["dag_run_id"])
    found = links.event_runs.get(event.get("id")) if event.get("id") is not None else None
    return (str(found[0]), str(found[1])) if found else None


def mlflow_run_of(event: dict[str, Any], run_of_version: Mapping[str, str]) -> str | None:
    """The MLflow run of ``event``: its own (``run_id`` of a trained model, ``mlflow_run_id`` of a drift
    check), or for a gate verdict the candidate's run, which holds the gate report and model card."""
    details = event.get("details") or {}
    own = details.get("run_id") or details.get("mlflow_run_id")
    if own:
        return str(own)
    if event.get("kind") in GATE_KINDS and event.get("version") is not None:
        return run_of_version.get(str(event["version"]))
    return None


def _report_label(path: str) -> str:
    suffix = Path(path).suffix
    return "report" if suffix in (".html", ".htm") else "model card" if suffix == ".md" else "report (JSON)"


def _event_links(event: dict[str, Any], links: PageLinks, run_of_version: Mapping[str, str]) -> str:
    details = event.get("details") or {}
    out = []
    report = details.get("report")
    target = links.report_file(str(report)) if isinstance(report, str) and report else None
    href = links.state_file(target)
    if href and target:
        out.append(_a(href, _report_label(target)))
    run = airflow_run_of(event, links)
    if run:
        out.append(_a(links.dag_run(*run), "Airflow run"))
    mlflow = links.mlflow_run(mlflow_run_of(event, run_of_version))
    if mlflow:
        out.append(_a(mlflow, "MLflow run"))
    return "".join(out)


# --- details as text ----------------------------------------------------------------------------------


def _is_share(key: str) -> bool:
    return key.endswith(("share", "_rate")) or key in ("traffic", "rate")


def _number(value: float, key: str = "") -> str:
    """Rounded for people: shares and rates as percentages, whole numbers with separators, else 3-4
    significant digits."""
    if not math.isfinite(value):
        return "n/a"
    if _is_share(key) and 0.0 <= value <= 1.0:
        return _pct(value)
    if value.is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def _timestamp(text: str) -> str | None:
    """An ISO 8601 time (as the loop records them) → ``YYYY-MM-DD HH:MM:SS`` in UTC, else None."""
    if len(text) < 19 or text[4:5] != "-" or "T" not in text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _more(shown: list[str], total: int, sep: str) -> str:
    return sep.join(shown) + (f"{sep}… (+{total - len(shown)} more)" if total > len(shown) else "")


def format_value(value: Any, key: str = "", depth: int = 0, *, in_list: bool = False) -> str:
    """One details value as plain text (not yet escaped): mappings as ``k: v``, lists joined, numbers
    rounded, times shortened, long text cut."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return _number(float(value), key) if _is_share(key) else f"{value:,}"
    if isinstance(value, float):
        return _number(value, key)
    if isinstance(value, str):
        stamp = _timestamp(value)
        if stamp:
            return stamp
        return value if len(value) <= MAX_TEXT else value[: MAX_TEXT - 1] + "…"
    if depth >= 3:
        return "…"
    if isinstance(value, Mapping):
        if not value:
            return "none"
        for own in SENTENCE_KEYS:  # a verdict that says itself in a sentence: that sentence, not its fields
            if isinstance(value.get(own), str) and value[own]:
                return format_value(value[own], own, depth + 1)
        items = list(value.items())
        if key == "checks" and all(isinstance(v, bool) for _, v in items):
            shown = [f"{k} {'passed' if v else 'failed'}" for k, v in items[:MAX_ITEMS]]
        else:
            shown = [f"{k}: {format_value(v, str(k), depth + 1)}" for k, v in items[:MAX_ITEMS]]
        text = _more(shown, len(items), ", ")
        return f"({text})" if depth and not in_list else text  # a list separates its items with "; "
    if isinstance(value, list | tuple):
        if not value:
            return "none"
        if key == "window" and len(value) == 2:
            return f"{format_value(value[0], depth=depth + 1)} → {format_value(value[1], depth=depth + 1)}"
        nested = any(isinstance(v, Mapping | list | tuple) for v in value)
        shown = [format_value(v, key, depth + 1, in_list=True) for v in value[:MAX_ITEMS]]
        return _more(shown, len(value), "; " if nested else ", ")
    return str(value)


def _repeats_reason(key: str, value: Any, reason: str) -> bool:
    """True for a ``summary``, or a ``verdict`` (its ``why``), that the event's reason already says."""
    sentence = value.get("why") if isinstance(value, Mapping) else value
    return (
        key in ("summary", "verdict") and isinstance(sentence, str) and bool(sentence) and sentence in reason
    )


def details_lines(event: dict[str, Any]) -> list[tuple[str, str]]:
    """``(key, text)`` of the details a person reads in the table (links and sections of their own left
    out; a summary or verdict that repeats the reason too)."""
    details = event.get("details") or {}
    reason = str(event.get("reason") or "")
    out = []
    for key, value in details.items():
        if key in LINKED_DETAILS or _repeats_reason(str(key), value, reason):
            continue
        out.append((str(key), format_value(value, str(key))))
    return out


def _details(event: dict[str, Any]) -> str:
    return "".join(
        f"<div><span class='k'>{escape(k)}</span>: {escape(v)}</div>" for k, v in details_lines(event)
    )


def _events(events: list[dict[str, Any]], links: PageLinks, empty: str, state: dict[str, Any]) -> str:
    if not events:
        return f'<p class="muted">{escape(empty)}</p>'
    name = state.get("model_name", "")
    run_of_version = {
        str(v.get("version")): v.get("run_id") for v in state.get("versions") or [] if v.get("run_id")
    }

    def version(e: dict[str, Any]) -> str:
        number = str(e.get("version") or "")
        return _a(links.mlflow_version(name, number), number) if number else ""

    rows = "".join(
        f"<tr><td class='at'>{escape(str(e.get('at', ''))[:19].replace('T', ' '))}</td>"
        f"<td>{escape(e.get('kind', ''))}</td><td>{version(e)}</td><td>{escape(e.get('reason') or '')}</td>"
        f"<td class='muted details'>{_details(e)}</td><td class='links'>{_event_links(e, links, run_of_version)}</td></tr>"
        for e in reversed(events)  # newest first
    )
    return (
        "<table><tr><th>at (UTC)</th><th>event</th><th>version</th><th>reason</th><th>details</th><th>links</th></tr>"
        + rows
        + "</table>"
    )


def drift_series(history: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """``(at, share)`` of every ``drift_checked`` event that carries a numeric ``drifted_share``."""
    series = []
    for event in history:
        value = (event.get("details") or {}).get(DRIFT_SHARE_KEY)
        if (
            event.get("kind") == "drift_checked"
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        ):
            series.append((str(event.get("at", "")), float(value)))
    return series


def _sparkline(series: list[tuple[str, float]], width: int = 520, height: int = 90) -> str:
    """The share of drifted features per check over time as inline SVG (no chart library: the page stays
    self-contained); one check is a line of text."""
    if not series:
        return ""
    if len(series) == 1:
        return (
            f'<p class="muted" id="drift-chart">one drift check so far ({escape(series[0][0][:10])}): '
            f"{_pct(series[0][1])} of the features drifted</p>"
        )
    top = max(1.0, max(v for _, v in series))
    left, right = 44, width - 6  # room for the scale's labels and the last point
    step = (right - left) / (len(series) - 1)

    def y(value: float) -> float:
        return 6 + height - value / top * height

    points = [(left + i * step, y(v)) for i, (_, v) in enumerate(series)]
    grid = "".join(
        f'<line class="grid" x1="{left}" x2="{right}" y1="{y(v):.1f}" y2="{y(v):.1f}"/>'
        f'<text x="0" y="{y(v) + 4:.1f}">{_pct(v)}</text>'
        for v in (0.0, top / 2, top)
    )
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{yy:.1f}" r="3" fill="#3d6fd9"><title>{escape(at[:16].replace("T", " "))}'
        f" UTC: {_pct(v)}</title></circle>"
        for (x, yy), (at, v) in zip(points, series, strict=True)
    )
    line = " ".join(f"{x:.1f},{yy:.1f}" for x, yy in points)
    return (
        f'<svg id="drift-chart" class="chart" width="{width}" height="{height + 12}" role="img" '
        f'aria-label="share of drifted features over time">{grid}'
        f'<polyline fill="none" stroke="#3d6fd9" stroke-width="2" points="{line}"/>{dots}</svg>'
        f'<div class="muted">share of drifted features per check, {len(series)} checks '
        f"{escape(series[0][0][:10])} … {escape(series[-1][0][:10])}, last {_pct(series[-1][1])}</div>"
    )


def _example_id(example: dict[str, Any]) -> Any:
    """The event an example is of; checks recorded before the use-case interface keyed it by fraud's id."""
    return example.get("event_id", example.get("transaction_id"))


def last_served_check(history: list[dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    """``(at, result)`` of the newest drift check that carries a served-features result, or None."""
    for event in reversed(history):
        served = (event.get("details") or {}).get(SERVED_KEY)
        if event.get("kind") == "drift_checked" and isinstance(served, dict):
            return str(event.get("at", "")), served
    return None


def _served(history: list[dict[str, Any]]) -> str:
    """The last served-features check: compared, mismatch rate against the limit, worst features, alarm —
    or why it was not judged."""
    last = last_served_check(history)
    if last is None:
        return '<p class="muted" id="served-features">No served-features check yet.</p>'
    at, served = last
    when = f"<div class='muted'>checked {escape(at[:19].replace('T', ' '))} UTC</div>"
    if not served.get("judged"):
        return (
            f'<div class="card" id="served-features"><div class="muted">served vs offline features</div>'
            f"<div>not judged: {escape(str(served.get('reason') or 'no reason given'))}</div>{when}</div>"
        )
    rate, limit = served.get("mismatch_rate") or 0.0, served.get("max_mismatch_rate")
    verdict = (
        '<span class="fail">ALARM: serving used features that differ from the offline ones</span>'
        if served.get("alarm")
        else '<span class="pass">within the limit</span>'
    )
    worst = ", ".join(
        f"{escape(str(name))} ({count})" for name, count in (served.get("worst_features") or {}).items()
    )
    examples = "".join(
        f"<tr><td><code>{escape(str(_example_id(e)))}</code></td><td>{escape(str(e.get('feature')))}</td>"
        f"<td>{escape(str(e.get('served')))}</td><td>{escape(str(e.get('offline')))}</td></tr>"
        for e in served.get("examples") or []
    )
    limit_text = f" (limit {_pct(float(limit))})" if isinstance(limit, int | float) else ""
    return (
        f'<div class="card" id="served-features"><div class="muted">served vs offline features</div>'
        f"<div class='big'>{_pct(float(rate))} mismatching</div>"
        f"<div>{int(served.get('mismatches') or 0)} of {int(served.get('compared') or 0)} compared events"
        f"{limit_text} · {verdict}</div>"
        f"<div>worst features: {worst or 'none'}</div>"
        f"<div class='muted'>{int(served.get('waiting') or 0)} served events waiting for ingest or "
        f"materialisation</div>{when}"
        + (
            "<table><tr><th>event</th><th>feature</th><th>served</th><th>offline</th></tr>"
            + examples
            + "</table>"
            if examples
            else ""
        )
        + "</div>"
    )


def render_page(state: dict[str, Any], links: PageLinks, *, generated_at: str = "") -> str:
    """The whole page for ``state`` (the JSON of ``loop_state``)."""
    history = state.get("history") or []
    canary = [e for e in history if e.get("kind") in CANARY_KINDS]
    drift = [e for e in history if e.get("kind") in DRIFT_KINDS]
    error = state.get("registry_error")
    dag_links = " · ".join(_a(links.dag_runs(d), d) for d in links.dags)
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='refresh' content='{REFRESH_SECONDS}'>",
        f"<title>Model loop · {escape(state.get('model_name', ''))}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Model loop · <code>{escape(state.get('model_name', ''))}</code></h1>",
        f"<div class='muted'>{escape(generated_at)} · refreshes every {REFRESH_SECONDS} s · "
        f"<a href='api/state'>JSON</a>{' · ' + _a(links.mlflow_ui, 'MLflow') if links.mlflow_ui else ''}</div>",
        f"<p class='error'>The model registry could not be read: {escape(error)}</p>" if error else "",
        "<h2>Serving now</h2>",
        _serving(state, links),
        "<h2>Versions and gate verdicts</h2>",
        _versions(state, links),
        "<h2>Canary decisions</h2>",
        _events(canary, links, "No canary decision yet.", state),
        "<h2>Drift</h2>",
        _sparkline(drift_series(history)),
        _events(drift, links, "No drift check yet.", state),
        "<h2>Served features</h2>",
        _served(history),
        "<h2>History</h2>",
        _events(history, links, "Nothing has happened yet.", state),
        f"<h2>Airflow runs</h2><p>{dag_links}</p>",
        "</body></html>",
    ]
    return "".join(parts)

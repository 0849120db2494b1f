"""The model card: a Markdown page rendered from the gate report (pure: report dict in, text out)."""

from __future__ import annotations

import json
import math
from typing import Any


def _f(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _positive(report: dict[str, Any]) -> str:
    """How the card calls a positive row: by the use case's label the gate recorded with the holdout."""
    label = (report.get("holdout") or {}).get("label")
    return f"positive (`{label}` = 1)" if label else "positive"


def _lineage(report: dict[str, Any]) -> list[str]:
    lineage = report.get("lineage", {})
    params = lineage.get("params", {})
    manifest = lineage.get("training_set_manifest") or {}
    lines = ["## Data lineage", ""]
    lines.append(
        f"- MLflow run: `{report['candidate']['run_id']}` (model `{report['model_name']}` "
        f"version {report['candidate']['version']})"
    )
    lines.append(
        f"- Training set: `{params.get('training_set.path', 'n/a')}`, content hash "
        f"`{params.get('training_set.content_hash', manifest.get('content_hash', 'n/a'))}`"
    )
    if manifest:
        lines.append(
            f"- Training window: {manifest.get('start', '?')} .. {manifest.get('end', '?')}, labels as of "
            f"{manifest.get('labels_as_of', '?')}; {manifest.get('rows', '?')} rows, "
            f"{manifest.get('labelled_rows', '?')} labelled, {manifest.get('positive_rows', manifest.get('fraud_rows', '?'))} {_positive(report)}"
        )
        lines.append(
            f"- Features: {manifest.get('feature_service', '?')} v{manifest.get('feature_service_version', '?')} "
            f"({len(manifest.get('features', []))} features)"
        )
    lines.append(
        f"- Rows trained / validated: {params.get('data.train_rows', 'n/a')} / {params.get('data.val_rows', 'n/a')}"
    )
    lines.append(f"- Code: git `{params.get('git_sha', 'n/a')}`")
    gx = lineage.get("data_validation") or {}
    if gx:
        lines.append("- Data validation (GX) recorded with the run:")
        lines += [f"  - `{key}`: {value}" for key, value in sorted(gx.items())]
    else:
        lines.append("- Data validation (GX): no results recorded with this run")
    holdout = report["holdout"]
    positives = holdout.get("positive_rows")
    lines.append(
        f"- Holdout: `{holdout['path']}` (hash `{holdout.get('content_hash', 'n/a')}`), window "
        f"{holdout.get('start', '?')} .. {holdout.get('end', '?')}, {holdout['labelled_rows']} labelled rows"
        + (f", {positives} {_positive(report)}" if positives is not None else "")
    )
    return lines + [""]


def _metrics(report: dict[str, Any]) -> list[str]:
    champion = report.get("champion") or {}
    name = f"champion (v{champion['version']})" if champion.get("version") else "champion"
    kind = (report.get("comparison") or {}).get("kind")
    if kind and kind != "vs_champion":
        name += f" — {kind}"
    lines = [
        "## Metrics on the holdout",
        "",
        f"| metric | candidate | {name} | better |",
        "|---|---|---|---|",
    ]
    cand = report["metrics"].get("candidate") or {}
    champ = report["metrics"].get("champion") or {}
    for metric, higher in report["metrics"].get("higher_is_better", {}).items():
        lines.append(
            f"| {metric} | {_f(cand.get(metric))} | {_f(champ.get(metric))} | "
            f"{'higher' if higher else 'lower'} |"
        )
    if report["metrics"].get("candidate_error"):
        lines.append("")
        lines.append(f"The candidate could not be scored: {report['metrics']['candidate_error']}")
    return lines + [""]


def _comparison(report: dict[str, Any]) -> list[str]:
    comparison = report.get("comparison") or {}
    if not comparison:
        return []
    lines = [f"**Comparison: `{comparison['kind']}`** — judged {comparison.get('summary', '')}."]
    if comparison.get("error"):
        lines.append(f"The champion could not be scored: {comparison['error']}")
    return lines + [""]


def _not_judged(report: dict[str, Any]) -> list[str]:
    check = (report.get("verdict", {}).get("checks", {}).get("fairness") or {}).get("details", {})
    not_judged = check.get("not_judged") or []
    undecided = check.get("undecided") or []
    if not not_judged and not undecided:
        return []
    policy = (report.get("policy") or {}).get("fairness") or {}
    lines = [
        "",
        f"Not judged ({'a rejection' if policy.get('unjudged_groups') == 'reject' else 'reported only'}"
        " under `fairness.unjudged_groups`):",
    ]
    return (
        lines
        + [f"- {g['attribute']}={g['group']}: {g['lacks']}" for g in not_judged]
        + [f"- {u['note']}" for u in undecided]
    )


def _error_fairness(table: dict[str, Any], champion: dict[str, Any], report: dict[str, Any]) -> list[str]:
    """A regressor's fairness: MAE per group and the worst judged group's MAE over the best's."""
    champ_mae = {(g["attribute"], g["group"]): g.get("mae") for g in champion.get("groups", [])}
    lines = [
        "## Fairness",
        "",
        "MAE per group (in the label's units), on the same holdout rows for candidate and champion. A group is "
        "judged only with enough rows; the ratio is the worst judged group's MAE over the best's.",
        "",
        "| attribute | group | n | MAE | champion MAE | judged |",
        "|---|---|---|---|---|---|",
    ]
    for g in table["groups"]:
        lines.append(
            f"| {g['attribute']} | {g['group']} | {g['n']} | {_f(g.get('mae'), 3)} | "
            f"{_f(champ_mae.get((g['attribute'], g['group'])), 3)} | "
            f"{'yes' if g.get('judged_mae') else '**not judged**'} |"
        )
    lines.append("")
    for attribute, ratio in table.get("mae_ratio", {}).items():
        vs = f" (champion: {_f(champion['mae_ratio'].get(attribute), 3)})" if champion else ""
        lines.append(f"- {attribute}: MAE ratio worst/best {_f(ratio, 3)}{vs}")
    return lines + _not_judged(report) + [""]


def _fairness(report: dict[str, Any]) -> list[str]:
    table = report.get("fairness")
    if not table:
        return ["## Fairness", "", "Not measured (the candidate could not be scored).", ""]
    champion = report.get("fairness_champion") or {}
    if table.get("task") == "regression":
        return _error_fairness(table, champion, report)
    champ_rates = {(g["attribute"], g["group"]): g for g in champion.get("groups", [])}
    lines = [
        "## Fairness",
        "",
        f"At the operating point (score >= {table['threshold']}), on the same holdout rows "
        "for candidate and champion. A group's TPR is judged only with enough rows and positive rows; the "
        "others are listed as not judged.",
        "",
        "| attribute | group | n | positives | TPR | FPR | champion TPR | champion FPR | judged |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for g in table["groups"]:
        judged = "TPR+FPR" if g["judged_tpr"] else ("FPR only" if g["judged_fpr"] else "**not judged**")
        c = champ_rates.get((g["attribute"], g["group"]), {})
        lines.append(
            f"| {g['attribute']} | {g['group']} | {g['n']} | {g['positives']} | {_f(g['tpr'], 3)} | "
            f"{_f(g['fpr'], 3)} | {_f(c.get('tpr'), 3)} | {_f(c.get('fpr'), 3)} | {judged} |"
        )
    lines.append("")
    for attribute in table["tpr_gap"]:
        vs = ""
        if champion:
            vs = (
                f" (champion: TPR gap {_f(champion['tpr_gap'].get(attribute), 3)}, "
                f"FPR gap {_f(champion['fpr_gap'].get(attribute), 3)})"
            )
        lines.append(
            f"- {attribute}: TPR gap {_f(table['tpr_gap'][attribute], 3)}, "
            f"FPR gap {_f(table['fpr_gap'][attribute], 3)}{vs}"
        )
    return lines + _not_judged(report) + [""]


def _latency_infra(report: dict[str, Any]) -> list[str]:
    lines = ["## Latency and serving", ""]
    lat = report.get("latency")
    if lat and not lat.get("error"):
        lines.append(
            f"- Single-row latency through the serving path over {lat['requests']} requests: "
            f"p50 {_f(lat['p50_ms'], 2)} ms, p95 {_f(lat['p95_ms'], 2)} ms, p99 {_f(lat['p99_ms'], 2)} ms"
        )
    elif lat:
        lines.append(f"- Latency not measured: {lat['error']}")
    else:
        lines.append("- Latency not measured (disabled)")
    infra = report.get("infra")
    if infra:
        state = "passed" if infra["passed"] else "failed"
        ready = f", ready after {_f(infra['ready_s'], 1)} s" if infra.get("ready_s") is not None else ""
        lines.append(
            f"- Infra validation {state}{ready}: "
            + ", ".join(f"{p['name']} {'ok' if p['passed'] else 'FAILED'}" for p in infra.get("probes", []))
        )
        if infra.get("log_tail"):
            lines += ["", "Serving log (tail):", "", "```", infra["log_tail"], "```"]
    else:
        lines.append("- Infra validation not run (disabled)")
    return lines + [""]


def render_model_card(report: dict[str, Any]) -> str:
    """Markdown: decision and why, lineage, metrics vs champion, fairness, latency, infra."""
    verdict = report["verdict"]
    decision = "PASSED → alias `challenger`" if verdict["passed"] else "REJECTED"
    lines = [
        f"# Model card: {report['model_name']} v{report['candidate']['version']}",
        "",
        f"**Gate decision: {decision}** ({report['gated_at']})",
        "",
        verdict["why"],
        "",
        *_comparison(report),
        "| check | result |",
        "|---|---|",
    ]
    for name, check in verdict["checks"].items():
        result = "skipped" if check["skipped"] else ("passed" if check["passed"] else "failed")
        lines.append(f"| {name} | {result} |")
    lines.append("")
    lines += _lineage(report) + _metrics(report) + _fairness(report) + _latency_infra(report)
    lines += ["## Gate policy", "", "```json", json.dumps(report["policy"], indent=2), "```", ""]
    return "\n".join(lines)

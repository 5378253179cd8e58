"""Self-contained HTML pages (charts inlined as PNG): one per release, and one comparing the releases of
a dataset across generators and epsilons. Both are rendered from the JSON-ready report dicts."""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence

from synth_assets.evaluation import plots
from synth_assets.evaluation.privacy_risk import AMBER, GREEN, NOT_AVAILABLE, RED, dp_auc_bound

COLOURS = {GREEN: "#2e7d32", AMBER: "#ef6c00", RED: "#c62828", NOT_AVAILABLE: "#757575"}
STYLE = ("body{font-family:system-ui,sans-serif;max-width:72em;margin:2em auto;color:#212121}"
         "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
         "img{max-width:100%;margin:0.5em 0.5em 0.5em 0}.advice li{margin:0.3em 0}")


def badge(verdict: str) -> str:
    return (f'<span class="verdict" data-verdict="{html.escape(verdict)}" style="background:'
            f'{COLOURS.get(verdict, "#757575")};color:white;padding:2px 8px;border-radius:4px">'
            f"{html.escape(verdict)}</span>")


def number(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    return html.escape(str(value))


def _image(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _pairs(values: dict) -> str:
    return ", ".join(f"{html.escape(k)} {number(v)}" for k, v in values.items())


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, str) and c.startswith('<') else number(c)}</td>"
                                    for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _advice(items: Sequence[str]) -> str:
    if not items:
        return ""
    return "<ul class='advice'>" + "".join(f"<li>{html.escape(a)}</li>" for a in items) + "</ul>"


def _page(title: str, sections: list[str], report: object) -> str:
    sections = [*sections, "<details><summary>JSON</summary><pre>" + html.escape(json.dumps(report, indent=1))
                + "</pre></details>"]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>")


def _fidelity_sections(report: dict) -> list[str]:
    fidelity = report["fidelity"]
    holdout = fidelity.get("holdout_vs_training") or {}
    sections = [f"<h2>Marginal fidelity {badge(fidelity['verdict'])}</h2>",
                _table(["mean TVD", "synthetic vs training", "holdout vs training", "ratio"],
                       [(k, v, holdout.get(k), (fidelity.get("ratio_to_holdout") or {}).get(k))
                        for k, v in fidelity["synthetic_vs_training"].items()])]
    detail = fidelity.get("columns_pairs_detection") or {}
    if detail:
        theirs = detail.get("holdout") or {}
        sections.append(_table(["per column, per pair, detection", "synthetic vs training", "holdout vs training"],
                               [(k, v, theirs.get(k)) for k, v in detail["synthetic"].items()]))
    if fidelity.get("worst_marginals"):
        sections.append("<h3>The columns furthest from the training rows (public bins)</h3>"
                        + _image(plots.worst_marginals_png(fidelity["worst_marginals"]), "worst 1-way marginals"))
    if fidelity.get("associations"):
        sections.append(f"<h3>Associations between columns ({html.escape(fidelity['associations']['measure'])})"
                        "</h3>" + _image(plots.association_heatmaps_png(fidelity["associations"]),
                                         "association heatmaps"))
    return sections


def _utility_sections(report: dict) -> list[str]:
    utility = report["utility"]
    sections = [f"<h2>ML utility (train on synthetic, test on the holdout) {badge(utility['verdict'])}</h2>"]
    scored = [u for u in utility["targets"] if "tstr" in u]
    if scored:
        sections.append(_table(["target", "model", "TSTR", "TRTR", "ratio", ""],
                               [(u["target"], u["model"], _pairs(u["tstr"]), _pairs(u["trtr"]), _pairs(u["ratio"]),
                                 badge(u["verdict"])) for u in scored]))
        bars = {f"{u['target']}, {u['model'].replace('_', ' ')}": {"train on real": u["trtr"].get(u["headline"]),
                                                                   "train on synthetic": u["tstr"].get(u["headline"])}
                for u in scored if "headline" in u}
        if bars:
            sections.append(_image(plots.utility_bars_png(bars, "AUC (classification) or R2 (regression)"),
                                   "TSTR against TRTR"))
    for u in utility["targets"]:
        if "reason" in u:
            sections.append(f"<p>{html.escape(u['target'])}: {html.escape(u['reason'])}</p>")
    if not utility["targets"]:
        sections.append("<p>No target declared: add evaluation.targets to dataset.yaml.</p>")
    return sections


def _workload_sections(report: dict) -> list[str]:
    workload = report["workload"]
    sections = [f"<h2>Workload {badge(workload['verdict'])}</h2>"]
    if "reason" in workload:
        return [*sections, f"<p>{html.escape(workload['reason'])}</p>"]
    sections.append(f"<p>queries passed {number(workload['pass_rate'])}, value metrics passed "
                    f"{number(workload['metric_pass_rate'])}; groups suppressed {workload['suppressed_groups']}, "
                    f"fabricated {workload['fabricated_groups']}</p>")
    rows = []
    for query in workload["query_scores"]:
        thresholds = query.get("thresholds") or {}
        metrics = ", ".join(f"{html.escape(k)} {number(v)} ({query['direction']} "
                            f"{number(thresholds.get(k, query['threshold']))})" for k, v in query["metrics"].items())
        rows.append((query["name"], query["type"], badge(GREEN if query["passed"] else RED),
                     "<span>" + (metrics or html.escape(query.get("error") or "")) + "</span>",
                     query.get("suppressed_groups"), query.get("fabricated_groups")))
    sections.append(_table(["query", "type", "", "metrics (threshold)", "suppressed", "fabricated"], rows))
    buckets = [b for b in workload.get("buckets", []) if b.get("groups")]
    if buckets:
        sections.append(_table(["real group size", "groups", "suppressed", "mean relative error",
                                "median relative error"],
                               [(b["bucket"], b["groups"], b.get("suppressed"), b.get("mean_error"),
                                 b.get("median_error")) for b in buckets]))
        sections.append(_image(plots.error_buckets_png(buckets), "workload error by group size"))
    return sections


def _privacy_sections(report: dict) -> list[str]:
    privacy = report["privacy"]
    sections = [f"<h2>Privacy risk {badge(privacy['verdict'])}</h2>"]
    if "reason" in privacy:
        sections.append(f"<p>{html.escape(privacy['reason'])}</p>")
    for title, key in (("Exact copies", "exact_copies"), ("Distance to closest record", "dcr"),
                       ("Membership inference", "membership_inference"), ("Audit against the DP bound", "dp_audit")):
        part = privacy.get(key) or {}
        if not part:
            continue
        flat = [(k, v) for k, v in part.items() if k not in ("verdict", "roc", "histogram") and not isinstance(v, dict)]
        sections.append(f"<h3>{title} {badge(part['verdict'])}</h3>" + _table(["", ""], flat))
        if key == "dcr" and "histogram" in part:
            sections.append(_image(plots.dcr_histogram_png(part["histogram"]), "DCR histogram"))
        if key == "membership_inference" and "roc" in part:
            sections.append(_image(plots.roc_png({report.get("generator") or "attack": part["roc"]},
                                                 report["epsilon"], report["delta"]), "membership attack ROC"))
    attacks = privacy.get("attacks") or {}
    rows = []
    for name, entries in attacks.items():
        for entry in entries if isinstance(entries, list) else [entries]:
            if isinstance(entry, dict) and "risk" in entry:
                label = name.replace("_", " ") + (f": {entry['column']}" if "column" in entry else "")
                label += f" ({entry['mode']})" if "mode" in entry else ""
                rows.append((label, entry["success_targets"], entry["success_controls"], entry["risk"],
                             entry["risk_low95"], badge(entry["verdict"])))
    if rows:
        sections.append("<h3>Anonymeter's attacks (training targets against holdout controls)</h3>"
                        + _table(["attack", "success on targets", "on controls", "risk", "risk, 95% low", ""], rows))
    for note in privacy.get("notes") or []:
        sections.append(f"<p><small>{html.escape(note)}</small></p>")
    return sections


def release_page(report: dict) -> str:
    """The page of one release: verdicts, recommendations, then every section with its charts."""
    who = f"{report['generator']}, " if report.get("generator") else ""
    title = f"{report['dataset']}: {who}epsilon {number(report['epsilon'])}"
    sections = [f"<h1>{html.escape(title)} {badge(report['verdict'])}</h1>",
                f"<p>delta {number(report['delta'])}; rows: "
                + ", ".join(f"{k} {v}" for k, v in report["rows"].items()) + "</p>",
                _table(["section", "verdict"], [(k, badge(v)) for k, v in report["verdicts"].items()]),
                "<h2>What to do</h2>" + _advice(report.get("recommendations") or [])]
    sections += _privacy_sections(report) + _fidelity_sections(report) + _workload_sections(report) \
        + _utility_sections(report)
    return _page(title + " evaluation", sections, report)


def _series(reports: Sequence[dict], value) -> dict[str, dict[float, float]]:
    series: dict[str, dict[float, float]] = {}
    for r in reports:
        v = value(r)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            series.setdefault(r["generator"], {})[r["epsilon"]] = v
    return series


def comparison_page(dataset: str, reports: Sequence[dict], recommendations: Sequence[str]) -> str:
    """Every release of a dataset side by side: verdicts, headline figures, figures against epsilon, the
    membership attacks' ROC curves per epsilon with the DP bound, and TSTR bars."""
    reports = sorted(reports, key=lambda r: (r["epsilon"], r["generator"]))
    rows = []
    for r in reports:
        tvd = r["fidelity"]["synthetic_vs_training"]
        membership = r["privacy"].get("membership_inference") or {}
        rows.append((r["epsilon"], r["generator"], badge(r["verdict"]), *(badge(r["verdicts"][s]) for s in
                                                                          ("fidelity", "utility", "workload", "privacy")),
                     tvd.get("tvd_2way"), tvd.get("tvd_3way"), r["workload"].get("metric_pass_rate"),
                     membership.get("auc"), (r["privacy"].get("dp_audit") or {}).get("auc_bound")))
    sections = [f"<h1>{html.escape(dataset)}: every release compared</h1>",
                "<h2>What to do</h2>" + _advice(recommendations),
                _table(["epsilon", "generator", "verdict", "fidelity", "utility", "workload", "privacy",
                        "TVD 2-way", "TVD 3-way", "workload metrics passed", "MIA AUC", "DP bound on AUC"], rows)]
    if len({r["epsilon"] for r in reports}) > 1:
        charts = [plots.metric_by_epsilon_png(_series(reports, lambda r: r["fidelity"]["synthetic_vs_training"]
                                                      .get("tvd_2way")), "mean TVD, 2-way (lower is better)"),
                  plots.metric_by_epsilon_png(_series(reports, lambda r: r["workload"].get("metric_pass_rate")),
                                              "workload metrics passed (higher is better)")]
        bound = {r["epsilon"]: dp_auc_bound(r["epsilon"], r["delta"] or 0.0) for r in reports}
        charts.append(plots.metric_by_epsilon_png(
            _series(reports, lambda r: (r["privacy"].get("membership_inference") or {}).get("auc")),
            "membership attack AUC", bound=bound))
        sections.append("<h2>Against epsilon</h2>" + "".join(_image(c, "figure against epsilon") for c in charts))
    sections.append("<h2>Membership attacks and the DP bound</h2>")
    for epsilon in sorted({r["epsilon"] for r in reports}):
        at = [r for r in reports if r["epsilon"] == epsilon and "roc" in (r["privacy"].get("membership_inference") or {})]
        if at:
            sections.append(_image(plots.roc_png({r["generator"]: r["privacy"]["membership_inference"]["roc"]
                                                  for r in at}, epsilon, at[0]["delta"]), f"ROC at epsilon {epsilon:g}"))
    bars: dict[str, dict[str, float]] = {}
    for r in reports:
        for u in r["utility"]["targets"]:
            if "headline" in u and u["model"] == "gradient_boosting":
                group = bars.setdefault(u["target"], {"train on real": u["trtr"].get(u["headline"])})
                group[f"{r['generator']} @ {r['epsilon']:g}"] = u["tstr"].get(u["headline"])
    if bars:
        sections.append("<h2>ML utility (gradient boosting, on the holdout)</h2>"
                        + _image(plots.utility_bars_png(bars, "AUC or R2"), "TSTR bars"))
    return _page(f"{dataset}: releases compared", sections, {"recommendations": list(recommendations)})

"""One evaluation of a synthetic table: marginal fidelity beside the holdout, and privacy risk audited
against the DP bound. ``evaluate`` is the SDK entry point; the report is JSON-ready and writes a
self-contained HTML file."""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from synth_assets.datasets.loading import Dataset
from synth_assets.evaluation.fidelity import fidelity_of
from synth_assets.evaluation.marginals import mean_tvd
from synth_assets.evaluation.privacy_risk import AMBER, GREEN, NOT_AVAILABLE, RED, PrivacyRisk, privacy_risk
from synth_assets.evaluation.utility import ml_utility

FIDELITY_AMBER = 1.5  # synthetic TVD over the holdout's: above this amber, above twice it red
UTILITY_GREEN, UTILITY_AMBER = 0.9, 0.75  # TSTR / TRTR of the headline score (AUC or R2)
_COLOURS = {GREEN: "#2e7d32", AMBER: "#ef6c00", RED: "#c62828", NOT_AVAILABLE: "#757575"}


@dataclass
class EvaluationReport:
    dataset: str
    epsilon: float | None
    delta: float | None
    rows: dict
    fidelity: dict
    privacy: PrivacyRisk
    utility: list[dict]

    @property
    def utility_verdict(self) -> str:
        verdicts = {u["verdict"] for u in self.utility}
        return next((v for v in (RED, AMBER, GREEN) if v in verdicts), NOT_AVAILABLE)

    @property
    def verdict(self) -> str:
        verdicts = {self.fidelity["verdict"], self.privacy.verdict, self.utility_verdict}
        return next((v for v in (RED, AMBER, GREEN) if v in verdicts), NOT_AVAILABLE)

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "epsilon": self.epsilon, "delta": self.delta, "verdict": self.verdict,
                "rows": self.rows, "fidelity": self.fidelity, "privacy": self.privacy.to_dict(),
                "utility": {"verdict": self.utility_verdict, "targets": self.utility}}

    def to_html(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(_html(self.to_dict()))
        return path


def holdout_fidelity(dataset: Dataset, training: pl.DataFrame, holdout: pl.DataFrame, *, seed: int = 0) -> dict:
    """The holdout's own fidelity to the training rows (what sampling noise alone costs): the same for
    every synthetic table of a dataset, so computed once and passed to :func:`evaluate`."""
    if not holdout.height:
        return {"tvd": None, "detail": None}
    return {"tvd": mean_tvd(dataset, training, holdout, three_way=True),
            "detail": fidelity_of(dataset, training, holdout, seed=seed)}


def evaluate(
    dataset: Dataset,
    training: pl.DataFrame,
    holdout: pl.DataFrame,
    synthetic: pl.DataFrame,
    *,
    epsilon: float | None,
    delta: float | None = None,
    seed: int = 0,
    baseline: dict | None = None,
) -> EvaluationReport:
    """Evaluate ``synthetic`` (a wide table) made from ``training`` only, against ``holdout`` rows the
    generator never saw. ``epsilon`` / ``delta``: the guarantee the table claims (None: none), which the
    membership attack is audited against. ``baseline``: :func:`holdout_fidelity` of the same rows, when
    several tables are evaluated against them."""
    baseline = baseline or holdout_fidelity(dataset, training, holdout, seed=seed)
    synthetic_tvd = mean_tvd(dataset, training, synthetic, three_way=True)
    fidelity: dict = {"synthetic_vs_training": synthetic_tvd}
    if holdout.height:
        holdout_tvd = baseline["tvd"]
        fidelity["holdout_vs_training"] = holdout_tvd
        ratio = max(synthetic_tvd[k] / holdout_tvd[k] if holdout_tvd[k] > 0 else math.inf for k in synthetic_tvd)
        fidelity["worst_ratio_to_holdout"] = ratio
        fidelity["verdict"] = GREEN if ratio <= FIDELITY_AMBER else AMBER if ratio <= 2 * FIDELITY_AMBER else RED
    else:
        fidelity["holdout_vs_training"] = None
        fidelity["verdict"] = NOT_AVAILABLE
    fidelity["columns_pairs_detection"] = {"synthetic": fidelity_of(dataset, training, synthetic, seed=seed),
                                           "holdout": baseline["detail"]}
    risk = privacy_risk(dataset, training, holdout, synthetic, epsilon=epsilon, delta=delta, seed=seed)
    rows = {"training": training.height, "holdout": holdout.height, "synthetic": synthetic.height}
    utility = ml_utility(dataset, training, holdout, synthetic, seed=seed)
    for entry in utility:
        if "verdict" not in entry:
            key = "auc" if entry["task"] == "classification" else "r2"
            ratio = entry["ratio"].get(key, math.nan)
            entry["verdict"] = (NOT_AVAILABLE if math.isnan(ratio) else GREEN if ratio >= UTILITY_GREEN
                                else AMBER if ratio >= UTILITY_AMBER else RED)
    return EvaluationReport(dataset.name, epsilon, delta, rows, fidelity, risk, utility)


def _badge(verdict: str) -> str:
    return (f'<span style="background:{_COLOURS[verdict]};color:white;padding:2px 8px;border-radius:4px">'
            f"{html.escape(verdict)}</span>")


def _number(value) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    return html.escape(str(value))


def _pairs(values: dict) -> str:
    return ", ".join(f"{html.escape(k)} {_number(v)}" for k, v in values.items())


def _table(rows: list[tuple[str, object]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{_number(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _html(report: dict) -> str:
    privacy = report["privacy"]
    fidelity = report["fidelity"]
    sections = [f"<h1>{html.escape(report['dataset'])}: evaluation {_badge(report['verdict'])}</h1>",
                f"<p>epsilon {_number(report['epsilon'])}, delta {_number(report['delta'])}; rows: "
                + ", ".join(f"{k} {v}" for k, v in report["rows"].items()) + "</p>",
                f"<h2>Marginal fidelity {_badge(fidelity['verdict'])}</h2>"]
    holdout = fidelity.get("holdout_vs_training") or {}
    sections.append("<table><tr><th>mean TVD</th><th>synthetic vs training</th><th>holdout vs training</th></tr>"
                    + "".join(f"<tr><td>{k}</td><td>{_number(v)}</td><td>{_number(holdout.get(k, math.nan))}</td></tr>"
                              for k, v in fidelity["synthetic_vs_training"].items()) + "</table>")
    detail = fidelity.get("columns_pairs_detection") or {}
    if detail:
        theirs = detail.get("holdout") or {}
        sections.append("<table><tr><th>per column, per pair, detection</th><th>synthetic vs training</th>"
                        "<th>holdout vs training</th></tr>"
                        + "".join(f"<tr><td>{k}</td><td>{_number(v)}</td><td>{_number(theirs.get(k, math.nan))}</td></tr>"
                                  for k, v in detail["synthetic"].items()) + "</table>")
    sections.append(f"<h2>Privacy risk {_badge(privacy['verdict'])}</h2>")
    for title, key in (("Exact copies", "exact_copies"), ("Distance to closest record", "dcr"),
                       ("Membership inference", "membership_inference"), ("Audit against the DP bound", "dp_audit")):
        part = privacy[key]
        flat = [(k, v) for k, v in part.items() if k not in ("verdict", "roc", "histogram") and not isinstance(v, dict)]
        sections.append(f"<h3>{title} {_badge(part['verdict'])}</h3>" + _table(flat))
    utility = report["utility"]
    sections.append(f"<h2>ML utility (train on synthetic, test on the holdout) {_badge(utility['verdict'])}</h2>")
    if utility["targets"]:
        sections.append("<table><tr><th>target</th><th>model</th><th>TSTR</th><th>TRTR</th><th>ratio</th><th></th></tr>"
                        + "".join(f"<tr><td>{html.escape(u['target'])}</td><td>{html.escape(u.get('model', ''))}</td>"
                                  f"<td>{_pairs(u.get('tstr', {}))}</td><td>{_pairs(u.get('trtr', {}))}</td>"
                                  f"<td>{_pairs(u.get('ratio', {}))}</td><td>{_badge(u['verdict'])}</td></tr>"
                                  for u in utility["targets"]) + "</table>")
    else:
        sections.append("<p>No target declared: add evaluation.targets to dataset.yaml.</p>")
    attacks = privacy.get("attacks") or {}
    rows = [("attribute inference: " + a["column"], a) for a in attacks.get("attribute_inference", [])]
    if "linkability" in attacks and "risk" in attacks["linkability"]:
        rows.append(("linkability", attacks["linkability"]))
    if rows:
        sections.append("<h3>Anonymeter's attacks (training targets against holdout controls)</h3><table>"
                        "<tr><th>attack</th><th>success on targets</th><th>on controls</th><th>risk</th>"
                        "<th>risk, 95% low</th><th></th></tr>"
                        + "".join(f"<tr><td>{html.escape(name)}</td><td>{_number(a['success_targets'])}</td>"
                                  f"<td>{_number(a['success_controls'])}</td><td>{_number(a['risk'])}</td>"
                                  f"<td>{_number(a['risk_low95'])}</td><td>{_badge(a['verdict'])}</td></tr>"
                                  for name, a in rows) + "</table>")
    sections.append("<details><summary>JSON</summary><pre>" + html.escape(json.dumps(report, indent=1)) + "</pre></details>")
    style = ("body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto}"
             "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(report['dataset'])} evaluation"
            f"</title><style>{style}</style></head><body>{''.join(sections)}</body></html>")

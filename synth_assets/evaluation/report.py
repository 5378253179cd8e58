"""One evaluation of a synthetic table: fidelity beside the holdout, ML utility, the workload, and privacy
risk audited against the DP bound, each section judged green / amber / red against the dataset's gates
(``evaluation.gates`` in dataset.yaml) with plain-language recommendations. ``evaluate`` is the SDK entry
point; the report is JSON-ready and writes a self-contained HTML file."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from synth_assets.benchmark.compare import compare
from synth_assets.benchmark.summary import workload_summary
from synth_assets.benchmark.workload import run_workload
from synth_assets.datasets.loading import Dataset
from synth_assets.datasets.spec import Gates, HigherIsBetter, LowerIsBetter
from synth_assets.evaluation.fidelity import associations, fidelity_of, worst_marginals
from synth_assets.evaluation.marginals import mean_tvd
from synth_assets.evaluation.privacy_risk import AMBER, GREEN, NOT_AVAILABLE, RED, PrivacyRisk, privacy_risk
from synth_assets.evaluation.utility import ml_utility
from synth_assets.tables.decompose import decompose

SECTIONS = ("fidelity", "utility", "workload", "privacy")


def worst(verdicts) -> str:
    verdicts = set(verdicts)
    return next((v for v in (RED, AMBER, GREEN) if v in verdicts), NOT_AVAILABLE)


def judge(value: float | None, gate: LowerIsBetter | HigherIsBetter | None) -> str:
    """The verdict of ``value`` against a gate; NaN or None is 'not available', never a pass."""
    if gate is None or value is None or math.isnan(value):
        return NOT_AVAILABLE
    if isinstance(gate, LowerIsBetter):
        return GREEN if value <= gate.green else AMBER if value <= gate.amber else RED
    return GREEN if value >= gate.green else AMBER if value >= gate.amber else RED


@dataclass
class EvaluationReport:
    dataset: str
    generator: str | None
    epsilon: float | None
    delta: float | None
    rows: dict
    fidelity: dict
    privacy: PrivacyRisk
    utility: list[dict]
    workload: dict
    gates: dict
    recommendations: list[str] = field(default_factory=list)

    @property
    def utility_verdict(self) -> str:
        return worst(u["verdict"] for u in self.utility)

    @property
    def verdicts(self) -> dict[str, str]:
        return {"fidelity": self.fidelity["verdict"], "utility": self.utility_verdict,
                "workload": self.workload["verdict"], "privacy": self.privacy.verdict}

    @property
    def verdict(self) -> str:
        return worst(self.verdicts.values())

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "generator": self.generator, "epsilon": self.epsilon, "delta": self.delta,
                "verdict": self.verdict, "verdicts": self.verdicts, "recommendations": self.recommendations,
                "rows": self.rows, "fidelity": self.fidelity, "privacy": self.privacy.to_dict(),
                "utility": {"verdict": self.utility_verdict, "targets": self.utility},
                "workload": self.workload, "gates": self.gates}

    def to_html(self, path: str | Path) -> Path:
        from synth_assets.evaluation.pages import release_page

        path = Path(path)
        path.write_text(release_page(self.to_dict()))
        return path


EVALUATION_ROWS = 20_000
"""Rows of each table (training, holdout, synthetic) the evaluation compares, at most: a seeded sample of a
larger table, so that the evaluation's cost stops growing with the number of entities. Each is a random
sample of its table, so every figure keeps its meaning; the report and the asset say when it sampled."""


def evaluation_rows(frame: pl.DataFrame, seed: int = 0, rows: int | None = None) -> pl.DataFrame:
    """``frame``, or a seeded sample of ``rows`` (default :data:`EVALUATION_ROWS`) of its rows in their
    order when it is larger."""
    rows = rows or EVALUATION_ROWS
    if frame.height <= rows:
        return frame
    rng = np.random.default_rng(np.random.SeedSequence([seed, frame.height, 0xE7A1]))
    return frame[np.sort(rng.choice(frame.height, size=rows, replace=False))]


def holdout_fidelity(dataset: Dataset, training: pl.DataFrame, holdout: pl.DataFrame, *, seed: int = 0) -> dict:
    """The holdout's own fidelity to the training rows (what sampling noise alone costs): the same for
    every synthetic table of a dataset, so computed once and passed to :func:`evaluate`."""
    training, holdout = evaluation_rows(training, seed), evaluation_rows(holdout, seed)
    if not holdout.height:
        return {"tvd": None, "detail": None}
    return {"tvd": mean_tvd(dataset, training, holdout, three_way=True),
            "detail": fidelity_of(dataset, training, holdout, seed=seed)}


def _fidelity(dataset: Dataset, training: pl.DataFrame, holdout: pl.DataFrame, synthetic: pl.DataFrame,
              baseline: dict, gates: Gates, seed: int) -> dict:
    synthetic_tvd = mean_tvd(dataset, training, synthetic, three_way=True)
    detail = fidelity_of(dataset, training, synthetic, seed=seed)
    fidelity: dict = {"synthetic_vs_training": synthetic_tvd, "holdout_vs_training": baseline["tvd"],
                      "columns_pairs_detection": {"synthetic": detail, "holdout": baseline["detail"]},
                      "associations": associations(dataset, training, synthetic, seed=seed),
                      "worst_marginals": worst_marginals(dataset, training, synthetic, holdout)}
    if not holdout.height:
        fidelity["verdict"] = NOT_AVAILABLE
        fidelity["reason"] = "no holdout (privacy.holdout_fraction is 0): nothing shows what sampling noise costs"
        return fidelity
    ratios = {k: synthetic_tvd[k] / baseline["tvd"][k] if baseline["tvd"][k] > 0 else math.inf for k in synthetic_tvd}
    worst_order = max(ratios, key=ratios.get)
    fidelity["ratio_to_holdout"] = ratios
    fidelity["worst_order"] = worst_order
    fidelity["worst_ratio_to_holdout"] = ratios[worst_order]
    verdicts = [judge(ratios[worst_order], gates.marginal_tvd_ratio)]
    if gates.detection_auc is not None:
        verdicts.append(judge(detail["detection_auc"], gates.detection_auc))
    fidelity["verdict"] = worst(verdicts)
    return fidelity


def _utility(dataset: Dataset, training, holdout, synthetic, gates: Gates, seed: int) -> list[dict]:
    utility = ml_utility(dataset, training, holdout, synthetic, seed=seed)
    for entry in utility:
        if "verdict" not in entry:
            key = "auc" if entry["task"] == "classification" else "r2"
            entry["headline"] = key
            entry["verdict"] = judge(entry["ratio"].get(key, math.nan), gates.tstr_ratio)
    return utility


def _workload(dataset: Dataset, answers: Mapping[str, pl.DataFrame] | None, synthetic: pl.DataFrame,
              gates: Gates) -> dict:
    if answers is None:
        return {"verdict": NOT_AVAILABLE, "reason": "no real workload answers were given (answers=...)"}
    scores = compare(dataset.queries, answers, run_workload(dataset.queries, decompose(dataset, synthetic)))
    if not scores:
        return {"verdict": NOT_AVAILABLE, "reason": "the dataset declares no workload query"}
    summary = workload_summary(scores)
    summary["query_scores"] = [score.to_dict() for score in scores]
    summary["verdict"] = judge(summary["metric_pass_rate"], gates.workload_metric_pass_rate)
    return summary


def _gate_attacks(risk: PrivacyRisk, gates: Gates) -> None:
    """The Anonymeter attacks' verdicts from the dataset's attack-risk gate (their 95% lower bound)."""
    for name, entries in risk.attacks.items():
        for entry in entries if isinstance(entries, list) else [entries]:
            if isinstance(entry, dict) and "risk_low95" in entry:
                entry["verdict"] = judge(entry["risk_low95"], gates.attack_risk)
                entry.setdefault("attack", name)


def evaluate(
    dataset: Dataset,
    training: pl.DataFrame,
    holdout: pl.DataFrame,
    synthetic: pl.DataFrame,
    *,
    epsilon: float | None,
    delta: float | None = None,
    seed: int = 0,
    answers: Mapping[str, pl.DataFrame] | None = None,
    generator: str | None = None,
    baseline: dict | None = None,
) -> EvaluationReport:
    """Evaluate ``synthetic`` (a wide table) made from ``training`` only, against ``holdout`` rows the
    generator never saw. ``epsilon`` / ``delta``: the guarantee the table claims (None: none), which the
    membership attack is audited against. ``answers``: the real answers of the dataset's workload queries
    (without them the workload section is not available). ``baseline``: :func:`holdout_fidelity` of the
    same rows, when several tables are evaluated against them."""
    from synth_assets.evaluation.recommendations import recommend

    gates = dataset.spec.evaluation.gates
    baseline = baseline or holdout_fidelity(dataset, training, holdout, seed=seed)
    full = {"training": training.height, "holdout": holdout.height, "synthetic": synthetic.height}
    workload_table = synthetic  # the workload's answers are of the whole table, as the analysts' are
    training, holdout, synthetic = (evaluation_rows(f, seed) for f in (training, holdout, synthetic))
    fidelity = _fidelity(dataset, training, holdout, synthetic, baseline, gates, seed)
    risk = privacy_risk(dataset, training, holdout, synthetic, epsilon=epsilon, delta=delta, seed=seed)
    _gate_attacks(risk, gates)
    rows = {**full, **{f"{name}_evaluated": frame.height for name, frame in
                       (("training", training), ("holdout", holdout), ("synthetic", synthetic))
                       if frame.height < full[name]}}
    report = EvaluationReport(dataset.name, generator, epsilon, delta, rows, fidelity, risk,
                              _utility(dataset, training, holdout, synthetic, gates, seed),
                              _workload(dataset, answers, workload_table, gates), gates.model_dump(mode="json"))
    report.recommendations = recommend(report.to_dict())
    return report

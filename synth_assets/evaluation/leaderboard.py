"""Every generator of a partition scored by the same code: the workload and the marginals."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from synth_assets.benchmark.compare import QueryScore, compare, metric_pass_rate, pass_rate
from synth_assets.benchmark.workload import run_workload
from synth_assets.datasets.loading import Dataset
from synth_assets.evaluation.marginals import mean_tvd
from synth_assets.tables.decompose import decompose

SUMMARY_SCHEMA = {
    "generator": pl.Utf8,
    "pass_rate": pl.Float64,
    "metric_pass_rate": pl.Float64,
    "tvd_1way": pl.Float64,
    "tvd_2way": pl.Float64,
    "tvd_3way": pl.Float64,
    "rows": pl.Int64,
}


@dataclass
class GeneratorScores:
    generator: str
    summary: dict
    scores: list[QueryScore]

    def query_rows(self) -> list[dict]:
        rows = []
        for score in self.scores:
            for metric, value in score.metrics.items() or {"": math.nan}.items():
                rows.append(
                    {
                        "generator": self.generator,
                        "query": score.name,
                        "type": score.type,
                        "passed": score.passed,
                        "metric": metric,
                        "value": None if math.isnan(value) else float(value),
                        "threshold": score.threshold_for(metric) if metric else score.threshold,
                        "direction": score.direction,
                        "error": score.error,
                    }
                )
        return rows


def score_generator(
    dataset: Dataset,
    generator: str,
    answers: Mapping[str, pl.DataFrame],
    real_wide: pl.DataFrame,
    population: pl.DataFrame,
    reporting: Mapping[str, pl.DataFrame] | None = None,
) -> GeneratorScores:
    """The workload scores and marginal TVDs (1-, 2- and sampled 3-way) of one synthetic wide table."""
    reporting = reporting if reporting is not None else decompose(dataset, population)
    scores = compare(dataset.queries, answers, run_workload(dataset.queries, reporting))
    summary = {
        "generator": generator,
        "pass_rate": pass_rate(scores),
        "metric_pass_rate": metric_pass_rate(scores),
        **mean_tvd(dataset, real_wide, population, three_way=True),
        "rows": population.height,
    }
    return GeneratorScores(generator, summary, scores)


def leaderboard(results: list[GeneratorScores]) -> pl.DataFrame:
    """One row per generator, best 2-way TVD first."""
    frame = pl.DataFrame([r.summary for r in results], schema=SUMMARY_SCHEMA)
    return frame.sort("tvd_2way")


def leaderboard_markdown(frame: pl.DataFrame, epsilon: float) -> str:
    lines = [
        f"Epsilon {epsilon:g}. TVD: mean total variation distance to the real table over all 1-way and "
        "2-way and 200 sampled 3-way marginals (lower is better); pass: share of workload queries, and "
        "of value metrics, that meet their thresholds.",
        "",
        "| generator | TVD 1-way | TVD 2-way | TVD 3-way | pass (queries) | pass (metrics) | rows |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in frame.iter_rows(named=True):
        lines.append(
            f"| {row['generator']} | {row['tvd_1way']:.4f} | {row['tvd_2way']:.4f} | {row['tvd_3way']:.4f} "
            f"| {row['pass_rate']:.2f} | {row['metric_pass_rate']:.2f} | {row['rows']} |"
        )
    return "\n".join(lines)

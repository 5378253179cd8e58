"""Score one set of workload results (synthetic) against another (real), query by query.

Per query type, one metric per value column (every output column that is not a key):

- aggregate: relative error |s - r| / max(|r|, floor), averaged over the real groups; a real group the
  synthetic answer lacks counts as s = 0. Meets its threshold when <= max_relative_error.
- distribution: total variation distance 0.5 * sum |p - q| between the normalised values over the union
  of groups (a missing group has 0). Meets when <= max_tvd.
- ranking: Spearman's rho between the real and synthetic values over the union of groups; a group missing
  on one side is ranked after every present one there. Meets when >= min_spearman.
- coverage: Jaccard similarity |R and S| / |R or S| of the sets of key tuples (one metric per query).
  Meets when >= min_jaccard.

A query passes when at least half of its metrics meet their thresholds. A metric that cannot be computed
is NaN and does not meet its threshold: nothing fails silently as a perfect score.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl
from scipy.stats import spearmanr

from synth_assets.datasets.loading import DatasetError
from synth_assets.datasets.spec import (
    AggregateQuery,
    CoverageQuery,
    DistributionQuery,
    Query,
    RankingQuery,
)


@dataclass
class QueryScore:
    name: str
    type: str
    passed: bool
    metrics: dict[str, float]
    threshold: float
    direction: str
    real_groups: int = 0
    synthetic_groups: int = 0
    suppressed_groups: int = 0
    fabricated_groups: int = 0
    error: str | None = None
    details: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        record = asdict(self)
        record["metrics"] = {k: _json_float(v) for k, v in self.metrics.items()}
        return record


def _json_float(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _value_columns(query: Query, frame: pl.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in query.keys]


def _align(query: Query, real: pl.DataFrame, synthetic: pl.DataFrame) -> pl.DataFrame:
    """Outer join of real and synthetic on the keys, values suffixed _real / _synthetic."""
    values = _value_columns(query, real)
    left = real.select(
        [pl.col(k).cast(pl.Utf8) for k in query.keys]
        + [pl.col(v).alias(f"{v}_real") for v in values]
    ).with_columns(pl.lit(True).alias("__in_real"))
    right = synthetic.select(
        [pl.col(k).cast(pl.Utf8) for k in query.keys]
        + [pl.col(v).alias(f"{v}_synthetic") for v in values if v in synthetic.columns]
    ).with_columns(pl.lit(True).alias("__in_synthetic"))
    joined = left.join(right, on=query.keys, how="full", coalesce=True, nulls_equal=True)
    return joined.with_columns(
        pl.col("__in_real").fill_null(False), pl.col("__in_synthetic").fill_null(False)
    )


def _numeric(series: pl.Series, query: Query, column: str) -> np.ndarray:
    if not (series.dtype.is_numeric() or series.dtype == pl.Null):
        raise DatasetError(
            f"query {query.name!r}: value column {column!r} is {series.dtype}, not numeric; "
            f"list it in 'keys' if it names a group"
        )
    return series.cast(pl.Float64).to_numpy()


def _relative_error(real: np.ndarray, synthetic: np.ndarray, floor: float) -> float:
    if real.size == 0:
        return 0.0 if synthetic.size == 0 else math.nan
    errors = np.empty(real.size)
    for i, (r, s) in enumerate(zip(real, synthetic)):
        if math.isnan(r):
            errors[i] = 0.0 if math.isnan(s) else 1.0
        else:
            s = 0.0 if math.isnan(s) else s
            errors[i] = abs(s - r) / max(abs(r), floor)
    return float(errors.mean())


def _tvd(real: np.ndarray, synthetic: np.ndarray) -> float:
    real = np.nan_to_num(real, nan=0.0)
    synthetic = np.nan_to_num(synthetic, nan=0.0)
    if (real < 0).any() or (synthetic < 0).any():
        return math.nan
    total_real, total_synthetic = real.sum(), synthetic.sum()
    if total_real <= 0 or total_synthetic <= 0:
        return math.nan
    return float(0.5 * np.abs(real / total_real - synthetic / total_synthetic).sum())


def _spearman(real: np.ndarray, synthetic: np.ndarray, descending: bool) -> float:
    last = -np.inf if descending else np.inf
    real = np.where(np.isnan(real), last, real)
    synthetic = np.where(np.isnan(synthetic), last, synthetic)
    if real.size < 2 or np.all(real == real[0]) or np.all(synthetic == synthetic[0]):
        # rho is undefined without variation: only an identical answer counts as a perfect order
        return 1.0 if np.array_equal(real, synthetic) else math.nan
    # ranks of +-inf are well defined: a missing group shares the last rank with the other missing ones
    rho = spearmanr(real, synthetic).statistic
    return float(rho)


def _meets(value: float, threshold: float, direction: str) -> bool:
    if math.isnan(value):
        return False
    return value <= threshold if direction == "<=" else value >= threshold


def score_query(query: Query, real: pl.DataFrame, synthetic: pl.DataFrame | None) -> QueryScore:
    """Score the synthetic answer to one query against the real answer."""
    if isinstance(query, AggregateQuery):
        threshold, direction = query.max_relative_error, "<="
    elif isinstance(query, DistributionQuery):
        threshold, direction = query.max_tvd, "<="
    elif isinstance(query, RankingQuery):
        threshold, direction = query.min_spearman, ">="
    else:
        threshold, direction = query.min_jaccard, ">="
    score = QueryScore(
        name=query.name,
        type=query.type,
        passed=False,
        metrics={},
        threshold=threshold,
        direction=direction,
        real_groups=real.height,
    )
    if synthetic is None:
        score.error = "no synthetic answer (the query reads a table that could not be rebuilt)"
        return score
    missing = [c for c in real.columns if c not in synthetic.columns]
    if missing:
        score.error = f"synthetic answer lacks columns {missing}"
        return score
    score.synthetic_groups = synthetic.height

    if isinstance(query, CoverageQuery):
        aligned = _align(query, real.select(query.keys), synthetic.select(query.keys))
        both = int((aligned["__in_real"] & aligned["__in_synthetic"]).sum())
        union = aligned.height
        score.metrics["jaccard"] = 1.0 if union == 0 else both / union
    elif not query.keys:
        if real.height != 1 or synthetic.height != 1:
            score.error = (
                f"an aggregate query without keys must return one row (real: {real.height}, "
                f"synthetic: {synthetic.height}); list its group columns in 'keys'"
            )
            score.metrics = {c: math.nan for c in real.columns}
        else:
            for column in real.columns:
                r = _numeric(real[column], query, column)
                s = _numeric(synthetic[column], query, column)
                score.metrics[column] = _relative_error(r, s, query.floor)
    else:
        aligned = _align(query, real, synthetic)
        in_real = aligned["__in_real"].to_numpy()
        for column in _value_columns(query, real):
            r = _numeric(aligned[f"{column}_real"], query, column)
            s = _numeric(aligned[f"{column}_synthetic"], query, column)
            if isinstance(query, AggregateQuery):
                score.metrics[column] = _relative_error(r[in_real], s[in_real], query.floor)
            elif isinstance(query, DistributionQuery):
                score.metrics[column] = _tvd(r, s)
            else:
                score.metrics[column] = _spearman(r, s, query.descending)
        score.suppressed_groups = int((aligned["__in_real"] & ~aligned["__in_synthetic"]).sum())
        score.fabricated_groups = int((~aligned["__in_real"] & aligned["__in_synthetic"]).sum())
    if not score.metrics and score.error is None:
        score.error = "the query has no value columns to score"
    met = sum(_meets(v, threshold, direction) for v in score.metrics.values())
    score.passed = score.error is None and bool(score.metrics) and 2 * met >= len(score.metrics)
    return score


def compare(
    queries: Sequence[Query],
    real: Mapping[str, pl.DataFrame],
    synthetic: Mapping[str, pl.DataFrame],
) -> list[QueryScore]:
    """Score every query with a real answer; a query without a synthetic answer fails with a reason."""
    return [
        score_query(query, real[query.name], synthetic.get(query.name))
        for query in queries
        if query.name in real
    ]


def pass_rate(scores: Sequence[QueryScore]) -> float:
    return sum(s.passed for s in scores) / len(scores) if scores else math.nan


def metric_pass_rate(scores: Sequence[QueryScore]) -> float:
    """Share of the value metrics (one per query and value column) that meet their threshold. A query
    passes when half of its metrics do, so an easy column (a count) can carry it; this rate cannot be
    carried. A query that failed to run counts as one failed metric."""
    met = total = 0
    for score in scores:
        if score.error or not score.metrics:
            total += 1
            continue
        total += len(score.metrics)
        met += sum(_meets(v, score.threshold, score.direction) for v in score.metrics.values())
    return met / total if total else math.nan


def scores_markdown(scores: Sequence[QueryScore]) -> str:
    """A markdown table of per-query results, for asset metadata and reports."""
    lines = ["| query | type | passed | metrics (threshold) |", "|---|---|---|---|"]
    for s in scores:
        metrics = ", ".join(
            f"{k}={'nan' if math.isnan(v) else f'{v:.3f}'}" for k, v in s.metrics.items()
        )
        verdict = "yes" if s.passed else ("error" if s.error else "no")
        lines.append(f"| {s.name} | {s.type} | {verdict} | {metrics} ({s.direction} {s.threshold:g}) |")
    return "\n".join(lines)

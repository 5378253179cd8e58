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

A query's ``columns`` give a value column its own threshold (and, for an aggregate, floor) or leave it
out of the metrics (``ignore``). A query passes when at least half of its metrics meet their thresholds,
or all of them with ``pass_when: all``. A metric that cannot be computed is NaN and does not meet its
threshold: nothing fails silently as a perfect score.

Errors by group size (as smartnoise-eval reports them): each real group falls in a bucket by its real
size, the value of the query's ``group_size`` column (default: a distribution query's first value
column), and gets one error, the mean over the scored value columns of the relative error
|s - r| / max(|r|, floor) (distribution values: after rescaling the synthetic values to the real total,
s * sum(r) / sum(s); distribution and ranking values have no floor, so a real 0 gives 0 when s is 0 and 1
otherwise). A group the synthetic answer lacks counts with s = 0 and as suppressed in its bucket; a
synthetic group the real answer lacks (fabricated) has no real size and is only counted.
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

# Buckets of the real group size: [1, 10), [10, 100), [100, 1000), [1000, 10000), [10000, inf). A size
# below 1 (a group of no entities, or a group_size column that is not a count) falls in the first.
BUCKETS = ("1-9", "10-99", "100-999", "1k-9.9k", ">=10k")
_BUCKET_UPPER = (10, 100, 1_000, 10_000)
NOT_BUCKETED = "not bucketed: declare group_size"


def size_bucket(size: float) -> str:
    """The bucket of a real group of ``size`` entities."""
    for label, upper in zip(BUCKETS, _BUCKET_UPPER):
        if size < upper:
            return label
    return BUCKETS[-1]


@dataclass
class QueryScore:
    name: str
    type: str
    passed: bool
    metrics: dict[str, float]
    threshold: float  # the query's own threshold; thresholds has the one of each metric
    direction: str
    real_groups: int = 0
    synthetic_groups: int = 0
    suppressed_groups: int = 0
    fabricated_groups: int = 0
    error: str | None = None
    details: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    pass_when: str = "half"
    ignored: list[str] = field(default_factory=list)
    group_size: str | None = None
    # per bucket of the real group size (non-empty buckets, in order): groups, suppressed, mean_error,
    # median_error; buckets_note says why there are none
    buckets: list[dict] = field(default_factory=list)
    buckets_note: str | None = None
    # (bucket, error, suppressed) of every real group: what summaries over several queries pool
    group_errors: list[tuple[str, float, bool]] = field(default_factory=list, repr=False)

    def threshold_for(self, metric: str) -> float:
        """The threshold a metric is held to: its column's own, else the query's."""
        return self.thresholds.get(metric, self.threshold)

    def meets(self, metric: str) -> bool:
        return _meets(self.metrics[metric], self.threshold_for(metric), self.direction)

    def to_dict(self) -> dict:
        record = asdict(self)
        record.pop("group_errors")
        record["metrics"] = {k: _json_float(v) for k, v in self.metrics.items()}
        return record


def _json_float(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _value_columns(query: Query, frame: pl.DataFrame) -> list[str]:
    if isinstance(query, CoverageQuery):
        return []
    return [c for c in frame.columns if c not in query.keys]


def _check_column_settings(query: Query, real: pl.DataFrame) -> list[str]:
    """The value columns of the real answer; ``columns`` and ``group_size`` must name some of them."""
    values = _value_columns(query, real)
    unknown = [c for c in query.columns if c not in values]
    if unknown:
        raise DatasetError(
            f"query {query.name!r}: 'columns' names {', '.join(map(repr, unknown))}, which the query "
            f"does not output as a value column; its value columns are {values} "
            f"(output columns: {real.columns}; keys are not scored)"
        )
    if query.group_size is not None and query.group_size not in values:
        raise DatasetError(
            f"query {query.name!r}: group_size {query.group_size!r} is not one of its value columns "
            f"{values} (output columns: {real.columns}); name the count of entities per group"
        )
    return values


def _default_threshold(query: Query) -> tuple[float, str]:
    if isinstance(query, AggregateQuery):
        return query.max_relative_error, "<="
    if isinstance(query, DistributionQuery):
        return query.max_tvd, "<="
    if isinstance(query, RankingQuery):
        return query.min_spearman, ">="
    return query.min_jaccard, ">="


def _column_threshold(query: Query, column: str, default: float) -> float:
    settings = query.columns.get(column)
    return settings.threshold if settings is not None and settings.threshold is not None else default


def _column_floor(query: AggregateQuery, column: str) -> float:
    settings = query.columns.get(column)
    return settings.floor if settings is not None and settings.floor is not None else query.floor


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


def _side_by_side(real: pl.DataFrame, synthetic: pl.DataFrame) -> pl.DataFrame:
    """The one row of a keyless answer, real and synthetic values suffixed as _align does."""
    return pl.concat(
        [
            real.select(pl.all().name.suffix("_real")),
            synthetic.select(real.columns).select(pl.all().name.suffix("_synthetic")),
        ],
        how="horizontal",
    ).with_columns(pl.lit(True).alias("__in_real"), pl.lit(True).alias("__in_synthetic"))


def _numeric(series: pl.Series, query: Query, column: str) -> np.ndarray:
    if not (series.dtype.is_numeric() or series.dtype == pl.Null):
        raise DatasetError(
            f"query {query.name!r}: value column {column!r} is {series.dtype}, not numeric; "
            f"list it in 'keys' if it names a group"
        )
    return series.cast(pl.Float64).to_numpy()


def _relative_errors(real: np.ndarray, synthetic: np.ndarray, floor: float) -> np.ndarray:
    """|s - r| / max(|r|, floor) per group; a null s counts as 0, a null r gives 0 if s is null too and
    1 otherwise, and so does a real 0 when there is no floor."""
    errors = np.empty(real.size)
    for i, (r, s) in enumerate(zip(real, synthetic)):
        if math.isnan(r):
            errors[i] = 0.0 if math.isnan(s) else 1.0
            continue
        s = 0.0 if math.isnan(s) else s
        denominator = max(abs(r), floor)
        if denominator > 0:
            errors[i] = abs(s - r) / denominator
        else:
            errors[i] = 0.0 if s == 0 else 1.0
    return errors


def _relative_error(real: np.ndarray, synthetic: np.ndarray, floor: float) -> float:
    if real.size == 0:
        return 0.0 if synthetic.size == 0 else math.nan
    return float(_relative_errors(real, synthetic, floor).mean())


def _rescaled(real: np.ndarray, synthetic: np.ndarray) -> np.ndarray:
    """Synthetic values scaled to the real total, s * sum(r) / sum(s) (nulls count 0 in the sums)."""
    total = np.nansum(synthetic)
    return synthetic if total <= 0 else synthetic * (np.nansum(real) / total)


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


def bucket_rows(group_errors: Sequence[tuple[str, float, bool]], every: bool = False) -> list[dict]:
    """Per bucket: groups, suppressed groups, mean and median error (every bucket, or the non-empty)."""
    rows = []
    for label in BUCKETS:
        errors = [e for b, e, _ in group_errors if b == label]
        if not errors and not every:
            continue
        rows.append(
            {
                "bucket": label,
                "groups": len(errors),
                "suppressed": sum(1 for b, _, s in group_errors if b == label and s),
                "mean_error": float(np.mean(errors)) if errors else None,
                "median_error": float(np.median(errors)) if errors else None,
            }
        )
    return rows


def _group_size_column(query: Query, values: list[str]) -> str | None:
    if query.group_size is not None:
        return query.group_size
    if isinstance(query, DistributionQuery) and values:
        return values[0]  # distribution values are group counts in most workloads
    return None


def score_query(query: Query, real: pl.DataFrame, synthetic: pl.DataFrame | None) -> QueryScore:
    """Score the synthetic answer to one query against the real answer. Raises DatasetError when the
    query's ``columns`` or ``group_size`` name a column that is not one of its value columns."""
    threshold, direction = _default_threshold(query)
    values = _check_column_settings(query, real)
    ignored = [c for c in values if c in query.columns and query.columns[c].ignore]
    scored = [c for c in values if c not in ignored]
    size_column = _group_size_column(query, values)
    score = QueryScore(
        name=query.name,
        type=query.type,
        passed=False,
        metrics={},
        threshold=threshold,
        direction=direction,
        real_groups=real.height,
        thresholds=(
            {"jaccard": threshold}
            if isinstance(query, CoverageQuery)
            else {c: _column_threshold(query, c, threshold) for c in scored}
        ),
        pass_when=query.pass_when,
        ignored=ignored,
        group_size=size_column,
    )
    if isinstance(query, CoverageQuery):
        score.buckets_note = "not bucketed: a coverage query scores the set of its groups"
    elif size_column is None:
        score.buckets_note = NOT_BUCKETED
    if synthetic is None:
        score.error = "no synthetic answer (the query reads a table that could not be rebuilt)"
        return _finish(score)
    missing = [c for c in real.columns if c not in synthetic.columns]
    if missing:
        score.error = f"synthetic answer lacks columns {missing}"
        return _finish(score)
    score.synthetic_groups = synthetic.height

    if isinstance(query, CoverageQuery):
        aligned = _align(query, real.select(query.keys), synthetic.select(query.keys))
        both = int((aligned["__in_real"] & aligned["__in_synthetic"]).sum())
        union = aligned.height
        score.metrics["jaccard"] = 1.0 if union == 0 else both / union
    elif not query.keys and (real.height != 1 or synthetic.height != 1):
        score.error = (
            f"an aggregate query without keys must return one row (real: {real.height}, "
            f"synthetic: {synthetic.height}); list its group columns in 'keys'"
        )
        score.metrics = {c: math.nan for c in scored}
        return _finish(score)
    else:
        aligned = _side_by_side(real, synthetic) if not query.keys else _align(query, real, synthetic)
        in_real = aligned["__in_real"].to_numpy()
        per_group = []  # one array of relative errors over the real groups per scored column
        for column in scored:
            r = _numeric(aligned[f"{column}_real"], query, column)
            s = _numeric(aligned[f"{column}_synthetic"], query, column)
            if isinstance(query, AggregateQuery):
                floor = _column_floor(query, column)
                score.metrics[column] = _relative_error(r[in_real], s[in_real], floor)
                per_group.append(_relative_errors(r[in_real], s[in_real], floor))
            elif isinstance(query, DistributionQuery):
                score.metrics[column] = _tvd(r, s)
                per_group.append(_relative_errors(r[in_real], _rescaled(r, s)[in_real], 0.0))
            else:
                score.metrics[column] = _spearman(r, s, query.descending)
                per_group.append(_relative_errors(r[in_real], s[in_real], 0.0))
        if size_column is not None and per_group:
            sizes = _numeric(aligned[f"{size_column}_real"], query, size_column)[in_real]
            suppressed = ~aligned["__in_synthetic"].to_numpy()[in_real]
            errors = np.mean(per_group, axis=0)
            score.group_errors = [
                (size_bucket(size), float(error), bool(lost))
                for size, error, lost in zip(sizes, errors, suppressed)
                if not math.isnan(size)  # a group of unknown size has no bucket
            ]
    score.suppressed_groups = int((aligned["__in_real"] & ~aligned["__in_synthetic"]).sum())
    score.fabricated_groups = int((~aligned["__in_real"] & aligned["__in_synthetic"]).sum())
    if not score.metrics and score.error is None:
        score.error = (
            f"every value column is ignored ({ignored}): nothing to score"
            if ignored
            else "the query has no value columns to score"
        )
    return _finish(score)


def _finish(score: QueryScore) -> QueryScore:
    """The verdict and the buckets of a scored query."""
    met = sum(score.meets(metric) for metric in score.metrics)
    needed = len(score.metrics) if score.pass_when == "all" else (len(score.metrics) + 1) // 2
    score.passed = score.error is None and bool(score.metrics) and met >= needed
    score.buckets = bucket_rows(score.group_errors)
    if score.error is not None and score.buckets_note is None:
        score.buckets_note = "not bucketed: the query could not be scored"
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


def metric_counts(score: QueryScore) -> tuple[int, int]:
    """(metrics met, metrics) of one query; a query that failed to run counts as one failed metric."""
    if score.error or not score.metrics:
        return 0, 1
    return sum(score.meets(metric) for metric in score.metrics), len(score.metrics)


def metric_pass_rate(scores: Sequence[QueryScore]) -> float:
    """Share of the value metrics (one per query and scored value column) that meet their thresholds,
    each its own. A query passes when half of its metrics do, so an easy column (a count) can carry it;
    this rate cannot be carried. A query that failed to run counts as one failed metric."""
    counts = [metric_counts(score) for score in scores]
    total = sum(n for _, n in counts)
    return sum(met for met, _ in counts) / total if total else math.nan


def scores_markdown(scores: Sequence[QueryScore]) -> str:
    """A markdown table of per-query results, for asset metadata and reports."""
    lines = ["| query | type | passed | metrics (threshold) |", "|---|---|---|---|"]
    for s in scores:
        shown = {k: "nan" if math.isnan(v) else f"{v:.3f}" for k, v in s.metrics.items()}
        if all(s.threshold_for(k) == s.threshold for k in s.metrics):
            metrics = ", ".join(f"{k}={v}" for k, v in shown.items())
            metrics += f" ({s.direction} {s.threshold:g})"
        else:
            metrics = ", ".join(
                f"{k}={v} ({s.direction} {s.threshold_for(k):g})" for k, v in shown.items()
            )
        if s.pass_when == "all":
            metrics += "; all must meet"
        if s.ignored:
            metrics += f"; not scored: {', '.join(s.ignored)}"
        verdict = "yes" if s.passed else ("error" if s.error else "no")
        lines.append(f"| {s.name} | {s.type} | {verdict} | {metrics} |")
    return "\n".join(lines)

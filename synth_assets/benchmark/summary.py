"""One generator's workload scores summed up: pass rates overall and by query type, suppressed and
fabricated groups, and errors by real group size (1-9, 10-99, 100-999, 1k-9.9k, >=10k entities).

Every figure is JSON-ready: a rate over nothing, or an error over no groups, is None.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from synth_assets.benchmark.compare import (
    QueryScore,
    bucket_rows,
    metric_counts,
    metric_pass_rate,
    pass_rate,
)

QUERY_TYPES = ("aggregate", "distribution", "ranking", "coverage")


def _rate(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def by_type(scores: Sequence[QueryScore]) -> dict[str, dict]:
    """Per query type: queries, queries passed, metrics, metrics met, and the two pass rates."""
    result = {}
    for query_type in QUERY_TYPES:
        of_type = [s for s in scores if s.type == query_type]
        counts = [metric_counts(s) for s in of_type]
        result[query_type] = {
            "queries": len(of_type),
            "passed": sum(s.passed for s in of_type),
            "pass_rate": _rate(pass_rate(of_type)),
            "metrics": sum(n for _, n in counts),
            "metrics_met": sum(met for met, _ in counts),
            "metric_pass_rate": _rate(metric_pass_rate(of_type)),
        }
    return result


def size_buckets(scores: Sequence[QueryScore]) -> list[dict]:
    """Every bucket of the real group size, pooled over the queries: groups, suppressed groups, mean and
    median relative error (None for a bucket without groups)."""
    return bucket_rows([entry for s in scores for entry in s.group_errors], every=True)


def workload_summary(scores: Sequence[QueryScore]) -> dict:
    """The workload of one generator in one JSON-ready document:

    ``{"queries", "pass_rate", "metric_pass_rate", "by_type": {type: {...}}, "suppressed_groups",
    "fabricated_groups", "buckets": [{"bucket", "groups", "suppressed", "mean_error",
    "median_error"}, ...], "not_bucketed": [query names]}``
    """
    return {
        "queries": len(scores),
        "pass_rate": _rate(pass_rate(scores)),
        "metric_pass_rate": _rate(metric_pass_rate(scores)),
        "by_type": by_type(scores),
        "suppressed_groups": sum(s.suppressed_groups for s in scores),
        "fabricated_groups": sum(s.fabricated_groups for s in scores),
        "buckets": size_buckets(scores),
        "not_bucketed": [s.name for s in scores if s.buckets_note is not None],
    }

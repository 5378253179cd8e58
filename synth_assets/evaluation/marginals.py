"""Marginal fidelity: mean total variation distance over all 1-way and 2-way marginals of the wide table.

Bins are public: a categorical column's bins are its categories; a numeric column has 10 (or its spec's
``bins``) equal-width bins over its public [min, max] on its declared scale (linear, or log1p(x - min) for log scale), then
one bin for each of its point masses (public values many entities have exactly: by default 0 for a
log-scale count or amount), which the interval bins then leave out; a nullable column has one more bin,
last, for null. A date (timestamp) column is binned as the integer column of its days (seconds) since
1970-01-01 over its public bounds, and its bins are labelled by the dates they hold. Nothing is fitted on
data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import polars as pl

from synth_assets.datasets.loading import Dataset
from synth_assets.datasets.spec import CategoricalColumn, DateColumn, NumericColumn
from synth_assets.datasets.temporal import as_numbers

NUMERIC_BINS = 10
"""Interval bins of a numeric column unless its spec sets ``bins``."""


def interval_bins(column: NumericColumn) -> int:
    return column.bins or NUMERIC_BINS


@dataclass(frozen=True)
class BinnedTable:
    """Bin codes per modelled column (int32, N x d) and the number of bins of each column."""

    columns: list[str]
    codes: np.ndarray
    sizes: np.ndarray


def column_bins(column: CategoricalColumn | NumericColumn) -> int:
    if isinstance(column, CategoricalColumn):
        base = len(column.categories)
    else:
        base = interval_bins(column) + len(column.special_values)
    return base + (1 if column.nullable else 0)


def bin_labels(column: CategoricalColumn | NumericColumn) -> list[str]:
    """A readable label per public bin of a column, in code order."""
    if isinstance(column, CategoricalColumn):
        labels = list(column.categories)
    elif isinstance(column, DateColumn):  # the first and last day (second) each bin holds
        labels = [f"(no {column.unit})" if lo > hi else column.label(lo) if lo == hi
                  else f"{column.label(lo)} to {column.label(hi)}" for lo, hi in _integer_bounds(column)]
        labels += [f"= {column.label(v)}" for v in column.special_values]
    else:
        if column.type == "integer":
            labels = ["(no integer)" if lo > hi else _number(lo) if lo == hi else f"{_number(lo)}-{_number(hi)}"
                      for lo, hi in _integer_bounds(column)]
        else:
            edges = bin_edges(column)
            labels = [f"{_number(a)}-{_number(b)}" for a, b in zip(edges[:-1], edges[1:])]
        labels += [f"= {_number(v)}" for v in column.special_values]
    return labels + (["null"] if column.nullable else [])


def _integer_bounds(column: NumericColumn) -> list[list[int]]:
    """The smallest and largest integer each interval bin [a, b) of an integer column holds, point
    masses left out (they have bins of their own); lo > hi for a bin that holds none."""
    edges = bin_edges(column)
    bounds = [[math.ceil(a - _EDGE_TOLERANCE), math.ceil(b - _EDGE_TOLERANCE) - 1]
              for a, b in zip(edges[:-1], edges[1:])]
    bounds[-1][1] = math.floor(edges[-1])  # the last bin holds its upper bound
    masses = set(column.special_values)
    for bound in bounds:
        while bound[0] in masses and bound[0] <= bound[1]:
            bound[0] += 1
        while bound[1] in masses and bound[0] <= bound[1]:
            bound[1] -= 1
    return bounds


def _number(value: float) -> str:
    """1,000 rather than 1e+03; 12 rather than 12.0; three significant digits below 1,000."""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3g}"


_POINT_TOLERANCE = 1e-9


def bin_table(dataset: Dataset, frame: pl.DataFrame) -> BinnedTable:
    """Bin every modelled column of a wide (or synthetic wide) frame on the public bins."""
    columns = dataset.spec.modelled_columns
    frame = as_numbers(dataset.spec, frame)
    codes = np.empty((frame.height, len(columns)), dtype=np.int32)
    for j, column in enumerate(columns):
        series = frame[column.wide_name]
        null_code = column_bins(column) - 1
        if not column.nullable and series.null_count():
            raise ValueError(
                f"column {column.wide_name!r} is not nullable but {series.null_count()} rows are null: it "
                "has no null bin (set nullable: true in the spec, or fix the reporting SQL)"
            )
        if isinstance(column, CategoricalColumn):
            mapping = {c: i for i, c in enumerate(column.categories)}
            values = series.cast(pl.Utf8).to_list()
            unknown = {v for v in values if v is not None and v not in mapping}
            if unknown:
                raise ValueError(
                    f"column {column.wide_name!r} holds values outside its categories: {sorted(unknown)[:5]}"
                )
            codes[:, j] = [null_code if v is None else mapping[v] for v in values]
        else:
            values = series.cast(pl.Float64).to_numpy()
            nulls = np.isnan(values)
            codes[:, j] = np.where(nulls, null_code, numeric_bins(column, np.nan_to_num(values)))
    sizes = np.array([column_bins(c) for c in columns], dtype=np.int64)
    return BinnedTable([c.wide_name for c in columns], codes, sizes)


def bin_edges(column: NumericColumn) -> np.ndarray:
    """The interval_bins + 1 public bin edges of a numeric column, on its raw scale."""
    bins = interval_bins(column)
    return _raw_from_unit(column, np.arange(bins + 1) / bins)


_EDGE_TOLERANCE = 1e-9


def numeric_bins(column: NumericColumn, values: np.ndarray) -> np.ndarray:
    """Bin of each value: its point mass's bin if it is one, else the number of inner edges at or below
    it (a value on an edge goes up)."""
    inner = bin_edges(column)[1:-1] - _EDGE_TOLERANCE
    clipped = np.clip(values, column.min, column.max)
    codes = np.searchsorted(inner, clipped, side="right").astype(np.int32)
    for i, point in enumerate(column.special_values):
        codes[np.abs(clipped - point) <= _POINT_TOLERANCE * max(1.0, abs(point))] = interval_bins(column) + i
    return codes


def _distribution(codes: np.ndarray, size: int) -> np.ndarray:
    counts = np.bincount(codes, minlength=size).astype(np.float64)
    total = counts.sum()
    return counts / total if total else counts


THREE_WAY_SAMPLE = 200
"""3-way marginals scored: a seeded sample of this many column triples (all of them when fewer)."""


def column_subsets(columns: int, ways: int, sample: int | None = None, seed: int = 0) -> list[tuple[int, ...]]:
    """Every ``ways``-subset of the columns, or a seeded sample of ``sample`` of them (sorted)."""
    subsets = list(combinations(range(columns), ways))
    if sample is None or len(subsets) <= sample:
        return subsets
    chosen = np.random.default_rng(np.random.SeedSequence([seed, ways, 0x3A7])).choice(
        len(subsets), size=sample, replace=False
    )
    return [subsets[i] for i in sorted(chosen)]


def marginal_tvds(
    real: BinnedTable, synthetic: BinnedTable, ways: int, subsets: list[tuple[int, ...]] | None = None
) -> np.ndarray:
    """TVD of every ``ways``-way marginal (or of the given column subsets), in subset order."""
    if ways not in (1, 2, 3):
        raise ValueError("ways must be 1, 2 or 3")
    results = []
    # the codes column-major, copied once: a column of the row-major codes is strided
    columns = {id(t): list(np.asfortranarray(t.codes).T) for t in (real, synthetic)}
    for subset in subsets if subsets is not None else combinations(range(len(real.columns)), ways):
        size = int(np.prod(real.sizes[list(subset)]))

        def joint(table: BinnedTable, subset=subset) -> np.ndarray:
            code = columns[id(table)][subset[0]].astype(np.int64)
            for j in subset[1:]:
                code = code * table.sizes[j] + columns[id(table)][j]
            return code

        p = _distribution(joint(real), size)
        q = _distribution(joint(synthetic), size)
        results.append(0.5 * np.abs(p - q).sum())
    return np.array(results)


def mean_tvd(
    dataset: Dataset, real: pl.DataFrame, synthetic: pl.DataFrame, *, three_way: bool = False
) -> dict[str, float]:
    """Mean TVD over all 1-way and all 2-way marginals of the modelled columns on their public bins;
    with ``three_way``, also over a seeded sample of :data:`THREE_WAY_SAMPLE` 3-way marginals (the same
    triples for every table of a dataset)."""
    real_bins, synthetic_bins = bin_table(dataset, real), bin_table(dataset, synthetic)
    scores = {
        "tvd_1way": float(marginal_tvds(real_bins, synthetic_bins, 1).mean()),
        "tvd_2way": float(marginal_tvds(real_bins, synthetic_bins, 2).mean()),
    }
    if three_way:
        triples = column_subsets(len(real_bins.columns), 3, THREE_WAY_SAMPLE)
        scores["tvd_3way"] = float(marginal_tvds(real_bins, synthetic_bins, 3, triples).mean())
    return scores


def _raw_from_unit(column: NumericColumn, unit: np.ndarray) -> np.ndarray:
    if column.scale == "log":
        return column.min + np.expm1(unit * np.log1p(column.max - column.min))
    return column.min + unit * (column.max - column.min)


def sample_in_bins(column: NumericColumn, bins: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Values drawn uniformly within the given public bins, on the column's scale.

    Integer columns draw uniformly among the integers whose bin is the given one, so that a value
    drawn for bin b falls in bin b again; a bin that holds no integer gives the integer nearest to it.
    """
    count = interval_bins(column)
    bins = np.minimum(np.asarray(bins, dtype=np.int64), count - 1)
    if column.type != "integer":  # a float lands on a point mass with probability 0
        return _raw_from_unit(column, (bins + rng.random(bins.size)) / count)
    edges = bin_edges(column)
    low = np.ceil(edges[:-1] - _EDGE_TOLERANCE)
    high = np.ceil(edges[1:] - _EDGE_TOLERANCE) - 1
    high[-1] = np.floor(column.max)
    empty = low > high
    nearest = np.clip(np.rint((edges[:-1] + edges[1:]) / 2), column.min, column.max)
    low = np.where(empty, nearest, low)
    high = np.where(empty, nearest, high)
    values = np.floor(low[bins] + rng.random(bins.size) * (high[bins] - low[bins] + 1))
    for point in column.special_values:  # point masses have bins of their own: step off them
        hit = values == point
        values[hit] = np.where(values[hit] + 1 <= high[bins[hit]], values[hit] + 1, values[hit] - 1)
    return np.clip(values, column.min, column.max)


def values_from_bins(column: CategoricalColumn | NumericColumn, bins: np.ndarray,
                     rng: np.random.Generator) -> pl.Series:
    """Values of ``column`` for drawn public bins: the category, or a value uniform within the numeric
    bin (:func:`sample_in_bins`); the null bin of a nullable column gives null."""
    null_bin = column_bins(column) - 1 if column.nullable else -1
    is_null = bins == null_bin
    if isinstance(column, CategoricalColumn):
        categories = np.array(column.categories + [None], dtype=object)
        values = categories[np.where(is_null, len(column.categories), bins)]
        return pl.Series(column.wide_name, values.tolist(), dtype=pl.Utf8)
    points = np.asarray(column.special_values + [np.nan])
    count = interval_bins(column)
    is_point = (bins >= count) & ~is_null
    drawn = sample_in_bins(column, np.where(is_point | is_null, 0, bins), rng)
    values = np.where(is_null, np.nan, np.where(is_point, points[np.clip(bins - count, 0, len(points) - 1)], drawn))
    dtype = pl.Int64 if column.type == "integer" else pl.Float64
    return pl.Series(column.wide_name, values).fill_nan(None).cast(dtype)


def draw_from_bins(column: CategoricalColumn | NumericColumn, weights: np.ndarray, n: int,
                   rng: np.random.Generator) -> pl.Series:
    """``n`` values: bins drawn in proportion to ``weights`` (uniformly if none is positive), then
    :func:`values_from_bins`."""
    if weights.sum() <= 0:
        weights = np.ones_like(weights)
    bins = rng.choice(weights.size, size=n, p=weights / weights.sum())
    return values_from_bins(column, bins, rng)

"""The reference every DP generator must beat: independent columns from DP-noised 1-way marginals.

Each modelled column gets a histogram over its public bins (synth_assets.evaluation.marginals). One
entity adds 1 to each of the d histograms, so the d histograms together have L2 sensitivity sqrt(d);
releasing them with Gaussian noise sigma each is the composition of d Gaussian mechanisms, and sigma is
calibrated with T = d (synth_assets.privacy.accounting). Negative noisy counts are set to 0. Rows are sampled
column by column: a bin with probability proportional to its noisy count, then a value uniform within
the bin on the column's scale (integers rounded). The number of rows is the mean of the noisy totals,
a DP estimate of n (summed before negative counts are set to 0, so unbiased).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from synth_assets.datasets.loading import Dataset
from synth_assets.evaluation.marginals import bin_table, column_bins, draw_from_bins
from synth_assets.privacy.accounting import calibrate_sigma


@dataclass
class IndependentMarginalsResult:
    population: pl.DataFrame
    epsilon: float
    delta: float
    sigma: float
    histograms: int
    seed: int


def independent_marginals(
    dataset: Dataset,
    real: pl.DataFrame,
    *,
    epsilon: float,
    delta: float,
    seed: int = 0,
    rows: int | None = None,
) -> IndependentMarginalsResult:
    """Sample a synthetic wide table whose columns are independent draws from noisy 1-way marginals."""
    columns = dataset.spec.modelled_columns
    sigma = calibrate_sigma(epsilon, delta, len(columns))
    binned = bin_table(dataset, real)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1DE9]))
    noisy, totals = [], []
    for j, column in enumerate(columns):
        counts = np.bincount(binned.codes[:, j], minlength=column_bins(column)).astype(np.float64)
        released = counts + rng.normal(0.0, sigma, size=counts.size)
        totals.append(released.sum())  # unbiased: summed before negative counts are set to 0
        noisy.append(np.maximum(released, 0.0))
    n = rows or max(1, int(round(np.mean(totals))))
    data = {}
    for column, weights in zip(columns, noisy):
        data[column.wide_name] = draw_from_bins(column, weights, n, rng)
    key = dataset.spec.entity.key
    population = pl.DataFrame(data).with_columns(
        pl.format("ref_{}", pl.int_range(1, n + 1).cast(pl.Utf8).str.zfill(7)).alias(key)
    )
    population = population.select([c.wide_name for c in dataset.spec.wide_table.columns])
    return IndependentMarginalsResult(population, epsilon, delta, sigma, len(columns), seed)

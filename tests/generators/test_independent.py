"""The independent-marginals reference: noisy 1-way marginals, columns sampled independently."""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import polars as pl
import pytest

from synth_assets.datasets.loading import Dataset, load_dataset
from synth_assets.datasets.sources import read_source
from synth_assets.evaluation.marginals import bin_table, column_bins, marginal_tvds, mean_tvd
from synth_assets.generators.independent import IndependentMarginals, IndependentSettings
from synth_assets.pe.generators import validate_candidates
from synth_assets.privacy.accounting import calibrate_sigma, compute_epsilon
from synth_assets.tables.build import build_reporting_table, build_wide_table
from synth_assets.tables.decompose import decompose

DELTA = 1e-5


@dataclass
class Run:
    population: pl.DataFrame
    sigma: float
    histograms: int


def independent_marginals(dataset, wide, *, epsilon, delta, seed=0, rows=None) -> Run:
    """Plan, fit and sample the generator directly (no ledger: the tests' data is not private)."""
    generator = IndependentMarginals(IndependentSettings(seed=seed))
    plan = generator.plan(dataset, epsilon, delta)
    population = generator.sample(dataset, generator.fit(dataset, wide, plan), rows=rows)
    (release,) = plan.releases
    return Run(population, release.sigma, release.histograms)


def build_wide(dataset: Dataset) -> pl.DataFrame:
    sources = {name: read_source(dataset, name) for name in dataset.spec.sources}
    reporting = {t: build_reporting_table(dataset, t, sources) for t in dataset.spec.reporting_tables}
    return build_wide_table(dataset, reporting)[0]


@pytest.fixture(scope="module")
def wide(tiny: Dataset) -> pl.DataFrame:
    return build_wide(tiny)


def tvds(dataset, real, synthetic, ways):
    return marginal_tvds(bin_table(dataset, real), bin_table(dataset, synthetic), ways)


def test_output_schema_and_validity(tiny, wide):
    result = independent_marginals(tiny, wide, epsilon=1.0, delta=DELTA, seed=0)
    population = result.population
    assert population.columns == wide.columns
    assert population.schema == wide.schema
    assert not any(validate_candidates(tiny, population, allow_identifiers=True).values())
    key = tiny.spec.entity.key
    assert population[key].is_unique().all() and population[key].null_count() == 0
    assert population[key][0] == "ref_0000001"
    tables = decompose(tiny, population)
    assert tables.keys() == decompose(tiny, wide).keys()


def test_accounting(tiny, wide):
    d = len(tiny.spec.modelled_columns)
    result = independent_marginals(tiny, wide, epsilon=2.0, delta=DELTA, seed=0)
    assert result.histograms == d == 8
    assert result.sigma == calibrate_sigma(2.0, DELTA, d)
    assert compute_epsilon(result.sigma, DELTA, d) == pytest.approx(2.0, rel=1e-9)
    plan = IndependentMarginals().plan(tiny, 2.0, DELTA)
    assert (plan.epsilon, plan.delta, plan.seed) == (2.0, DELTA, 0)
    assert plan.mu == pytest.approx(math.sqrt(d) / result.sigma)


def test_rows_estimate_n_or_are_as_asked(tiny, wide):
    n = wide.height
    d = len(tiny.spec.modelled_columns)
    bins = sum(column_bins(c) for c in tiny.spec.modelled_columns)
    for epsilon in (1.0, 20.0):
        result = independent_marginals(tiny, wide, epsilon=epsilon, delta=DELTA, seed=3)
        # the mean of d noisy totals: std sqrt(total bins) * sigma / d, plus the (upward) clipping bias
        spread = math.sqrt(bins) * result.sigma / d
        assert abs(result.population.height - n) <= 4 * spread + 0.1 * n
    assert independent_marginals(tiny, wide, epsilon=1.0, delta=DELTA, seed=3, rows=77).population.height == 77


def test_row_estimate_is_unbiased(tiny, wide):
    n = wide.height
    d = len(tiny.spec.modelled_columns)
    bins = sum(column_bins(c) for c in tiny.spec.modelled_columns)
    seeds = range(12)
    rows = [independent_marginals(tiny, wide, epsilon=0.1, delta=DELTA, seed=s).population.height for s in seeds]
    sigma = calibrate_sigma(0.1, DELTA, d)
    standard_error = math.sqrt(bins) * sigma / d / math.sqrt(len(seeds))
    assert abs(np.mean(rows) - n) < 4 * standard_error


def test_one_way_marginals_close_at_large_epsilon_far_at_small(tiny, wide):
    """Measured over seeds 0-5: epsilon 20 mean 1-way TVD 0.022-0.033 (max over columns 0.036-0.080, the
    sampling noise of 400 rows); epsilon 0.1 mean 0.265-0.412."""
    for seed in (0, 1, 2):
        large = tvds(tiny, wide, independent_marginals(tiny, wide, epsilon=20.0, delta=DELTA, seed=seed).population, 1)
        small = tvds(tiny, wide, independent_marginals(tiny, wide, epsilon=0.1, delta=DELTA, seed=seed).population, 1)
        assert large.mean() < 0.05 and large.max() < 0.12
        assert small.mean() > 0.2
        assert small.mean() > 4 * large.mean()


def test_columns_are_independent(tiny, wide):
    """channel and version are both null exactly when a device has no firmware row; sessions, minutes and
    crashes are null together and grow together. Sampled independently, their 2-way marginals break.
    Measured over seeds 0-5 at epsilon 20: TVD(channel, version) 0.46-0.55, TVD(sessions, minutes)
    0.33-0.37, while no 1-way TVD exceeded 0.08."""
    names = [c.wide_name for c in tiny.spec.modelled_columns]
    pairs = list(combinations(names, 2))
    for seed in (0, 1):
        synthetic = independent_marginals(tiny, wide, epsilon=20.0, delta=DELTA, seed=seed).population
        one = dict(zip(names, tvds(tiny, wide, synthetic, 1)))
        two = dict(zip(pairs, tvds(tiny, wide, synthetic, 2)))
        for a, b in [("channel", "version"), ("sessions", "minutes")]:
            assert two[(a, b)] > 0.25
            assert two[(a, b)] > 3 * max(one[a], one[b])
        # the real joint has no (channel present, version null) row; the synthetic one has many
        mixed = synthetic.filter(pl.col("channel").is_not_null() & pl.col("version").is_null()).height
        assert wide.filter(pl.col("channel").is_not_null() & pl.col("version").is_null()).height == 0
        assert mixed > 0.1 * synthetic.height
        assert np.mean(list(two.values())) > np.mean(list(one.values()))


def test_same_seed_same_output_different_seed_different(tiny, wide):
    a = independent_marginals(tiny, wide, epsilon=1.0, delta=DELTA, seed=5).population
    b = independent_marginals(tiny, wide, epsilon=1.0, delta=DELTA, seed=5).population
    c = independent_marginals(tiny, wide, epsilon=1.0, delta=DELTA, seed=6).population
    assert a.equals(b)
    assert not a.equals(c)


# -------------------------------------------------------------------------------- embedded dataset


@pytest.fixture(scope="module")
def players() -> Dataset:
    return load_dataset()


@pytest.fixture(scope="module")
def players_wide(players: Dataset) -> pl.DataFrame:
    return build_wide(players)


@pytest.mark.slow
def test_on_the_embedded_dataset(players, players_wide):
    """Measured (seeds 0-3, epsilon 1, delta 1e-6): 1-way 0.0101-0.0103, 2-way 0.1488-0.1495, rows
    within 0.1 % of n = 20,093."""
    result = independent_marginals(players, players_wide, epsilon=1.0, delta=1e-6, seed=0)
    assert result.population.schema == players_wide.schema
    assert not any(validate_candidates(players, result.population, allow_identifiers=True).values())
    assert abs(result.population.height - players_wide.height) < 0.01 * players_wide.height
    scores = mean_tvd(players, players_wide, result.population)
    assert scores["tvd_1way"] < 0.02
    assert scores["tvd_2way"] > 5 * scores["tvd_1way"]  # 69 columns, many dependent: independence shows

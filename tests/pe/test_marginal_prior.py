"""The DP marginal prior (noisy 1-way marginals and table presence) and the generator that draws from it."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import polars as pl
import pytest

from synth_assets.datasets.loading import Dataset
from synth_assets.datasets.sources import read_source
from synth_assets.datasets.spec import CategoricalColumn, DatasetSpec
from synth_assets.evaluation.marginals import NUMERIC_BINS, bin_table, column_bins
from synth_assets.pe.encoding import to_unit
from synth_assets.pe.generators import candidate_schema, validate_candidates
from synth_assets.pe.marginal_prior import (
    MarginalPrior,
    MarginalPriorGenerator,
    prior_histogram_count,
    prior_tables,
    release_marginal_prior,
)
from synth_assets.tables.build import build_reporting_table, build_wide_table


@pytest.fixture(scope="module")
def reporting(tiny: Dataset) -> dict[str, pl.DataFrame]:
    sources = {name: read_source(tiny, name) for name in tiny.spec.sources}
    return {t: build_reporting_table(tiny, t, sources) for t in tiny.spec.reporting_tables}


@pytest.fixture(scope="module")
def wide(tiny: Dataset, reporting) -> pl.DataFrame:
    return build_wide_table(tiny, reporting)[0]


def clean(counts: dict[str, int]) -> bool:
    return not any(counts.values())


def exact_counts(dataset: Dataset, frame: pl.DataFrame) -> dict[str, np.ndarray]:
    """Bin counts computed here without bin_table: categories by value, numerics by floor(10 * unit)."""
    counts = {}
    for column in dataset.spec.modelled_columns:
        series = frame[column.wide_name]
        size = column_bins(column)
        out = np.zeros(size)
        if isinstance(column, CategoricalColumn):
            for i, category in enumerate(column.categories):
                out[i] = (series == category).sum()
        else:
            values = series.drop_nulls().cast(pl.Float64).to_numpy()
            bins = np.minimum(np.floor(to_unit(column, values) * NUMERIC_BINS), NUMERIC_BINS - 1).astype(int)
            out[:NUMERIC_BINS] = np.bincount(bins, minlength=NUMERIC_BINS)
        if column.nullable:
            out[-1] = series.null_count()
        counts[column.wide_name] = out
    return counts


def noise_draws(dataset: Dataset, sigma: float, seed: int) -> tuple[dict, dict]:
    """The release's Gaussian draws, in its order: every column's bins, then every table's two bins."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x9A10]))
    columns = {c.wide_name: rng.normal(0, sigma, column_bins(c)) for c in dataset.spec.modelled_columns}
    presence = {t: rng.normal(0, sigma, 2) for t in prior_tables(dataset)}
    return columns, presence


# ------------------------------------------------------------------------------------------ release


def test_prior_tables_and_histogram_count(tiny):
    assert prior_tables(tiny) == ["usage", "updates"]  # the population table 'profile' is excluded
    assert prior_histogram_count(tiny) == len(tiny.spec.modelled_columns) + 2 == 10


def test_with_tiny_noise_the_release_is_the_exact_counts(tiny, wide, reporting):
    prior = release_marginal_prior(tiny, wide, sigma=1e-9, seed=3)
    exact = exact_counts(tiny, wide)
    assert prior.columns.keys() == exact.keys()
    for name, counts in exact.items():
        np.testing.assert_allclose(prior.columns[name], counts, atol=1e-6, err_msg=name)
        assert abs(prior.columns[name].sum() - wide.height) < 1e-6  # one entity, one bin per column
    # presence: entities with a row in the table = entities with a non-null column of it
    assert prior.presence.keys() == {"usage", "updates"}
    for table in ("usage", "updates"):
        present = reporting[table].height
        assert 0 < present < wide.height
        np.testing.assert_allclose(prior.presence[table], [present, wide.height - present], atol=1e-6)
    assert prior.histograms == 10
    assert prior.sigma == 1e-9 and prior.seed == 3


def test_the_release_is_counts_plus_recorded_noise_clipped_at_zero(tiny, wide, reporting):
    sigma, seed = 40.0, 5
    prior = release_marginal_prior(tiny, wide, sigma=sigma, seed=seed)
    exact = exact_counts(tiny, wide)
    columns, presence = noise_draws(tiny, sigma, seed)
    for name in exact:
        np.testing.assert_allclose(prior.columns[name], np.maximum(exact[name] + columns[name], 0), rtol=1e-12)
    for table in presence:
        present = reporting[table].height
        raw = np.array([present, wide.height - present]) + presence[table]
        np.testing.assert_allclose(prior.presence[table], np.maximum(raw, 0), rtol=1e-12)
    values = np.concatenate(list(prior.columns.values()) + list(prior.presence.values()))
    assert values.min() == 0.0  # with sigma 40 many empty bins go negative, and are clipped
    assert (values == 0).sum() >= 5
    # the noise is real: positive noisy counts are not integers
    positive = values[values > 0]
    assert not np.any(positive == np.round(positive))


def test_same_seed_same_release_different_seed_different(tiny, wide):
    a = release_marginal_prior(tiny, wide, sigma=5.0, seed=1)
    b = release_marginal_prior(tiny, wide, sigma=5.0, seed=1)
    c = release_marginal_prior(tiny, wide, sigma=5.0, seed=2)
    assert all(np.array_equal(a.columns[k], b.columns[k]) for k in a.columns)
    assert not all(np.array_equal(a.columns[k], c.columns[k]) for k in a.columns)


@pytest.mark.parametrize("sigma", [0.0, -2.0])
def test_sigma_must_be_positive(tiny, wide, sigma):
    with pytest.raises(ValueError, match="sigma"):
        release_marginal_prior(tiny, wide, sigma=sigma, seed=0)


def test_frame_round_trip(tiny, wide):
    prior = release_marginal_prior(tiny, wide, sigma=7.5, seed=9)
    frame = prior.to_frame()
    assert frame.schema == pl.Schema(
        {
            "kind": pl.Utf8,
            "name": pl.Utf8,
            "bin": pl.Int64,
            "noisy_count": pl.Float64,
            "sigma": pl.Float64,
            "seed": pl.Int64,
            "n_estimate": pl.Float64,
        }
    )
    assert frame.height == sum(v.size for v in prior.columns.values()) + 2 * len(prior.presence)
    back = MarginalPrior.from_frame(frame.sample(fraction=1.0, shuffle=True, seed=1))  # row order is irrelevant
    assert back.sigma == prior.sigma and back.seed == prior.seed and back.n_estimate == prior.n_estimate
    assert back.columns.keys() == prior.columns.keys() and back.presence.keys() == prior.presence.keys()
    for name in prior.columns:
        np.testing.assert_array_equal(back.columns[name], prior.columns[name])
    for name in prior.presence:
        np.testing.assert_array_equal(back.presence[name], prior.presence[name])


def test_dict_round_trip(tiny, wide):
    prior = release_marginal_prior(tiny, wide, sigma=7.5, seed=9)
    back = MarginalPrior.from_dict(json.loads(json.dumps(prior.to_dict())))
    assert back.sigma == prior.sigma and back.seed == prior.seed
    for group in ("columns", "presence"):
        ours, theirs = getattr(prior, group), getattr(back, group)
        assert list(ours) == list(theirs)
        for name in ours:
            np.testing.assert_array_equal(theirs[name], ours[name])
            assert theirs[name].dtype == np.float64


# ---------------------------------------------------------------------------------------- generator


def hand_prior(dataset: Dataset) -> MarginalPrior:
    """A made-up prior: distinctive shapes, so that following it is visible."""
    columns = {}
    for column in dataset.spec.modelled_columns:
        size = column_bins(column)
        counts = np.arange(1, size + 1, dtype=np.float64) ** 2
        counts[::3] = 0.0  # some empty bins
        columns[column.wide_name] = counts
    columns["region"] = np.array([10.0, 20.0, 30.0, 40.0])
    columns["purchase_year"] = np.array([0, 0, 5, 10, 0, 0, 1, 0, 0, 4], dtype=np.float64)
    # null bin last: 300 entities without usage (as presence says) and 70 with usage but no minutes
    columns["minutes"] = np.array([315, 189, 63, 31.5, 18.9, 12.6, 0, 0, 0, 0, 370], dtype=np.float64)
    presence = {"usage": np.array([700.0, 300.0]), "updates": np.array([200.0, 800.0])}
    return MarginalPrior(columns=columns, presence=presence, sigma=3.0, seed=4)


def distribution(codes: np.ndarray, size: int) -> np.ndarray:
    counts = np.bincount(codes, minlength=size).astype(np.float64)
    return counts / counts.sum()


def tvd(p: np.ndarray, q: np.ndarray) -> float:
    return 0.5 * float(np.abs(p - q).sum())


@pytest.fixture(scope="module")
def drawn(tiny) -> pl.DataFrame:
    return MarginalPriorGenerator(tiny, hand_prior(tiny)).random(50_000, seed=1)


def test_random_candidates_are_valid(tiny, drawn):
    assert drawn.schema == pl.Schema(candidate_schema(tiny))
    assert clean(validate_candidates(tiny, drawn))
    # a non-population table is present or absent in a row: its non-nullable columns are all set or all
    # null, and its nullable columns are null where it is absent
    for table in prior_tables(tiny):
        columns = tiny.spec.columns_of(table)
        required = [c.wide_name for c in columns if not c.nullable] or [columns[0].wide_name]
        filled = drawn.select(pl.sum_horizontal(pl.col(n).is_not_null() for n in required)).to_series()
        assert filled.is_in([0, len(required)]).all(), table
        absent = filled == 0
        for column in columns:
            assert drawn.filter(absent)[column.wide_name].null_count() == absent.sum(), column.wide_name


def test_a_nullable_column_of_a_present_table_keeps_its_own_null_share(tiny):
    """Nulls were kept per table only: a nullable column of a table whose other columns are never null
    came out never null (94% null in the real data, 0% in PE)."""
    prior = hand_prior(tiny)
    for name in ("sessions", "crashes"):  # null exactly where usage is absent
        prior.columns[name][-1] = 300.0
    frame = MarginalPriorGenerator(tiny, prior).random(50_000, seed=3)
    present = frame.filter(pl.col("sessions").is_not_null())
    assert present.height / frame.height == pytest.approx(0.7, abs=0.01)
    assert present["crashes"].null_count() == 0
    assert present["minutes"].is_null().mean() == pytest.approx(70 / 700, abs=0.01)


def test_presence_rates_follow_the_prior(tiny, drawn):
    generator = MarginalPriorGenerator(tiny, hand_prior(tiny))
    assert generator.presence == {"usage": 0.7, "updates": 0.2}
    assert drawn["sessions"].is_not_null().mean() == pytest.approx(0.7, abs=0.01)
    assert drawn["channel"].is_not_null().mean() == pytest.approx(0.2, abs=0.01)


@pytest.mark.parametrize("name", ["region", "purchase_year", "minutes", "model", "version"])
def test_a_column_follows_its_prior_among_present_rows(tiny, drawn, name):
    prior = hand_prior(tiny)
    column = next(c for c in tiny.spec.modelled_columns if c.wide_name == name)
    size = column_bins(column)
    present = drawn.filter(pl.col(name).is_not_null())
    j = [c.wide_name for c in tiny.spec.modelled_columns].index(name)
    codes = bin_table(tiny, present).codes[:, j]
    expected = prior.columns[name].copy()
    if column.nullable:
        expected[-1] = 0.0  # a present row of a non-population table never has a null
    expected /= expected.sum()
    assert tvd(distribution(codes, size), expected) < 0.02
    assert (np.bincount(codes, minlength=size)[expected == 0] == 0).all()  # empty bins are never drawn


def test_a_nullable_population_column_is_null_with_its_noisy_share(tiny):
    raw = tiny.spec.model_dump(by_alias=True)
    for column in raw["wide_table"]["columns"]:
        if column["from"] == "profile.purchase_year":
            column["nullable"] = True
    dataset = dataclasses.replace(tiny, spec=DatasetSpec.model_validate(raw))
    prior = hand_prior(dataset)
    prior.columns["purchase_year"] = np.array([0, 0, 5, 10, 0, 0, 1, 0, 0, 4, 20], dtype=np.float64)
    frame = MarginalPriorGenerator(dataset, prior).random(40_000, seed=2)
    assert clean(validate_candidates(dataset, frame))
    assert frame["purchase_year"].is_null().mean() == pytest.approx(0.5, abs=0.01)


def test_an_all_zero_column_falls_back_to_uniform(tiny):
    prior = hand_prior(tiny)
    prior.columns["region"] = np.zeros(4)
    prior.columns["channel"] = np.array([0.0, 0.0, 50.0])  # only the null bin: present rows draw uniformly
    frame = MarginalPriorGenerator(tiny, prior).random(20_000, seed=3)
    assert clean(validate_candidates(tiny, frame))
    shares = frame["region"].value_counts(normalize=True)["proportion"].to_numpy()
    np.testing.assert_allclose(shares, 0.25, atol=0.02)
    channel = frame["channel"].drop_nulls()
    assert channel.len() > 0 and set(channel.unique()) == {"stable", "beta"}


def test_an_empty_presence_histogram_gives_presence_one_half(tiny):
    prior = hand_prior(tiny)
    prior.presence["updates"] = np.zeros(2)
    assert MarginalPriorGenerator(tiny, prior).presence["updates"] == 0.5


def test_random_is_deterministic_given_the_seed(tiny):
    generator = MarginalPriorGenerator(tiny, hand_prior(tiny))
    assert generator.random(500, seed=8).equals(generator.random(500, seed=8))
    assert not generator.random(500, seed=8).equals(generator.random(500, seed=9))


def test_variation_keeps_the_schema_and_validates(tiny, drawn):
    generator = MarginalPriorGenerator(tiny, hand_prior(tiny))
    parents = drawn.head(300)
    for iteration in (0, 2, 5):
        varied = generator.variation(parents, 3, iteration=iteration, iterations=5, seed=11)
        assert varied.height == 900
        assert varied.schema == parents.schema
        assert clean(validate_candidates(tiny, varied))
    early = generator.variation(parents, 1, iteration=0, iterations=5, seed=11)
    changed = sum((early[c] != parents[c]).fill_null(True).sum() for c in parents.columns)
    assert changed > 0
    again = generator.variation(parents, 1, iteration=0, iterations=5, seed=11)
    assert early.equals(again)


def test_describe_records_the_prior(tiny):
    described = MarginalPriorGenerator(tiny, hand_prior(tiny)).describe()
    assert described["name"] == "offline+marginal_prior"
    assert described["prior_sigma"] == 3.0 and described["prior_seed"] == 4
    json.dumps(described)


def test_a_released_prior_reproduces_the_real_marginals(tiny, wide, reporting):
    prior = release_marginal_prior(tiny, wide, sigma=0.5, seed=0)
    frame = MarginalPriorGenerator(tiny, prior).random(40_000, seed=5)
    assert frame["sessions"].is_not_null().mean() == pytest.approx(reporting["usage"].height / wide.height, abs=0.02)
    assert frame["channel"].is_not_null().mean() == pytest.approx(reporting["updates"].height / wide.height, abs=0.02)
    real, synthetic = bin_table(tiny, wide), bin_table(tiny, frame)
    for j, column in enumerate(tiny.spec.modelled_columns):
        if column.table != tiny.spec.entity.population:
            continue
        size = column_bins(column)
        assert tvd(distribution(real.codes[:, j], size), distribution(synthetic.codes[:, j], size)) < 0.03

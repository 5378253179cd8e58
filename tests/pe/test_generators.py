"""Candidate APIs: the offline generator's random and variation, and validate_candidates."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import polars as pl
import pytest

from synth_assets.datasets.loading import Dataset, load_dataset
from synth_assets.datasets.spec import CategoricalColumn, DatasetSpec
from synth_assets.pe.generators import (
    VIOLATION_REASONS,
    CandidateAPI,
    OfflineGenerator,
    candidate_schema,
    mutation_rate,
    validate_candidates,
)


@pytest.fixture(scope="module")
def lahman() -> Dataset:
    return load_dataset()


@pytest.fixture(scope="module")
def tiny(tiny_dataset_dir) -> Dataset:
    return load_dataset(tiny_dataset_dir)


@pytest.fixture(params=["lahman", "tiny"])
def dataset(request, lahman, tiny) -> Dataset:
    return {"lahman": lahman, "tiny": tiny}[request.param]


def clean(counts: dict[str, int]) -> bool:
    return set(counts) == set(VIOLATION_REASONS) and not any(counts.values())


def table_groups(dataset: Dataset) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for column in dataset.spec.modelled_columns:
        groups.setdefault(column.table, []).append(column.wide_name)
    return groups


def assert_table_structure(dataset: Dataset, frame: pl.DataFrame) -> None:
    """Every non-population table is all-null or all-filled in every row."""
    for table, names in table_groups(dataset).items():
        if table == dataset.spec.entity.population:
            continue
        filled = frame.select(pl.sum_horizontal(pl.col(n).is_not_null() for n in names)).to_series()
        assert filled.is_in([0, len(names)]).all(), table


# ------------------------------------------------------------------------------------- interface


def test_offline_generator_is_a_candidate_api(dataset):
    generator = OfflineGenerator(dataset)
    assert isinstance(generator, CandidateAPI)
    assert generator.name == "offline"
    settings = generator.describe()
    json.dumps(settings)
    assert settings["mutation_rate"]["r0"] == 0.5 and settings["mutation_rate"]["r_end"] == 0.01


# ------------------------------------------------------------------------------------------ random


def test_random_candidates_are_always_valid(dataset):
    generator = OfflineGenerator(dataset)
    schema = candidate_schema(dataset)
    for seed in range(25):
        frame = generator.random(300, seed=seed)
        assert frame.height == 300
        assert frame.schema == pl.Schema(schema)
        assert "player_id" not in frame.columns and "device_id" not in frame.columns
        assert clean(validate_candidates(dataset, frame)), seed
        assert_table_structure(dataset, frame)


def test_random_dtypes_and_order(lahman):
    frame = OfflineGenerator(lahman).random(10, seed=0)
    assert frame.columns == [c.wide_name for c in lahman.spec.modelled_columns]
    assert frame.schema["bats"] == pl.Utf8
    assert frame.schema["home_runs"] == pl.Int64
    assert frame.schema["era"] == pl.Float64
    assert OfflineGenerator(lahman).random(0, seed=0).schema == frame.schema


def test_random_presence_and_population_nulls(lahman, tiny):
    n = 6000
    frame = OfflineGenerator(lahman).random(n, seed=11)
    for table, names in table_groups(lahman).items():
        present = frame.get_column(names[0]).is_not_null().mean()
        if table == lahman.spec.entity.population:
            for name in names:  # all nullable in the Databank: null with probability 0.05
                assert 0.03 < frame.get_column(name).is_null().mean() < 0.07, name
        else:
            assert 0.46 < present < 0.54, table
    small = OfflineGenerator(tiny).random(n, seed=11)
    for name in ("model", "region", "purchase_year"):  # population, not nullable: never null
        assert small.get_column(name).null_count() == 0


def test_presence_override(tiny):
    frame = OfflineGenerator(tiny, presence={"usage": 1.0, "updates": 0.0}).random(500, seed=2)
    assert frame.select(pl.col("sessions", "minutes", "crashes").null_count()).sum_horizontal()[0] == 0
    assert frame.get_column("channel").null_count() == 500
    assert frame.get_column("version").null_count() == 500
    with pytest.raises(ValueError, match="nowhere"):
        OfflineGenerator(tiny, presence={"nowhere": 0.5})


def test_table_with_a_non_nullable_column_is_always_present(tiny):
    raw = tiny.spec.model_dump(by_alias=True)
    for column in raw["wide_table"]["columns"]:
        if column["from"] == "updates.version":
            column["nullable"] = False
    dataset = dataclasses.replace(tiny, spec=DatasetSpec.model_validate(raw))
    generator = OfflineGenerator(dataset, presence={"updates": 0.2})
    assert generator.presence["updates"] == 1.0 and "updates" in generator.always_present
    frame = generator.random(300, seed=1)
    assert frame.get_column("version").null_count() == 0
    assert frame.get_column("channel").null_count() == 0
    varied = generator.variation(frame, 3, iteration=0, iterations=5, seed=2)
    assert varied.get_column("version").null_count() == 0
    assert clean(validate_candidates(dataset, varied))


def test_random_values_spread_over_the_domain(tiny, lahman):
    frame = OfflineGenerator(tiny).random(5000, seed=4)
    years = frame.get_column("purchase_year")
    assert years.min() == 2000 and years.max() == 2030  # uniform over the integers, ends included
    assert set(frame.get_column("model").unique()) == {"alpha", "beta", "gamma", "other"}
    # log scale: uniform in log1p space, so the median of home_runs in [0, 1000] is about
    # expm1(ln(1001) / 2) = 30.6
    home_runs = OfflineGenerator(lahman).random(8000, seed=4).get_column("home_runs").drop_nulls()
    assert 22 < home_runs.median() < 40
    assert home_runs.min() >= 0 and home_runs.max() <= 1000


def test_random_is_deterministic_by_seed(dataset):
    generator = OfflineGenerator(dataset)
    assert generator.random(200, seed=42).equals(generator.random(200, seed=42))
    assert not generator.random(200, seed=42).equals(generator.random(200, seed=43))


# ----------------------------------------------------------------------------------------- variation


def test_mutation_rate_schedule():
    assert mutation_rate(0, 10) == pytest.approx(0.5)
    assert mutation_rate(10, 10) == pytest.approx(0.01)
    # 0.5 - 0.49 * 0.1 ** 0.2 = 0.5 - 0.49 * 0.6309573 = 0.1908309
    assert mutation_rate(1, 10) == pytest.approx(0.1908309, abs=1e-7)
    # 0.5 - 0.49 * 0.5 ** 0.2 = 0.5 - 0.49 * 0.8705506 = 0.0734302
    assert mutation_rate(5, 10) == pytest.approx(0.0734302, abs=1e-7)
    assert mutation_rate(1, 1) == pytest.approx(0.01)
    rates = [mutation_rate(t, 20) for t in range(21)]
    assert all(a > b for a, b in zip(rates, rates[1:]))
    for bad in ((-1, 10), (11, 10), (0, 0)):
        with pytest.raises(ValueError):
            mutation_rate(*bad)


def test_variation_is_valid_and_keeps_structure(dataset):
    generator = OfflineGenerator(dataset)
    selected = generator.random(200, seed=1)
    for iteration, seed in ((0, 1), (1, 2), (5, 3), (10, 4)):
        varied = generator.variation(selected, 4, iteration=iteration, iterations=10, seed=seed)
        assert varied.height == 800
        assert varied.schema == selected.schema
        assert clean(validate_candidates(dataset, varied)), iteration
        assert_table_structure(dataset, varied)


def changed_fraction(before: pl.DataFrame, after: pl.DataFrame, names: list[str]) -> float:
    changed = 0
    for name in names:
        a, b = before.get_column(name), after.get_column(name)
        changed += int(((a != b).fill_null(True) & ~(a.is_null() & b.is_null())).sum())
    return changed / (len(names) * before.height)


def test_variation_changes_little_late_and_more_early(lahman):
    generator = OfflineGenerator(lahman)
    selected = generator.random(500, seed=7)
    n = 4
    repeated = pl.concat([selected] * n)  # row i * len(selected) + k comes from record k
    names = selected.columns
    early = generator.variation(selected, n, iteration=1, iterations=10, seed=8)
    late = generator.variation(selected, n, iteration=10, iterations=10, seed=8)
    early_changed = changed_fraction(repeated, early, names)
    late_changed = changed_fraction(repeated, late, names)
    assert late_changed < 0.03
    assert early_changed > 5 * late_changed
    assert early_changed < 0.5  # most columns kept even early
    # At the last iteration most variations are their record unchanged.
    unchanged_rows = sum(
        repeated[i].equals(late[i], null_equal=True) for i in range(0, repeated.height, 10)
    )
    assert unchanged_rows > 0.3 * (repeated.height / 10)


def test_variation_rate_on_categorical_columns(tiny):
    """A mutated categorical always takes another category: its change rate is r(t)."""
    generator = OfflineGenerator(tiny)
    selected = generator.random(2000, seed=1)
    n = 5
    repeated = pl.concat([selected] * n)
    for iteration in (1, 5, 10):
        rate = mutation_rate(iteration, 10)
        varied = generator.variation(selected, n, iteration=iteration, iterations=10, seed=iteration)
        for name in ("model", "region"):  # population columns, never null
            changed = (varied.get_column(name) != repeated.get_column(name)).mean()
            assert changed == pytest.approx(rate, abs=0.02), (iteration, name)


def test_presence_flips_at_the_rate(tiny):
    generator = OfflineGenerator(tiny)
    selected = generator.random(2000, seed=3)
    n = 5
    repeated = pl.concat([selected] * n)
    varied = generator.variation(selected, n, iteration=0, iterations=10, seed=9)  # r = 0.5
    before = repeated.get_column("channel").is_not_null()
    after = varied.get_column("channel").is_not_null()
    assert (before != after).mean() == pytest.approx(0.5, abs=0.03)
    switched_on = ~before & after
    assert varied.filter(switched_on).get_column("version").null_count() == 0


def test_variation_numeric_steps_stay_in_bounds_and_small_late(lahman):
    generator = OfflineGenerator(lahman)
    selected = generator.random(1000, seed=5).filter(pl.col("home_runs").is_not_null())
    varied = generator.variation(selected, 1, iteration=9, iterations=10, seed=6)
    both = pl.DataFrame({"a": selected.get_column("home_runs"), "b": varied.get_column("home_runs")}).drop_nulls()
    ratio = ((both["b"] + 1).log() - (both["a"] + 1).log()).abs() / np.log1p(1000)
    # r(9/10) ~ 0.021: a mutated value moves by a Gaussian step of scale 0.021 in log space
    assert ratio.max() < 0.15


def test_variation_is_deterministic_by_seed(dataset):
    generator = OfflineGenerator(dataset)
    selected = generator.random(100, seed=0)
    a = generator.variation(selected, 3, iteration=2, iterations=5, seed=17)
    b = generator.variation(selected, 3, iteration=2, iterations=5, seed=17)
    c = generator.variation(selected, 3, iteration=2, iterations=5, seed=18)
    assert a.equals(b)
    assert not a.equals(c)


def test_variation_ignores_extra_columns_and_rejects_invalid_input(tiny):
    generator = OfflineGenerator(tiny)
    selected = generator.random(10, seed=0)
    with_extra = selected.with_columns(pl.lit(1).alias("votes"))
    assert generator.variation(with_extra, 2, iteration=1, iterations=3, seed=1).columns == selected.columns
    bad = selected.with_columns(pl.lit("delta").alias("model"))
    with pytest.raises(ValueError, match="unknown_category"):
        generator.variation(bad, 2, iteration=1, iterations=3, seed=1)
    with pytest.raises(ValueError, match="version"):
        generator.variation(selected.drop("version"), 2, iteration=1, iterations=3, seed=1)
    with pytest.raises(ValueError):
        generator.variation(selected, 0, iteration=1, iterations=3, seed=1)


# ------------------------------------------------------------------------------------- validation


def test_validate_candidates_catches_each_violation(tiny):
    frame = OfflineGenerator(tiny, presence=1.0).random(20, seed=0)
    assert clean(validate_candidates(tiny, frame))

    def only(counts: dict[str, int], reason: str, count: int) -> None:
        assert counts[reason] == count, counts
        assert sum(counts.values()) == count, counts

    only(validate_candidates(tiny, frame.drop("version")), "wrong_columns", 1)
    only(validate_candidates(tiny, frame.with_columns(pl.lit(0).alias("extra"))), "wrong_columns", 1)
    with_key = frame.with_columns(pl.lit("d1").alias("device_id"))
    only(validate_candidates(tiny, with_key), "wrong_columns", 1)
    assert clean(validate_candidates(tiny, with_key, allow_identifiers=True))

    models = frame.get_column("model").to_list()
    models[:3] = ["delta", "Alpha", "beta"]
    only(validate_candidates(tiny, frame.with_columns(pl.Series("model", models))), "unknown_category", 2)

    years = frame.get_column("purchase_year").to_list()
    years[:2] = [1999, 2031]
    only(validate_candidates(tiny, frame.with_columns(pl.Series("purchase_year", years))), "out_of_bounds", 2)
    minutes = frame.get_column("minutes").to_list()
    minutes[0] = float("inf")
    only(validate_candidates(tiny, frame.with_columns(pl.Series("minutes", minutes))), "out_of_bounds", 1)

    regions = frame.get_column("region").to_list()
    regions[4] = None
    only(
        validate_candidates(tiny, frame.with_columns(pl.Series("region", regions, dtype=pl.Utf8))),
        "null_in_non_nullable",
        1,
    )
    nullable_ok = frame.with_columns(pl.lit(None, dtype=pl.Int64).alias("version"))
    assert clean(validate_candidates(tiny, nullable_ok))

    fractional = frame.with_columns(pl.col("crashes").cast(pl.Float64))
    crashes = fractional.get_column("crashes").to_list()
    crashes[:3] = [2.5, 3.0, 0.1]
    only(validate_candidates(tiny, fractional.with_columns(pl.Series("crashes", crashes))), "non_integer", 2)

    text = frame.with_columns(pl.col("sessions").cast(pl.Utf8))
    sessions = text.get_column("sessions").to_list()
    sessions[0] = "many"
    only(validate_candidates(tiny, text.with_columns(pl.Series("sessions", sessions))), "not_a_number", 1)
    minutes = frame.get_column("minutes").to_list()
    minutes[1] = float("nan")
    only(validate_candidates(tiny, frame.with_columns(pl.Series("minutes", minutes))), "not_a_number", 1)


def test_generators_never_produce_unlisted_categories(lahman):
    frame = OfflineGenerator(lahman).random(3000, seed=21)
    for column in lahman.spec.modelled_columns:
        if isinstance(column, CategoricalColumn):
            values = set(frame.get_column(column.wide_name).drop_nulls().unique())
            assert values <= set(column.categories)

"""Anonymeter's singling out: hand-checked predicates and successes, a copy of the training rows flagged,
a DP release not, exact marginals flagged by the univariate predicates only, and a seeded, order-free
result."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest

from synth_assets import split_holdout
from synth_assets.datasets.loading import load_dataset
from synth_assets.evaluation.attacks import (
    LOWEST,
    NULL,
    Predicates,
    singling_out,
    univariate_predicates,
)
from synth_assets.evaluation.privacy_risk import AMBER, GREEN, RED, privacy_risk
from synth_assets.generators.independent import IndependentMarginals
from synth_assets.pe.encoding import build_encoder
from synth_assets.privacy.releases import synthesize
from synth_assets.tables.build import build_real_tables

DELTA = 1e-6
KEYS = {"success_targets", "success_controls", "risk", "risk_low95", "verdict", "predicates_attempted",
        "predicates_kept", "targets"}


# ------------------------------------------------------------------------------- hand computations


def test_a_predicate_is_a_conjunction_and_a_null_meets_no_threshold():
    real = np.array([[0.0, 1.0, 3.0, 4.0],   # a number
                     [NULL, 5.0, 5.0, NULL]])  # a number with two nulls
    predicates = Predicates(
        columns=np.array([[0, 1], [0, 1], [0, 1]]),
        low=np.array([[LOWEST, NULL], [3.0, 5.0], [LOWEST, 0.0]]),  # <= 1 and is null; >= 3 and == 5;
        high=np.array([[1.0, NULL], [np.inf, 5.0], [10.0, np.inf]]),  # <= 10 and >= 0
        rows=np.arange(3), attempted=3)
    assert predicates.counts(real).tolist() == [1, 1, 2]


def test_univariate_predicates_are_rare_values_and_unique_extremes_one_per_row():
    table = np.array([[1.0, 2.0, 2.0, 3.0],    # == 1, <= 1 (row 0); == 3, >= 3 (row 3)
                      [NULL, 5.0, 5.0, 5.0],   # is null (row 0)
                      [0.0, 0.0, 1.0, 1.0]])   # a category held twice each: nothing
    found = univariate_predicates(table, np.array([True, True, False]), 10, np.random.default_rng(0))
    assert sorted(found.rows.tolist()) == [0, 3]
    assert found.attempted == (3 + 2) + (2 + 2) + 2  # distinct values, and both extremes of each number
    assert found.counts(table).tolist() == [1, 1]  # each singles out its row
    assert len(univariate_predicates(table, np.array([True, True, False]), 1, np.random.default_rng(0))) == 1


@pytest.fixture(scope="module")
def template(wide):
    """Rows of the tiny dataset equal to its first row but for the model."""

    def rows(models: list[str]) -> pl.DataFrame:
        return pl.concat([wide.head(1)] * len(models)).with_columns(pl.Series("model", models))

    return rows


def test_a_predicate_matching_one_person_succeeds_and_two_do_not(tiny, template):
    encoder = build_encoder(tiny)
    synthetic = template(["alpha", "alpha", "beta"])  # 'model == beta' is the only way to single out a row
    once, twice = template(["beta", "alpha", "gamma", "alpha"]), template(["beta", "beta", "alpha", "alpha"])
    result = singling_out(encoder, once, twice, synthetic, seed=0)
    for mode in ("univariate", "multivariate"):
        assert result[mode]["predicates_kept"] == 1
        assert result[mode]["success_targets"] == 1.0 and result[mode]["success_controls"] == 0.0
        assert result[mode]["risk"] == 1.0 and result[mode]["targets"] == 4
    assert result["verdict"] == RED  # one trial: the Wilson bound of 1/1 is 0.21
    result = singling_out(encoder, twice, twice, synthetic, seed=0)
    assert result["success_targets"] == 0.0 and result["risk"] == 0.0 and result["verdict"] == GREEN
    # more controls than targets: they are sampled down to as many (here: three betas become two or three)
    result = singling_out(encoder, template(["beta", "alpha"]), template(["beta", "beta", "beta"]), synthetic)
    assert result["targets"] == 2 and result["success_controls"] == 0.0


def test_it_is_in_the_privacy_risk_and_in_its_verdict(tiny, wide):
    training, holdout = wide.head(200), wide.tail(200)
    risk = privacy_risk(tiny, training, holdout, training, epsilon=None, delta=None)
    attack = risk.attacks["singling_out"]
    assert KEYS <= set(attack["univariate"]) and KEYS <= set(attack["multivariate"])
    assert {"success_targets", "success_controls", "risk", "risk_low95", "verdict", "mode"} <= set(attack)
    assert attack["targets"] == 200
    quiet = {"verdict": GREEN}
    calm = dataclasses.replace(risk, exact_copies=quiet, dcr=quiet, membership=quiet, audit=quiet,
                               attacks={"singling_out": quiet})
    assert calm.verdict == GREEN
    assert dataclasses.replace(calm, attacks={"singling_out": {"verdict": RED}}).verdict == RED


# ------------------------------------------------------------------------------- controls


@pytest.fixture(scope="module")
def players():
    """The embedded dataset (about 20,000 x 68) split by its spec; training targets: a seeded sample of as
    many rows as the holdout's, in key order (the split's row order is not fixed)."""
    dataset = load_dataset()
    training, holdout = split_holdout(dataset, build_real_tables(dataset).wide)
    key = dataset.spec.entity.key
    training, holdout = training.sort(key), holdout.sort(key)
    rng = np.random.default_rng(0)
    targets = training[np.sort(rng.choice(training.height, size=holdout.height, replace=False))]
    return dataset, build_encoder(dataset), training, targets, holdout


def test_a_copy_of_the_training_rows_is_singled_out(players):
    _, encoder, training, targets, holdout = players
    result = singling_out(encoder, targets, holdout, training, seed=0)
    assert result["verdict"] in (RED, AMBER) and result["risk"] > 0.1
    for mode in ("univariate", "multivariate"):
        figures = result[mode]
        assert figures["predicates_kept"] == 1000 and figures["predicates_attempted"] >= 1000
        # a quarter of the training rows are targets: a copied row's predicate finds its person that often
        assert figures["success_targets"] > 0.2 and figures["success_controls"] < 0.15
        assert figures["risk"] > 0.1 and figures["verdict"] in (RED, AMBER)


def test_a_dp_release_from_training_only_is_not_singled_out(players):
    dataset, encoder, training, targets, holdout = players
    release = synthesize(dataset, IndependentMarginals(), 1.0, training, delta=DELTA, ledger=None)
    result = singling_out(encoder, targets, holdout, release.population, seed=0)
    assert result["verdict"] != RED
    for mode in ("univariate", "multivariate"):
        assert result[mode]["predicates_kept"] == 1000
        assert result[mode]["risk"] < 0.05
        assert abs(result[mode]["success_targets"] - result[mode]["success_controls"]) < 0.03


def test_exact_marginals_leak_through_univariate_predicates_only(players):
    """Columns shuffled independently: no row survives, but each column's rare values and extremes are
    the training rows' own."""
    _, encoder, training, targets, holdout = players
    rng = np.random.default_rng(1)
    shuffled = training.with_columns(training[name].gather(rng.permutation(training.height))
                                     for name in encoder.column_names)
    result = singling_out(encoder, targets, holdout, shuffled, seed=0)
    assert result["mode"] == "univariate" and result["verdict"] in (RED, AMBER)
    assert result["univariate"]["risk"] > 0.08
    assert result["multivariate"]["risk"] < 0.03 and result["multivariate"]["verdict"] != RED


def test_the_seed_fixes_the_result_and_the_row_order_does_not_change_it(players):
    _, encoder, training, targets, holdout = players
    synthetic = training.head(4000)
    first = singling_out(encoder, targets, holdout, synthetic, seed=3, predicates=300)
    again = singling_out(encoder, targets, holdout, synthetic, seed=3, predicates=300)
    assert first == again
    shuffled = [frame.sample(fraction=1.0, shuffle=True, seed=5) for frame in (targets, holdout, synthetic)]
    assert singling_out(encoder, *shuffled, seed=3, predicates=300) == first
    other = singling_out(encoder, targets, holdout, synthetic, seed=4, predicates=300)
    figures = ("success_targets", "success_controls")
    assert [other[m][f] for m in ("univariate", "multivariate") for f in figures] != \
        [first[m][f] for m in ("univariate", "multivariate") for f in figures]

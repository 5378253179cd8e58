"""The DP nearest-neighbour histogram (votes + Gaussian noise), the threshold and candidate selection."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from synth_assets.datasets.loading import Dataset
from synth_assets.pe.encoding import Encoder, build_encoder
from synth_assets.pe.generators import OfflineGenerator
from synth_assets.pe.histogram import (
    NoisyHistogram,
    dp_nn_histogram,
    noise_rng,
    select_candidates,
    threshold,
)
from synth_assets.pe.nn import brute_force_nearest


@pytest.fixture(scope="module")
def encoder(tiny: Dataset) -> Encoder:
    return build_encoder(tiny)


def _encoded(tiny, wide, encoder, m: int, seed: int = 3):
    candidates = OfflineGenerator(tiny).random(m, seed=seed)
    # a few exact copies of real rows, so that some candidates collect many votes
    copies = wide.head(20).select(candidates.columns)
    candidates = pl.concat([candidates, copies], how="vertical_relaxed")
    return encoder.encode(wide), encoder.encode(candidates)


def _brute_votes(real, cands, weights) -> np.ndarray:
    nearest = brute_force_nearest(real.numeric, real.categorical, cands.numeric, cands.categorical, weights)
    return np.bincount(nearest, minlength=cands.rows)


# ----------------------------------------------------------------------------------- dp_nn_histogram


def test_votes_equal_a_brute_force_count(tiny, wide, encoder):
    real, cands = _encoded(tiny, wide, encoder, 500)
    release, votes = dp_nn_histogram(
        real, cands, encoder.categorical_weights, 2.0, noise_rng(1, 1), seed=1
    )
    expected = _brute_votes(real, cands, encoder.categorical_weights)
    np.testing.assert_array_equal(votes, expected)
    assert votes.sum() == wide.height
    assert votes[-20:].min() >= 1  # an exact copy of a real row gets that row's vote (at least)
    assert isinstance(release, NoisyHistogram)
    assert release.candidates == cands.rows == votes.size
    assert release.sigma == 2.0 and release.seed == 1
    assert release.noisy.dtype == np.float64


def test_noise_is_gaussian_with_the_given_sigma(tiny, wide, encoder):
    real, cands = _encoded(tiny, wide, encoder, 20_000)
    sigma = 3.7
    release, votes = dp_nn_histogram(real, cands, encoder.categorical_weights, sigma, noise_rng(5, 2), seed=5)
    noise = release.noisy - votes
    # 20,020 bins: the standard error of the empirical std is sigma / sqrt(2 * 20,020) = 0.5 % of sigma
    assert noise.std() == pytest.approx(sigma, rel=0.03)
    assert abs(noise.mean()) < 4 * sigma / np.sqrt(noise.size)
    # Gaussian, not uniform or Laplace: the share within one sigma is 68.3 %
    assert np.mean(np.abs(noise) < sigma) == pytest.approx(0.683, abs=0.015)
    # exactly the recorded generator's draws
    np.testing.assert_array_equal(release.noisy, votes + noise_rng(5, 2).normal(0.0, sigma, size=votes.size))


def test_same_seed_same_release_different_seed_different(tiny, wide, encoder):
    real, cands = _encoded(tiny, wide, encoder, 300)
    w = encoder.categorical_weights

    def release(seed: int, iteration: int) -> np.ndarray:
        return dp_nn_histogram(real, cands, w, 4.0, noise_rng(seed, iteration), seed=seed)[0].noisy

    np.testing.assert_array_equal(release(11, 1), release(11, 1))
    assert not np.array_equal(release(11, 1), release(12, 1))
    assert not np.array_equal(release(11, 1), release(11, 2))  # each iteration gets fresh noise


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan")])
def test_sigma_must_be_positive(tiny, wide, encoder, sigma):
    real, cands = _encoded(tiny, wide, encoder, 50)
    with pytest.raises(ValueError, match="sigma"):
        dp_nn_histogram(real, cands, encoder.categorical_weights, sigma, noise_rng(0, 1), seed=0)


# ----------------------------------------------------------------------------------------- threshold


def test_threshold_subtracts_and_clips_at_zero():
    noisy = np.array([-3.0, 0.0, 1.0, 2.5, 10.0])
    np.testing.assert_allclose(threshold(noisy, 2.0), [0.0, 0.0, 0.0, 0.5, 8.0])
    np.testing.assert_allclose(threshold(noisy, 0.0), [0.0, 0.0, 1.0, 2.5, 10.0])
    assert threshold(noisy, 2.0).min() >= 0


# --------------------------------------------------------------------------------------- rank mode


def test_rank_orders_by_weight_descending():
    weights = np.array([0.5, 3.0, 0.0, 2.0, 7.0, 1.0])
    picked = select_candidates(weights, 3, "rank", np.random.default_rng(0))
    np.testing.assert_array_equal(picked, [4, 1, 3])
    assert picked.dtype == np.int64


def test_rank_breaks_ties_to_the_lower_index():
    weights = np.array([1.0, 2.0, 0.0, 2.0, 1.0, 2.0])
    np.testing.assert_array_equal(select_candidates(weights, 4, "rank", None), [1, 3, 5, 0])


def test_rank_takes_only_positive_weights_even_when_n_is_larger():
    weights = np.array([0.0, 1.5, -2.0, 0.0, 0.25])
    picked = select_candidates(weights, 10, "rank", np.random.default_rng(0))
    np.testing.assert_array_equal(picked, [1, 4])


def test_rank_does_not_use_the_rng():
    weights = np.random.default_rng(3).random(50)
    a = select_candidates(weights, 10, "rank", np.random.default_rng(1))
    b = select_candidates(weights, 10, "rank", np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, np.argsort(-weights, kind="stable")[:10])


# -------------------------------------------------------------------------------------- sample mode


def test_sample_proportions_follow_the_weights():
    weights = np.array([0.0, 1.0, 0.0, 3.0, 6.0, 0.0])
    n = 100_000
    picked = select_candidates(weights, n, "sample", np.random.default_rng(7))
    assert picked.size == n and picked.dtype == np.int64
    assert set(np.unique(picked)) == {1, 3, 4}  # never a zero weight
    shares = np.bincount(picked, minlength=weights.size) / n
    np.testing.assert_allclose(shares, weights / weights.sum(), atol=0.006)


def test_sample_draws_only_positive_weights():
    rng = np.random.default_rng(0)
    weights = threshold(rng.normal(0, 3, 1000), 2.0)  # mostly zeros
    picked = select_candidates(weights, 5000, "sample", np.random.default_rng(1))
    assert (weights[picked] > 0).all()


def test_sample_is_deterministic_given_the_seed():
    weights = np.random.default_rng(3).random(200)
    a = select_candidates(weights, 50, "sample", np.random.default_rng(9))
    b = select_candidates(weights, 50, "sample", np.random.default_rng(9))
    c = select_candidates(weights, 50, "sample", np.random.default_rng(10))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# ------------------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("mode", ["rank", "sample"])
def test_no_positive_weight_gives_an_empty_selection(mode):
    for weights in (np.zeros(10), np.full(10, -1.0), threshold(np.array([1.0, 2.0]), 5.0)):
        picked = select_candidates(weights, 5, mode, np.random.default_rng(0))
        assert picked.size == 0 and picked.dtype == np.int64


@pytest.mark.parametrize("mode", ["rank", "sample"])
def test_zero_n_gives_an_empty_selection(mode):
    assert select_candidates(np.ones(4), 0, mode, np.random.default_rng(0)).size == 0


def test_bad_mode_and_negative_n_are_errors():
    with pytest.raises(ValueError, match="selection mode"):
        select_candidates(np.ones(4), 2, "top", np.random.default_rng(0))
    with pytest.raises(ValueError, match="n must be >= 0"):
        select_candidates(np.ones(4), -1, "rank", np.random.default_rng(0))
    with pytest.raises(ValueError, match="n must be >= 0"):
        select_candidates(np.ones(4), -1, "sample", np.random.default_rng(0))

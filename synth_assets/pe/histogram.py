"""The DP nearest-neighbour histogram and the selection of candidates from it.

Every private record votes once for its nearest candidate, so adding or removing one entity changes one
bin by 1: L2 sensitivity 1. Gaussian noise N(0, sigma^2) on every bin makes the histogram
(epsilon, delta)-DP (see synth_assets.privacy.accounting). Only the noisy histogram leaves this module's callers;
the exact votes are private and must not be stored or shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from synth_assets.pe.encoding import EncodedTable
from synth_assets.pe.nn import nearest_candidates, vote_histogram

SelectionMode = Literal["rank", "sample"]


@dataclass(frozen=True)
class NoisyHistogram:
    """A DP release: noisy vote counts per candidate, with what is needed to account for it."""

    noisy: np.ndarray
    sigma: float
    seed: int

    @property
    def candidates(self) -> int:
        return int(self.noisy.size)


def noise_rng(seed: int, iteration: int) -> np.random.Generator:
    """The generator of the Gaussian noise of one iteration: reproducible from the recorded seed."""
    return np.random.default_rng(np.random.SeedSequence([seed, iteration, 0x5EED]))


def exact_vote_counts(
    real: EncodedTable, candidates: EncodedTable, categorical_weights: np.ndarray
) -> np.ndarray:
    """The exact (un-noised) votes: int64 counts per candidate, summing to the number of real records.

    PRIVATE: these counts are what the noise protects. The local vote and every shard of the sharded
    vote (synth_assets.pe.sharded_vote) count with this function.
    """
    nearest = nearest_candidates(
        real.numeric, real.categorical, candidates.numeric, candidates.categorical, categorical_weights
    )
    return vote_histogram(nearest, candidates.rows)


def _check_sigma(sigma: float) -> None:
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")


def add_vote_noise(votes: np.ndarray, sigma: float, rng: np.random.Generator, *, seed: int) -> NoisyHistogram:
    """The release: N(0, sigma^2) noise added once to every bin of the exact votes (L2 sensitivity 1)."""
    _check_sigma(sigma)
    noisy = votes + rng.normal(0.0, sigma, size=votes.size)
    return NoisyHistogram(noisy=noisy, sigma=sigma, seed=seed)


def dp_nn_histogram(
    real: EncodedTable,
    candidates: EncodedTable,
    categorical_weights: np.ndarray,
    sigma: float,
    rng: np.random.Generator,
    *,
    seed: int,
) -> tuple[NoisyHistogram, np.ndarray]:
    """Votes of the real records for their nearest candidates, plus N(0, sigma^2) noise on every bin.

    Returns the release and the exact votes. The exact votes are PRIVATE: callers may use them only
    for diagnostics that stay with the data owner, never in a released value.
    """
    _check_sigma(sigma)
    votes = exact_vote_counts(real, candidates, categorical_weights)
    return add_vote_noise(votes, sigma, rng, seed=seed), votes


def threshold(noisy: np.ndarray, h: float) -> np.ndarray:
    """h' = max(h~ - H, 0): bins whose noisy count is not above H get no weight."""
    return np.maximum(noisy - h, 0.0)


def select_candidates(
    weights: np.ndarray, n: int, mode: SelectionMode, rng: np.random.Generator
) -> np.ndarray:
    """Indices of ``n`` selected candidates from thresholded weights.

    rank: the n largest weights (ties to the lower index), only among positive weights.
    sample: n draws with replacement, with probability proportional to the weights.
    If no weight is positive, the noise drowned every vote: the selection is empty.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    positive = np.flatnonzero(weights > 0)
    if positive.size == 0 or n == 0:
        return np.empty(0, dtype=np.int64)
    if mode == "rank":
        order = positive[np.lexsort((positive, -weights[positive]))]
        return order[:n].astype(np.int64)
    if mode == "sample":
        p = weights[positive] / weights[positive].sum()
        return rng.choice(positive, size=n, replace=True, p=p).astype(np.int64)
    raise ValueError(f"selection mode must be 'rank' or 'sample', got {mode!r}")

"""The nearest-candidate vote sharded over Dask workers: the same release as the local vote, bit for bit."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest

from synth_assets.datasets.loading import Dataset
from synth_assets.pe.encoding import Encoder, build_encoder
from synth_assets.pe.evolution import PEConfig
from synth_assets.pe.generators import OfflineGenerator
from synth_assets.pe.histogram import dp_nn_histogram, exact_vote_counts, noise_rng
from synth_assets.pe.sharded_vote import (
    VOTE_SCHEDULER_ENV,
    resolve_vote_scheduler,
    shard_bounds,
    sharded_dp_nn_histogram,
    sharded_exact_vote_counts,
)

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    """Two single-thread workers on loopback, in this process (no worker start-up imports)."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, protocol="tcp://", host="127.0.0.1",
        dashboard_address=None,
    ) as local:
        yield local


@pytest.fixture(scope="module")
def client(cluster):
    with distributed.Client(cluster, set_as_default=False) as connected:
        yield connected


@pytest.fixture(scope="module")
def encoder(tiny: Dataset) -> Encoder:
    return build_encoder(tiny)


@pytest.fixture(scope="module")
def encoded(tiny, wide, encoder):
    candidates = OfflineGenerator(tiny).random(300, seed=3)
    # exact copies of real rows, so that some candidates collect many votes
    candidates = pl.concat([candidates, wide.head(20).select(candidates.columns)], how="vertical_relaxed")
    return encoder.encode(wide), encoder.encode(candidates)


def _uneven(n: int) -> list[int]:
    """Four shards of very different sizes, one of them empty."""
    return [1, 0, n - 101, 100]


@pytest.mark.parametrize("shards", ["uneven", 3, 1, None], ids=["uneven_with_empty", "three", "one", "per_thread"])
def test_the_noisy_histogram_is_bit_identical_to_the_local_one(encoded, encoder, client, shards):
    real, cands = encoded
    shards = _uneven(real.rows) if shards == "uneven" else shards
    sigma = 2.7
    local, local_votes = dp_nn_histogram(real, cands, encoder.categorical_weights, sigma, noise_rng(9, 2), seed=9)
    sharded, votes = sharded_dp_nn_histogram(
        real, cands, encoder.categorical_weights, sigma, noise_rng(9, 2), seed=9, scheduler=client, shards=shards
    )
    assert np.array_equal(sharded.noisy, local.noisy)
    assert sharded.noisy.dtype == local.noisy.dtype == np.float64
    assert (sharded.sigma, sharded.seed) == (local.sigma, local.seed) == (sigma, 9)
    assert np.array_equal(votes, local_votes)


def test_exact_counts_sum_to_the_records_with_more_shards_than_workers_and_an_address(
    encoded, encoder, cluster
):
    real, cands = encoded
    counts = sharded_exact_vote_counts(
        real, cands, encoder.categorical_weights, scheduler=cluster.scheduler_address, shards=7
    )
    assert counts.dtype == np.int64 and counts.shape == (cands.rows,)
    assert counts.sum() == real.rows
    assert np.array_equal(counts, exact_vote_counts(real, cands, encoder.categorical_weights))


def test_more_shards_than_records_leaves_shards_empty_and_counts_every_record_once(encoded, encoder, client):
    real, cands = encoded
    three = dataclasses.replace(real, numeric=real.numeric[:3], categorical=real.categorical[:3])
    counts = sharded_exact_vote_counts(three, cands, encoder.categorical_weights, scheduler=client, shards=5)
    assert counts.sum() == 3
    assert np.array_equal(counts, exact_vote_counts(three, cands, encoder.categorical_weights))


def test_shard_bounds_cover_the_rows_in_order():
    assert shard_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert shard_bounds(2, 4) == [(0, 1), (1, 2), (2, 2), (2, 2)]
    assert shard_bounds(0, 2) == [(0, 0), (0, 0)]
    assert shard_bounds(6, [1, 0, 5]) == [(0, 1), (1, 1), (1, 6)]
    with pytest.raises(ValueError, match="sum to 5"):
        shard_bounds(6, [0, 5])
    with pytest.raises(ValueError, match=">= 1"):
        shard_bounds(6, 0)
    with pytest.raises(ValueError, match=">= 0"):
        shard_bounds(6, [7, -1])


def test_sigma_is_checked_before_anything_is_sent(encoded, encoder):
    real, cands = encoded
    with pytest.raises(ValueError, match="sigma"):  # no scheduler at that address: never contacted
        sharded_dp_nn_histogram(
            real, cands, encoder.categorical_weights, 0.0, noise_rng(0, 1), seed=0, scheduler="tcp://127.0.0.1:9"
        )


def test_the_scheduler_setting_defaults_to_local(monkeypatch):
    monkeypatch.delenv(VOTE_SCHEDULER_ENV, raising=False)
    assert resolve_vote_scheduler() is None
    monkeypatch.setenv(VOTE_SCHEDULER_ENV, " ")
    assert resolve_vote_scheduler() is None
    monkeypatch.setenv(VOTE_SCHEDULER_ENV, "tcp://10.0.0.5:8786")
    assert resolve_vote_scheduler() == "tcp://10.0.0.5:8786"
    assert resolve_vote_scheduler("tcp://127.0.0.1:8786") == "tcp://127.0.0.1:8786"
    assert resolve_vote_scheduler("") is None  # an explicit empty value: local, whatever the environment


def test_a_run_voting_on_dask_releases_exactly_what_a_local_run_releases(tiny, wide, cluster, monkeypatch):
    """The whole PE run (prior, two rounds, output) with the votes counted on the cluster, chosen by the
    environment as a deployment would: the same releases and the same synthetic table."""
    from synth_assets.generators.private_evolution import PrivateEvolution
    from synth_assets.privacy.releases import synthesize

    settings = PEConfig(pool_size=300, selected=60, reference_points=3000, iterations=2, prior="marginals")

    def run():
        return synthesize(tiny, PrivateEvolution(settings), 2.0, wide, delta=1e-5, ledger=None)

    monkeypatch.delenv(VOTE_SCHEDULER_ENV, raising=False)
    local = run()
    monkeypatch.setenv(VOTE_SCHEDULER_ENV, cluster.scheduler_address)
    sharded = run()
    assert np.array_equal(sharded.model.noisy_votes, local.model.noisy_votes)
    assert sharded.population.equals(local.population)
    assert [r.to_dict() for r in sharded.model.releases] == [r.to_dict() for r in local.model.releases]

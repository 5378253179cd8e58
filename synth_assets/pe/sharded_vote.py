"""The nearest-candidate vote sharded over the workers of a Dask cluster.

The local vote (:func:`synth_assets.pe.histogram.dp_nn_histogram`) counts, on one machine, how many
private records have each candidate as their nearest, then adds N(0, sigma^2) noise to every bin. Here
the private records are split into shards (contiguous slices of rows); one Dask task per shard counts
the exact votes of its rows with the same function and the same numba kernel
(:func:`synth_assets.pe.histogram.exact_vote_counts`); the driver sums the shards' integer counts and
adds the noise ONCE with :func:`synth_assets.pe.histogram.add_vote_noise`, from the same generator and
with the same sigma.

Privacy is unchanged: every record still adds 1 to exactly one bin of the summed histogram, so its L2
sensitivity is 1 as before, and only the summed histogram is noised and released. Integer sums do not
depend on how the rows are split, so for the same data, candidates and seed the noisy histogram is
bit-identical to the local one. The per-shard counts are exact vote counts: they are PRIVATE, exist only
inside the cluster and the driver, and are never stored or released.

The private rows go to the workers. The scheduler address must therefore be the deployment's own Dask
cluster, running inside the perimeter where the private data may live (the machines that may read the
warehouse), never a shared or external service: shards travel over the cluster's comms (use TLS
between machines) and sit in the workers' memory while a round runs.

Choosing it: :func:`synth_assets.pe.evolution.run_rounds` takes ``vote_scheduler`` (a scheduler address
such as ``tcp://10.0.0.5:8786``); when it is not given, the environment variable
``SYNTH_ASSETS_VOTE_SCHEDULER`` is read; unset or empty, the vote runs locally (the default).

Worker settings: the kernel is numba-parallel over the worker's cores, so start workers with one Dask
thread each (``dask worker ADDRESS --nthreads 1 --nworkers 1``) and let ``NUMBA_NUM_THREADS`` be the
cores of the machine; a worker needs its shard plus the candidates (a few hundred bytes per row) and
tens of KB of kernel scratch, nothing of size shard x candidates.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import uuid
from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np

from synth_assets.pe.encoding import EncodedTable
from synth_assets.pe.histogram import NoisyHistogram, _check_sigma, add_vote_noise, exact_vote_counts

__all__ = [
    "VOTE_SCHEDULER_ENV",
    "resolve_vote_scheduler",
    "shard_bounds",
    "sharded_dp_nn_histogram",
    "sharded_exact_vote_counts",
]

VOTE_SCHEDULER_ENV = "SYNTH_ASSETS_VOTE_SCHEDULER"

# One kernel call at a time per worker process: the kernel already uses every numba thread, and
# numba's threading layers do not all accept concurrent launches from several Python threads.
_KERNEL_LOCK = threading.Lock()


def resolve_vote_scheduler(vote_scheduler: str | None = None) -> str | None:
    """The scheduler address to vote on: ``vote_scheduler`` if given, else ``$SYNTH_ASSETS_VOTE_SCHEDULER``;
    None (vote locally) when neither is set or the value is empty."""
    value = vote_scheduler if vote_scheduler is not None else os.environ.get(VOTE_SCHEDULER_ENV)
    value = (value or "").strip()
    return value or None


def shard_bounds(n_rows: int, shards: int | Sequence[int]) -> list[tuple[int, int]]:
    """Row ranges [start, stop) of the shards, in order and covering ``range(n_rows)``.

    ``shards`` is a number of shards (sizes differ by at most one; with more shards than rows some are
    empty), or the explicit row count of every shard (zeros allowed; they must sum to ``n_rows``).
    """
    if n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    if isinstance(shards, (int, np.integer)) and not isinstance(shards, bool):
        if shards < 1:
            raise ValueError(f"the number of shards must be >= 1, got {shards}")
        base, extra = divmod(n_rows, int(shards))
        sizes = [base + (1 if i < extra else 0) for i in range(int(shards))]
    else:
        sizes = [int(s) for s in shards]
        if not sizes or any(s < 0 for s in sizes):
            raise ValueError(f"shard sizes must be a non-empty list of counts >= 0, got {list(shards)}")
        if sum(sizes) != n_rows:
            raise ValueError(f"shard sizes sum to {sum(sizes)}, but there are {n_rows} rows")
    bounds, start = [], 0
    for size in sizes:
        bounds.append((start, start + size))
        start += size
    return bounds


def _rows(table: EncodedTable, start: int, stop: int) -> EncodedTable:
    return dataclasses.replace(
        table, numeric=table.numeric[start:stop], categorical=table.categorical[start:stop]
    )


def _shard_counts(shard: EncodedTable, candidates: EncodedTable, categorical_weights: np.ndarray) -> np.ndarray:
    """One Dask task: the exact votes of one shard's records (PRIVATE; summed by the driver)."""
    with _KERNEL_LOCK:
        return exact_vote_counts(shard, candidates, categorical_weights)


@contextmanager
def _connected(scheduler):
    """A ``distributed.Client`` for ``scheduler`` (an address, or a Client that is used as it is)."""
    from distributed import Client

    if isinstance(scheduler, Client):
        yield scheduler
        return
    client = Client(scheduler, set_as_default=False)
    try:
        yield client
    finally:
        client.close()


def sharded_exact_vote_counts(
    real: EncodedTable,
    candidates: EncodedTable,
    categorical_weights: np.ndarray,
    *,
    scheduler,
    shards: int | Sequence[int] | None = None,
) -> np.ndarray:
    """The exact votes (int64 per candidate, summing to ``real.rows``), counted shard by shard on Dask.

    ``scheduler``: a scheduler address or a ``distributed.Client``. ``shards``: see :func:`shard_bounds`;
    default one shard per worker thread of the cluster. The result equals
    ``exact_vote_counts(real, candidates, categorical_weights)`` exactly. PRIVATE, like the local counts.
    """
    m = candidates.rows
    with _connected(scheduler) as client:
        if shards is None:
            shards = max(1, sum(client.nthreads().values()))
        bounds = shard_bounds(real.rows, shards)
        weights = np.asarray(categorical_weights)
        token = uuid.uuid4().hex[:12]
        shared = client.scatter(candidates, broadcast=True, hash=False)
        parts = client.scatter([_rows(real, a, b) for a, b in bounds], hash=False)
        futures = [
            client.submit(_shard_counts, part, shared, weights, key=f"pe-vote-shard-{token}-{i}", pure=False)
            for i, part in enumerate(parts)
        ]
        try:
            counts = client.gather(futures)
        finally:
            client.cancel([*futures, *parts, shared])
    total = np.zeros(m, dtype=np.int64)
    for (a, b), part in zip(bounds, counts):
        part = np.asarray(part)
        if part.shape != (m,) or part.dtype != np.int64 or int(part.sum()) != b - a:
            raise RuntimeError(
                f"the shard of rows [{a}, {b}) returned counts of shape {part.shape}, dtype {part.dtype} "
                f"and sum {int(part.sum())}: expected ({m},), int64 and {b - a}"
            )
        total += part
    return total


def sharded_dp_nn_histogram(
    real: EncodedTable,
    candidates: EncodedTable,
    categorical_weights: np.ndarray,
    sigma: float,
    rng: np.random.Generator,
    *,
    seed: int,
    scheduler,
    shards: int | Sequence[int] | None = None,
) -> tuple[NoisyHistogram, np.ndarray]:
    """:func:`synth_assets.pe.histogram.dp_nn_histogram` with the counting sharded over Dask.

    Same arguments plus ``scheduler`` and ``shards`` (see :func:`sharded_exact_vote_counts`); same
    result, bit for bit: the shards' exact counts are summed, then the noise is added once, here on
    the driver, from ``rng``. Returns the release and the exact votes (PRIVATE).
    """
    _check_sigma(sigma)
    votes = sharded_exact_vote_counts(real, candidates, categorical_weights, scheduler=scheduler, shards=shards)
    return add_vote_noise(votes, sigma, rng, seed=seed), votes

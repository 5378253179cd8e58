"""What MST and AIM share: Gaussian measurements of marginals, the exponential mechanism, private-pgm
(mbi 2.x) estimation, and sampling a wide table from the fitted model.

JAX runs in float64 (``jax_enable_x64``, set by the package before mbi is imported): mbi's estimators
stall in float32 on counts of tens of thousands. It is a process-wide JAX setting; nothing else in the
project uses JAX.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from mbi import CliqueVector, Domain, Factor, LinearMeasurement, MarkovRandomField
from mbi.clique_utils import maximal_subset
from mbi.estimation import MirrorDescent

from synth_assets.datasets.loading import Dataset
from synth_assets.generators.graphical.domain import Compression, PublicDomain, to_wide_table

Clique = tuple[str, ...]


def noise_rng(seed: int, tag: int) -> np.random.Generator:
    """The generator of one stream of DP noise (or of sampling), from the run's seed."""
    return np.random.default_rng(np.random.SeedSequence([seed, tag]))


def marginal_counts(codes: np.ndarray, columns: Sequence[int], sizes: Sequence[int]) -> np.ndarray:
    """Counts of the private rows in every cell of the marginal on ``columns`` (flattened, C order).
    Reads private data."""
    index = np.zeros(codes.shape[0], dtype=np.int64)
    cells = 1
    for j in columns:
        index = index * sizes[j] + codes[:, j]
        cells *= sizes[j]
    return np.bincount(index, minlength=cells).astype(np.float64)


def gaussian_measurement(counts: np.ndarray, clique: Clique, sigma: float, rng: np.random.Generator
                         ) -> LinearMeasurement:
    """The Gaussian mechanism on one marginal (L2 sensitivity 1): counts + N(0, sigma^2) per cell."""
    noisy = counts + rng.normal(0.0, sigma, size=counts.size)
    return LinearMeasurement(noisy, tuple(clique), sigma)


def exponential_mechanism(scores: np.ndarray, epsilon: float, sensitivity: float,
                          rng: np.random.Generator) -> np.ndarray:
    """The exponential mechanism's keys (Gumbel-max form): candidate i wins with probability proportional
    to ``exp(epsilon * score_i / (2 sensitivity))``, i.e. it is the argmax of the returned keys. Among
    any subset chosen without looking at the data, the argmax of the keys restricted to it is the
    mechanism run on that subset (AIM filters its candidates by model size this way)."""
    scores = np.asarray(scores, dtype=np.float64)
    return epsilon * scores / (2.0 * sensitivity) + rng.gumbel(size=scores.size)


def total_estimate(measurements: Sequence[LinearMeasurement]) -> float:
    """The minimum-variance unbiased estimate of the number of rows from the measured marginals (each is
    one noisy count of n: its sum, of variance cells * sigma^2): a DP estimate of n, at least 1."""
    estimates, weights = [], []
    for m in measurements:
        y = np.asarray(m.noisy_measurement)
        if not getattr(m.query, "use_for_total_estimation", False):  # re-weighted (compressed), or opted out
            continue
        estimates.append(float(y.sum()))
        weights.append(1.0 / (float(m.stddev) ** 2 * y.size))
    if not estimates:
        return 1.0
    return max(1.0, float(np.average(estimates, weights=weights)))


def warm_potentials(previous: Sequence[tuple[Clique, np.ndarray]], domain: Domain,
                    measurements: Sequence[LinearMeasurement]) -> CliqueVector:
    """Log-potentials of earlier fits re-expressed on the cliques of new measurements over a (possibly
    larger) domain: each is added to a new clique that holds it (the model is the same where the old one
    was defined, uniform on the new attributes)."""
    cliques = maximal_subset([tuple(m.clique) for m in measurements])
    tables = {cl: Factor.zeros(domain.project(cl)) for cl in cliques}
    for old, values in previous:
        target = next((cl for cl in cliques if set(old) <= set(cl)), None)
        if target is not None:
            factor = Factor(domain.project(old), np.asarray(values))
            tables[target] = tables[target] + factor.expand(domain.project(target))
    return CliqueVector(domain, cliques, tables)


def potentials_of(model: MarkovRandomField) -> list[tuple[Clique, np.ndarray]]:
    """A fitted model's log-potentials, as numpy arrays."""
    return [(tuple(c), np.asarray(model.potentials[c].values)) for c in model.potentials.cliques]


def estimate(domain: Domain, measurements: Sequence[LinearMeasurement], total: float, iterations: int,
             warm_start: Sequence[tuple[Clique, np.ndarray]] = ()) -> MarkovRandomField:
    """private-pgm's mirror descent on the L2 loss of the measurements, with a known total (warm-started
    from earlier log-potentials when given)."""
    start = warm_potentials(warm_start, domain, measurements) if warm_start else None
    return MirrorDescent().estimate(domain, list(measurements), known_total=total, iters=iterations,
                                    warm_start=start)


def product_model(domain: Domain, parts: Sequence[MarkovRandomField], one_way: dict[str, np.ndarray],
                  total: float) -> MarkovRandomField:
    """One model over ``domain``: fitted models of disjoint attribute sets and independent 1-way marginals
    (counts) of the remaining attributes, multiplied. The L2 fit decomposes exactly this way when those
    attributes are only measured alone (their fit is the projection of their measurement)."""
    cliques, potentials, marginals = [], {}, {}
    for part in parts:
        scale = total / float(part.total)
        for clique in part.potentials.cliques:
            cliques.append(tuple(clique))
            potentials[tuple(clique)] = Factor(domain.project(clique), part.potentials[clique].values)
        for clique in part.marginals.cliques:
            marginals[tuple(clique)] = Factor(domain.project(clique), part.marginals[clique].values * scale)
    for name, counts in one_way.items():
        clique = (name,)
        p = np.asarray(counts, dtype=np.float64)
        p = p / p.sum() if p.sum() > 0 else np.full(p.size, 1.0 / p.size)
        cliques.append(clique)
        with np.errstate(divide="ignore"):
            potentials[clique] = Factor(domain.project(clique), np.maximum(np.log(p), -1e3))
        marginals[clique] = Factor(domain.project(clique), p * total)
    return MarkovRandomField(
        potentials=CliqueVector(domain, cliques, potentials),
        marginals=CliqueVector(domain, list(marginals), marginals),
        total=total,
    )


_SAMPLING = threading.Lock()


def sample_codes(model: MarkovRandomField, rows: int, seed: int, method: str) -> dict[str, np.ndarray]:
    """Rows drawn from the model by mbi's sampler (``synthetic_data``), which draws each attribute given
    its already drawn neighbours in the junction tree, so the model's correlations are kept. mbi draws
    from numpy's global generator: it is seeded here from the run's seed and restored afterwards."""
    with _SAMPLING:
        state = np.random.get_state()
        try:
            np.random.seed(int(np.random.SeedSequence([seed, 0x5A3E]).generate_state(1)[0]))
            data = model.synthetic_data(rows, method=method)
        finally:
            np.random.set_state(state)
    return {name: np.asarray(values, dtype=np.int64) for name, values in data.to_dict().items()}


@dataclass
class GraphicalModel:
    """What an MST or AIM fit leaves: DP values only (the fitted model of the noisy measurements, the
    measured cliques, the compression of the domain) and timings."""

    generator: str
    model: MarkovRandomField
    domain: PublicDomain
    compression: Compression
    cliques: list[Clique]
    seed: int
    sampler: str
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def n_estimate(self) -> float:
        """The model's total: a DP estimate of the number of entities."""
        return float(self.model.total)

    def sample(self, dataset: Dataset, rows: int | None, prefix: str) -> pl.DataFrame:
        n = rows or max(1, round(self.n_estimate))
        started = time.perf_counter()
        codes = sample_codes(self.model, n, self.seed, self.sampler)
        frame = to_wide_table(dataset, self.domain, codes, self.compression, noise_rng(self.seed, 0x7A1E),
                              prefix)
        self.seconds["sample"] = time.perf_counter() - started
        return frame


class Stopwatch:
    """Seconds spent per stage of a fit."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._start
        self._start = now


def sqrt_2_over_pi() -> float:
    return math.sqrt(2.0 / math.pi)

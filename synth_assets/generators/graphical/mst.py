"""MST (McKenna, Miklau & Sheldon 2021, "Winning the NIST Contest"), on the public bins of the wide table.

1. Measure every 1-way marginal with Gaussian noise (one third of the zCDP budget rho).
2. Compress each column's domain: bins whose noisy count is below 3 sigma share one code (post-processing).
3. Select a spanning tree of pairs: the independent model of the noisy 1-way marginals predicts every 2-way
   marginal; the L1 error of that prediction is each pair's score (sensitivity 1: one entity moves one
   cell's count by 1). Kruskal's algorithm, with each of the d - 1 edges chosen by the exponential
   mechanism among the pairs that join two components (one third of rho).
4. Measure the d - 1 chosen 2-way marginals with Gaussian noise (the last third of rho).
5. Fit a graphical model to all the measurements with private-pgm and sample from it.

Accounting (add/remove one entity): the d 1-way marginals are d histograms of sensitivity 1 at noise
sigma_1 = sqrt(3 d / (2 rho)), i.e. rho / 3; the d - 1 selections are epsilon = sqrt(8 (rho / 3) / (d - 1))
each, i.e. rho / 3 (bounded range); the d - 1 pairs are at sigma_2 = sqrt(3 (d - 1) / (2 rho)), rho / 3.
rho is the largest whose CKS conversion is (epsilon, delta) (:func:`synth_assets.privacy.accounting.calibrate_rho`),
so the three releases of the plan compose to exactly the target.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from mbi import Domain
from pydantic import BaseModel, ConfigDict, Field
from scipy.cluster.hierarchy import DisjointSet

from synth_assets.datasets.loading import Dataset
from synth_assets.generators.base import GeneratorPlan, Log, PlannedRelease, no_log
from synth_assets.generators.graphical.domain import Compression, PublicDomain, compress_on_support
from synth_assets.generators.graphical.inference import project_to_simplex
from synth_assets.generators.graphical.model import (
    GraphicalModel,
    Stopwatch,
    estimate,
    exponential_mechanism,
    gaussian_measurement,
    marginal_counts,
    noise_rng,
    total_estimate,
)
from synth_assets.privacy.accounting import calibrate_rho, em_epsilon_for_rho, sigma_for_rho

ONE_WAY = "mst_one_way"
SELECTION = "mst_selection"
TWO_WAY = "mst_two_way"


def mst_releases(d: int, rho: float, one_way_share: float = 1.0 / 3.0) -> tuple[PlannedRelease, ...]:
    """MST's releases on d columns spending exactly ``rho``: ``one_way_share`` of it on the 1-way marginals
    (a third in the paper), the rest split evenly between the selections and the pairs; all of it on
    1-way when d = 1."""
    if d == 1:
        return (PlannedRelease(ONE_WAY, sigma_for_rho(rho, 1), 1),)
    rest = (1.0 - one_way_share) * rho / 2.0
    return (
        PlannedRelease(ONE_WAY, sigma_for_rho(one_way_share * rho, d), d),
        PlannedRelease.exponential(SELECTION, em_epsilon_for_rho(rest, d - 1), d - 1),
        PlannedRelease(TWO_WAY, sigma_for_rho(rest, d - 1), d - 1),
    )


class MSTSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(default=0, ge=0, description="Seed of the noise, the selection and the sampling.")
    compress: bool = Field(default=True, description="Merge the bins whose noisy 1-way count is below 3 sigma.")
    iterations: int = Field(default=3000, ge=50, description="Mirror-descent iterations of the final fit.")
    sampler: Literal["sample", "round"] = Field(
        default="sample", description="mbi's synthetic_data method: i.i.d. draws or randomized rounding."
    )


class MST:
    """MST on the wide table's public bins (see the module docstring)."""

    name = "mst"

    def __init__(self, settings: MSTSettings | None = None):
        self.settings = settings or MSTSettings()

    def __repr__(self) -> str:
        return f"MST({self.settings!r})"

    def plan(self, dataset: Dataset, epsilon: float, delta: float) -> GeneratorPlan:
        releases = mst_releases(len(dataset.spec.modelled_columns), calibrate_rho(epsilon, delta))
        return GeneratorPlan(
            generator=self.name,
            epsilon=epsilon,
            delta=delta,
            seed=self.settings.seed,
            releases=releases,
            parameters={"settings": self.settings.model_dump()},
        )

    def check_ready(self, dataset: Dataset) -> None:
        """Nothing to check: the generator needs no outside service."""

    def fit(
        self,
        dataset: Dataset,
        private: pl.DataFrame,
        plan: GeneratorPlan,
        *,
        checkpoints: Path | None = None,
        log: Log = no_log,
    ) -> GraphicalModel:
        clock = Stopwatch()
        public = PublicDomain.of(dataset)
        names, d = public.names, len(public.names)
        codes = public.encode(dataset, private)
        rng = noise_rng(plan.seed, 0x357)
        one_way = plan.release(ONE_WAY)

        # 1. every 1-way marginal, Gaussian noise
        measured = [
            gaussian_measurement(marginal_counts(codes, [j], public.sizes), (name,), one_way.sigma, rng)
            for j, name in enumerate(names)
        ]
        total = total_estimate(measured)
        clock.lap("one_way")

        # 2. compression (post-processing of the noisy 1-way marginals)
        compression = Compression()
        if self.settings.compress:
            for name, m in zip(names, measured):
                compressed = compress_on_support(np.asarray(m.noisy_measurement), 3.0 * one_way.sigma)
                if compressed is not None:
                    compression.mapping[name], compression.merged[name] = compressed
        sizes = compression.sizes(public)
        domain = Domain(list(names), [sizes[n] for n in names])
        codes = compression.compress(public, codes)
        measured = [m.compress(compression.mapping, Domain(list(names), list(public.sizes)))
                    if m.clique[0] in compression.mapping else m for m in measured]
        size_list = [sizes[n] for n in names]
        log(f"mst: {d} noisy 1-way marginals (sigma {one_way.sigma:.2f}); "
            f"{len(compression.mapping)} columns compressed; n estimate {total:.0f}")

        cliques: list[tuple[str, str]] = []
        if d > 1:
            # 3. the spanning tree, each edge by the exponential mechanism
            independent = [self._one_way_fit(m, total) for m in measured]
            pairs = list(itertools.combinations(range(d), 2))
            scores = np.array([
                np.abs(marginal_counts(codes, [a, b], size_list)
                       - np.outer(independent[a], independent[b]).ravel() / total).sum()
                for a, b in pairs
            ])
            clock.lap("scores")
            selection = plan.release(SELECTION)
            components = DisjointSet(range(d))
            for _ in range(selection.selections):
                open_pairs = [i for i, (a, b) in enumerate(pairs) if not components.connected(a, b)]
                keys = exponential_mechanism(scores[open_pairs], selection.selection_epsilon, 1.0, rng)
                a, b = pairs[open_pairs[int(np.argmax(keys))]]
                components.merge(a, b)
                cliques.append((names[a], names[b]))
            clock.lap("selection")

            # 4. the chosen 2-way marginals, Gaussian noise
            two_way = plan.release(TWO_WAY)
            for a, b in cliques:
                counts = marginal_counts(codes, [names.index(a), names.index(b)], size_list)
                measured.append(gaussian_measurement(counts, (a, b), two_way.sigma, rng))
            total = total_estimate(measured)
            clock.lap("two_way")
            log(f"mst: {len(cliques)} pairs selected (epsilon {selection.selection_epsilon:.4f} each) and "
                f"measured (sigma {two_way.sigma:.2f})")

        # 5. the graphical model (post-processing)
        model = estimate(domain, measured, total, self.settings.iterations)
        clock.lap("estimate")
        log(f"mst: fitted in {sum(clock.seconds.values()):.1f} s")
        return GraphicalModel(self.name, model, public, compression, list(cliques), plan.seed,
                              self.settings.sampler, clock.seconds)

    @staticmethod
    def _one_way_fit(measurement, total: float) -> np.ndarray:
        """The L2 fit of a column measured alone: its noisy counts projected onto the counts summing to
        the total (a merged bin weighs 1/c: its measurement is the sum of c cells over sqrt(c))."""
        y = np.asarray(measurement.noisy_measurement, dtype=np.float64)
        weights = getattr(measurement.query, "weights", None)
        if weights is None:
            return project_to_simplex(y, total)
        w = np.asarray(weights, dtype=np.float64)  # y = x * w + noise: x ~ y / w with weight w^2
        return project_to_simplex(y / w, total, w**2)

    def sample(self, dataset: Dataset, model: GraphicalModel, *, rows: int | None = None) -> pl.DataFrame:
        return model.sample(dataset, rows, "mst")

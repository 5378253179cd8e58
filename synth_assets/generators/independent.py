"""The reference every DP generator must beat: independent columns from DP-noised 1-way marginals.

Each modelled column gets a histogram over its public bins (synth_assets.evaluation.marginals). One
entity adds 1 to each of the d histograms, so the d histograms together have L2 sensitivity sqrt(d);
releasing them with Gaussian noise sigma each is the composition of d Gaussian mechanisms, and sigma is
calibrated with T = d (synth_assets.privacy.accounting). Negative noisy counts are set to 0. Rows are
sampled column by column: a bin with probability proportional to its noisy count, then a value uniform
within the bin on the column's scale (integers rounded). The number of rows is the mean of the noisy
totals, a DP estimate of n (summed before negative counts are set to 0, so unbiased).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from synth_assets.datasets.loading import Dataset
from synth_assets.evaluation.marginals import bin_table, column_bins, draw_from_bins
from synth_assets.generators.base import GeneratorPlan, Log, PlannedRelease, as_wide_table, no_log
from synth_assets.privacy.accounting import calibrate_sigma

RELEASE = "independent_marginals"


class IndependentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(default=0, ge=0, description="Seed of the noise and of the sampling.")


@dataclass(frozen=True)
class IndependentModel:
    """The noisy 1-way marginals (clipped at 0) and the DP estimate of n."""

    marginals: dict[str, np.ndarray]
    n_estimate: float
    seed: int


class IndependentMarginals:
    """Every column drawn independently from its noisy 1-way marginal."""

    name = "independent_marginals"

    def __init__(self, settings: IndependentSettings | None = None):
        self.settings = settings or IndependentSettings()

    def __repr__(self) -> str:
        return f"IndependentMarginals({self.settings!r})"

    def plan(self, dataset: Dataset, epsilon: float, delta: float) -> GeneratorPlan:
        histograms = len(dataset.spec.modelled_columns)
        sigma = calibrate_sigma(epsilon, delta, histograms)
        return GeneratorPlan(
            generator=self.name,
            epsilon=epsilon,
            delta=delta,
            seed=self.settings.seed,
            releases=(PlannedRelease(RELEASE, sigma, histograms),),
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
    ) -> IndependentModel:
        (release,) = plan.releases
        binned = bin_table(dataset, private)
        rng = np.random.default_rng(np.random.SeedSequence([plan.seed, 0x1DE9]))
        marginals, totals = {}, []
        for j, column in enumerate(dataset.spec.modelled_columns):
            counts = np.bincount(binned.codes[:, j], minlength=column_bins(column)).astype(np.float64)
            released = counts + rng.normal(0.0, release.sigma, size=counts.size)
            totals.append(released.sum())  # unbiased: summed before negative counts are set to 0
            marginals[column.wide_name] = np.maximum(released, 0.0)
        log(f"{len(marginals)} noisy 1-way marginals, sigma {release.sigma:.2f}")
        return IndependentModel(marginals, float(np.mean(totals)), plan.seed)

    def sample(self, dataset: Dataset, model: IndependentModel, *, rows: int | None = None) -> pl.DataFrame:
        n = rows or max(1, round(model.n_estimate))
        rng = np.random.default_rng(np.random.SeedSequence([model.seed, 0x5A3D]))
        data = {
            column.wide_name: draw_from_bins(column, model.marginals[column.wide_name], n, rng)
            for column in dataset.spec.modelled_columns
        }
        return as_wide_table(dataset, pl.DataFrame(data), "ref")

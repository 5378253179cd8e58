"""Private Evolution as a generator: a DP prior, a candidate pool, T rounds of DP votes, a population.

The stages (:mod:`synth_assets.pe.evolution` holds the algorithm) are methods, so that the asset graph
can materialize each one as an asset and the SDK can run them in one call (:meth:`fit`), with the
same code and the same checkpoints either way.

The candidate API is injected: ``candidates(dataset, prior, log=...)`` returns an API or None, in
which case the offline generator is used (drawing from the DP prior when there is one, else uniformly
from the public domain). The public reference sample of the ``cells`` output always comes from the
offline generator: a paid API would be asked for ``reference_points`` records.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from synth_assets.datasets.loading import Dataset
from synth_assets.generators.base import GeneratorPlan, Log, PlannedRelease, no_log
from synth_assets.pe.encoding import Encoder, build_encoder
from synth_assets.pe.evolution import (
    BudgetSplit,
    CheckpointStore,
    PEConfig,
    Release,
    RoundsResult,
    draw_population,
    initial_candidates,
    model_prior_plan,
    plan_budget,
    release_prior,
    run_rounds,
)
from synth_assets.pe.generators import CandidateAPI
from synth_assets.pe.priors import Prior, prior_api

CandidateSource = Callable[..., CandidateAPI | None]
"""``candidates(dataset, prior, log=...)``: a candidate API, or None for the offline generator."""

PRIOR = "marginal_prior"
VOTES = "nn_histogram"


@dataclass
class PEModel:
    """What a PE fit leaves: DP values only (the prior, the last candidates and their noisy votes)."""

    prior: Prior | None
    candidates: pl.DataFrame
    noisy_votes: np.ndarray
    weights: np.ndarray
    releases: list[Release]
    resumed: int = 0
    api: dict = field(default_factory=dict)
    generation: dict = field(default_factory=dict)

    @property
    def n_estimate(self) -> float:
        """A DP estimate of the number of input entities: the prior's, else the noisy vote total."""
        if self.prior is not None and math.isfinite(self.prior.n_estimate):
            return float(self.prior.n_estimate)
        return max(float(self.noisy_votes.sum()), 0.0)


def offline_api(dataset: Dataset, prior: Prior | None) -> CandidateAPI:
    """The offline candidate API: from the DP prior when there is one, else uniform on the public domain."""
    return prior_api(dataset, prior)


def generation_metadata(api: CandidateAPI) -> dict:
    """What a candidate API reports about its requests (requests, cache hits, cost...), if anything."""
    report = getattr(api, "report", None)
    to_metadata = getattr(report, "to_metadata", None)
    return to_metadata() if callable(to_metadata) else {}


class PrivateEvolution:
    """Private Evolution on the wide table (see :mod:`synth_assets.pe.evolution` and the README)."""

    name = "private_evolution"

    def __init__(self, settings: PEConfig | None = None, *, candidates: CandidateSource | None = None):
        self.settings = settings or PEConfig()
        self.candidates = candidates
        self._encoders: dict[str, Encoder] = {}

    def __repr__(self) -> str:
        return f"PrivateEvolution({self.settings!r})"

    # ------------------------------------------------------------------------------------- planning

    def candidate_api(self, dataset: Dataset, prior: Prior | None, log: Log = no_log) -> CandidateAPI:
        api = self.candidates(dataset, prior, log=log) if self.candidates else None
        return api if api is not None else offline_api(dataset, prior)

    def budget(self, dataset: Dataset, epsilon: float, delta: float) -> BudgetSplit:
        return plan_budget(dataset, epsilon, delta, self.settings, with_prior=self.settings.prior_share > 0)

    def plan(self, dataset: Dataset, epsilon: float, delta: float) -> GeneratorPlan:
        budget = self.budget(dataset, epsilon, delta)
        releases = []
        if budget.prior_rho > 0:
            releases.extend(model_prior_plan(dataset, budget, self.settings).releases)
        elif budget.prior_sigma is not None:
            releases.append(PlannedRelease(PRIOR, budget.prior_sigma, budget.prior_histograms, T=budget.iterations))
        releases.append(PlannedRelease(VOTES, budget.sigma, budget.iterations, T=budget.iterations))
        return GeneratorPlan(
            generator=self.name,
            epsilon=epsilon,
            delta=delta,
            seed=self.settings.seed,
            releases=tuple(releases),
            # the API is described without the prior: the prior is itself a release of this plan
            parameters={"config": self.settings.model_dump(), "api": self.candidate_api(dataset, None).describe()},
        )

    def has_prior(self, plan: GeneratorPlan) -> bool:
        """Whether the plan spends a share of the budget on a DP prior."""
        return len(plan.releases) > 1

    def check_ready(self, dataset: Dataset) -> None:
        check = getattr(self.candidate_api(dataset, None), "check_endpoint", None)
        if callable(check):
            check()

    def encoder(self, dataset: Dataset) -> Encoder:
        if dataset.fingerprint not in self._encoders:
            self._encoders[dataset.fingerprint] = build_encoder(dataset)
        return self._encoders[dataset.fingerprint]

    # ------------------------------------------------------------------------------------- stages

    def release_prior(
        self, dataset: Dataset, private: pl.DataFrame, plan: GeneratorPlan, store: CheckpointStore | None
    ) -> tuple[Prior | None, Release | None, bool]:
        """Stage 1 (reads private data): the DP marginal prior, or its checkpoint; None without one."""
        if not self.has_prior(plan):
            return None, None, False
        return release_prior(dataset, private, self.budget(dataset, plan.epsilon, plan.delta), self.settings, store=store)

    def first_pool(
        self, dataset: Dataset, prior: Prior | None, log: Log = no_log
    ) -> tuple[pl.DataFrame, CandidateAPI]:
        """Stage 2 (public): the first candidates from the random API, and the API."""
        api = self.candidate_api(dataset, prior, log)
        return initial_candidates(api, self.settings), api

    def vote_rounds(
        self,
        dataset: Dataset,
        private: pl.DataFrame,
        pool: pl.DataFrame,
        api: CandidateAPI,
        plan: GeneratorPlan,
        store: CheckpointStore | None,
        log: Log = no_log,
    ) -> RoundsResult:
        """Stage 3 (reads private data): T rounds of DP votes, selection and variation."""
        budget = self.budget(dataset, plan.epsilon, plan.delta)
        return run_rounds(private, self.encoder(dataset), pool, api, budget, self.settings, store=store, log=log)

    def fit(
        self,
        dataset: Dataset,
        private: pl.DataFrame,
        plan: GeneratorPlan,
        *,
        checkpoints: Path | None = None,
        log: Log = no_log,
    ) -> PEModel:
        store = CheckpointStore(checkpoints) if checkpoints else None
        prior, prior_release, prior_resumed = self.release_prior(dataset, private, plan, store)
        pool, api = self.first_pool(dataset, prior, log)
        rounds = self.vote_rounds(dataset, private, pool, api, plan, store, log)
        return PEModel(
            prior=prior,
            candidates=rounds.candidates,
            noisy_votes=rounds.noisy_votes,
            weights=rounds.weights,
            releases=([prior_release] if prior_release else []) + rounds.releases,
            resumed=int(prior_resumed) + rounds.resumed,
            api=api.describe(),
            generation=generation_metadata(api),
        )

    def sample(self, dataset: Dataset, model: PEModel, *, rows: int | None = None) -> pl.DataFrame:
        """Stage 4 (post-processing): the synthetic wide table drawn from the last histogram."""
        return draw_population(
            dataset,
            model.candidates,
            model.noisy_votes,
            model.weights,
            offline_api(dataset, model.prior),
            self.encoder(dataset),
            self.settings,
            n_estimate=model.prior.n_estimate if model.prior is not None else None,
            rows=rows,
        )

"""Private Evolution over the wide table: a DP prior, T rounds of (DP histogram, select, vary), output.

1. Prior (optional, ``prior_share`` of the budget), one of
   - ``mst`` (default): an MST graphical model (synth_assets.pe.model_prior). The random API draws
     candidates from it, the variation API resamples a few columns from its conditionals, and the
     output is raked back to its measured marginals: the votes pay only for what the model misses.
   - ``marginals``: noisy 1-way marginals and table-presence rates (synth_assets.pe.marginal_prior).
   With ``prior_share = 0`` the random API draws uniformly from the public domain.
2. Round t = 1..T: every real record votes for its nearest candidate; N(0, sigma^2) noise on every bin;
   h' = max(h~ - H, 0); before the next round the best candidates are selected (rank or sample) and
   varied by the candidate API.
3. Output, from the last round's weights h' (post-processing):
   - ``cells`` (default): each candidate stands for its Voronoi cell. A public reference sample drawn
     from the random API is assigned to the cells; an output row picks a cell with probability
     proportional to h' and then a reference point inside it (the candidate itself if none). The
     histogram fixes how much mass each region gets; the prior shapes the rows within a region. This
     avoids the bias of putting a whole cell's mass on one point: in many dimensions a few central
     candidates ("hubs") collect most of the votes.
   - ``candidates``: rows are candidates drawn with probability proportional to h' (original PE).

Privacy (add/remove-one-entity neighbouring): with the marginal prior, the prior is k histograms of
sensitivity 1 with noise sigma_prior, i.e. mu_prior = sqrt(k)/sigma_prior; the T vote histograms give
mu_pe = sqrt(T)/sigma. The run is mu-GDP with mu^2 = mu_prior^2 + mu_pe^2, calibrated so that it is
exactly (epsilon, delta)-DP; ``prior_share`` is mu_prior^2 / mu^2. With the MST prior, whose edge
selections are exponential mechanisms, the run composes in zCDP instead: rho is the largest whose
conversion is (epsilon, delta), MST spends ``prior_share`` of it (synth_assets.generators.graphical.mst)
and the T vote histograms the rest, rho_votes = T / (2 sigma^2). Checkpoints hold only candidates, the prior and noisy histograms
(DP values), never a vote count.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from synth_assets.datasets.loading import Dataset
from synth_assets.generators.base import GeneratorPlan, as_wide_table
from synth_assets.generators.graphical.mst import MST, MSTSettings, mst_releases
from synth_assets.pe.encoding import Encoder
from synth_assets.pe.generators import CandidateAPI
from synth_assets.pe.histogram import (
    dp_nn_histogram,
    noise_rng,
    select_candidates,
    threshold,
)
from synth_assets.pe.marginal_prior import prior_histogram_count, release_marginal_prior
from synth_assets.pe.model_prior import ModelPrior
from synth_assets.pe.nn import nearest_candidates
from synth_assets.pe.priors import Prior, prior_from_frame
from synth_assets.pe.sharded_vote import resolve_vote_scheduler, sharded_dp_nn_histogram
from synth_assets.privacy.accounting import (
    calibrate_rho,
    epsilon_for_mu,
    epsilon_for_rho,
    gaussian_rho,
    mu_for_epsilon,
    sigma_for_rho,
)


class PEConfig(BaseModel):
    """Settings of one Private Evolution run. The defaults are explained in the README."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    iterations: int = Field(default=1, ge=1, description="T: number of vote histograms released.")
    pool_size: int = Field(default=2000, ge=2, description="M: candidates per round.")
    selected: int = Field(
        default=500, ge=1, description="K: candidates kept per round as parents of the next round."
    )
    threshold_sigmas: float = Field(
        default=0.5, ge=0, description="H in units of sigma: noisy counts below H get no weight."
    )
    selection: Literal["rank", "sample"] = Field(
        default="rank", description="rank: top-K by h'; sample: K draws in proportion to h'."
    )
    prior: Literal["mst", "marginals"] = Field(
        default="mst",
        description="The DP prior candidates are drawn from: an MST graphical model, or 1-way marginals.",
    )
    prior_share: float = Field(
        default=0.85,
        ge=0,
        lt=1,
        description="Share of the budget spent on the DP prior (of rho for mst, of mu^2 for marginals); "
        "0: no prior, candidates uniform on the public domain.",
    )
    prior_one_way_share: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="Share of the MST prior's rho on its 1-way marginals (the rest: pair selection and "
        "pair marginals, evenly). MST alone uses a third.",
    )
    calibration_sweeps: int = Field(
        default=10,
        ge=0,
        description="Raking passes that fit the output's weights to the MST prior's measured marginals "
        "(cells output); 0: none.",
    )
    output: Literal["cells", "candidates"] = Field(
        default="cells", description="How output rows are drawn from the last histogram."
    )
    reference_points: int = Field(
        default=100_000, ge=1, description="Public reference sample that fills the cells."
    )
    synthetic_rows: int | None = Field(
        default=None,
        ge=1,
        description="Rows of the output. Unset: the sum of the last noisy histogram (a DP estimate of n).",
    )
    seed: int = Field(default=0, ge=0, description="Seed of noise, selection and variation.")

    @model_validator(mode="after")
    def _selected_fits_pool(self) -> PEConfig:
        if self.selected > self.pool_size:
            raise ValueError(f"selected ({self.selected}) cannot exceed pool_size ({self.pool_size})")
        return self


@dataclass(frozen=True)
class BudgetSplit:
    """Noise of each release so that the whole run is exactly (epsilon, delta)-DP."""

    epsilon: float
    delta: float
    mu: float
    prior_histograms: int
    prior_sigma: float | None
    iterations: int
    sigma: float
    prior_rho: float = 0.0
    """zCDP of an MST prior (0 with the marginal prior, whose noise is ``prior_sigma``)."""

    @property
    def mu_prior(self) -> float:
        return math.sqrt(self.prior_histograms) / self.prior_sigma if self.prior_sigma else 0.0

    @property
    def mu_pe(self) -> float:
        return math.sqrt(self.iterations) / self.sigma

    def composed_epsilon(self) -> float:
        if self.prior_rho > 0:
            return epsilon_for_rho(self.prior_rho + gaussian_rho(self.sigma, self.iterations), self.delta)
        return epsilon_for_mu(math.hypot(self.mu_prior, self.mu_pe), self.delta)


def split_model_budget(epsilon: float, delta: float, *, iterations: int, prior_share: float) -> BudgetSplit:
    """The MST prior's rho and the votes' noise, composing in zCDP to exactly (epsilon, delta)."""
    rho = calibrate_rho(epsilon, delta)
    return BudgetSplit(
        epsilon=epsilon,
        delta=delta,
        mu=math.nan,
        prior_histograms=0,
        prior_sigma=None,
        iterations=iterations,
        sigma=sigma_for_rho((1.0 - prior_share) * rho, iterations),
        prior_rho=prior_share * rho,
    )


def split_budget(
    epsilon: float, delta: float, *, prior_histograms: int, iterations: int, prior_share: float
) -> BudgetSplit:
    mu = mu_for_epsilon(epsilon, delta)
    mu_prior = math.sqrt(prior_share) * mu
    mu_pe = math.sqrt(1.0 - prior_share) * mu
    return BudgetSplit(
        epsilon=epsilon,
        delta=delta,
        mu=mu,
        prior_histograms=prior_histograms if prior_share > 0 else 0,
        prior_sigma=math.sqrt(prior_histograms) / mu_prior if prior_share > 0 else None,
        iterations=iterations,
        sigma=math.sqrt(iterations) / mu_pe,
    )


@dataclass
class Release:
    """One DP release from the private data, as the privacy ledger records it."""

    kind: str
    iteration: int
    sigma: float
    histograms: int
    seed: int
    bins: int
    weighted_bins: int

    @property
    def mu(self) -> float:
        return math.sqrt(self.histograms) / self.sigma

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class CheckpointStore:
    """Stage checkpoints of one run: the prior (Parquet and JSON) and each round (candidates + noisy votes)."""

    def __init__(self, directory: Path):
        self.directory = directory

    def _write(self, path: Path, write) -> None:
        tmp = path.with_name(path.name + ".tmp")
        write(tmp)
        tmp.replace(path)

    def save_prior(self, prior: Prior, release: Release) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write(self.directory / "prior.parquet", prior.to_frame().write_parquet)
        # the JSON is written last: its presence marks a complete prior
        payload = json.dumps(release.to_dict())
        self._write(self.directory / "prior.json", lambda p: p.write_text(payload))

    def load_prior(self) -> tuple[Prior, Release] | None:
        path, frame_path = self.directory / "prior.json", self.directory / "prior.parquet"
        if not (path.is_file() and frame_path.is_file()):
            return None
        prior = prior_from_frame(pl.read_parquet(frame_path))
        return prior, Release(**json.loads(path.read_text()))

    def save_round(self, iteration: int, candidates: pl.DataFrame, noisy: np.ndarray, release: Release) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        frame = candidates.with_columns(pl.Series("__noisy_votes", noisy))
        self._write(self.directory / f"round_{iteration:03d}.parquet", frame.write_parquet)
        # the JSON is written last: its presence marks a complete round
        meta = json.dumps(release.to_dict())
        self._write(self.directory / f"round_{iteration:03d}.json", lambda p: p.write_text(meta))

    def load_round(self, iteration: int) -> tuple[pl.DataFrame, np.ndarray, Release] | None:
        frame_path = self.directory / f"round_{iteration:03d}.parquet"
        meta_path = self.directory / f"round_{iteration:03d}.json"
        if not (meta_path.is_file() and frame_path.is_file()):
            return None
        frame = pl.read_parquet(frame_path)
        release = Release(**json.loads(meta_path.read_text()))
        return frame.drop("__noisy_votes"), frame["__noisy_votes"].to_numpy(), release


def _seed(seed: int, *words: int) -> int:
    return int(np.random.SeedSequence([seed, *words]).generate_state(1)[0])


def plan_budget(dataset: Dataset, epsilon: float, delta: float, config: PEConfig, *, with_prior: bool) -> BudgetSplit:
    if with_prior and config.prior == "mst":
        return split_model_budget(epsilon, delta, iterations=config.iterations, prior_share=config.prior_share)
    return split_budget(
        epsilon,
        delta,
        prior_histograms=prior_histogram_count(dataset),
        iterations=config.iterations,
        prior_share=config.prior_share if with_prior else 0.0,
    )


def release_prior(
    dataset: Dataset,
    real: pl.DataFrame,
    budget: BudgetSplit,
    config: PEConfig,
    *,
    store: CheckpointStore | None = None,
) -> tuple[Prior, Release, bool]:
    """Stage 1: the DP prior (releases from the private data), or its checkpoint.

    Returns the prior, its release record and whether it came from the checkpoint in ``store``.
    """
    stored = store.load_prior() if store else None
    if stored:
        return (*stored, True)
    if budget.prior_rho > 0:
        prior, release = _release_model_prior(dataset, real, budget, config)
    else:
        prior = release_marginal_prior(dataset, real, sigma=budget.prior_sigma, seed=config.seed)
        release = Release(
            kind="marginal_prior",
            iteration=0,
            sigma=budget.prior_sigma,
            histograms=prior.histograms,
            seed=config.seed,
            bins=int(sum(v.size for v in prior.columns.values()) + 2 * len(prior.presence)),
            weighted_bins=int(sum((v > 0).sum() for v in prior.columns.values())),
        )
    if store:
        store.save_prior(prior, release)
    return prior, release, False


def model_prior_plan(dataset: Dataset, budget: BudgetSplit, config: PEConfig) -> GeneratorPlan:
    """The MST releases of the prior, at ``budget.prior_rho``."""
    return GeneratorPlan(
        generator=MST.name,
        epsilon=budget.epsilon,
        delta=budget.delta,
        seed=config.seed,
        releases=mst_releases(len(dataset.spec.modelled_columns), budget.prior_rho, config.prior_one_way_share),
        parameters={},
    )


def _release_model_prior(
    dataset: Dataset, real: pl.DataFrame, budget: BudgetSplit, config: PEConfig
) -> tuple[ModelPrior, Release]:
    plan = model_prior_plan(dataset, budget, config)
    model = MST(MSTSettings(seed=config.seed)).fit(dataset, real, plan)
    one_way = plan.releases[0]
    release = Release(
        kind="mst_prior",
        iteration=0,
        sigma=one_way.sigma,
        histograms=sum(r.histograms for r in plan.releases if r.is_gaussian),
        seed=config.seed,
        bins=int(sum(model.domain.sizes)),
        weighted_bins=len(model.cliques),
    )
    return ModelPrior(model), release


def initial_candidates(api: CandidateAPI, config: PEConfig) -> pl.DataFrame:
    """Stage 2: the first candidate pool, from the random API (no private data involved)."""
    return api.random(config.pool_size, seed=_seed(config.seed, 0))


@dataclass
class RoundsResult:
    candidates: pl.DataFrame
    noisy_votes: np.ndarray
    weights: np.ndarray
    releases: list[Release]
    resumed: int


def run_rounds(
    real: pl.DataFrame,
    encoder: Encoder,
    candidates: pl.DataFrame,
    api: CandidateAPI,
    budget: BudgetSplit,
    config: PEConfig,
    *,
    store: CheckpointStore | None = None,
    log=None,
    vote_scheduler: str | None = None,
) -> RoundsResult:
    """Stage 3: T rounds of DP vote histogram, selection and variation; each round is checkpointed.

    ``vote_scheduler``: a Dask scheduler address to count the votes on, shard by shard
    (synth_assets.pe.sharded_vote; the same release bit for bit); unset: $SYNTH_ASSETS_VOTE_SCHEDULER,
    else the vote runs here.
    """
    say = log or (lambda message: None)
    scheduler = resolve_vote_scheduler(vote_scheduler)
    real_encoded = encoder.encode(real)
    h = config.threshold_sigmas * budget.sigma
    releases, resumed = [], 0
    noisy = np.zeros(0)
    for iteration in range(1, config.iterations + 1):
        stored = store.load_round(iteration) if store else None
        if stored is not None:
            candidates, noisy, release = stored
            resumed += 1
        else:
            vote = dp_nn_histogram if scheduler is None else partial(sharded_dp_nn_histogram, scheduler=scheduler)
            histogram, _private_votes = vote(
                real_encoded,
                encoder.encode(candidates),
                encoder.categorical_weights,
                budget.sigma,
                noise_rng(config.seed, iteration),
                seed=config.seed,
            )
            noisy = histogram.noisy
            release = Release(
                kind="nn_histogram",
                iteration=iteration,
                sigma=budget.sigma,
                histograms=1,
                seed=config.seed,
                bins=candidates.height,
                weighted_bins=int((threshold(noisy, h) > 0).sum()),
            )
            if store:
                store.save_round(iteration, candidates, noisy, release)
        releases.append(release)
        say(
            f"round {iteration}/{config.iterations}: {release.weighted_bins} of {release.bins} "
            f"candidates above the threshold" + (" (from checkpoint)" if stored is not None else "")
        )
        if iteration < config.iterations:
            candidates = _next_pool(candidates, noisy, h, config, api, iteration)
    return RoundsResult(candidates, noisy, threshold(noisy, h), releases, resumed)


def draw_population(
    dataset: Dataset,
    candidates: pl.DataFrame,
    noisy_votes: np.ndarray,
    weights: np.ndarray,
    reference_api: CandidateAPI,
    encoder: Encoder,
    config: PEConfig,
    n_estimate: float | None = None,
    rows: int | None = None,
) -> pl.DataFrame:
    """Stage 4: the synthetic wide table, drawn from the last histogram (post-processing).

    ``reference_api`` draws the public reference sample of the ``cells`` output: an offline API (the
    prior's), never a paid one. Rows: ``rows``, else ``synthetic_rows``, else the prior's DP estimate of
    n (noise about sigma_prior), else the sum of the noisy votes (noise sqrt(M) sigma).
    """
    if not rows and config.synthetic_rows:
        rows = config.synthetic_rows
    if rows:
        pass
    elif n_estimate is not None and math.isfinite(n_estimate):
        rows = max(1, int(round(n_estimate)))
    else:
        rows = max(1, int(round(max(float(noisy_votes.sum()), 0.0))))
    rng = np.random.default_rng(_seed(config.seed, 0xF1A1))
    if config.output == "cells":
        population = _cell_population(candidates, weights, rows, reference_api, encoder, config, rng)
    else:
        population = _candidate_population(candidates, weights, rows, rng)
    return as_wide_table(dataset, population, "syn")


def _candidate_population(
    candidates: pl.DataFrame, weights: np.ndarray, rows: int, rng: np.random.Generator
) -> pl.DataFrame:
    if weights.sum() > 0:
        chosen = rng.choice(weights.size, size=rows, replace=True, p=weights / weights.sum())
    else:  # every vote drowned in noise: the output carries no information from the data
        chosen = rng.integers(0, candidates.height, size=rows)
    return candidates[chosen]


def _cell_population(
    candidates: pl.DataFrame,
    weights: np.ndarray,
    rows: int,
    api: CandidateAPI,
    encoder: Encoder,
    config: PEConfig,
    rng: np.random.Generator,
) -> pl.DataFrame:
    """Rows drawn from a public reference sample, each point weighing its cell's h' shared among the
    points of the cell (a cell no point fell in is its candidate itself); an API that can calibrate (the
    MST prior's) then rakes the weights to its measured marginals."""
    if weights.sum() <= 0:
        return _candidate_population(candidates, weights, rows, rng)
    reference = api.random(config.reference_points, seed=_seed(config.seed, 0xCE11))
    encoded_reference = encoder.encode(reference)
    encoded_candidates = encoder.encode(candidates)
    cell_of = nearest_candidates(
        encoded_reference.numeric,
        encoded_reference.categorical,
        encoded_candidates.numeric,
        encoded_candidates.categorical,
        encoder.categorical_weights,
    )
    counts = np.bincount(cell_of, minlength=candidates.height)
    empty = np.flatnonzero((counts == 0) & (weights > 0))
    points = pl.concat([reference, candidates[empty]], how="vertical_relaxed") if empty.size else reference
    point_weights = np.concatenate([weights[cell_of] / counts[cell_of], weights[empty]])
    calibrate = getattr(api, "calibrate", None)
    if callable(calibrate) and config.calibration_sweeps > 0:
        point_weights = calibrate(points, point_weights, config.calibration_sweeps)
    picks = rng.choice(points.height, size=rows, replace=True, p=point_weights / point_weights.sum())
    return points[picks]


def _next_pool(
    candidates: pl.DataFrame,
    noisy: np.ndarray,
    h: float,
    config: PEConfig,
    api: CandidateAPI,
    iteration: int,
) -> pl.DataFrame:
    """Parents selected from the noisy histogram, plus their variations, refilled to the pool size."""
    rng = np.random.default_rng(_seed(config.seed, iteration, 0x5E1))
    parents_idx = select_candidates(threshold(noisy, h), config.selected, config.selection, rng)
    seed = _seed(config.seed, iteration, 0xA11)
    if parents_idx.size == 0:
        return api.random(config.pool_size, seed=seed)
    parents = candidates[parents_idx]
    needed = config.pool_size - parents.height
    if needed <= 0:
        return parents
    per_parent = max(1, -(-needed // parents.height))
    children = api.variation(
        parents, per_parent, iteration=iteration, iterations=config.iterations, seed=seed
    ).head(needed)
    return pl.concat([parents, children], how="vertical_relaxed")

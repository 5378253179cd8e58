"""AIM (McKenna, Mullins, Sheldon & Miklau 2022, "AIM: An Adaptive and Iterative Mechanism for
Differentially Private Synthetic Data"), on the public bins of the wide table.

The workload is every marginal of 2 .. ``degree`` columns of the public bins (by default all 2-way and
3-way ones; when a degree has more than ``max_workload`` of them, a uniform sample of that many, drawn
from the seed and the column names only). The candidates are the workload's marginals and all their
sub-marginals, each weighted by its overlap with the workload, ``w_r = sum_s |r & s|``.

1. Measure every 1-way marginal with Gaussian noise (``one_way_share`` of the zCDP budget rho).
2. For each of ``rounds`` rounds (the rest of rho, split equally; ``measure_share`` of each round to the
   measurement, the rest to the selection):

   * score each candidate r against the current model p: ``q_r = w_r (||M_r(D) - M_r(p)||_1 -
     sqrt(2/pi) sigma n_r)`` (n_r cells; the expected error of measuring it), sensitivity max_r w_r;
   * choose one by the exponential mechanism among the candidates whose addition keeps the model within
     ``max_model_mb`` times the share of rho spent so far (the filter depends on earlier DP outputs only);
   * measure it with Gaussian noise and fit the model again (the component of the model it joined, by
     mirror descent in numpy, warm-started: see :class:`_State`).
3. Fit the final model with private-pgm (mbi 2.x, warm-started from the last fit) and sample from it with
   mbi's sampler.

Departure from the paper: AIM's rounds anneal (sigma halves, epsilon doubles when the model stops
improving) and it stops when rho is spent, so its number of rounds and every round's noise depend on the
data. Here the schedule is fixed in advance (``rounds`` rounds of equal noise), so that the plan holds
exactly the releases the run makes: d 1-way histograms at sigma_0, ``rounds`` selections of epsilon each,
``rounds`` marginals at sigma. The model-size filter is kept.

Accounting (add/remove one entity): the 1-way marginals are d histograms of sensitivity 1,
``d / (2 sigma_0^2) = one_way_share * rho``; each round spends ``rho_r = (1 - one_way_share) rho / rounds``,
``1 / (2 sigma^2) = measure_share * rho_r`` on its marginal and ``epsilon^2 / 8 = (1 - measure_share) rho_r``
on its selection. They compose to rho, the largest whose CKS conversion is the target (epsilon, delta).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import networkx as nx
import numpy as np
import polars as pl
from mbi import Domain, LinearMeasurement, MarkovRandomField
from mbi.junction_tree import make_junction_tree
from pydantic import BaseModel, ConfigDict, Field

from synth_assets.datasets.loading import Dataset
from synth_assets.generators.base import GeneratorPlan, Log, PlannedRelease, no_log
from synth_assets.generators.graphical.domain import Compression, PublicDomain
from synth_assets.generators.graphical.inference import TreeMarginals, mirror_descent, project_to_simplex
from synth_assets.generators.graphical.model import (
    Clique,
    GraphicalModel,
    Stopwatch,
    estimate,
    exponential_mechanism,
    gaussian_measurement,
    marginal_counts,
    noise_rng,
    product_model,
    total_estimate,
)
from synth_assets.privacy.accounting import calibrate_rho, em_epsilon_for_rho, sigma_for_rho

ONE_WAY = "aim_one_way"
SELECTION = "aim_selection"
MEASUREMENT = "aim_measurement"


class AIMSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(default=0, ge=0, description="Seed of the noise, the selections, the workload sample "
                                                   "and the sampling.")
    rounds: int = Field(default=40, ge=1, description="Selections and measurements after the 1-way ones.")
    degree: int = Field(default=3, ge=2, le=4, description="Workload: every marginal of 2 .. degree columns.")
    max_workload: int | None = Field(
        default=1000, ge=1,
        description="At most this many workload marginals of each degree (a seeded uniform sample of them "
                    "when there are more); None: all.",
    )
    max_model_mb: float = Field(default=4.0, gt=0, description="Largest junction tree, in MB of float64 "
                                                                "cells, reached when the budget is spent.")
    one_way_share: float = Field(default=0.25, gt=0, lt=1, description="Share of rho for the 1-way marginals.")
    measure_share: float = Field(default=0.9, gt=0, lt=1, description="Share of each round's rho for its "
                                                                      "measurement (the rest selects).")
    round_iterations: int = Field(default=200, ge=10, description="Most mirror-descent iterations of the refit "
                                                                   "after each round (it stops once converged).")
    iterations: int = Field(default=2000, ge=50, description="Mirror-descent iterations of the final fit.")
    sampler: Literal["sample", "round"] = Field(
        default="sample", description="mbi's synthetic_data method: i.i.d. draws or randomized rounding."
    )


def workload(names: Sequence[str], settings: AIMSettings) -> list[Clique]:
    """The workload marginals: public (column names, the seed and the settings; never the data)."""
    rng = np.random.default_rng(np.random.SeedSequence([settings.seed, 0xA1D]))
    out: list[Clique] = []
    for k in range(2, min(settings.degree, len(names)) + 1):
        every = list(itertools.combinations(names, k))
        if settings.max_workload is not None and len(every) > settings.max_workload:
            chosen = np.sort(rng.choice(len(every), size=settings.max_workload, replace=False))
            every = [every[i] for i in chosen]
        out += every
    return out


def candidates(names: Sequence[str], marginals: Sequence[Clique]) -> dict[Clique, float]:
    """The workload's marginals, all their sub-marginals and every 1-way marginal, each with its weight
    ``w_r = sum over the workload s of |r & s|`` (= the sum over r's columns of how many workload
    marginals hold them)."""
    holding = dict.fromkeys(names, 0)
    for s in marginals:
        for a in s:
            holding[a] += 1
    order = {a: i for i, a in enumerate(names)}
    closure: set[Clique] = {(a,) for a in names}
    for s in marginals:
        for k in range(1, len(s) + 1):
            closure.update(tuple(sorted(r, key=order.get)) for r in itertools.combinations(s, k))
    return {r: float(sum(holding[a] for a in r)) for r in sorted(closure, key=lambda r: (len(r), [order[a] for a in r]))}


class ModelSize:
    """Junction-tree size of the model's cliques, and of the model with one more clique, in MB (float64
    cells, as mbi's ``hypothetical_model_size``). Only the connected components a new clique touches are
    triangulated again."""

    def __init__(self, sizes: dict[str, int], cliques: Sequence[Clique]):
        self.sizes = sizes
        graph = nx.Graph()
        graph.add_nodes_from(sizes)
        for clique in cliques:
            graph.add_edges_from(itertools.combinations(clique, 2))
        self.component = {}
        self.parts: list[tuple[set[str], list[Clique], int, list[set[str]]]] = []
        for index, attrs in enumerate(nx.connected_components(graph)):
            own = [c for c in cliques if set(c) <= attrs]
            cells, nodes = self._cells(attrs, own)
            self.parts.append((attrs, own, cells, nodes))
            for a in attrs:
                self.component[a] = index
        self.cells = sum(part[2] for part in self.parts)

    def _cells(self, attrs: set[str], cliques: Sequence[Clique]) -> tuple[int, list[set[str]]]:
        if len(attrs) == 1:
            (a,) = attrs
            return self.sizes[a], [{a}]
        names = sorted(attrs)
        tree, _ = make_junction_tree(Domain(names, [self.sizes[a] for a in names]), list(cliques))
        nodes = [set(n) for n in tree.nodes]
        return sum(math.prod(self.sizes[a] for a in n) for n in nodes), nodes

    @property
    def mb(self) -> float:
        return self.cells * 8 / 2**20

    def with_clique(self, clique: Clique) -> float:
        touched = sorted({self.component[a] for a in clique})
        if len(touched) == 1 and any(set(clique) <= n for n in self.parts[touched[0]][3]):
            return self.mb
        attrs = set().union(*(self.parts[i][0] for i in touched))
        own = [c for i in touched for c in self.parts[i][1]] + [clique]
        cells = self.cells - sum(self.parts[i][2] for i in touched) + self._cells(attrs, own)[0]
        return cells * 8 / 2**20


class AIM:
    """AIM on the wide table's public bins, with a fixed schedule (see the module docstring)."""

    name = "aim"

    def __init__(self, settings: AIMSettings | None = None):
        self.settings = settings or AIMSettings()

    def __repr__(self) -> str:
        return f"AIM({self.settings!r})"

    def plan(self, dataset: Dataset, epsilon: float, delta: float) -> GeneratorPlan:
        s = self.settings
        d = len(dataset.spec.modelled_columns)
        rho = calibrate_rho(epsilon, delta)
        rounds_rho = (1.0 - s.one_way_share) * rho
        releases = (
            PlannedRelease(ONE_WAY, sigma_for_rho(s.one_way_share * rho, d), d),
            PlannedRelease.exponential(
                SELECTION, em_epsilon_for_rho((1.0 - s.measure_share) * rounds_rho, s.rounds), s.rounds
            ),
            PlannedRelease(MEASUREMENT, sigma_for_rho(s.measure_share * rounds_rho, s.rounds), s.rounds),
        )
        return GeneratorPlan(
            generator=self.name,
            epsilon=epsilon,
            delta=delta,
            seed=s.seed,
            releases=releases,
            parameters={"settings": s.model_dump()},
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
        s = self.settings
        clock = Stopwatch()
        public = PublicDomain.of(dataset)
        names, sizes = public.names, public.config
        column = {a: j for j, a in enumerate(names)}
        codes = public.encode(dataset, private)
        rng = noise_rng(plan.seed, 0xA1A)
        one_way, selection, measurement = (plan.release(k) for k in (ONE_WAY, SELECTION, MEASUREMENT))

        weights = candidates(names, workload(names, s))
        cliques = list(weights)
        w = np.array([weights[r] for r in cliques])
        sensitivity = float(w.max())
        data = [marginal_counts(codes, [column[a] for a in r], public.sizes) for r in cliques]
        penalty = np.array([math.prod(sizes[a] for a in r) for r in cliques]) * math.sqrt(2 / math.pi)
        clock.lap("candidates")

        measured = [
            gaussian_measurement(marginal_counts(codes, [j], public.sizes), (a,), one_way.sigma, rng)
            for j, a in enumerate(names)
        ]
        clock.lap("measure")
        state = _State(public, measured, s.round_iterations)
        state.fit()
        log(f"aim: {len(cliques)} candidates from a workload of {len(cliques) - len(names)} marginals and "
            f"their subsets; {len(names)} noisy 1-way marginals (sigma {one_way.sigma:.2f})")
        rho = plan.rho
        spent = one_way.rho
        per_round = (rho - spent) / s.rounds
        chosen: list[Clique] = []
        errors = np.zeros(len(cliques))
        stale = set(names)  # columns whose model marginals changed since the errors were computed
        for t in range(s.rounds):
            spent += per_round
            limit = s.max_model_mb * spent / rho
            tree = state.tree()
            for i, r in enumerate(cliques):  # the others' marginals did not change (the total is fixed)
                if stale.intersection(r):
                    errors[i] = np.abs(data[i] - state.total * tree.marginal(r).ravel()).sum()
            scores = w * (errors - measurement.sigma * penalty)
            keys = exponential_mechanism(scores, selection.selection_epsilon, sensitivity, rng)
            clock.lap("scores")
            size = ModelSize(sizes, state.multi)
            pick = next(i for i in np.argsort(-keys, kind="stable") if size.with_clique(cliques[i]) <= limit
                        or len(cliques[i]) == 1)
            clock.lap("select")
            r = cliques[pick]
            chosen.append(r)
            state.add(gaussian_measurement(data[pick], r, measurement.sigma, rng))
            clock.lap("measure")
            stale = state.fit()
            clock.lap("estimate")
            log(f"aim: round {t + 1}/{s.rounds}: {r} (model {size.with_clique(r):.2f} MB of {limit:.2f})")
        model = state.final(s.iterations)
        clock.lap("estimate")
        log(f"aim: fitted in {sum(clock.seconds.values()):.1f} s")
        return GraphicalModel(self.name, model, public, Compression(), chosen, plan.seed, s.sampler,
                              clock.seconds)

    def sample(self, dataset: Dataset, model: GraphicalModel, *, rows: int | None = None) -> pl.DataFrame:
        return model.sample(dataset, rows, "aim")


class _State:
    """AIM's measurements and its current model.

    In the L2 fit, columns in different connected components of the measured cliques are independent
    (the loss is a sum over components, each fitted to the same known total), and a column measured only
    alone is the projection of its measurements. So each round refits only the component its clique
    joined, warm-started from the fits it merges. Those refits guide the selection only, and run in numpy
    (:func:`~synth_assets.generators.graphical.inference.mirror_descent`, the same algorithm as mbi's):
    with mbi every round would compile a new model, tens of seconds each once a component has tens of
    columns. The final model is fitted by mbi, one component at a time, from the last refits.
    """

    def __init__(self, public: PublicDomain, measured: list[LinearMeasurement], iterations: int):
        self.public = public
        self.measured = list(measured)
        self.iterations = iterations
        self.multi: list[Clique] = []
        self.total = total_estimate(self.measured)
        self.parts: dict[tuple[int, ...], list[tuple[Clique, np.ndarray]]] = {}  # measurements -> potentials
        self.isolated: dict[str, np.ndarray] = {}

    def add(self, measurement: LinearMeasurement) -> None:
        self.measured.append(measurement)
        clique = tuple(measurement.clique)
        if len(clique) > 1 and clique not in self.multi:
            self.multi.append(clique)

    def _components(self) -> list[list[str]]:
        graph = nx.Graph()
        for clique in self.multi:
            graph.add_nodes_from(clique)
            graph.add_edges_from(itertools.combinations(clique, 2))
        order = {a: i for i, a in enumerate(self.public.names)}
        return [sorted(c, key=order.get) for c in nx.connected_components(graph)]

    def fit(self) -> set[str]:
        """Refit the components a round changed (the total stays the 1-way measurements' estimate during
        the rounds, so the others are unchanged) and the columns measured only alone. Returns the columns
        whose model changed."""
        parts: dict[tuple[int, ...], list[tuple[Clique, np.ndarray]]] = {}
        active: set[str] = set()
        changed: set[str] = set()
        for attrs in self._components():
            active.update(attrs)
            key = tuple(i for i, m in enumerate(self.measured) if set(m.clique) <= set(attrs))
            if key in self.parts:
                parts[key] = self.parts[key]
                continue
            changed.update(attrs)
            start = [p for k, potentials in self.parts.items() if set(k) <= set(key) for p in potentials]
            measurements = [(tuple(self.measured[i].clique), np.asarray(self.measured[i].noisy_measurement),
                             float(self.measured[i].stddev)) for i in key]
            theta, _ = mirror_descent({a: self.public.config[a] for a in attrs}, measurements, self.total,
                                      self.iterations, start)
            parts[key] = list(theta.items())
        self.parts = parts
        previous, self.isolated = self.isolated, {}
        for a in self.public.names:  # each column measured only alone: the L2 fit of its measurements
            if a not in active:
                self.isolated[a] = project_to_simplex(_mean_of(self.measured, a), self.total)
                if a not in previous or not np.array_equal(previous[a], self.isolated[a]):
                    changed.add(a)
        return changed

    def tree(self) -> TreeMarginals:
        """The current model, calibrated, to score the candidates."""
        potentials = [p for part in self.parts.values() for p in part]
        for a, counts in self.isolated.items():
            potentials.append(((a,), _log_probabilities(counts)))
        return TreeMarginals(self.public.config, potentials)

    def final(self, iterations: int) -> MarkovRandomField:
        """The released model: every component fitted by mbi (warm-started from its last refit) with the
        total estimated from all the measurements, times the columns measured only alone."""
        self.total = total_estimate(self.measured)
        models = []
        for key, potentials in self.parts.items():
            attrs = [a for a in self.public.names if any(a in self.measured[i].clique for i in key)]
            domain = Domain(attrs, [self.public.config[a] for a in attrs])
            models.append(estimate(domain, [self.measured[i] for i in key], self.total, iterations, potentials))
        isolated = {a: project_to_simplex(_mean_of(self.measured, a), self.total) for a in self.isolated}
        domain = Domain(list(self.public.names), list(self.public.sizes))
        return product_model(domain, models, isolated, self.total)


def _mean_of(measured: Sequence[LinearMeasurement], name: str) -> np.ndarray:
    """Inverse-variance mean of a column's 1-way measurements."""
    ms = [m for m in measured if tuple(m.clique) == (name,)]
    precision = np.array([1.0 / float(m.stddev) ** 2 for m in ms])
    return sum(p * np.asarray(m.noisy_measurement) for p, m in zip(precision, ms)) / precision.sum()


def _log_probabilities(counts: np.ndarray) -> np.ndarray:
    p = counts / counts.sum() if counts.sum() > 0 else np.full(counts.size, 1.0 / counts.size)
    with np.errstate(divide="ignore"):
        return np.maximum(np.log(p), -1e3)

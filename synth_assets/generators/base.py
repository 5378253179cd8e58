"""What every generator is: settings, a plan of its DP releases, a fit on private data, a sample.

A generator never decides on its own to spend budget. :mod:`synth_assets.privacy.releases` asks it for
the exact releases it will make at (epsilon, delta) (:meth:`Generator.plan`: kinds and noise, known
before any private data is read), charges them to the ledger together with every other release of the
partition, and only then calls :meth:`Generator.fit`, the one method that reads private data. Sampling
from the fitted model is post-processing of the DP releases.

Neighbouring relation (for every generator here): two datasets are neighbours when one has one more
entity than the other, i.e. one more row of the wide table (add/remove one entity). Each histogram a
generator releases counts every entity at most once, so its L2 sensitivity is 1; a release of ``k``
histograms with Gaussian noise ``sigma`` each is ``mu = sqrt(k) / sigma`` Gaussian-DP.

A release can also be ``k`` selections by the exponential mechanism of ``selection_epsilon`` each (MST and
AIM choose the marginals they measure that way): ``k * epsilon^2 / 8``-zCDP. A plan's releases compose by
:func:`synth_assets.privacy.accounting.compose`: exactly in GDP when all are Gaussian, in zCDP when
one is a selection (:attr:`GeneratorPlan.composition`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import polars as pl
from pydantic import BaseModel

from synth_assets.datasets.loading import Dataset
from synth_assets.datasets.temporal import as_dates
from synth_assets.privacy.accounting import Composition, compose_releases, em_rho, gaussian_rho

Log = Callable[[str], None]


def no_log(message: str) -> None:
    """The default log: say nothing."""


GAUSSIAN = "gaussian"
EXPONENTIAL = "exponential"
MECHANISMS = (GAUSSIAN, EXPONENTIAL)


@dataclass(frozen=True)
class PlannedRelease:
    """One mechanism a generator will run.

    Gaussian (the default, ``mechanism="gaussian"``): ``histograms`` histograms of sensitivity 1, noise
    ``sigma`` each. Exponential mechanism (:meth:`exponential`): ``selections`` selections of
    ``selection_epsilon`` each (``sigma`` and ``histograms`` are None). ``T`` is the number of PE rounds
    it spans (None for other generators).
    """

    kind: str
    sigma: float | None
    histograms: int | None
    T: int | None = None
    mechanism: str = GAUSSIAN
    selection_epsilon: float | None = None
    selections: int | None = None

    def __post_init__(self) -> None:
        if self.mechanism == GAUSSIAN:
            if self.sigma is None or self.histograms is None:
                raise ValueError(f"a Gaussian release ({self.kind}) needs sigma and histograms")
            if self.selection_epsilon is not None or self.selections is not None:
                raise ValueError(f"a Gaussian release ({self.kind}) has no selections")
        elif self.mechanism == EXPONENTIAL:
            if self.selection_epsilon is None or self.selections is None:
                raise ValueError(f"an exponential-mechanism release ({self.kind}) needs selection_epsilon "
                                 f"and selections")
            if self.sigma is not None or self.histograms is not None:
                raise ValueError(f"an exponential-mechanism release ({self.kind}) has no sigma or histograms")
        else:
            raise ValueError(f"mechanism must be one of {MECHANISMS}, got {self.mechanism!r}")

    @classmethod
    def exponential(cls, kind: str, selection_epsilon: float, selections: int, T: int | None = None
                    ) -> PlannedRelease:
        """``selections`` exponential-mechanism selections of ``selection_epsilon`` each."""
        return cls(kind, None, None, T, mechanism=EXPONENTIAL, selection_epsilon=float(selection_epsilon),
                   selections=int(selections))

    @property
    def is_gaussian(self) -> bool:
        return self.mechanism == GAUSSIAN

    @property
    def mu(self) -> float:
        """GDP mu of a Gaussian release (an exponential-mechanism release has none: see :attr:`rho`)."""
        if not self.is_gaussian:
            raise ValueError(f"{self.kind} is an exponential-mechanism release: it has a rho, not a GDP mu")
        return math.sqrt(self.histograms) / self.sigma

    @property
    def rho(self) -> float:
        """zCDP rho: ``histograms / (2 sigma^2)`` or ``selections * selection_epsilon^2 / 8``."""
        if self.is_gaussian:
            return gaussian_rho(self.sigma, self.histograms)
        return em_rho(self.selection_epsilon, self.selections)


@dataclass(frozen=True)
class GeneratorPlan:
    """A generator's releases at (epsilon, delta), and what else determines their output.

    ``parameters`` enters every release's identity in the ledger (with the seed and a digest of the
    private data): two runs with equal parameters, seed and data make the same releases.
    """

    generator: str
    epsilon: float
    delta: float
    seed: int
    releases: tuple[PlannedRelease, ...]
    parameters: Mapping[str, Any] = field(default_factory=dict)

    @property
    def composition(self) -> Composition:
        """The releases composed: GDP if all are Gaussian, zCDP otherwise."""
        return compose_releases(self.releases)

    @property
    def mu(self) -> float:
        """GDP mu of the releases (all Gaussian; a plan with selections has a :attr:`rho` instead)."""
        if any(not r.is_gaussian for r in self.releases):
            raise ValueError(f"{self.generator}'s plan has exponential-mechanism releases: compose it in zCDP "
                             f"(plan.rho, plan.spends)")
        return math.sqrt(sum(r.mu**2 for r in self.releases))

    @property
    def rho(self) -> float:
        return self.composition.rho

    @property
    def spends(self) -> float:
        """The releases' epsilon at the plan's delta, composed by the project's rule."""
        return self.composition.epsilon(self.delta)

    def release(self, kind: str) -> PlannedRelease | None:
        return next((r for r in self.releases if r.kind == kind), None)


@runtime_checkable
class Generator(Protocol):
    """A synthetic-data generator. Implementations: PrivateEvolution, IndependentMarginals, MST, AIM."""

    name: str
    settings: BaseModel

    def plan(self, dataset: Dataset, epsilon: float, delta: float) -> GeneratorPlan:
        """The exact releases of a run at (epsilon, delta), composing to exactly that guarantee."""
        ...

    def fit(
        self,
        dataset: Dataset,
        private: pl.DataFrame,
        plan: GeneratorPlan,
        *,
        checkpoints: Path | None = None,
        log: Log = no_log,
    ) -> Any:
        """Run the planned mechanisms on the private wide table; the only step that reads it.
        Returns the fitted model: DP values only."""
        ...

    def sample(self, dataset: Dataset, model: Any, *, rows: int | None = None) -> pl.DataFrame:
        """The synthetic wide table (post-processing of the model). ``rows`` unset: the model's DP
        estimate of the number of entities."""
        ...

    def check_ready(self) -> None:
        """Fail fast, before any budget is charged, if the generator cannot run (an unreachable
        endpoint, say)."""
        ...


def synthetic_keys(dataset: Dataset, rows: int, prefix: str) -> pl.Series:
    """Entity keys of synthetic rows: ``<prefix>_0000001`` ... (never a real key)."""
    return pl.format(f"{prefix}_{{}}", pl.int_range(1, rows + 1).cast(pl.Utf8).str.zfill(7)).alias(
        dataset.spec.entity.key
    )


def entity_rows(dataset: Dataset, training_estimate: float) -> int:
    """Rows of a synthetic table that stands for every entity, made from the training entities only: the
    model's DP estimate of their number scaled up by the public holdout fraction (post-processing)."""
    if not math.isfinite(training_estimate):
        return 1
    return max(1, round(training_estimate / (1.0 - dataset.spec.privacy.holdout_fraction)))


def as_wide_table(dataset: Dataset, rows: pl.DataFrame, prefix: str) -> pl.DataFrame:
    """Synthetic modelled columns with fresh keys, in the wide table's column order; the numbers a
    generator drew for a date or timestamp column become dates (:func:`synth_assets.datasets.temporal.
    as_dates`)."""
    rows = as_dates(dataset.spec, rows)
    return rows.with_columns(synthetic_keys(dataset, rows.height, prefix)).select(
        [c.wide_name for c in dataset.spec.wide_table.columns]
    )

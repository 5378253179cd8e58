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

Log = Callable[[str], None]


def no_log(message: str) -> None:
    """The default log: say nothing."""


@dataclass(frozen=True)
class PlannedRelease:
    """One Gaussian mechanism a generator will run: ``histograms`` histograms of sensitivity 1, noise
    ``sigma`` each. ``T`` is the number of PE rounds it spans (None for other generators)."""

    kind: str
    sigma: float
    histograms: int
    T: int | None = None

    @property
    def mu(self) -> float:
        return math.sqrt(self.histograms) / self.sigma


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
    def mu(self) -> float:
        return math.sqrt(sum(r.mu**2 for r in self.releases))

    def release(self, kind: str) -> PlannedRelease | None:
        return next((r for r in self.releases if r.kind == kind), None)


@runtime_checkable
class Generator(Protocol):
    """A synthetic-data generator. Implementations: PrivateEvolution, IndependentMarginals."""

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


def as_wide_table(dataset: Dataset, rows: pl.DataFrame, prefix: str) -> pl.DataFrame:
    """Synthetic modelled columns with fresh keys, in the wide table's column order."""
    return rows.with_columns(synthetic_keys(dataset, rows.height, prefix)).select(
        [c.wide_name for c in dataset.spec.wide_table.columns]
    )

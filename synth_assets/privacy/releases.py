"""The one home of every DP release: plan a partition's releases, refuse what is unsafe, charge them
together, then run the generators.

A partition is one epsilon of one dataset. Every generator that runs there (the reference included)
is asked for its plan (:meth:`Generator.plan`: kinds and noise of each release). Then, before any
mechanism runs:

1. :func:`plan_partition` refuses unsafe settings (:class:`UnsafePrivacySetting`): an empty population,
   a non-finite or non-positive epsilon, delta >= 1/n, noise so small that the counts come out nearly
   exact (unless explicitly allowed);
2. each generator checks that it can run (an LLM endpoint is reached, its key and model accepted);
3. :func:`charge_partition` checks the whole partition against the dataset's budget and records every
   release in the ledger in one transaction: all or none. A release already recorded (same data,
   settings and seed) is never refused and never charged again, so re-runs and resumes always work.

Only then does :meth:`Generator.fit` read the private data. :func:`run_partition` does all of it in one
call (the SDK's :func:`synthesize`); the asset graph calls the same planning and charging in its
``release_plan`` asset and the generators' stages in the assets that follow, each of which first
checks that its release is in the ledger (:func:`require_charged`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl

from synth_assets.datasets.loading import Dataset
from synth_assets.generators.base import Generator, GeneratorPlan, Log, no_log
from synth_assets.privacy.accounting import Composition, UnsafePrivacySetting, check_delta, compose_releases
from synth_assets.privacy.ledger import BudgetCheck, LedgerRelease, PrivacyLedger
from synth_assets.warehouse import DEFAULT_DELTA

SMALLEST_SIGMA = 0.1
"""Noise below a tenth of one entity's count leaves the released counts nearly exact."""


def resolve_delta(dataset: Dataset, delta: float | None = None) -> float:
    """The delta of a run: the one given, else the dataset's ``privacy.delta``, else 1e-6."""
    return float(delta or dataset.spec.privacy.delta or DEFAULT_DELTA)


def data_fingerprint(frame: pl.DataFrame) -> str:
    """Digest of a table's content, independent of row order and of how its columns are stored.

    It goes into checkpoint and ledger identities, so that new private data is a new run and a new
    release (the dataset fingerprint covers the spec and SQL, not the data). It stays local and is
    never released. Integer and float columns are hashed as 64-bit, text as UTF-8, so the wide table
    read back from the warehouse and the one built in memory have the same digest. Row hashes come from
    polars and may change with its version: then a re-run counts as new (the safe direction).
    """
    canonical = frame.select(
        pl.col(name).cast(pl.Int64) if dtype.is_integer()
        else pl.col(name).cast(pl.Float64) if dtype.is_float()
        else pl.col(name)
        for name, dtype in frame.schema.items()
    )
    digest = hashlib.sha256()
    digest.update(json.dumps([[n, str(t)] for n, t in canonical.schema.items()]).encode())
    digest.update(str(frame.height).encode())
    if frame.height and frame.width:
        hashes = pl.DataFrame(
            {"h0": canonical.hash_rows(seed=0), "h1": canonical.hash_rows(seed=1)}
        ).sort("h0", "h1")
        digest.update(hashes.to_numpy().tobytes())
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class PartitionPlan:
    """Every release of one partition, with the ledger records that stand for them."""

    dataset: Dataset
    epsilon: float
    delta: float
    n: int
    data_digest: str
    generators: dict[str, GeneratorPlan]
    records: dict[str, tuple[LedgerRelease, ...]]

    @property
    def releases(self) -> list[LedgerRelease]:
        return [r for records in self.records.values() for r in records]

    @property
    def composition(self) -> Composition:
        """All the partition's releases composed: GDP when all are Gaussian, zCDP when one is a selection."""
        return compose_releases(self.releases)

    @property
    def spends(self) -> float:
        """The partition's epsilon at its delta: all its releases composed (:attr:`composition`)."""
        return self.composition.epsilon(self.delta)

    def record(self, generator: str, kind: str) -> LedgerRelease:
        return next(r for r in self.records[generator] if r.kind == kind)

    def identity(self, generator: str) -> str:
        """What determines a generator's run: its checkpoints live under this name."""
        text = json.dumps(sorted(r.identity for r in self.records[generator]))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def checkpoints(self, root: Path | None, generator: str) -> Path | None:
        return root / self.dataset.name / generator / self.identity(generator) if root else None

    def to_frame(self, recorded_before: set[str] = frozenset()) -> pl.DataFrame:
        """One row per release: the generator, its kind, noise and identity."""
        rows = [
            {
                "generator": generator,
                "kind": r.kind,
                "epsilon": r.epsilon,
                "delta": r.delta,
                "sigma": r.sigma,
                "histograms": r.histograms,
                "mechanism": r.mechanism,
                "selection_epsilon": r.selection_epsilon,
                "selections": r.selections,
                "T": r.T,
                "seed": r.seed,
                "mu": r.mu,
                "rho": r.rho,
                "release_epsilon": r.release_epsilon,
                "identity": r.identity,
                "charged_before": r.identity in recorded_before,
            }
            for generator, records in self.records.items()
            for r in records
        ]
        return pl.DataFrame(
            rows,
            schema_overrides={"T": pl.Int64, "sigma": pl.Float64, "histograms": pl.Int64, "mu": pl.Float64,
                              "selection_epsilon": pl.Float64, "selections": pl.Int64},
        )


def _check_epsilon(epsilon: float) -> float:
    value = float(epsilon)
    if not (math.isfinite(value) and value > 0):
        raise UnsafePrivacySetting(
            f"epsilon must be a finite number > 0, got {epsilon!r}: choose the epsilon of the release"
        )
    return value


def check_settings(
    dataset: Dataset,
    generators: Sequence[Generator],
    *,
    epsilon: float,
    delta: float | None = None,
    allow_negligible_noise: bool = False,
) -> dict[str, GeneratorPlan]:
    """The generators' plans at (epsilon, delta), after refusing what is unsafe without looking at the
    data: a non-finite or non-positive epsilon, and noise so small that counts come out nearly exact."""
    epsilon = _check_epsilon(epsilon)
    delta = resolve_delta(dataset, delta)
    names = [g.name for g in generators]
    if len(set(names)) != len(names):
        raise ValueError(f"a partition runs each generator once, got {names}")
    plans = {g.name: g.plan(dataset, epsilon, delta) for g in generators}
    if not allow_negligible_noise:
        for plan in plans.values():
            for release in plan.releases:
                if release.is_gaussian and not release.sigma >= SMALLEST_SIGMA:
                    raise UnsafePrivacySetting(
                        f"epsilon {epsilon:g} leaves {plan.generator}'s {release.kind} release almost no "
                        f"noise (sigma {release.sigma:.3g} per count, below {SMALLEST_SIGMA}): its counts "
                        f"would come out nearly exact. Choose a smaller epsilon, or allow it explicitly "
                        f"(allow_negligible_noise, --allow-negligible-noise) if that is what you mean"
                    )
    return plans


def plan_partition(
    dataset: Dataset,
    generators: Sequence[Generator],
    private: pl.DataFrame,
    *,
    epsilon: float,
    delta: float | None = None,
    run_id: str | None = None,
    partition_key: str | None = None,
    allow_negligible_noise: bool = False,
) -> PartitionPlan:
    """Plan every release of a partition; raise :class:`UnsafePrivacySetting` before anything runs
    if the settings would void the guarantee (:func:`check_settings`, then what needs the data: an
    empty population, delta >= 1/n)."""
    plans = check_settings(
        dataset, generators, epsilon=epsilon, delta=delta, allow_negligible_noise=allow_negligible_noise
    )
    epsilon, delta = float(epsilon), resolve_delta(dataset, delta)
    population = dataset.spec.entity.population
    if private.height == 0:
        raise UnsafePrivacySetting(
            f"the population of dataset {dataset.name!r} is empty: reporting table {population!r} "
            f"({dataset.spec.reporting_tables[population].sql}) has no rows, so there is nothing to "
            f"synthesize and nothing was released; check the source files and that SQL"
        )
    check_delta(delta, max(private.height, 2))
    digest = data_fingerprint(private)
    records = _records(dataset, plans, epsilon, delta, digest, run_id, partition_key)
    return PartitionPlan(dataset, epsilon, delta, private.height, digest, plans, records)


def _records(dataset: Dataset, plans: dict[str, GeneratorPlan], epsilon: float, delta: float,
             digest: str | None, run_id: str | None, partition_key: str | None) -> dict[str, tuple[LedgerRelease, ...]]:
    return {
        name: tuple(
            LedgerRelease(
                dataset=dataset.name,
                fingerprint=dataset.fingerprint,
                kind=release.kind,
                epsilon=epsilon,
                delta=delta,
                sigma=release.sigma,
                histograms=release.histograms,
                mechanism=release.mechanism,
                selection_epsilon=release.selection_epsilon,
                selections=release.selections,
                T=release.T,
                seed=plan.seed,
                run_id=run_id,
                partition_key=partition_key,
                parameters={"generator": name, **plan.parameters},
                data_digest=digest,
            )
            for release in plan.releases
        )
        for name, plan in plans.items()
    }


def precheck_budget(
    dataset: Dataset,
    partitions: Sequence[tuple[float, str, dict[str, GeneratorPlan]]],
    *,
    delta: float | None,
    ledger: PrivacyLedger,
) -> BudgetCheck | None:
    """Before the private data is read: raise ``BudgetExceeded`` when the releases of ``partitions``
    ((epsilon, partition key, plans) each), all together and all new, would not fit the dataset's budget.
    A partition with releases in the ledger already is left out: a re-run may be free, which only the
    data can tell, and its release plan checks it then. None when there is no budget or nothing to check."""
    privacy = dataset.spec.privacy
    if privacy.budget_epsilon is None:
        return None
    recorded = ledger.releases(dataset.name)
    seen = set(recorded.filter(recorded["fingerprint"] == dataset.fingerprint)["partition_key"].to_list()) \
        if recorded.height else set()
    delta = resolve_delta(dataset, delta)
    planned = [release for epsilon, key, plans in partitions if key not in seen
               for records in _records(dataset, plans, float(epsilon), delta, None, None, key).values()
               for release in records]
    if not planned:
        return None
    return ledger.check(dataset.name, planned, delta=delta, budget_epsilon=privacy.budget_epsilon)


def charge_partition(plan: PartitionPlan, ledger: PrivacyLedger) -> BudgetCheck:
    """Check the partition against the dataset's budget and record all its releases, in one
    transaction. Raises ``BudgetExceeded`` (nothing recorded) when the new ones do not fit."""
    privacy = plan.dataset.spec.privacy
    return ledger.charge(
        plan.releases, delta=resolve_delta(plan.dataset), budget_epsilon=privacy.budget_epsilon
    )


class ReleaseNotCharged(RuntimeError):
    """A mechanism was about to run without its release in the ledger."""


def require_charged(ledger: PrivacyLedger, plan: PartitionPlan, generator: str) -> None:
    """Refuse to run a generator's mechanisms unless all its releases are recorded."""
    missing = [r.kind for r in plan.records[generator] if not ledger.is_recorded(r)]
    if missing:
        raise ReleaseNotCharged(
            f"{generator}'s releases {missing} for epsilon {plan.epsilon:g} are not in the ledger "
            f"({ledger.path}): the settings changed since this partition's release plan was charged, "
            f"or it never was. Materialize synthetic/release_plan for this partition together with "
            f"this asset"
        )


@dataclass
class Synthesis:
    """One generator's run in a partition: its plan, its fitted model and the synthetic wide table."""

    generator: str
    plan: PartitionPlan
    model: Any
    population: pl.DataFrame
    budget: BudgetCheck | None = None
    recorded: bool = False

    @property
    def epsilon(self) -> float:
        """The (epsilon, delta) guarantee of this generator's releases together (GDP, or zCDP when the
        generator selects with the exponential mechanism)."""
        return compose_releases(self.releases).epsilon(self.plan.delta)

    @property
    def releases(self) -> tuple[LedgerRelease, ...]:
        return self.plan.records[self.generator]


def run_partition(
    dataset: Dataset,
    generators: Sequence[Generator],
    private: pl.DataFrame,
    *,
    epsilon: float,
    delta: float | None = None,
    ledger: PrivacyLedger | None,
    checkpoints: Path | None = None,
    rows: int | None = None,
    run_id: str | None = None,
    partition_key: str | None = None,
    allow_negligible_noise: bool = False,
    log: Log = no_log,
) -> dict[str, Synthesis]:
    """Plan, check, charge (all or none), then fit and sample every generator of a partition."""
    plan = plan_partition(
        dataset, generators, private, epsilon=epsilon, delta=delta, run_id=run_id,
        partition_key=partition_key, allow_negligible_noise=allow_negligible_noise,
    )
    for generator in generators:
        generator.check_ready(dataset)
    check = charge_partition(plan, ledger) if ledger is not None else None
    if check is not None:
        log(check.explain())
    results = {}
    for generator in generators:
        model = generator.fit(
            dataset, private, plan.generators[generator.name],
            checkpoints=plan.checkpoints(checkpoints, generator.name), log=log,
        )
        population = generator.sample(dataset, model, rows=rows)
        results[generator.name] = Synthesis(
            generator.name, plan, model, population, check, recorded=ledger is not None
        )
    return results


LedgerChoice = PrivacyLedger | str | Path | Literal["dataset"] | None


def open_ledger(dataset: Dataset, ledger: LedgerChoice) -> PrivacyLedger | None:
    if ledger is None or isinstance(ledger, PrivacyLedger):
        return ledger
    if ledger == "dataset":
        return PrivacyLedger.for_dataset(dataset.name)
    return PrivacyLedger(ledger)


def synthesize(
    dataset: Dataset,
    generator: Generator,
    epsilon: float,
    private: pl.DataFrame | None = None,
    *,
    delta: float | None = None,
    ledger: LedgerChoice = "dataset",
    checkpoints: Path | None = None,
    rows: int | None = None,
    allow_negligible_noise: bool = False,
    log: Log = no_log,
) -> Synthesis:
    """Synthesize a DP twin of ``dataset``'s wide table with ``generator`` at (epsilon, delta).

    ``private`` is the private wide table (built from the dataset's sources when not given).
    Releases are charged to the dataset's ledger in its warehouse, as the asset graph's are (same
    identities: a partition run both ways is charged once); ``ledger=None`` records nothing, for
    experiments on data that is not private.
    """
    if private is None:
        from synth_assets.tables.build import build_real_tables

        private = build_real_tables(dataset).wide
    results = run_partition(
        dataset, [generator], private, epsilon=epsilon, delta=delta,
        ledger=open_ledger(dataset, ledger), checkpoints=checkpoints, rows=rows,
        allow_negligible_noise=allow_negligible_noise, log=log,
    )
    return results[generator.name]


__all__ = [
    "PartitionPlan",
    "ReleaseNotCharged",
    "Synthesis",
    "charge_partition",
    "check_settings",
    "data_fingerprint",
    "plan_partition",
    "require_charged",
    "resolve_delta",
    "run_partition",
    "synthesize",
]

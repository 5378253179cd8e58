"""What the recorded releases spend together, whether a planned materialization fits the budget, and
how the ledger is shown.

Totals
------
``spent`` composes the recorded releases with GDP, ``mu = sqrt(sum mu_i^2)``, and converts mu to epsilon
at the dataset's delta (:func:`synth_assets.privacy.accounting.epsilon_for_mu`). It also shows the simple sum of
each release's own epsilon (basic composition, valid at the sum of the deltas): always at least the GDP
figure, and much larger when there are many releases. Totals are per dataset NAME (see
:mod:`synth_assets.privacy.ledger.store`).

Budget figures
--------------
A :class:`BudgetCheck` composes the planned releases that are not recorded yet with what is spent. A
release already recorded is never refused for budget: a check whose planned releases are all recorded
charges nothing and is never exceeded, even when what is spent is above the budget (the budget was
lowered after the releases were made), so re-runs and resumes of a paid partition always work. A check
with at least one new release is exceeded when the total with the new ones exceeds the budget.

The totals are computed from the rows the store reads; the store builds the checks, so this module
reaches the store (for :func:`ledger_view` and :func:`format_ledger`) only when they are called.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import polars as pl

from synth_assets.privacy.accounting import compose_mu, epsilon_for_mu, mu_for_epsilon
from synth_assets.privacy.ledger.records import LedgerRelease

if TYPE_CHECKING:
    from synth_assets.privacy.ledger.store import PrivacyLedger

# Relative slack when comparing a composed epsilon with the budget: a release calibrated exactly to the
# remaining budget must pass despite root-finding round-off.
_BUDGET_TOLERANCE = 1e-9

_VIEW_SCHEMA: dict[str, pl.DataType] = {
    "dataset": pl.Utf8(),
    "releases": pl.Int64(),
    "repeats": pl.Int64(),
    "fingerprints": pl.Int64(),
    "mu": pl.Float64(),
    "delta": pl.Float64(),
    "epsilon_gdp": pl.Float64(),
    "epsilon_sum": pl.Float64(),
    "budget": pl.Float64(),
    "remaining": pl.Float64(),
}


# ---------------------------------------------------------------------------------------------- totals


@dataclass(frozen=True)
class Spent:
    """What a dataset's recorded releases spend together, computed from the rows."""

    dataset: str
    delta: float  # delta at which epsilon_gdp is given
    mu: float  # sqrt(sum mu_i^2)
    epsilon_gdp: float  # epsilon_for_mu(mu, delta)
    epsilon_sum: float  # sum of each release's own epsilon at its own delta (basic composition)
    delta_sum: float  # delta of the basic-composition figure
    releases: int
    repeats: int  # materializations that reproduced a recorded release (not charged)
    fingerprints: int


def _spent_from(dataset: str, frame: pl.DataFrame, delta: float) -> Spent:
    mus = frame["mu"].to_list() if frame.height else []
    mu = compose_mu(mus)
    return Spent(
        dataset=dataset,
        delta=delta,
        mu=mu,
        epsilon_gdp=epsilon_for_mu(mu, delta),
        epsilon_sum=float(sum(frame["release_epsilon"].to_list())) if frame.height else 0.0,
        delta_sum=float(sum(frame["delta"].to_list())) if frame.height else 0.0,
        releases=frame.height,
        repeats=int(frame["repeats"].sum()) if frame.height else 0,
        fingerprints=frame["fingerprint"].n_unique() if frame.height else 0,
    )


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' if count != 1 else ''}"


# ---------------------------------------------------------------------------------------------- budget


@dataclass(frozen=True)
class BudgetCheck:
    """The outcome of composing planned releases with what a dataset has spent."""

    dataset: str
    delta: float
    budget_epsilon: float | None
    spent: Spent
    planned: tuple[LedgerRelease, ...]  # every planned release (deduplicated)
    new: tuple[LedgerRelease, ...]  # those not recorded yet: the ones that cost budget
    planned_mu: float  # GDP composition of the new releases alone
    planned_epsilon: float  # their epsilon at delta, alone
    planned_epsilon_sum: float  # sum of their own epsilons
    total_mu: float  # spent and new, composed
    total_epsilon: float
    total_epsilon_sum: float

    @property
    def already_recorded(self) -> tuple[LedgerRelease, ...]:
        new = {r.identity for r in self.new}
        return tuple(r for r in self.planned if r.identity not in new)

    @property
    def exceeded(self) -> bool:
        """True when new releases would take the total over the budget.

        A check with nothing new charges nothing, so it is never exceeded: re-running a paid partition
        must work even after the budget was lowered below what is spent.
        """
        if self.budget_epsilon is None or not self.new:
            return False
        return self.total_epsilon > self.budget_epsilon * (1.0 + _BUDGET_TOLERANCE)

    @property
    def overspent(self) -> bool:
        """What is recorded already spends more than the budget (which was lowered after it was spent)."""
        if self.budget_epsilon is None:
            return False
        return self.spent.epsilon_gdp > self.budget_epsilon * (1.0 + _BUDGET_TOLERANCE)

    @property
    def remaining(self) -> float | None:
        """Budget minus what is spent (before this materialization), in epsilon at delta."""
        return None if self.budget_epsilon is None else self.budget_epsilon - self.spent.epsilon_gdp

    @property
    def remaining_after(self) -> float | None:
        return None if self.budget_epsilon is None else self.budget_epsilon - self.total_epsilon

    @property
    def largest_next_epsilon(self) -> float | None:
        """The largest epsilon (at delta) one more release could have on top of what is spent.

        GDP composition is not additive in epsilon: this is usually more than ``remaining``.
        """
        if self.budget_epsilon is None:
            return None
        spare = mu_for_epsilon(self.budget_epsilon, self.delta) ** 2 - self.spent.mu**2
        return epsilon_for_mu(math.sqrt(spare), self.delta) if spare > 0 else 0.0

    def explain(self) -> str:
        spent = self.spent
        free = len(self.planned) - len(self.new)
        already = f"{_plural(free, 'planned release')} already recorded, not charged again"
        budget = "none" if self.budget_epsilon is None else _f(self.budget_epsilon)
        verdict = "would be exceeded" if self.exceeded else "check"
        if self.new:
            kinds = ", ".join(
                f"{r.kind} (epsilon target {r.epsilon:g}, sigma {r.sigma:.4g}, "
                f"{_plural(r.histograms, 'histogram')}, mu {r.mu:.4f})"
                for r in self.new
            )
            planned = (
                f"  planned: this materialization would spend epsilon {_f(self.planned_epsilon)} on its own "
                f"(mu {self.planned_mu:.4f}; simple sum {_f(self.planned_epsilon_sum)}) in "
                f"{_plural(len(self.new), 'new release')}: {kinds}" + (f"; {already}" if free else "")
            )
        else:
            planned = f"  planned: nothing new; {already}" if free else "  planned: nothing"
        lines = [
            (
                f"privacy budget of dataset {self.dataset!r} {verdict} (epsilon at delta {self.delta:g}, "
                f"GDP composition; budget {budget}):"
            ),
            (
                f"  spent:   epsilon {_f(spent.epsilon_gdp)} (mu {spent.mu:.4f}) over "
                f"{_plural(spent.releases, 'recorded release')}; "
                f"simple sum of epsilons {_f(spent.epsilon_sum)}"
            ),
            planned,
            (
                f"  total:   epsilon {_f(self.total_epsilon)} (mu {self.total_mu:.4f}); simple sum "
                f"{_f(self.total_epsilon_sum)}"
            ),
        ]
        if self.budget_epsilon is not None:
            lines.append(
                f"  remaining: epsilon {_f(self.remaining)} of {_f(self.budget_epsilon)} (budget minus spent); "
                f"one more release of at most epsilon {_f(self.largest_next_epsilon)} would fit"
            )
        if self.overspent and not self.exceeded:
            lines.append(
                "  what is recorded already spends more than the budget (was it lowered?): only re-runs of "
                "recorded releases pass"
            )
        if self.exceeded:
            lines += [
                (
                    "  Nothing was recorded or released by this materialization. Releases already recorded "
                    "(same seed, data and settings) cost nothing again; a higher budget needs the data "
                    "owner's agreement."
                ),
                (
                    "  To go on: raise privacy.budget_epsilon in dataset.yaml, choose a smaller epsilon, or "
                    "re-run a partition that is already paid for."
                ),
            ]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- views


def _ledger(ledger: PrivacyLedger | str | Path | duckdb.DuckDBPyConnection) -> PrivacyLedger:
    from synth_assets.privacy.ledger.store import PrivacyLedger  # the store imports this module

    return ledger if isinstance(ledger, PrivacyLedger) else PrivacyLedger(ledger)


def _per_dataset(value: Mapping[str, float | None] | float | None, dataset: str) -> float | None:
    if isinstance(value, Mapping):
        return value.get(dataset)
    return value


def ledger_view(
    ledger: PrivacyLedger | str | Path | duckdb.DuckDBPyConnection,
    *,
    budgets: Mapping[str, float | None] | float | None = None,
    delta: Mapping[str, float] | float | None = None,
    dataset: str | None = None,
) -> pl.DataFrame:
    """One row per dataset name: releases, repeats, fingerprints, mu, the GDP epsilon at delta, the
    simple sum of the releases' epsilons, the budget and what remains (budget - GDP epsilon).

    ``delta`` (one value or per dataset) is the delta epsilon is given at; unset, the smallest delta
    recorded for the dataset (the most demanding). ``budgets`` likewise (unset: no budget).
    """
    frame = _ledger(ledger).releases(dataset)
    rows = []
    for name in sorted(frame["dataset"].unique().to_list()):
        own = frame.filter(pl.col("dataset") == name)
        at = _per_dataset(delta, name)
        at = float(own["delta"].min()) if at is None else float(at)
        spent = _spent_from(name, own, at)
        budget = _per_dataset(budgets, name)
        rows.append(
            {
                "dataset": name,
                "releases": spent.releases,
                "repeats": spent.repeats,
                "fingerprints": spent.fingerprints,
                "mu": spent.mu,
                "delta": at,
                "epsilon_gdp": spent.epsilon_gdp,
                "epsilon_sum": spent.epsilon_sum,
                "budget": None if budget is None else float(budget),
                "remaining": None if budget is None else float(budget) - spent.epsilon_gdp,
            }
        )
    return pl.DataFrame(rows, schema=_VIEW_SCHEMA)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = "  ".join(h.rjust(w) for h, w in zip(header, widths))
    out = [line, "-" * len(line)]
    out += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return out


def format_ledger(
    ledger: PrivacyLedger | str | Path | duckdb.DuckDBPyConnection,
    *,
    budgets: Mapping[str, float | None] | float | None = None,
    delta: Mapping[str, float] | float | None = None,
    dataset: str | None = None,
    details: bool = True,
) -> str:
    """A readable ledger (for ``synth-assets ledger``): each release, then the totals per dataset."""
    ledger = _ledger(ledger)
    frame = ledger.releases(dataset)
    if frame.height == 0:
        where = f" for dataset {dataset!r}" if dataset else ""
        location = f" {ledger.path}" if ledger.path else ""
        return f"privacy ledger{location}: no DP release recorded{where}"
    view = ledger_view(ledger, budgets=budgets, delta=delta, dataset=dataset)
    out = [f"privacy ledger {ledger.path}" if ledger.path else "privacy ledger"]
    for total in view.iter_rows(named=True):
        name = total["dataset"]
        out.append("")
        out.append(f"dataset {name}")
        if details:
            own = frame.filter(pl.col("dataset") == name)
            header = ["recorded (UTC)", "kind", "partition", "target eps", "delta", "sigma", "hist", "T",
                      "seed", "mu", "eps", "repeats", "run", "identity"]
            rows = [
                [
                    r["recorded_at"].strftime("%Y-%m-%d %H:%M:%S"),
                    r["kind"],
                    r["partition_key"] or "-",
                    f"{r['epsilon']:g}",
                    f"{r['delta']:.0e}",
                    f"{r['sigma']:.4g}",
                    str(r["histograms"]),
                    "-" if r["T"] is None else str(r["T"]),
                    str(r["seed"]),
                    f"{r['mu']:.4f}",
                    f"{r['release_epsilon']:.4f}",
                    str(r["repeats"]),
                    (r["run_id"] or "-")[:8],
                    r["identity"][:12],
                ]
                for r in own.iter_rows(named=True)
            ]
            out += ["  " + line for line in _table(header, rows)]
        fingerprints = total["fingerprints"]
        out.append(
            f"  total: {total['releases']} release{'s' if total['releases'] != 1 else ''} "
            f"(re-runs of a recorded release, not charged: {total['repeats']}"
            + (f"; {fingerprints} dataset fingerprints" if fingerprints > 1 else "")
            + f"), mu {total['mu']:.4f}"
        )
        out.append(
            f"  spent: epsilon {total['epsilon_gdp']:.4f} at delta {total['delta']:g} (GDP composition); "
            f"simple sum {total['epsilon_sum']:.4f}"
        )
        if total["budget"] is None:
            out.append("  budget: none set (privacy.budget_epsilon)")
        else:
            out.append(f"  budget: epsilon {total['budget']:.4f}; remaining {total['remaining']:.4f}")
    return "\n".join(out)

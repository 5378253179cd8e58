"""What the recorded releases spend together, whether a planned materialization fits the budget, and
how the ledger is shown.

Totals
------
``spent`` composes the recorded releases by the project's rule
(:func:`synth_assets.privacy.accounting.compose`) and gives epsilon at the dataset's delta:

* every release Gaussian: GDP, ``mu = sqrt(sum mu_i^2)``, converted exactly by the analytic-Gaussian
  curve (:func:`~synth_assets.privacy.accounting.epsilon_for_mu`), as before selections existed;
* at least one exponential-mechanism selection (MST, AIM): zCDP, ``rho = sum mu_i^2 / 2 +
  sum k_j epsilon_j^2 / 8``, converted by Canonne, Kamath & Steinke 2020
  (:func:`~synth_assets.privacy.accounting.epsilon_for_rho`). The Gaussian releases then count by their
  rho too: the zCDP conversion is looser than the exact GDP curve, so the first recorded selection can
  raise the figure of what was spent before it (the safe direction: the rule is sound either way).

It also shows the simple sum of each release's own epsilon (basic composition, valid at the sum of the
deltas): always at least the composed figure, and much larger when there are many releases. Totals are
per dataset NAME (see :mod:`synth_assets.privacy.ledger.store`).

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

from synth_assets.privacy.accounting import (
    Composition,
    compose,
    epsilon_for_mu,
    epsilon_for_rho,
    mu_for_epsilon,
    rho_for_epsilon,
)
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
    "composition": pl.Utf8(),
    "mu": pl.Float64(),
    "rho": pl.Float64(),
    "delta": pl.Float64(),
    "epsilon": pl.Float64(),
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
    delta: float  # delta at which epsilon is given
    mu: float  # sqrt(sum mu_i^2) over the Gaussian releases
    epsilon: float  # the composed epsilon at delta (GDP if all releases are Gaussian, else zCDP)
    epsilon_sum: float  # sum of each release's own epsilon at its own delta (basic composition)
    delta_sum: float  # delta of the basic-composition figure
    releases: int
    repeats: int  # materializations that reproduced a recorded release (not charged)
    fingerprints: int
    rho: float = 0.0  # zCDP rho of all releases
    composition: str = "gdp"  # "gdp" (all Gaussian) or "zcdp" (selections recorded)

    @property
    def epsilon_gdp(self) -> float:
        """The composed epsilon (the name from when every release was Gaussian; equals :attr:`epsilon`,
        which is the GDP figure unless selections are recorded, then the zCDP one)."""
        return self.epsilon


def mechanism_parts(frame: pl.DataFrame) -> tuple[list[float], list[float]]:
    """The GDP mu of each Gaussian release and the zCDP rho of each selection in a ledger frame (rows
    of ``PrivacyLedger.releases``)."""
    if not frame.height:
        return [], []
    gaussian = pl.col("mechanism").fill_null("gaussian") == "gaussian"
    return frame.filter(gaussian)["mu"].to_list(), frame.filter(~gaussian)["rho"].to_list()


def composition_of(frame: pl.DataFrame) -> Composition:
    """The composition of the releases in a ledger frame, by the project's rule."""
    return compose(*mechanism_parts(frame))


def _spent_from(dataset: str, frame: pl.DataFrame, delta: float) -> Spent:
    composition = composition_of(frame)
    return Spent(
        dataset=dataset,
        delta=delta,
        mu=composition.mu,
        epsilon=composition.epsilon(delta),
        epsilon_sum=float(sum(frame["release_epsilon"].to_list())) if frame.height else 0.0,
        delta_sum=float(sum(frame["delta"].to_list())) if frame.height else 0.0,
        releases=frame.height,
        repeats=int(frame["repeats"].sum()) if frame.height else 0,
        fingerprints=frame["fingerprint"].n_unique() if frame.height else 0,
        rho=composition.rho,
        composition=composition.rule,
    )


def _describe(release: LedgerRelease) -> str:
    if release.is_gaussian:
        return (f"{release.kind} (epsilon target {release.epsilon:g}, sigma {release.sigma:.4g}, "
                f"{_plural(release.histograms, 'histogram')}, mu {release.mu:.4f})")
    return (f"{release.kind} (epsilon target {release.epsilon:g}, exponential mechanism: "
            f"{_plural(release.selections, 'selection')} of epsilon {release.selection_epsilon:.4g}, "
            f"rho {release.rho:.4g})")


_RULES = {"gdp": "GDP composition", "zcdp": "zCDP composition, CKS conversion"}


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
    planned_mu: float  # GDP composition of the new Gaussian releases alone
    planned_epsilon: float  # the new releases' epsilon at delta, alone (composed by their own rule)
    planned_epsilon_sum: float  # sum of their own epsilons
    total_mu: float  # spent and new Gaussian releases, composed
    total_epsilon: float  # spent and new, composed (GDP if all are Gaussian, else zCDP)
    total_epsilon_sum: float
    planned_rho: float = 0.0  # zCDP rho of the new releases
    total_rho: float = 0.0  # zCDP rho of spent and new
    composition: str = "gdp"  # the rule of the total: "gdp" or "zcdp"

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
        return self.spent.epsilon > self.budget_epsilon * (1.0 + _BUDGET_TOLERANCE)

    @property
    def remaining(self) -> float | None:
        """Budget minus what is spent (before this materialization), in epsilon at delta."""
        return None if self.budget_epsilon is None else self.budget_epsilon - self.spent.epsilon

    @property
    def remaining_after(self) -> float | None:
        return None if self.budget_epsilon is None else self.budget_epsilon - self.total_epsilon

    @property
    def largest_next_epsilon(self) -> float | None:
        """The largest epsilon (at delta) one more release could have on top of what is spent.

        Neither composition is additive in epsilon: this is usually more than ``remaining``. It is given
        by the rule of this check's total: GDP (one more Gaussian release on Gaussian ones) or zCDP.
        """
        if self.budget_epsilon is None:
            return None
        if self.composition == "gdp":
            spare = mu_for_epsilon(self.budget_epsilon, self.delta) ** 2 - self.spent.mu**2
            return epsilon_for_mu(math.sqrt(spare), self.delta) if spare > 0 else 0.0
        spare = rho_for_epsilon(self.budget_epsilon, self.delta) - self.spent.rho
        return epsilon_for_rho(spare, self.delta) if spare > 0 else 0.0

    def _figure(self, mu: float, rho: float) -> str:
        return f"mu {mu:.4f}" if self.composition == "gdp" else f"rho {rho:.6g}"

    def explain(self) -> str:
        spent = self.spent
        free = len(self.planned) - len(self.new)
        already = f"{_plural(free, 'planned release')} already recorded, not charged again"
        budget = "none" if self.budget_epsilon is None else _f(self.budget_epsilon)
        verdict = "would be exceeded" if self.exceeded else "check"
        if self.new:
            kinds = ", ".join(_describe(r) for r in self.new)
            planned = (
                f"  planned: this materialization would spend epsilon {_f(self.planned_epsilon)} on its own "
                f"({self._figure(self.planned_mu, self.planned_rho)}; simple sum "
                f"{_f(self.planned_epsilon_sum)}) in "
                f"{_plural(len(self.new), 'new release')}: {kinds}" + (f"; {already}" if free else "")
            )
        else:
            planned = f"  planned: nothing new; {already}" if free else "  planned: nothing"
        rule = _RULES[self.composition]
        if self.composition == "zcdp":
            rule += (": exponential-mechanism selections are recorded or planned, so every release counts "
                     "by its rho")
        lines = [
            (
                f"privacy budget of dataset {self.dataset!r} {verdict} (epsilon at delta {self.delta:g}, "
                f"{rule}; budget {budget}):"
            ),
            (
                f"  spent:   epsilon {_f(spent.epsilon)} ({self._figure(spent.mu, spent.rho)}) over "
                f"{_plural(spent.releases, 'recorded release')}; "
                f"simple sum of epsilons {_f(spent.epsilon_sum)}"
            ),
            planned,
            (
                f"  total:   epsilon {_f(self.total_epsilon)} ({self._figure(self.total_mu, self.total_rho)}); "
                f"simple sum {_f(self.total_epsilon_sum)}"
            ),
        ]
        if self.composition == "zcdp" and spent.composition == "gdp" and spent.releases:
            lines.append(
                f"  (what is spent reads epsilon {_f(spent.epsilon)} in GDP alone; composed with selections "
                f"it counts as {_f(epsilon_for_rho(spent.rho, self.delta))} in zCDP)"
            )
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
    """One row per dataset name: releases, repeats, fingerprints, the composition rule (``gdp`` or
    ``zcdp``), mu (of the Gaussian releases), rho (of all), the composed epsilon at delta (``epsilon``;
    also under its old name ``epsilon_gdp``), the simple sum of the releases' epsilons, the budget and
    what remains (budget - epsilon).

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
                "composition": spent.composition,
                "mu": spent.mu,
                "rho": spent.rho,
                "delta": at,
                "epsilon": spent.epsilon,
                "epsilon_gdp": spent.epsilon,  # the old name of the composed epsilon, for existing readers
                "epsilon_sum": spent.epsilon_sum,
                "budget": None if budget is None else float(budget),
                "remaining": None if budget is None else float(budget) - spent.epsilon,
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
                      "seed", "mu", "rho", "eps", "repeats", "run", "identity"]
            rows = [
                [
                    r["recorded_at"].strftime("%Y-%m-%d %H:%M:%S"),
                    r["kind"],
                    r["partition_key"] or "-",
                    f"{r['epsilon']:g}",
                    f"{r['delta']:.0e}",
                    f"{r['sigma']:.4g}" if r["sigma"] is not None
                    else f"EM eps {r['selection_epsilon']:.4g}",
                    str(r["histograms"]) if r["histograms"] is not None else f"{r['selections']} sel",
                    "-" if r["T"] is None else str(r["T"]),
                    str(r["seed"]),
                    "-" if r["mu"] is None else f"{r['mu']:.4f}",
                    f"{r['rho']:.4g}",
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
            + (f"), mu {total['mu']:.4f}" if total["composition"] == "gdp"
               else f"), rho {total['rho']:.6g} (Gaussian releases: mu {total['mu']:.4f})")
        )
        out.append(
            f"  spent: epsilon {total['epsilon']:.4f} at delta {total['delta']:g} "
            f"({_RULES[total['composition']]}); simple sum {total['epsilon_sum']:.4f}"
        )
        if total["budget"] is None:
            out.append("  budget: none set (privacy.budget_epsilon)")
        else:
            out.append(f"  budget: epsilon {total['budget']:.4f}; remaining {total['remaining']:.4f}")
    return "\n".join(out)

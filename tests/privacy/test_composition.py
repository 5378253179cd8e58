"""Exponential-mechanism selections in the accounting and the ledger: zCDP composition of mixed releases,
the CKS conversion, checked against dp_accounting, and the migration of a ledger written before them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import duckdb
import numpy as np
import pytest
from dp_accounting import dp_event
from dp_accounting.rdp import RdpAccountant

from synth_assets.generators.base import GeneratorPlan, PlannedRelease
from synth_assets.privacy.accounting import (
    calibrate_rho,
    calibrate_sigma,
    compose,
    compose_mu,
    compose_releases,
    em_epsilon_for_rho,
    em_rho,
    epsilon_for_mu,
    epsilon_for_rho,
    gaussian_rho,
    mu_for_epsilon,
    rho_for_epsilon,
    sigma_for_rho,
)
from synth_assets.privacy.ledger import (
    BudgetExceeded,
    LedgerRelease,
    PrivacyLedger,
    format_ledger,
    ledger_view,
)

DELTA = 1e-6
# Dense Renyi orders: dp_accounting minimises the CKS bound over the orders it is given; ours minimises it
# in closed form, so with a dense grid the two agree to the grid's resolution (and ours is never larger).
ORDERS = list(np.concatenate([np.linspace(1.01, 12, 4000), np.linspace(12.01, 400, 4000)]))


def rdp_epsilon(events, delta: float) -> float:
    accountant = RdpAccountant(orders=ORDERS)
    for event in events:
        accountant.compose(event)
    return accountant.get_epsilon(delta)


def gaussian_event(sigma: float, histograms: int) -> dp_event.DpEvent:
    """k histograms of sensitivity 1 at noise sigma: one Gaussian of L2 sensitivity sqrt(k), i.e. noise
    multiplier sigma / sqrt(k)."""
    return dp_event.GaussianDpEvent(sigma / math.sqrt(histograms))


def em_event(epsilon: float, selections: int) -> dp_event.DpEvent:
    """k epsilon-EM selections. dp_accounting has no exponential-mechanism event; an epsilon-EM is
    epsilon^2/8-zCDP (bounded range), i.e. RDP alpha epsilon^2 / 8 at every order: the RDP curve of a
    Gaussian of noise multiplier 2 / epsilon."""
    return dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(2.0 / epsilon), selections)


# ------------------------------------------------------------------------------------------ conversion


@pytest.mark.parametrize("rho", [1e-3, 0.0244, 0.1, 1.0, 10.0])
@pytest.mark.parametrize("delta", [1e-5, 1e-6, 1e-9])
def test_cks_conversion_agrees_with_dp_accounting(rho, delta):
    ours = epsilon_for_rho(rho, delta)
    theirs = rdp_epsilon([dp_event.ZCDpEvent(rho)], delta)
    assert ours <= theirs * (1 + 1e-12)
    assert ours == pytest.approx(theirs, rel=2e-4)


@pytest.mark.parametrize("epsilon", [0.1, 0.5, 1.0, 4.0, 20.0])
@pytest.mark.parametrize("delta", [1e-5, 1e-6])
def test_rho_for_epsilon_is_the_largest_rho_within_the_target(epsilon, delta):
    rho = rho_for_epsilon(epsilon, delta)
    assert epsilon_for_rho(rho, delta) <= epsilon
    assert epsilon_for_rho(rho, delta) == pytest.approx(epsilon, rel=1e-12)
    assert epsilon_for_rho(rho * (1 + 1e-9), delta) > epsilon
    assert calibrate_rho(epsilon, delta) == rho


def test_the_cks_conversion_sits_between_the_exact_gaussian_curve_and_the_classical_bound():
    for mu in (0.05, 0.2, 0.5, 1.0, 3.0):
        rho = mu * mu / 2
        classical = rho + 2 * math.sqrt(rho * math.log(1 / DELTA))
        assert epsilon_for_mu(mu, DELTA) < epsilon_for_rho(rho, DELTA) < classical


def test_conversion_edge_cases():
    assert epsilon_for_rho(0.0, DELTA) == 0.0
    assert epsilon_for_rho(math.inf, DELTA) == math.inf
    assert epsilon_for_rho(1e-14, 1e-6) == 0.0  # delta >= sqrt(1 - exp(-rho)): total variation below delta
    huge = epsilon_for_rho(1e6, 1e-6)  # optimal order 1.004, below dp_accounting's smallest (1.01)
    assert 1e6 < huge <= rdp_epsilon([dp_event.ZCDpEvent(1e6)], 1e-6) and math.isfinite(huge)
    with pytest.raises(ValueError):
        epsilon_for_rho(-1.0, DELTA)
    with pytest.raises(ValueError):
        rho_for_epsilon(0.0, DELTA)


def test_mechanism_rhos_and_their_inverses():
    assert gaussian_rho(2.0, 8) == pytest.approx(8 / (2 * 4.0))
    assert gaussian_rho(3.0, 5) == pytest.approx(compose_mu([math.sqrt(5) / 3.0]) ** 2 / 2)
    assert em_rho(0.4, 10) == pytest.approx(10 * 0.16 / 8)
    assert em_epsilon_for_rho(em_rho(0.4, 10), 10) == pytest.approx(0.4)
    assert gaussian_rho(sigma_for_rho(0.3, 7), 7) == pytest.approx(0.3)


# ------------------------------------------------------------------------------------------ composition


def test_gaussian_releases_alone_keep_the_exact_gdp_composition():
    sigmas = [(calibrate_sigma(1.0, DELTA, 5), 5), (calibrate_sigma(2.0, DELTA, 1), 1)]
    composition = compose([math.sqrt(k) / s for s, k in sigmas])
    assert composition.rule == "gdp"
    mu = compose_mu([math.sqrt(k) / s for s, k in sigmas])
    assert composition.mu == mu and composition.epsilon(DELTA) == epsilon_for_mu(mu, DELTA)
    assert composition.rho == pytest.approx(mu * mu / 2)


RELEASES = [("gaussian", 64.7, 68), ("exponential", 0.031, 67), ("gaussian", 64.2, 67), ("gaussian", 4.2, 1),
            ("exponential", 0.5, 3)]


def test_mixed_releases_compose_in_zcdp_and_dp_accounting_agrees():
    gaussian = [(s, k) for kind, s, k in RELEASES if kind == "gaussian"]
    selections = [(e, k) for kind, e, k in RELEASES if kind == "exponential"]
    composition = compose([math.sqrt(k) / s for s, k in gaussian], [em_rho(e, k) for e, k in selections])
    assert composition.rule == "zcdp"
    rho = sum(k / (2 * s * s) for s, k in gaussian) + sum(k * e * e / 8 for e, k in selections)
    assert composition.rho == pytest.approx(rho, rel=1e-12)
    ours = composition.epsilon(DELTA)
    assert ours == epsilon_for_rho(rho, DELTA)
    events = [gaussian_event(s, k) for s, k in gaussian] + [em_event(e, k) for e, k in selections]
    theirs = rdp_epsilon(events, DELTA)
    assert ours <= theirs * (1 + 1e-12) and ours == pytest.approx(theirs, rel=2e-4)
    # the Gaussian-equivalent curve of an EM is exactly its zCDP bound
    via_zcdp = rdp_epsilon([gaussian_event(s, k) for s, k in gaussian]
                           + [dp_event.ZCDpEvent(em_rho(e, k)) for e, k in selections], DELTA)
    assert via_zcdp == pytest.approx(theirs, rel=1e-12)


def test_planned_releases_compose_by_the_same_rule_and_stay_backwards_compatible():
    gaussian = PlannedRelease("independent_marginals", 2.0, 8)  # positional, as PE and the reference build it
    assert gaussian.mechanism == "gaussian" and gaussian.mu == pytest.approx(math.sqrt(8) / 2)
    assert gaussian.rho == pytest.approx(gaussian.mu**2 / 2)
    selection = PlannedRelease.exponential("mst_selection", 0.2, 7)
    assert (selection.sigma, selection.histograms, selection.selections) == (None, None, 7)
    assert selection.rho == pytest.approx(7 * 0.04 / 8)
    with pytest.raises(ValueError, match="has a rho, not a GDP mu"):
        selection.mu
    with pytest.raises(ValueError):
        PlannedRelease("x", None, 3)
    with pytest.raises(ValueError):
        PlannedRelease("x", 1.0, 3, mechanism="laplace")

    only_gaussian = GeneratorPlan("g", 1.0, DELTA, 0, (gaussian,))
    assert only_gaussian.composition.rule == "gdp" and only_gaussian.mu == pytest.approx(gaussian.mu)
    assert only_gaussian.spends == pytest.approx(epsilon_for_mu(gaussian.mu, DELTA))
    mixed = GeneratorPlan("g", 1.0, DELTA, 0, (gaussian, selection))
    assert mixed.composition.rule == "zcdp"
    assert mixed.spends == pytest.approx(epsilon_for_rho(gaussian.rho + selection.rho, DELTA))
    with pytest.raises(ValueError, match="compose it in zCDP"):
        mixed.mu
    assert compose_releases([gaussian, selection]).rho == pytest.approx(mixed.rho)


# ------------------------------------------------------------------------------------------ ledger


def gaussian_release(epsilon: float, seed: int = 0, **extra) -> LedgerRelease:
    return LedgerRelease(dataset="adult", fingerprint="fp-1", kind="independent_marginals", epsilon=epsilon,
                         delta=DELTA, sigma=calibrate_sigma(epsilon, DELTA, 1), histograms=1, T=None,
                         seed=seed, partition_key=f"{epsilon:g}", **extra)


def selection_release(selection_epsilon: float = 0.3, selections: int = 5, seed: int = 0) -> LedgerRelease:
    return LedgerRelease(dataset="adult", fingerprint="fp-1", kind="mst_selection", epsilon=1.0, delta=DELTA,
                         sigma=None, histograms=None, T=None, seed=seed, mechanism="exponential",
                         selection_epsilon=selection_epsilon, selections=selections)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "warehouse" / "adult.duckdb"


def test_a_selection_is_recorded_with_its_epsilon_and_count(db):
    ledger = PrivacyLedger(db)
    selection = selection_release()
    assert ledger.record(selection) is True
    row = ledger.releases("adult").row(0, named=True)
    assert (row["mechanism"], row["selection_epsilon"], row["selections"]) == ("exponential", 0.3, 5)
    assert row["sigma"] is None and row["histograms"] is None and row["mu"] is None
    assert row["rho"] == pytest.approx(5 * 0.09 / 8)
    assert row["release_epsilon"] == pytest.approx(min(1.5, epsilon_for_rho(5 * 0.09 / 8, DELTA)))
    assert ledger.record(selection) is False  # a re-run is free, as for Gaussian releases
    assert selection_release(seed=1).identity != selection.identity
    assert selection_release(selections=6).identity != selection.identity
    assert selection_release(selection_epsilon=0.31).identity != selection.identity
    with pytest.raises(ValueError):
        LedgerRelease(dataset="a", fingerprint="f", kind="k", epsilon=1.0, delta=DELTA, sigma=1.0,
                      histograms=None, T=None, seed=0, mechanism="exponential", selection_epsilon=0.1,
                      selections=1)
    with pytest.raises(ValueError):
        LedgerRelease(dataset="a", fingerprint="f", kind="k", epsilon=1.0, delta=DELTA, sigma=None,
                      histograms=None, T=None, seed=0, mechanism="exponential", selections=1)


def test_gaussian_identities_did_not_change():
    """Computed with the ledger code before selections existed: recorded releases still match re-runs."""
    release = LedgerRelease(dataset="adult", fingerprint="fp-1", kind="nn_histogram", epsilon=1.0, delta=1e-6,
                            sigma=13.36, histograms=10, T=10, seed=7, parameters={"pool_size": 100},
                            data_digest="abc")
    assert release.identity == "5fe70f9e619e3ac880360933e467b60e"


def test_a_ledger_with_selections_is_composed_in_zcdp_and_dp_accounting_agrees(db):
    ledger = PrivacyLedger(db)
    grid = [gaussian_release(e) for e in (0.5, 1.0, 2.0)]
    ledger.record_many(grid)
    gdp = ledger.spent("adult", DELTA)
    assert gdp.composition == "gdp" and gdp.epsilon == gdp.epsilon_gdp
    assert gdp.epsilon == pytest.approx(epsilon_for_mu(compose_mu(r.mu for r in grid), DELTA))

    selection = selection_release()
    ledger.record(selection)
    spent = ledger.spent("adult", DELTA)
    assert spent.composition == "zcdp" and spent.releases == 4
    rho = sum(r.mu**2 / 2 for r in grid) + 5 * 0.3**2 / 8
    assert spent.rho == pytest.approx(rho, rel=1e-12)
    assert spent.epsilon == pytest.approx(epsilon_for_rho(rho, DELTA), rel=1e-12)
    assert spent.mu == pytest.approx(gdp.mu)  # the Gaussian releases' own GDP composition, shown beside
    events = [gaussian_event(r.sigma, r.histograms) for r in grid] + [em_event(0.3, 5)]
    assert spent.epsilon == pytest.approx(rdp_epsilon(events, DELTA), rel=2e-4)
    # zCDP is looser than GDP for the Gaussian part: the first selection costs more than its own epsilon
    assert spent.epsilon > gdp.epsilon
    view = ledger_view(ledger, delta=DELTA).row(0, named=True)
    assert view["composition"] == "zcdp" and view["epsilon"] == pytest.approx(spent.epsilon)
    assert view["epsilon_gdp"] == view["epsilon"] and view["rho"] == pytest.approx(rho)
    text = format_ledger(ledger, delta=DELTA)
    assert "zCDP composition, CKS conversion" in text and f"{spent.epsilon:.4f}" in text
    assert "EM eps 0.3" in text and "5 sel" in text


def test_a_budget_check_with_a_planned_selection_switches_to_zcdp(db):
    ledger = PrivacyLedger(db)
    ledger.record(gaussian_release(1.0))
    spent = ledger.spent("adult", DELTA)
    selection = selection_release(0.2, 10)
    check = ledger.check("adult", [selection], DELTA, 10.0)
    assert check.composition == "zcdp" and check.new == (selection,)
    assert check.planned_rho == pytest.approx(selection.rho)
    assert check.planned_epsilon == pytest.approx(epsilon_for_rho(selection.rho, DELTA))
    assert check.total_rho == pytest.approx(spent.mu**2 / 2 + selection.rho)
    assert check.total_epsilon == pytest.approx(epsilon_for_rho(check.total_rho, DELTA))
    text = check.explain()
    assert "zCDP composition, CKS conversion" in text and "exponential mechanism: 10 selections" in text
    assert f"rho {check.total_rho:.6g}" in text
    spare = rho_for_epsilon(10.0, DELTA) - spent.mu**2 / 2
    assert check.largest_next_epsilon == pytest.approx(epsilon_for_rho(spare, DELTA))
    # a Gaussian-only check on the same ledger stays in GDP, with the numbers it always had
    gaussian = ledger.check("adult", [gaussian_release(2.0)], DELTA, 10.0)
    assert gaussian.composition == "gdp"
    assert gaussian.total_epsilon == pytest.approx(
        epsilon_for_mu(compose_mu([spent.mu, mu_for_epsilon(2.0, DELTA)]), DELTA))
    # over the budget in zCDP: refused, nothing recorded
    tight = check.total_epsilon * 0.99
    with pytest.raises(BudgetExceeded, match="zCDP composition"):
        ledger.charge([selection], delta=DELTA, budget_epsilon=tight)
    assert ledger.releases("adult").height == 1
    ledger.charge([selection], delta=DELTA, budget_epsilon=check.total_epsilon)  # exactly at the budget
    assert ledger.spent("adult", DELTA).epsilon == pytest.approx(check.total_epsilon)


_OLD_DDL = """
create schema if not exists ledger;
create table if not exists ledger.releases (
    identity varchar primary key, dataset varchar not null, fingerprint varchar not null,
    kind varchar not null, epsilon double not null, delta double not null, sigma double not null,
    histograms integer not null, T integer, seed bigint not null, data_digest varchar,
    parameters varchar not null, run_id varchar, partition_key varchar, recorded_at timestamp not null
);
create table if not exists ledger.materializations (
    identity varchar not null, dataset varchar not null, run_id varchar, partition_key varchar,
    recorded_at timestamp not null, new boolean not null
);
"""


def test_a_ledger_written_before_selections_is_migrated_in_place(db):
    """The ledger schema before this change (copied from it), holding one release as it was recorded."""
    db.parent.mkdir(parents=True)
    old = gaussian_release(1.0, run_id="run-old")
    with duckdb.connect(str(db)) as connection:
        connection.execute(_OLD_DDL)
        connection.execute(
            "insert into ledger.releases values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
            [old.identity, old.dataset, old.fingerprint, old.kind, old.epsilon, old.delta, old.sigma,
             old.histograms, old.T, old.seed, old.data_digest, json.dumps(old.parameters), old.run_id,
             old.partition_key],
        )
        connection.execute("insert into ledger.materializations values (?, 'adult', 'run-old', '1', now(), true)",
                            [old.identity])
    ledger = PrivacyLedger(db)
    rows = ledger.releases("adult")  # reading migrates
    assert rows.height == 1 and rows["mechanism"].to_list() == ["gaussian"]
    assert ledger.spent("adult", DELTA).epsilon == pytest.approx(1.0, abs=1e-9)
    assert ledger.record(gaussian_release(1.0, run_id="run-new")) is False  # the old release still matches
    assert ledger.record(selection_release()) is True
    assert ledger.spent("adult", DELTA).composition == "zcdp"
    with duckdb.connect(str(db)) as connection:
        columns = dict(connection.execute(
            "select column_name, is_nullable from information_schema.columns "
            "where table_schema = 'ledger' and table_name = 'releases'").fetchall())
    assert {"mechanism", "selection_epsilon", "selections"} <= set(columns)
    assert columns["sigma"] == "YES" and columns["histograms"] == "YES"
    assert PrivacyLedger(db).releases("adult").height == 2  # a second open finds nothing to migrate

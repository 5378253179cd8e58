"""The privacy budget ledger, on real DuckDB files."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pytest
from dagster_duckdb import DuckDBResource
from scipy.optimize import brentq
from scipy.stats import norm

from synth_assets.privacy.accounting import calibrate_sigma, compose_mu, epsilon_for_mu, mu_for_epsilon
from synth_assets.privacy.ledger import (
    BudgetExceeded,
    LedgerBusy,
    LedgerRelease,
    PrivacyLedger,
    check_budget,
    format_ledger,
    ledger_view,
)

DELTA = 1e-6
GRID = [0.5, 1.0, 2.0, 4.0]


def release(epsilon: float = 1.0, *, dataset: str = "adult", seed: int = 0, histograms: int = 1,
            fingerprint: str = "fp-1", kind: str = "independent_marginals", run_id: str = "run-1",
            **extra) -> LedgerRelease:
    return LedgerRelease(
        dataset=dataset,
        fingerprint=fingerprint,
        kind=kind,
        epsilon=epsilon,
        delta=DELTA,
        sigma=calibrate_sigma(epsilon, DELTA, histograms),
        histograms=histograms,
        T=None,
        seed=seed,
        run_id=run_id,
        partition_key=f"{epsilon:g}",
        **extra,
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "warehouse" / "adult.duckdb"


def test_record_and_read_back(db: Path) -> None:
    ledger = PrivacyLedger(db)
    assert ledger.releases().height == 0 and not db.exists()  # reading creates nothing
    r = release(2.0, histograms=14, parameters={"entity_fraction": 1.0}, data_digest="abc")
    assert ledger.record(r) is True
    rows = ledger.releases("adult")
    assert rows.height == 1
    row = rows.row(0, named=True)
    assert row["identity"] == r.identity
    assert (row["dataset"], row["fingerprint"], row["kind"]) == ("adult", "fp-1", "independent_marginals")
    assert row["epsilon"] == 2.0 and row["delta"] == DELTA and row["sigma"] == pytest.approx(r.sigma)
    assert row["histograms"] == 14 and row["T"] is None and row["seed"] == 0
    assert (row["run_id"], row["partition_key"], row["data_digest"]) == ("run-1", "2", "abc")
    assert row["mu"] == pytest.approx(math.sqrt(14) / r.sigma)
    assert row["release_epsilon"] == pytest.approx(2.0, abs=1e-9)
    assert row["repeats"] == 0 and row["recorded_at"] is not None
    # the table the issue names, in the warehouse file itself
    with duckdb.connect(str(db)) as connection:
        assert connection.execute("select count(*) from ledger.releases").fetchall()[0][0] == 1


def test_identical_release_is_recorded_once_and_its_repeats_counted(db: Path) -> None:
    ledger = PrivacyLedger(db)
    first = release(1.0, seed=3)
    again = release(1.0, seed=3, run_id="run-2")  # another run, same seed, same data: same release
    assert again.identity == first.identity
    assert ledger.record(first) is True
    assert ledger.record(again) is False
    assert ledger.record(again) is False
    rows = ledger.releases("adult")
    assert rows.height == 1 and rows["repeats"].to_list() == [2]
    assert rows["run_id"].to_list() == ["run-1"]  # the first run that released it
    spent = ledger.spent("adult", DELTA)
    assert spent.releases == 1 and spent.repeats == 2
    assert spent.epsilon_gdp == pytest.approx(1.0, abs=1e-9)  # not charged twice
    history = ledger.materializations("adult")
    assert history["new"].to_list() == [True, False, False]
    assert history["run_id"].to_list() == ["run-1", "run-2", "run-2"]
    # a new seed, new data or a new definition of the data is a new release
    assert release(1.0, seed=4).identity != first.identity
    assert release(1.0, seed=3, data_digest="other").identity != first.identity
    assert release(1.0, seed=3, fingerprint="fp-2").identity != first.identity
    assert release(1.0, seed=3, parameters={"entity_fraction": 0.05}).identity != first.identity


def test_gdp_total_is_the_composition_and_less_than_the_simple_sum(db: Path) -> None:
    ledger = PrivacyLedger(db)
    releases = [release(e) for e in (1.0, 1.0, 2.0)] + [release(1.0, seed=s) for s in (1, 2)]
    assert ledger.record_many(releases) == [True, False, True, True, True]
    mus = [math.sqrt(r.histograms) / r.sigma for r in releases[1:]]
    spent = ledger.spent("adult", DELTA)
    assert spent.mu == pytest.approx(math.sqrt(sum(m * m for m in mus)))
    assert spent.epsilon_gdp == pytest.approx(epsilon_for_mu(compose_mu(mus), DELTA))
    assert spent.epsilon_sum == pytest.approx(1.0 + 2.0 + 1.0 + 1.0, abs=1e-8)
    assert spent.delta_sum == pytest.approx(4 * DELTA)
    assert spent.epsilon_gdp < spent.epsilon_sum


def _hand_epsilon(mu: float, delta: float) -> float:
    """The analytic-Gaussian curve solved directly (Balle & Wang 2018), independent of pe.privacy."""
    curve = lambda eps: norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2) - delta
    return brentq(curve, 0.0, 50.0, xtol=1e-13)


def _hand_mu(epsilon: float, delta: float) -> float:
    return brentq(lambda mu: _hand_epsilon(mu, delta) - epsilon, 0.05, 5.0, xtol=1e-13)


def test_the_epsilon_grid_composes_to_the_hand_computed_total(db: Path) -> None:
    ledger = PrivacyLedger(db)
    for epsilon in GRID:
        assert ledger.record(release(epsilon))  # each calibrated by calibrate_sigma(eps, 1e-6, 1)
    spent = ledger.spent("adult", DELTA)
    # by hand: each release is (1/sigma)-GDP with sigma calibrated to its epsilon, i.e. mu_i is the mu
    # whose curve passes through (eps_i, 1e-6); they compose to sqrt(sum mu_i^2)
    hand_mus = [_hand_mu(e, DELTA) for e in GRID]
    hand_mu = math.sqrt(sum(m * m for m in hand_mus))
    assert spent.mu == pytest.approx(hand_mu, rel=1e-6)
    assert spent.epsilon_gdp == pytest.approx(_hand_epsilon(hand_mu, DELTA), rel=1e-6)
    assert spent.epsilon_gdp == pytest.approx(4.8151, abs=1e-4)  # pinned: mu 0.98714
    assert spent.mu == pytest.approx(0.98714, abs=1e-5)
    assert spent.epsilon_sum == pytest.approx(7.5, abs=1e-8)  # what naive accounting would say
    # sigma of the grid, as in the notes' reference values (delta 1e-6: eps 1 -> 4.225, eps 4 -> 1.194)
    sigmas = ledger.releases("adult").sort("epsilon")["sigma"].to_list()
    assert sigmas[1] == pytest.approx(4.225, abs=1e-3) and sigmas[3] == pytest.approx(1.194, abs=1e-3)


def test_budget_check_passes_under_and_raises_over_the_budget(db: Path) -> None:
    ledger = PrivacyLedger(db)
    for epsilon in (1.0, 2.0):
        ledger.record(release(epsilon))
    spent = ledger.spent("adult", DELTA)
    planned = [release(4.0)]
    ok = check_budget(db, "adult", planned, DELTA, 10.0)
    assert not ok.exceeded and ok.new == tuple(planned)
    assert ok.total_epsilon == pytest.approx(
        epsilon_for_mu(compose_mu([spent.mu, planned[0].mu]), DELTA))
    assert ok.remaining == pytest.approx(10.0 - spent.epsilon_gdp)
    assert ok.remaining_after == pytest.approx(10.0 - ok.total_epsilon)
    assert check_budget(ledger, "adult", planned, DELTA, None).budget_epsilon is None  # no budget set

    with pytest.raises(BudgetExceeded) as info:
        check_budget(ledger, "adult", planned, DELTA, 4.0)
    check = info.value.check
    message = str(info.value)
    assert check.exceeded and check.total_epsilon > 4.0
    assert "'adult'" in message
    assert f"{spent.epsilon_gdp:.4f}" in message  # spent, GDP
    assert spent.epsilon_sum == pytest.approx(3.0) and "3.0000" in message  # spent, simple sum
    assert f"{check.planned_epsilon:.4f}" in message  # what this materialization would spend
    assert f"{check.total_epsilon:.4f}" in message
    assert f"{4.0 - spent.epsilon_gdp:.4f}" in message  # what remains
    assert f"{check.largest_next_epsilon:.4f}" in message
    assert 0 < 4.0 - spent.epsilon_gdp < check.largest_next_epsilon < check.planned_epsilon
    assert ledger.releases("adult").height == 2  # a check records nothing
    assert str(pickle.loads(pickle.dumps(info.value))) == message

    # exactly at the budget passes: one release calibrated to the whole budget
    fresh = PrivacyLedger(db.with_name("fresh.duckdb"))
    assert not fresh.check("adult", [release(3.0)], DELTA, 3.0).exceeded


def test_a_recorded_release_does_not_count_against_the_check(db: Path) -> None:
    ledger = PrivacyLedger(db)
    recorded = release(2.0)
    ledger.record(recorded)
    rerun = release(2.0, run_id="run-2")
    check = check_budget(ledger, "adult", [rerun, rerun], DELTA, 2.0)  # would be 2.0 + 2.0 if charged
    assert check.new == () and check.already_recorded == (rerun,)
    assert check.planned_mu == 0.0 and check.total_epsilon == pytest.approx(check.spent.epsilon_gdp)
    with pytest.raises(BudgetExceeded, match="1 planned release already recorded, not charged again"):
        check_budget(ledger, "adult", [rerun, release(2.0, seed=1)], DELTA, 2.0)


def test_charge_checks_and_records_in_one_step(db: Path) -> None:
    ledger = PrivacyLedger(db)
    prior, histogram = release(1.0, kind="marginal_prior"), release(1.0, kind="nn_histogram")
    result = ledger.charge([prior], delta=DELTA, budget_epsilon=2.0, upcoming=[histogram])
    assert [r.kind for r in result.new] == ["marginal_prior", "nn_histogram"]
    assert ledger.releases("adult")["kind"].to_list() == ["marginal_prior"]  # upcoming is not recorded
    ledger.charge([histogram], delta=DELTA, budget_epsilon=2.0)
    with pytest.raises(BudgetExceeded):
        ledger.charge([release(1.5, seed=9)], delta=DELTA, budget_epsilon=2.0)
    assert ledger.releases("adult").height == 2  # refused: nothing recorded
    again = ledger.charge([prior, histogram], delta=DELTA, budget_epsilon=2.0)  # a re-run is free
    assert again.new == () and ledger.releases("adult")["repeats"].to_list() == [1, 1]


def test_a_rerun_of_recorded_releases_is_never_refused_even_over_a_lowered_budget(db: Path) -> None:
    """The budget was lowered in the spec after a partition was paid for: re-running (or resuming) that
    partition still works and charges nothing; anything new is refused."""
    ledger = PrivacyLedger(db)
    paid = [release(2.0, kind="marginal_prior"), release(2.0, kind="nn_histogram")]
    ledger.charge(paid, delta=DELTA, budget_epsilon=4.0)
    spent = ledger.spent("adult", DELTA)
    lowered = 1.0
    assert spent.epsilon_gdp > lowered

    rerun = [release(2.0, kind=r.kind, run_id="run-2") for r in paid]
    check = ledger.check("adult", rerun, DELTA, lowered)
    assert not check.exceeded and check.new == () and check.already_recorded == tuple(rerun)
    assert check.total_epsilon == pytest.approx(spent.epsilon_gdp) and check.remaining < 0
    assert "2 planned releases already recorded, not charged again" in check.explain()
    assert not check_budget(db, "adult", rerun[:1], DELTA, lowered).exceeded
    resumed = ledger.charge(rerun[1:], delta=DELTA, budget_epsilon=lowered, upcoming=rerun[:1])
    assert resumed.new == () and "already recorded, not charged again" in resumed.explain()
    assert ledger.charge(rerun, delta=DELTA, budget_epsilon=lowered).new == ()
    rows = ledger.releases("adult")
    assert rows.height == 2 and rows["repeats"].to_list() == [1, 2]  # counted, not charged
    assert ledger.spent("adult", DELTA).epsilon_gdp == pytest.approx(spent.epsilon_gdp)

    # one new release among the recorded ones: the total with it exceeds the budget, so it is refused
    fresh = release(0.1, seed=5)
    materializations = ledger.materializations("adult").height
    with pytest.raises(BudgetExceeded) as info:
        ledger.charge([*rerun, fresh], delta=DELTA, budget_epsilon=lowered)
    assert info.value.check.new == (fresh,)
    with pytest.raises(BudgetExceeded):
        check_budget(ledger, "adult", [fresh], DELTA, lowered)
    assert ledger.releases("adult").height == 2
    assert ledger.materializations("adult").height == materializations  # not even the repeats
    message = str(info.value)
    assert "2 planned releases already recorded, not charged again" in message
    assert "nothing was recorded or released by this materialization" in message.lower()
    assert message.endswith(
        "raise privacy.budget_epsilon in dataset.yaml, choose a smaller epsilon, "
        "or re-run a partition that is already paid for."
    )


def test_persistence_across_reopen(db: Path) -> None:
    PrivacyLedger(db).record(release(1.0))
    PrivacyLedger(str(db)).record(release(0.5))
    reopened = PrivacyLedger(db)
    assert sorted(reopened.releases("adult")["epsilon"].to_list()) == [0.5, 1.0]
    assert reopened.record(release(1.0, run_id="later")) is False
    with duckdb.connect(str(db)) as connection:  # also through a caller's own connection
        on_connection = PrivacyLedger(connection)
        assert on_connection.spent("adult", DELTA).releases == 2
        assert on_connection.record(release(2.0)) is True
    assert PrivacyLedger(db).spent("adult", DELTA).releases == 3


def test_two_datasets_do_not_mix(db: Path) -> None:
    ledger = PrivacyLedger(db)
    ledger.record(release(1.0, dataset="adult"))
    ledger.record(release(4.0, dataset="lahman"))
    ledger.record(release(1.0, dataset="lahman"))  # same parameters, other dataset: its own release
    assert ledger.spent("adult", DELTA).epsilon_gdp == pytest.approx(1.0, abs=1e-9)
    assert ledger.spent("lahman", DELTA).releases == 2
    assert ledger.datasets() == ["adult", "lahman"]
    assert not check_budget(ledger, "adult", [release(1.0, seed=5)], DELTA, 2.0).exceeded
    with pytest.raises(BudgetExceeded):
        check_budget(ledger, "lahman", [release(1.0, dataset="lahman", seed=5)], DELTA, 4.0)
    with pytest.raises(ValueError, match="belongs to dataset 'lahman'"):
        check_budget(ledger, "adult", [release(1.0, dataset="lahman")], DELTA, 4.0)


def test_budget_is_charged_per_dataset_name_across_fingerprints(db: Path) -> None:
    ledger = PrivacyLedger(db)
    ledger.record(release(2.0, fingerprint="before-edit"))
    ledger.record(release(2.0, fingerprint="after-edit"))  # the spec changed: same people
    spent = ledger.spent("adult", DELTA)
    assert spent.releases == 2 and spent.fingerprints == 2
    assert spent.epsilon_gdp > 2.0
    with pytest.raises(BudgetExceeded):
        check_budget(ledger, "adult", [release(2.0, fingerprint="third-edit")], DELTA, 3.0)


def test_ledger_view_and_format_show_the_totals(db: Path) -> None:
    ledger = PrivacyLedger(db)
    for epsilon in GRID:
        ledger.record(release(epsilon))
    ledger.record(release(0.5, run_id="run-2"))  # a repeat
    ledger.record(release(1.0, dataset="lahman", fingerprint="fp-l"))
    view = ledger_view(ledger, budgets={"adult": 6.0}, delta=DELTA)
    assert view["dataset"].to_list() == ["adult", "lahman"]
    adult = view.row(0, named=True)
    spent = ledger.spent("adult", DELTA)
    assert adult["releases"] == 4 and adult["repeats"] == 1
    assert adult["epsilon_gdp"] == pytest.approx(spent.epsilon_gdp)
    assert adult["epsilon_sum"] == pytest.approx(7.5)
    assert adult["budget"] == 6.0 and adult["remaining"] == pytest.approx(6.0 - spent.epsilon_gdp)
    assert view.row(1, named=True)["budget"] is None
    # without a delta, the smallest recorded delta of each dataset
    assert ledger_view(ledger)["delta"].to_list() == [DELTA, DELTA]

    text = format_ledger(ledger, budgets={"adult": 6.0}, delta=DELTA)
    assert "dataset adult" in text and "dataset lahman" in text
    assert f"{spent.epsilon_gdp:.4f}" in text and "7.5000" in text and "6.0000" in text
    assert f"{6.0 - spent.epsilon_gdp:.4f}" in text
    assert "4 releases (re-runs of a recorded release, not charged: 1)" in text
    only = format_ledger(db, dataset="lahman", details=False)
    assert "dataset adult" not in only and "budget: none set" in only and "recorded (UTC)" not in only
    assert "no DP release recorded" in format_ledger(db.with_name("empty.duckdb"))


def test_a_run_of_a_prior_and_vote_histograms_composes_to_its_target() -> None:
    """A PE-style run, built as its generator plans it: a marginal prior of k histograms and one release
    of the T vote histograms, each given half the run's GDP mu; together they are the run's (1, delta)."""
    k, T, epsilon = 9, 3, 1.0
    half = epsilon_for_mu(mu_for_epsilon(epsilon, DELTA) / math.sqrt(2), DELTA)  # prior share 0.5
    prior_sigma, sigma = calibrate_sigma(half, DELTA, k), calibrate_sigma(half, DELTA, T)
    dataset = SimpleNamespace(name="adult", fingerprint="fp-1")
    common = {"epsilon": epsilon, "delta": DELTA, "T": T, "seed": 7, "partition_key": "1",
              "parameters": {"pool_size": 100}}
    prior = LedgerRelease.for_dataset(dataset, kind="marginal_prior", sigma=prior_sigma, histograms=k,
                                      **common)
    votes = LedgerRelease.for_dataset(dataset, kind="nn_histogram", sigma=sigma, histograms=T, **common)
    assert (prior.dataset, prior.fingerprint) == ("adult", "fp-1")
    assert prior.mu == pytest.approx(math.sqrt(k) / prior_sigma) and votes.mu == pytest.approx(prior.mu)
    assert epsilon_for_mu(compose_mu([prior.mu, votes.mu]), DELTA) == pytest.approx(epsilon, abs=1e-6)
    # where it was recorded is not part of the identity: another run of the same plan is the same release
    elsewhere = LedgerRelease(dataset="adult", fingerprint="fp-1", kind="marginal_prior", sigma=prior_sigma,
                              histograms=k, **{**common, "partition_key": None}, run_id="other-run")
    assert elsewhere.identity == prior.identity and elsewhere.identity != votes.identity
    # without a prior, the vote histograms alone carry the run's whole epsilon
    alone = LedgerRelease.for_dataset(dataset, kind="nn_histogram", sigma=calibrate_sigma(epsilon, DELTA, T),
                                      histograms=T, **common)
    assert alone.release_epsilon == pytest.approx(epsilon, abs=1e-9)
    with pytest.raises(ValueError):
        release(1.0, histograms=0)
    with pytest.raises(ValueError):
        LedgerRelease(dataset="adult", fingerprint="f", kind="k", epsilon=1.0, delta=1.5, sigma=1.0,
                      histograms=1, T=None, seed=0)


def test_releases_of_a_run(db: Path) -> None:
    ledger = PrivacyLedger(db)
    assert ledger.releases_of_run("run-1").height == 0 and not db.exists()
    ledger.record(release(1.0))
    ledger.record(release(2.0, run_id="run-2"))
    ledger.record(release(1.0, run_id="run-2"))  # run-2 re-materialized run-1's release
    ledger.record(release(4.0, dataset="lahman", run_id="run-2"))
    of_run = ledger.releases_of_run("run-2")
    assert of_run.schema == ledger.releases().schema
    assert of_run.select("dataset", "epsilon").rows() == [("adult", 1.0), ("adult", 2.0), ("lahman", 4.0)]
    assert of_run["run_id"].to_list() == ["run-1", "run-2", "run-2"]  # the run that first recorded each
    assert of_run["repeats"].to_list() == [1, 0, 0]
    assert ledger.releases_of_run("run-1")["epsilon"].to_list() == [1.0]
    assert ledger.releases_of_run("no-such-run").height == 0


def test_ledger_opens_beside_an_open_dagster_connection(db: Path) -> None:
    db.parent.mkdir(parents=True)
    resource = DuckDBResource(database=str(db))
    with resource.get_connection() as connection:  # dagster's config differs from a plain connect
        connection.execute("create table t as select 1 as x")
        assert PrivacyLedger(db).record(release(1.0)) is True
    assert PrivacyLedger(db).spent("adult", DELTA).releases == 1


def test_waits_for_another_process_holding_the_lock(db: Path, tmp_path: Path) -> None:
    PrivacyLedger(db).record(release(1.0))
    ready = tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb, pathlib, time
        c = duckdb.connect({str(db)!r})
        pathlib.Path({str(ready)!r}).write_text("1")
        time.sleep(2.0)
        c.close()
    """)])
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert time.monotonic() < deadline and holder.poll() is None
            time.sleep(0.05)
        with pytest.raises(LedgerBusy, match="another process holds the DuckDB file lock"):
            PrivacyLedger(db, lock_timeout=0.2).record(release(2.0))
        started = time.monotonic()
        assert PrivacyLedger(db).record(release(2.0)) is True  # retried until the holder let go
        assert time.monotonic() - started > 0.5
    finally:
        holder.wait(timeout=30)
    assert PrivacyLedger(db).spent("adult", DELTA).releases == 2


_CHARGE_WORKER = """
import pathlib, sys, time
from synth_assets.privacy.ledger import BudgetExceeded, LedgerRelease, PrivacyLedger
from synth_assets.privacy.accounting import calibrate_sigma
db, seed, go = sys.argv[1], int(sys.argv[2]), pathlib.Path(sys.argv[3])
r = LedgerRelease(dataset="adult", fingerprint="fp-1", kind="k", epsilon=1.0, delta=1e-6,
                  sigma=calibrate_sigma(1.0, 1e-6, 1), histograms=1, T=None, seed=seed)
pathlib.Path(str(go) + f".ready{seed}").write_text("1")
deadline = time.monotonic() + 120
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.01)
try:
    PrivacyLedger(db).charge([r], delta=1e-6, budget_epsilon=1.8)
    print("charged")
except BudgetExceeded:
    print("refused")
"""


def test_concurrent_processes_cannot_overspend(db: Path, tmp_path: Path) -> None:
    """Three processes charge one release of epsilon 1 each, all at once, against a budget that only
    two such releases fit: the check and the record happen under one DuckDB write lock."""
    PrivacyLedger(db).record(release(0.1, seed=99))  # create the file and tables first
    go = tmp_path / "go"
    workers = [
        subprocess.Popen([sys.executable, "-c", _CHARGE_WORKER, str(db), str(seed), str(go)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for seed in range(3)
    ]
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("go.ready*"))) < len(workers):  # all imported: start together
            assert time.monotonic() < deadline and all(w.poll() is None for w in workers)
            time.sleep(0.05)
        go.write_text("1")
        outcomes = []
        for worker in workers:
            out, err = worker.communicate(timeout=120)
            assert worker.returncode == 0, err
            outcomes.append(out.strip())
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    assert sorted(outcomes) == ["charged"] * 2 + ["refused"], outcomes
    spent = PrivacyLedger(db).spent("adult", DELTA)
    assert spent.releases == 3 and spent.epsilon_gdp <= 1.8

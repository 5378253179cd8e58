"""One home for every DP release: a partition is planned, refused or charged as a whole, then run."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import polars as pl
import pytest

from synth_assets.datasets.loading import Dataset
from synth_assets.generators.independent import IndependentMarginals
from synth_assets.generators.private_evolution import PrivateEvolution
from synth_assets.pe.evolution import PEConfig
from synth_assets.pe.generators import OfflineGenerator
from synth_assets.privacy.accounting import UnsafePrivacySetting, epsilon_for_mu
from synth_assets.privacy.ledger import BudgetExceeded, PrivacyLedger
from synth_assets.privacy.releases import (
    check_settings,
    data_fingerprint,
    plan_partition,
    precheck_budget,
    run_partition,
    synthesize,
)

SMALL = PEConfig(pool_size=150, selected=50, reference_points=3000)


def generators():
    return [PrivateEvolution(SMALL), IndependentMarginals()]


def test_a_plan_holds_every_release_of_the_partition_and_each_generator_composes_to_epsilon(tiny, wide):
    plan = plan_partition(tiny, generators(), wide, epsilon=1.0, delta=1e-6)
    kinds = [(r.parameters["generator"], r.kind) for r in plan.releases]
    assert kinds == [
        ("private_evolution", "mst_one_way"),
        ("private_evolution", "mst_selection"),
        ("private_evolution", "mst_two_way"),
        ("private_evolution", "nn_histogram"),
        ("independent_marginals", "independent_marginals"),
    ]
    for name, generator_plan in plan.generators.items():
        assert generator_plan.composition.epsilon(1e-6) == pytest.approx(1.0, rel=1e-9), name
    marginals = PrivateEvolution(SMALL.model_copy(update={"prior": "marginals"})).plan(tiny, 1.0, 1e-6)
    assert [r.kind for r in marginals.releases] == ["marginal_prior", "nn_histogram"]
    assert epsilon_for_mu(marginals.mu, 1e-6) == pytest.approx(1.0, rel=1e-9)
    assert {r.data_digest for r in plan.releases} == {data_fingerprint(wide)}
    # PE and the reference together spend more than either: the partition's own total
    assert plan.spends > 1.3


def test_release_identities_do_not_depend_on_anything_decided_after_planning(tiny, wide):
    """Defect 2: the vote histogram's identity once held a digest of the candidate pool, which is only
    known after the prior is released, so a re-run never matched what was recorded."""
    first = plan_partition(tiny, generators(), wide, epsilon=1.0, delta=1e-6, run_id="a", partition_key="1")
    again = plan_partition(tiny, generators(), wide, epsilon=1.0, delta=1e-6, run_id="b", partition_key="1")
    assert [r.identity for r in first.releases] == [r.identity for r in again.releases]
    other_seed = plan_partition(tiny, [PrivateEvolution(SMALL.model_copy(update={"seed": 1}))], wide, epsilon=1.0)
    assert other_seed.releases[0].identity != first.releases[0].identity


def test_data_fingerprint_follows_content_not_row_order_or_storage_width(wide):
    assert data_fingerprint(wide) == data_fingerprint(wide.reverse())
    assert data_fingerprint(wide) != data_fingerprint(wide.head(wide.height - 1))
    narrow = wide.with_columns(pl.col(pl.Int64).cast(pl.Int32))
    assert data_fingerprint(narrow) == data_fingerprint(wide)


def test_delta_at_least_one_over_n_is_refused_and_the_message_says_which_delta_would_do(tiny, wide):
    """Defect 4: delta 0.5 with n = 400 ran with exit 0 and a warning nobody saw."""
    with pytest.raises(UnsafePrivacySetting, match=r"delta=0.5 is >= 1/n = 0.0025 for n=400 .* e\.g\. 1e-06"):
        plan_partition(tiny, generators(), wide, epsilon=1.0, delta=0.5)


@pytest.mark.parametrize("epsilon", [1e9, 1000.0])
def test_an_epsilon_whose_noise_vanishes_is_refused_unless_explicitly_allowed(tiny, wide, epsilon):
    """Defect 4: --epsilon 1e9 gave sigma 0 without a word."""
    with pytest.raises(UnsafePrivacySetting, match="almost no noise .* --allow-negligible-noise"):
        plan_partition(tiny, generators(), wide, epsilon=epsilon)
    allowed = plan_partition(tiny, generators(), wide, epsilon=epsilon, allow_negligible_noise=True)
    assert min(r.sigma for r in allowed.releases if r.is_gaussian) < 0.1


@pytest.mark.parametrize("epsilon", [math.inf, math.nan, 0.0, -1.0])
def test_non_finite_or_non_positive_epsilons_are_refused(tiny, wide, epsilon):
    with pytest.raises(UnsafePrivacySetting, match="epsilon must be a finite number > 0"):
        plan_partition(tiny, generators(), wide, epsilon=epsilon)


def test_an_empty_population_is_refused_before_any_release(tiny, wide, tmp_path):
    """Defect 6: zero entities gave a 'successful' release, with budget charged."""
    ledger = PrivacyLedger(tmp_path / "w.duckdb")
    with pytest.raises(UnsafePrivacySetting, match=r"population .* is empty: reporting table 'profile'"):
        run_partition(tiny, generators(), wide.head(0), epsilon=1.0, ledger=ledger)
    assert ledger.releases().height == 0


def test_a_partition_is_charged_all_or_none(tiny, wide, tmp_path):
    """Defect 1: a run refused for budget had often already released and charged its reference."""
    ledger = PrivacyLedger(tmp_path / "w.duckdb")
    budget = 1.2  # PE alone (1.0) or the reference alone (1.0) would fit; both together do not
    limited = Dataset(
        directory=tiny.directory,
        spec=tiny.spec.model_copy(
            update={"privacy": tiny.spec.privacy.model_copy(update={"budget_epsilon": budget})}
        ),
        reporting_sql=tiny.reporting_sql,
        queries=tiny.queries,
        files=tiny.files,
    )
    with pytest.raises(BudgetExceeded, match="would be exceeded"):
        run_partition(limited, generators(), wide, epsilon=1.0, ledger=ledger, checkpoints=tmp_path / "ck")
    assert ledger.releases().height == 0
    assert not (tmp_path / "ck").exists()


def test_a_recorded_partition_runs_again_without_charge_even_when_the_budget_is_spent(tiny, wide, tmp_path):
    """Defect 2: a paid partition could not be re-run or resumed once the remaining budget was small."""
    ledger = PrivacyLedger(tmp_path / "w.duckdb")
    first = run_partition(tiny, generators(), wide, epsilon=1.0, ledger=ledger)
    spent = ledger.spent(tiny.name, 1e-6).epsilon_gdp
    tight = Dataset(
        directory=tiny.directory,
        spec=tiny.spec.model_copy(
            update={"privacy": tiny.spec.privacy.model_copy(update={"budget_epsilon": spent * 1.001})}
        ),
        reporting_sql=tiny.reporting_sql,
        queries=tiny.queries,
        files=tiny.files,
    )
    again = run_partition(tight, generators(), wide, epsilon=1.0, ledger=ledger)
    assert again["private_evolution"].budget.new == ()
    assert ledger.releases().height == len(plan_partition(tiny, generators(), wide, epsilon=1.0).releases) == 5
    assert again["private_evolution"].population.equals(first["private_evolution"].population)
    with pytest.raises(BudgetExceeded):
        run_partition(tight, generators(), wide, epsilon=2.0, ledger=ledger)


def _with_budget(dataset: Dataset, budget: float) -> Dataset:
    privacy = dataset.spec.privacy.model_copy(update={"budget_epsilon": budget})
    return dataclasses.replace(dataset, spec=dataset.spec.model_copy(update={"privacy": privacy}))


def test_the_budget_is_checked_before_the_data_is_read_for_every_epsilon_of_a_run(tiny, wide, tmp_path):
    """A refusal for budget used to arrive after the real half was rebuilt; the pre-check needs no data."""
    ledger = PrivacyLedger(tmp_path / "w.duckdb")
    limited = _with_budget(tiny, 1.2)
    both = check_settings(limited, generators(), epsilon=1.0)
    with pytest.raises(BudgetExceeded, match="would be exceeded"):
        precheck_budget(limited, [(1.0, "1", both)], delta=None, ledger=ledger)
    reference = lambda epsilon: check_settings(limited, [IndependentMarginals()], epsilon=epsilon)  # noqa: E731
    assert precheck_budget(limited, [(1.0, "1", reference(1.0))], delta=None, ledger=ledger).exceeded is False
    assert precheck_budget(limited, [(0.8, "0.8", reference(0.8))], delta=None, ledger=ledger).exceeded is False
    with pytest.raises(BudgetExceeded):  # each fits alone, not both in one run
        precheck_budget(limited, [(1.0, "1", reference(1.0)), (0.8, "0.8", reference(0.8))], delta=None,
                        ledger=ledger)
    assert ledger.releases().height == 0
    unlimited = dataclasses.replace(tiny, spec=tiny.spec.model_copy(update={
        "privacy": tiny.spec.privacy.model_copy(update={"budget_epsilon": None})}))
    assert precheck_budget(unlimited, [(1.0, "1", both)], delta=None, ledger=ledger) is None


def test_the_pre_check_leaves_a_recorded_partition_to_the_release_plan(tiny, wide, tmp_path):
    ledger = PrivacyLedger(tmp_path / "w.duckdb")
    roomy = _with_budget(tiny, 10.0)
    run_partition(roomy, generators(), wide, epsilon=1.0, ledger=ledger, partition_key="1")
    spent = ledger.spent(tiny.name, 1e-6).epsilon_gdp
    tight = _with_budget(tiny, spent * 1.001)
    plans = check_settings(tight, generators(), epsilon=1.0)
    assert precheck_budget(tight, [(1.0, "1", plans)], delta=None, ledger=ledger) is None  # a re-run may be free
    with pytest.raises(BudgetExceeded):
        precheck_budget(tight, [(1.0, "1", plans), (2.0, "2", check_settings(tight, generators(), epsilon=2.0))],
                        delta=None, ledger=ledger)


class CountingAPI(OfflineGenerator):
    """The offline generator, counting the records asked of it (as a paid API would bill them)."""

    name = "counting"

    def __init__(self, dataset):
        super().__init__(dataset)
        self.asked = []

    def random(self, n, *, seed):
        self.asked.append(n)
        return super().random(n, seed=seed)


def test_the_cells_reference_sample_never_comes_from_the_injected_api(tiny, wide):
    """Defect 10: the SDK drew the cells' reference sample (100,000 rows by default) from the caller's
    API: with an LLM, that is 100,000 paid records."""
    api = CountingAPI(tiny)
    generator = PrivateEvolution(SMALL, candidates=lambda dataset, prior, log=None: api)
    result = synthesize(tiny, generator, 1.0, wide, ledger=None)
    assert api.asked == [SMALL.pool_size]  # the first pool only
    assert result.population.height > 300
    assert result.model.api["name"] == "counting"


def test_the_sdk_records_its_releases_in_the_dataset_ledger(tiny, wide):
    result = synthesize(tiny, PrivateEvolution(SMALL), 1.0, wide)
    recorded = PrivacyLedger.for_dataset(tiny.name).releases(tiny.name)
    assert sorted(recorded["identity"]) == sorted(r.identity for r in result.releases)
    assert result.epsilon == pytest.approx(1.0, rel=1e-9)


def test_the_core_imports_no_dagster():
    """Defect 11: pe/evolution -> pe/llm/api -> pe/llm/settings -> resources (Dagster) -> pe/evolution."""
    code = (
        "import sys\n"
        "from synth_assets import synthesize, PrivateEvolution, load_dataset\n"
        "import synth_assets.privacy.releases, synth_assets.generators.independent\n"
        "from synth_assets.pe.llm.api import LLMCandidateAPI\n"
        "from synth_assets.pe.llm.settings import LLMSettings\n"
        "settings = LLMSettings(model='m', base_url='http://127.0.0.1:9/v1')\n"
        "LLMCandidateAPI(load_dataset(), settings).describe()\n"
        "assert 'dagster' not in sys.modules, 'the core imported dagster'\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr

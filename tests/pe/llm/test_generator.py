"""Private Evolution with an injected LLM candidate API: used when given, checked before any budget is
charged, and never asked for the bulk public reference sample."""

from __future__ import annotations

import time

import pytest

from synth_assets.generators.independent import IndependentMarginals
from synth_assets.generators.private_evolution import PrivateEvolution, generation_metadata
from synth_assets.pe.evolution import PEConfig
from synth_assets.pe.generators import OfflineGenerator
from synth_assets.pe.llm import LLMCandidateAPI, LLMEndpointError
from synth_assets.pe.marginal_prior import MarginalPriorGenerator, release_marginal_prior
from synth_assets.privacy.ledger import PrivacyLedger
from synth_assets.privacy.releases import run_partition
from synth_assets.tables.build import build_real_tables

SMALL = PEConfig(pool_size=40, selected=10, reference_points=500, output="cells")


@pytest.fixture(scope="module")
def wide(tiny):
    return build_real_tables(tiny).wide


def llm_source(settings):
    return lambda dataset, prior, log=None: LLMCandidateAPI(dataset, settings, prior=prior, log=log)


def test_offline_unless_a_source_is_injected(tiny, wide, server, make_settings) -> None:
    prior = release_marginal_prior(tiny, wide, sigma=5.0, seed=0)
    offline = PrivateEvolution(SMALL)
    assert type(offline.candidate_api(tiny, None)) is OfflineGenerator
    assert isinstance(offline.candidate_api(tiny, prior), MarginalPriorGenerator)
    assert generation_metadata(offline.candidate_api(tiny, None)) == {}

    llm = PrivateEvolution(SMALL, candidates=llm_source(make_settings())).candidate_api(tiny, prior)
    assert isinstance(llm, LLMCandidateAPI)
    assert isinstance(llm.fallback, MarginalPriorGenerator)  # shortfalls are filled from the DP prior
    llm.random(5, seed=0)
    metadata = generation_metadata(llm)
    assert metadata["llm_requests_sent"] == 1 and metadata["llm_model"] == "test-model"


def test_a_dead_endpoint_stops_the_partition_before_any_budget_is_charged(
    tiny, wide, make_settings, dead_port, tmp_path
):
    """Defect 9: the prior and the reference were charged before the first request; a dead server took
    19 minutes to fail."""
    settings = make_settings(base_url=f"http://127.0.0.1:{dead_port}/v1")
    ledger = PrivacyLedger(tmp_path / "w.duckdb")
    generators = [PrivateEvolution(SMALL, candidates=llm_source(settings)), IndependentMarginals()]
    started = time.perf_counter()
    with pytest.raises(LLMEndpointError, match="connection") as raised:
        run_partition(tiny, generators, wide, epsilon=1.0, ledger=ledger)
    assert time.perf_counter() - started < 30
    assert f"127.0.0.1:{dead_port}" in str(raised.value)
    assert ledger.releases().height == 0


def test_a_run_with_a_working_endpoint_sends_only_the_pool_and_its_variations(tiny, wide, server, make_settings):
    settings = make_settings()
    generator = PrivateEvolution(SMALL.model_copy(update={"iterations": 2}), candidates=llm_source(settings))
    result = run_partition(tiny, [generator], wide, epsilon=2.0, delta=1e-5, ledger=None)["private_evolution"]
    asked = server.stats()["chat"]
    assert asked >= 2 and result.population.height > 300
    # 40 candidates and their variations, at 20 records a request, not the 500-row reference sample
    assert asked * settings.records_per_request < 500

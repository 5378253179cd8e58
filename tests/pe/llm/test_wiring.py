"""The helpers the asset graph uses: the LLM API when enabled, the offline one otherwise."""

from __future__ import annotations

from synth_assets.datasets.sources import read_source
from synth_assets.pe.evolution import candidate_api
from synth_assets.pe.generators import OfflineGenerator
from synth_assets.pe.llm import LLMCandidateAPI, generation_metadata, reference_api
from synth_assets.pe.marginal_prior import (
    MarginalPriorGenerator,
    release_marginal_prior,
)
from synth_assets.tables.build import build_reporting_table, build_wide_table


def test_offline_unless_settings_are_given(tiny, server, make_settings) -> None:
    sources = {name: read_source(tiny, name) for name in tiny.spec.sources}
    wide = build_wide_table(tiny, {t: build_reporting_table(tiny, t, sources) for t in tiny.spec.reporting_tables})[0]
    prior = release_marginal_prior(tiny, wide, sigma=5.0, seed=0)

    offline = candidate_api(tiny, None, None)
    assert type(offline) is OfflineGenerator
    assert generation_metadata(offline) == {} and reference_api(offline) is offline
    assert isinstance(candidate_api(tiny, prior, None), MarginalPriorGenerator)

    llm = candidate_api(tiny, prior, make_settings(), log=lambda message: None)
    assert isinstance(llm, LLMCandidateAPI)
    assert isinstance(llm.fallback, MarginalPriorGenerator)  # shortfalls are filled from the DP prior
    assert reference_api(llm) is llm.fallback
    assert llm.describe()["fallback"]["name"] == "offline+marginal_prior"
    llm.random(5, seed=0)
    metadata = generation_metadata(llm)
    assert metadata["llm_requests_sent"] == 1 and metadata["llm_model"] == "test-model"
    assert server.stats()["chat"] == 1

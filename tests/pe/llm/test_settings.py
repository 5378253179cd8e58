"""Settings from the environment and the Dagster resource; the key stays secret.

(No ``from __future__ import annotations`` here: Dagster reads the asset's annotations at runtime.)
"""

import json

import dagster as dg
import pytest

from synth_assets.pe.llm import LLMCandidateAPI, LLMResource, llm_settings_from_env

KEY = "sk-live-SECRET-0123456789abcdef"


def test_unset_means_offline() -> None:
    assert llm_settings_from_env({}) is None
    assert llm_settings_from_env({"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": "http://x/v1"}) is None
    resource = LLMResource.from_env({})
    assert not resource.enabled and resource.settings() is None


def test_settings_from_env() -> None:
    env = {
        "SYNTH_ASSETS_LLM_BASE_URL": "http://127.0.0.1:8080/v1/",
        "SYNTH_ASSETS_LLM_MODEL": "qwen2.5-7b-instruct",
        "OPENAI_API_KEY": KEY,
        "SYNTH_ASSETS_LLM_MODE": "batch",
        "SYNTH_ASSETS_LLM_STRUCTURED_OUTPUT": "json_object",
        "SYNTH_ASSETS_LLM_CONCURRENCY": "3",
        "SYNTH_ASSETS_LLM_MAX_RETRIES": "2",
        "SYNTH_ASSETS_LLM_TIMEOUT": "30",
        "SYNTH_ASSETS_LLM_RECORDS_PER_REQUEST": "10",
        "SYNTH_ASSETS_LLM_TEMPERATURE": "0.7",
        "SYNTH_ASSETS_LLM_PRICE_INPUT": "0.15",
        "SYNTH_ASSETS_LLM_PRICE_OUTPUT": "0.6",
        "SYNTH_ASSETS_LLM_CACHE_DIR": "/tmp/somewhere",
        "SYNTH_ASSETS_LLM_BATCH_SIZE": "400",
    }
    settings = llm_settings_from_env(env)
    assert settings.base_url == "http://127.0.0.1:8080/v1"
    assert settings.model == "qwen2.5-7b-instruct"
    assert settings.mode == "batch" and settings.structured_output == "json_object"
    assert (settings.concurrency, settings.max_retries, settings.timeout) == (3, 2, 30.0)
    assert (settings.records_per_request, settings.temperature, settings.batch_size) == (10, 0.7, 400)
    assert settings.prices.cost(1_000_000, 1_000_000) == pytest.approx(0.75)
    assert settings.prices.cost(1_000_000, 1_000_000, batch=True) == pytest.approx(0.375)
    assert settings.key() == KEY
    # the dedicated variable wins over OPENAI_API_KEY
    assert llm_settings_from_env({**env, "SYNTH_ASSETS_LLM_API_KEY": "sk-other"}).key() == "sk-other"
    # OpenAI itself: only the model is needed
    openai_settings = llm_settings_from_env({"SYNTH_ASSETS_LLM_MODEL": "gpt-4o-mini"})
    assert openai_settings.base_url == "https://api.openai.com/v1" and openai_settings.is_openai


def test_an_endpoint_without_a_model_is_an_error() -> None:
    with pytest.raises(ValueError, match="SYNTH_ASSETS_LLM_MODEL"):
        llm_settings_from_env({"SYNTH_ASSETS_LLM_BASE_URL": "http://127.0.0.1:8080/v1"})
    with pytest.raises(ValueError, match="SYNTH_ASSETS_LLM_MODE"):
        llm_settings_from_env({"SYNTH_ASSETS_LLM_MODEL": "m", "SYNTH_ASSETS_LLM_MODE": "turbo"}) or None
    with pytest.raises(ValueError, match="SYNTH_ASSETS_LLM_CONCURRENCY"):
        llm_settings_from_env({"SYNTH_ASSETS_LLM_MODEL": "m", "SYNTH_ASSETS_LLM_CONCURRENCY": "many"})


def test_the_key_is_never_shown(tiny, tmp_path) -> None:
    settings = llm_settings_from_env(
        {
            "SYNTH_ASSETS_LLM_MODEL": "m",
            "SYNTH_ASSETS_LLM_BASE_URL": "http://user:pw@127.0.0.1:9/v1?token=abc",
            "SYNTH_ASSETS_LLM_API_KEY": KEY,
            "SYNTH_ASSETS_LLM_CACHE_DIR": str(tmp_path),
        }
    )
    api = LLMCandidateAPI(tiny, settings)
    shown = [repr(settings), str(settings), json.dumps(settings.public()), json.dumps(api.describe()),
             json.dumps(api.report.to_dict())]
    assert KEY not in settings.model_dump_json()
    for text in shown:
        assert KEY not in text
        assert "pw" not in text and "token=abc" not in text
    assert settings.endpoint == "http://127.0.0.1:9/v1"


def test_dagster_resource_from_env_and_metadata(tiny, server, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SYNTH_ASSETS_LLM_MODEL", "test-model")
    monkeypatch.setenv("SYNTH_ASSETS_LLM_BASE_URL", server.base_url)
    monkeypatch.setenv("SYNTH_ASSETS_LLM_API_KEY", KEY)
    monkeypatch.setenv("SYNTH_ASSETS_LLM_RECORDS_PER_REQUEST", "5")
    monkeypatch.setenv("SYNTH_ASSETS_LLM_PRICE_INPUT", "2.5")
    monkeypatch.setenv("SYNTH_ASSETS_LLM_PRICE_OUTPUT", "10")
    monkeypatch.setenv("SYNTH_ASSETS_LLM_CACHE_DIR", str(tmp_path / "cache"))
    resource = LLMResource.from_env()
    assert resource.enabled
    assert isinstance(resource.api_key, dg.EnvVar)  # the UI shows the variable's name, not the key

    @dg.asset
    def candidate_pool(context: dg.AssetExecutionContext, llm: LLMResource) -> None:
        api = llm.candidate_api(tiny, log=context.log.info)
        pool = api.random(12, seed=0)
        context.add_output_metadata({"candidates": pool.height, "api": dg.MetadataValue.json(api.describe()),
                                     **api.report.to_metadata()})

    result = dg.materialize([candidate_pool], resources={"llm": resource})
    assert result.success
    metadata = result.asset_materializations_for_node("candidate_pool")[0].metadata
    assert metadata["candidates"].value == 12
    assert metadata["llm_requests_sent"].value == 3
    assert metadata["llm_tokens_in"].value > 0
    report = metadata["llm_report"].value
    expected = (report["tokens_in"] * 2.5 + report["tokens_out"] * 10) / 1e6
    assert metadata["llm_estimated_cost_usd"].value == pytest.approx(expected, rel=1e-4)
    assert "| reason | count |" in metadata["llm_rejections"].value
    events = json.dumps([str(e) for e in result.all_events]) + json.dumps({k: str(v) for k, v in metadata.items()})
    assert KEY not in events
    # the key was sent where it belongs: in the Authorization header to the endpoint
    assert {entry["authorization"] for entry in server.log()} == {f"Bearer {KEY}"}

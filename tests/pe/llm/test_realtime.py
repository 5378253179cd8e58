"""The real-time mode against the loopback OpenAI-protocol server: generation, caching, retries,
rejections, structured-output fallbacks, cost accounting and limits."""

from __future__ import annotations

import itertools
import json

import polars as pl
import pytest

from synth_assets.pe.generators import CandidateAPI, mutation_rate, validate_candidates
from synth_assets.pe.llm import LLMCandidateAPI, LLMGenerationError


def _valid(tiny, frame: pl.DataFrame) -> bool:
    return sum(validate_candidates(tiny, frame).values()) == 0


def _chat_bodies(server) -> list[dict]:
    return [json.loads(e["body"]) for e in server.log() if e["path"] == "/v1/chat/completions"]


def test_random_and_variation_from_the_llm(tiny, server, make_settings) -> None:
    api = LLMCandidateAPI(tiny, make_settings())
    assert isinstance(api, CandidateAPI)
    pool = api.random(23, seed=7)
    assert pool.height == 23 and _valid(tiny, pool)
    assert pool.columns == [c.wide_name for c in tiny.spec.modelled_columns]
    assert server.stats()["chat"] == 5  # ceil(23 / 5)
    bodies = _chat_bodies(server)
    assert {b["response_format"]["type"] for b in bodies} == {"json_schema"}
    assert all(b["response_format"]["json_schema"]["strict"] for b in bodies)
    assert sorted(b["response_format"]["json_schema"]["schema"]["properties"]["records"]["minItems"] for b in bodies) == [3, 5, 5, 5, 5]
    assert len({b["seed"] for b in bodies}) == 5

    selected = pool.head(4)
    children = api.variation(selected, 3, iteration=1, iterations=4, seed=11)
    assert children.height == 12 and _valid(tiny, children)
    assert children.schema == pool.schema
    variation_bodies = _chat_bodies(server)[5:]
    assert len(variation_bodies) == 4  # 5 records per request // 3 per parent: one parent per request
    prompts = [b["messages"][1]["content"] for b in variation_bodies]
    for record in selected.to_dicts():  # each selected record is shown, as is, in exactly one request
        assert sum(f"1. {json.dumps(record, ensure_ascii=False)}" in p for p in prompts) == 1
    share = round(100 * mutation_rate(1, 4))
    assert all(f"about {share}% of its columns changed" in p for p in prompts)
    report = api.report
    assert report.calls == 2 and report.requests_sent == 9 and report.records_valid == 35
    assert report.rows_rejected == 0 and report.records_filled_offline == 0


def test_identical_requests_come_from_the_cache(tiny, server, make_settings) -> None:
    first = LLMCandidateAPI(tiny, make_settings()).random(20, seed=3)
    assert server.stats()["chat"] == 4
    again = LLMCandidateAPI(tiny, make_settings())  # a new process would see the same store
    second = again.random(20, seed=3)
    assert server.stats()["chat"] == 4
    assert second.equals(first)
    assert again.report.cache_hits == 4 and again.report.requests_sent == 0
    assert again.report.cached_tokens_in > 0 and again.report.tokens_in == 0
    again.random(20, seed=4)  # another seed: other requests
    assert server.stats()["chat"] == 8
    # another model is another request, even with the same prompt
    LLMCandidateAPI(tiny, make_settings(model="other-model")).random(20, seed=3)
    assert server.stats()["chat"] == 12


def test_rate_limits_honour_retry_after(tiny, server, make_settings) -> None:
    server.control(rate_limit={"count": 3, "retry_after": 0.3})
    api = LLMCandidateAPI(tiny, make_settings(concurrency=1))
    pool = api.random(10, seed=1)
    assert pool.height == 10
    assert api.report.retries == 3 and api.report.requests_sent == 2
    assert api.report.errors["http_429"] == 3
    log = [e for e in server.log() if e["path"] == "/v1/chat/completions"]
    assert [e["status"] for e in log] == [429, 429, 429, 200, 200]
    gaps = [later["t"] - earlier["t"] for earlier, later in itertools.pairwise(log[:4])]
    assert min(gaps) >= 0.3  # waited at least what Retry-After asked


def test_server_errors_and_timeouts_are_retried(tiny, server, make_settings) -> None:
    server.control(server_error={"count": 2, "status": 503})
    api = LLMCandidateAPI(tiny, make_settings(concurrency=1))
    assert api.random(10, seed=2).height == 10
    assert api.report.retries == 2 and api.report.errors["http_503"] == 2

    server.reset()
    server.control(slow={"count": 1, "delay": 1.0}, server_error={"count": 1, "status": 500})
    api = LLMCandidateAPI(tiny, make_settings(concurrency=1, timeout=0.4))
    assert api.random(10, seed=3).height == 10
    assert api.report.retries == 2
    assert api.report.errors["APITimeoutError"] == 1 and api.report.errors["http_500"] == 1


def test_a_request_that_keeps_failing_is_replaced(tiny, server, make_settings) -> None:
    server.control(server_error={"count": 2, "status": 500})
    api = LLMCandidateAPI(tiny, make_settings(concurrency=1, max_retries=1))
    pool = api.random(10, seed=4)
    assert pool.height == 10 and _valid(tiny, pool)
    report = api.report
    assert report.requests_failed == 1 and report.failed_responses["request_failed"] == 1
    assert report.requests_sent == 3  # 2 requests, then one more in the top-up round
    assert server.stats()["chat"] == 4


def test_the_endpoint_down_fails_the_call_and_a_rerun_resumes(tiny, server, make_settings) -> None:
    server.control(fail_always=500)
    failing = LLMCandidateAPI(tiny, make_settings(max_retries=1, max_topup_rounds=1))
    with pytest.raises(LLMGenerationError, match="re-run to resume"):
        failing.random(10, seed=5)
    # a failed call is accounted too (what it sent, retried and lost)
    assert failing.report.requests_sent == 2 and failing.report.retries == 2
    assert failing.report.requests_failed == 2 and failing.report.records_valid == 0
    server.control(fail_always=0)
    before = server.stats()["chat"]
    api = LLMCandidateAPI(tiny, make_settings())
    assert api.random(10, seed=5).height == 10
    assert server.stats()["chat"] - before == 2


def test_authentication_errors_stop_at_once(tiny, server, make_settings) -> None:
    server.control(fail_always=401)
    with pytest.raises(LLMGenerationError, match="answered 401"):
        LLMCandidateAPI(tiny, make_settings(concurrency=1)).random(30, seed=5)
    assert server.stats()["chat"] == 1  # no retries, no further requests


def test_malformed_json_is_counted_and_topped_up(tiny, server, make_settings) -> None:
    server.control(malformed={"count": 1})
    api = LLMCandidateAPI(tiny, make_settings(concurrency=1))
    pool = api.random(10, seed=6)
    assert pool.height == 10 and _valid(tiny, pool)
    assert dict(api.report.failed_responses) == {"malformed_json": 1}
    assert server.stats()["chat"] == 3  # 2 + 1 top-up request for the 5 lost records


def test_schema_violations_are_dropped_by_reason(tiny, server, make_settings) -> None:
    kinds = ["out_of_bounds", "unknown_category", "null_in_non_nullable", "non_integer", "not_a_number"]
    server.control(schema_violation={"count": 1, "kinds": kinds})
    api = LLMCandidateAPI(tiny, make_settings(concurrency=1))
    pool = api.random(10, seed=8)
    assert pool.height == 10 and _valid(tiny, pool)
    assert dict(api.report.rejected_rows) == dict.fromkeys(kinds, 1)
    assert api.report.records_valid == 10
    assert server.stats()["chat"] == 3
    metadata = api.report.to_metadata()
    assert metadata["llm_rows_rejected"] == 5
    assert "| row: out_of_bounds | 1 |" in metadata["llm_rejections"].value


def test_variation_rejections_and_bad_parents(tiny, server, make_settings) -> None:
    api = LLMCandidateAPI(tiny, make_settings(concurrency=1))
    selected = api.random(4, seed=1)
    server.control(schema_violation={"count": 1, "kinds": ["bad_parent", "wrong_columns"]})
    children = api.variation(selected, 2, iteration=1, iterations=2, seed=3)
    assert children.height == 8 and _valid(tiny, children)
    assert api.reports[-1][1].rejected_rows == {"bad_parent": 1, "wrong_columns": 1}


@pytest.mark.parametrize(
    ("rejected", "expected"), [(["json_schema"], "json_object"), (["json_schema", "json_object"], "prompt")]
)
def test_structured_output_falls_back(tiny, server, make_settings, rejected, expected) -> None:
    server.control(reject_formats=rejected)
    api = LLMCandidateAPI(tiny, make_settings())
    pool = api.random(10, seed=9)
    assert pool.height == 10 and _valid(tiny, pool)
    assert api.structured_output == expected and api.report.structured_output == expected
    statuses = [e["status"] for e in server.log() if e["path"] == "/v1/chat/completions"]
    assert statuses.count(200) == 2
    # in JSON / prompt mode the schema travels in the prompt, and the answer is validated the same way
    last = json.loads(server.log()[-1]["body"])
    assert "matches this JSON schema" in last["messages"][0]["content"]
    # the mode that worked is remembered: a new run does not probe again
    before = len(server.log())
    again = LLMCandidateAPI(tiny, make_settings())
    assert again.structured_output == expected
    again.random(10, seed=10)
    assert [e["status"] for e in server.log()[before:]] == [200, 200]


def test_a_fixed_mode_the_server_refuses_is_a_clear_error(tiny, server, make_settings) -> None:
    server.control(reject_formats=["json_schema"])
    with pytest.raises(LLMGenerationError, match="SYNTH_ASSETS_LLM_STRUCTURED_OUTPUT=auto"):
        LLMCandidateAPI(tiny, make_settings(structured_output="json_schema")).random(20, seed=1)
    assert server.stats()["chat"] <= 4  # the first refusal stops the others (concurrency 4)


def test_fixed_json_object_mode(tiny, server, make_settings) -> None:
    api = LLMCandidateAPI(tiny, make_settings(structured_output="json_object"))
    assert api.random(5, seed=1).height == 5
    assert json.loads(server.log()[-1]["body"])["response_format"] == {"type": "json_object"}


def test_cost_accounting(tiny, server, make_settings) -> None:
    api = LLMCandidateAPI(
        tiny, make_settings(prices={"input_per_million": 3.0, "output_per_million": 15.0})
    )
    api.random(10, seed=1)
    report = api.report
    assert report.tokens_in > 0 and report.tokens_out > 0
    assert report.estimated_cost_usd == pytest.approx((report.tokens_in * 3 + report.tokens_out * 15) / 1e6)
    again = LLMCandidateAPI(tiny, make_settings(prices={"input_per_million": 3.0, "output_per_million": 15.0}))
    again.random(10, seed=1)
    assert again.report.estimated_cost_usd == 0 and again.report.saved_cost_usd == pytest.approx(report.estimated_cost_usd)
    assert report.wall_seconds > 0


def test_cost_cap_refuses_before_sending(tiny, server, make_settings) -> None:
    settings = make_settings(prices={"input_per_million": 3.0, "output_per_million": 15.0}, max_cost_usd=0.001)
    with pytest.raises(LLMGenerationError, match="nothing was sent"):
        LLMCandidateAPI(tiny, settings).random(200, seed=1)
    assert server.stats()["chat"] == 0
    with pytest.raises(ValueError, match="price table"):
        LLMCandidateAPI(tiny, make_settings(max_cost_usd=1.0))


def test_shortfall_is_filled_offline_or_fails(tiny, server, make_settings) -> None:
    server.control(malformed={"count": 1})
    api = LLMCandidateAPI(tiny, make_settings(concurrency=1, max_topup_rounds=0, max_shortfall_fraction=0.5))
    pool = api.random(10, seed=12)
    assert pool.height == 10 and _valid(tiny, pool)
    assert api.report.records_filled_offline == 5 and api.report.records_valid == 5
    server.control(malformed={"count": 1})
    strict = LLMCandidateAPI(tiny, make_settings(concurrency=1, max_topup_rounds=0, fill_shortfall="error"))
    with pytest.raises(LLMGenerationError, match="5 of 10 records are missing"):
        strict.random(10, seed=13)


def test_selected_records_must_be_valid(tiny, server, make_settings) -> None:
    api = LLMCandidateAPI(tiny, make_settings())
    bad = api.random(2, seed=1).with_columns(pl.lit("zeta").alias("model"))
    with pytest.raises(ValueError, match="not valid candidates"):
        api.variation(bad, 1, iteration=1, iterations=2, seed=1)

"""The Batch API mode against the loopback server: upload, batches of at most batch_size requests,
polling, output and error files, failed batches, and resuming without re-sending."""

from __future__ import annotations

import json

import pytest

from synth_assets.pe.generators import validate_candidates
from synth_assets.pe.llm import (
    LLMCandidateAPI,
    LLMGenerationError,
    LLMRequest,
    ResultStore,
)
from synth_assets.pe.llm.client import BatchRunner
from synth_assets.pe.llm.report import GenerationReport


def _batch(make_settings, **overrides):
    return make_settings(**{"mode": "batch", "structured_output": "json_schema", "batch_size": 2, **overrides})


def test_batch_mode_matches_realtime(tiny, server, make_settings, tmp_path) -> None:
    api = LLMCandidateAPI(tiny, _batch(make_settings))
    pool = api.random(23, seed=7)
    assert pool.height == 23 and sum(validate_candidates(tiny, pool).values()) == 0
    stats = server.stats()
    assert stats["chat"] == 0 and stats["batch_lines"] == 5
    assert stats["batches_created"] == 3 and stats["files_uploaded"] == 3  # 5 requests, 2 per batch
    report = api.report
    assert (report.batches_created, report.requests_sent, report.retries) == (3, 5, 0)
    assert report.tokens_in > 0
    # the same requests in real time give the same records (same bodies, same answers)
    realtime = LLMCandidateAPI(
        tiny, make_settings(structured_output="json_schema", cache_dir=str(tmp_path / "other"))
    )
    assert realtime.random(23, seed=7).equals(pool)
    # and one store serves both modes
    again = LLMCandidateAPI(tiny, make_settings(structured_output="json_schema"))
    assert again.random(23, seed=7).equals(pool) and again.report.requests_sent == 0


def test_batch_price_discount(tiny, server, make_settings) -> None:
    prices = {"input_per_million": 2.0, "output_per_million": 8.0, "batch_factor": 0.5}
    api = LLMCandidateAPI(tiny, _batch(make_settings, prices=prices))
    api.random(10, seed=1)
    report = api.report
    assert report.estimated_cost_usd == pytest.approx(0.5 * (report.tokens_in * 2 + report.tokens_out * 8) / 1e6)


def test_requests_in_the_error_file_are_sent_again(tiny, server, make_settings) -> None:
    server.control(batch_errors={"count": 1, "every": 2})
    api = LLMCandidateAPI(tiny, _batch(make_settings, batch_size=10))
    pool = api.random(25, seed=3)
    assert pool.height == 25
    stats = server.stats()
    assert stats["batches_created"] == 2
    assert stats["batch_lines"] == 5 + 2  # lines 2 and 4 failed and were the only ones sent again
    assert api.report.retries == 2 and api.report.requests_sent == 5
    assert api.report.errors["batch_500"] == 2


def test_a_failed_batch_is_submitted_again(tiny, server, make_settings) -> None:
    server.control(batch_fail={"count": 1})
    api = LLMCandidateAPI(tiny, _batch(make_settings, batch_size=10))
    assert api.random(25, seed=4).height == 25
    stats = server.stats()
    assert stats["batches_created"] == 2 and stats["batch_lines"] == 5
    assert api.report.retries == 5 and api.report.errors["batch_failed"] == 5


def test_a_rerun_after_a_failed_batch_sends_only_what_is_missing(tiny, server, make_settings) -> None:
    server.control(batch_errors={"count": 1, "every": 2})
    settings = _batch(make_settings, batch_size=10, max_retries=0, max_topup_rounds=0, fill_shortfall="error")
    with pytest.raises(LLMGenerationError, match="re-run to resume"):
        LLMCandidateAPI(tiny, settings).random(25, seed=5)
    assert server.stats()["batch_lines"] == 5
    api = LLMCandidateAPI(tiny, settings)
    assert api.random(25, seed=5).height == 25
    assert server.stats()["batch_lines"] == 7
    assert api.report.cache_hits == 3 and api.report.requests_sent == 2


def test_batches_hold_at_most_batch_size_requests(tiny, server, make_settings) -> None:
    settings = make_settings(mode="batch")
    assert settings.batch_size == 800  # the default
    store = ResultStore(settings.cache_path() / "chunks")
    requests = [
        LLMRequest(f"r{i:05d}", {"model": "m", "messages": [{"role": "user", "content": str(i)}]}, "random", 1)
        for i in range(1700)
    ]
    outcome = BatchRunner(settings, store).execute(requests, GenerationReport())
    assert len(outcome.results) == 1700 and not outcome.failures
    created = [json.loads(line) for line in store.journal_path.read_text().splitlines()]
    sizes = [len(e["request_ids"]) for e in created if e["event"] == "created"]
    assert sizes == [800, 800, 100]
    uploads = [e for e in server.log() if e["path"] == "/v1/files"]
    assert [len(e["body"].splitlines()) for e in uploads] == [800, 800, 100]
    line = json.loads(uploads[0]["body"].splitlines()[0])
    assert line["method"] == "POST" and line["url"] == "/v1/chat/completions" and line["custom_id"] == "r00000"


def test_auto_mode_probes_in_real_time_before_a_batch(tiny, server, make_settings) -> None:
    server.control(reject_formats=["json_schema"])
    api = LLMCandidateAPI(tiny, make_settings(mode="batch", batch_size=10))
    assert api.random(25, seed=6).height == 25
    assert api.structured_output == "json_object"
    chat = [e["status"] for e in server.log() if e["path"] == "/v1/chat/completions"]
    assert chat == [400, 200]  # the probe, refused, then answered in JSON mode (its result is kept)
    upload = next(e for e in server.log() if e["path"] == "/v1/files")
    lines = [json.loads(line) for line in upload["body"].splitlines()]
    assert len(lines) == 4
    assert {json.dumps(line["body"]["response_format"]) for line in lines} == {'{"type": "json_object"}'}

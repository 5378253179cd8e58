"""A misconfigured or vanished endpoint fails fast and says why: the preflight
(``LLMCandidateAPI.check_endpoint``, run before any privacy budget is spent) against a dead port, a
silent socket, a wrong or missing key and an unknown model; and, during generation, the circuit breaker
that stops a run whose server went away, instead of retrying every request for many minutes and then
advising to fill the pool offline."""

from __future__ import annotations

import json
import pickle
import socket
import time

import httpx2
import openai
import pytest

from synth_assets.pe.llm import LLMCandidateAPI, LLMEndpointError, LLMGenerationError, ResultStore
from synth_assets.pe.llm.endpoint import ConnectionBreaker, connection_cause, scrub

KEY = "sk-test-key"  # the key of make_settings


def _assert_safe(message: str, *keys: str) -> None:
    """The message never shows a key, nor the masked form the server echoes."""
    for key in (KEY, *keys):
        assert key not in message
        assert "****" not in message


def _requests(server) -> list[dict]:
    return [e for e in server.log() if e["path"].startswith("/v1/")]


# ------------------------------------------------------------------------------------- preflight


def test_the_preflight_passes_a_working_endpoint_and_sends_no_record(tiny, server, make_settings) -> None:
    server.control(api_key=KEY, models=["test-model", "other-model"])
    api = LLMCandidateAPI(tiny, make_settings())
    api.check_endpoint()
    sent = _requests(server)
    assert [(e["method"], e["path"], e["status"]) for e in sent] == [("GET", "/v1/models", 200)]
    assert server.stats()["chat"] == 0 and len(api.store) == 0
    assert api.report.requests_sent == 0 and api.report.estimated_cost_usd == 0


def test_a_dead_port_is_a_connection_error_within_seconds(tiny, server, make_settings, dead_port) -> None:
    settings = make_settings(base_url=f"http://127.0.0.1:{dead_port}/v1")
    api = LLMCandidateAPI(tiny, settings)
    started = time.monotonic()
    with pytest.raises(LLMEndpointError) as caught:
        api.check_endpoint()
    assert time.monotonic() - started < 15
    message = str(caught.value)
    assert "connection" in message and settings.endpoint in message
    assert "SYNTH_ASSETS_LLM_BASE_URL" in message and "running" in message
    assert caught.value.reason == "connection" and caught.value.endpoint == settings.endpoint
    _assert_safe(message)


def test_a_server_that_never_answers_times_out_within_seconds(tiny, server, make_settings) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections are accepted by the kernel; nothing ever answers
        settings = make_settings(base_url=f"http://127.0.0.1:{silent.getsockname()[1]}/v1")
        started = time.monotonic()
        with pytest.raises(LLMEndpointError) as caught:
            LLMCandidateAPI(tiny, settings).check_endpoint()  # the default preflight timeout
        elapsed = time.monotonic() - started
    assert elapsed < 15
    message = str(caught.value)
    assert "connection" in message and "timed out" in message and settings.endpoint in message


def test_a_wrong_key_is_named(tiny, server, make_settings) -> None:
    server.control(api_key="sk-the-right-key")
    settings = make_settings()
    with pytest.raises(LLMEndpointError) as caught:
        LLMCandidateAPI(tiny, settings).check_endpoint()
    message = str(caught.value)
    assert "key" in message and "401" in message and settings.endpoint in message
    assert "SYNTH_ASSETS_LLM_API_KEY" in message and "OPENAI_API_KEY" in message
    assert caught.value.reason == "key"
    _assert_safe(message, "sk-the-right-key")
    assert server.stats()["chat"] == 0  # the models lookup told already

    with pytest.raises(LLMEndpointError, match="no API key is set") as caught:
        LLMCandidateAPI(tiny, make_settings(api_key=None)).check_endpoint()
    assert "SYNTH_ASSETS_LLM_API_KEY" in str(caught.value)


def test_an_unknown_model_lists_the_served_ones(tiny, server, make_settings) -> None:
    server.control(models=["alpha-7b", "beta-13b"])
    settings = make_settings()
    with pytest.raises(LLMEndpointError) as caught:
        LLMCandidateAPI(tiny, settings).check_endpoint()
    message = str(caught.value)
    assert "model" in message and "'test-model'" in message and settings.endpoint in message
    assert "SYNTH_ASSETS_LLM_MODEL" in message and "alpha-7b, beta-13b" in message
    assert caught.value.reason == "model"
    _assert_safe(message)
    # the name was not listed, so one minimal request asked whether it is served anyway: it is not
    chat = [json.loads(e["body"]) for e in _requests(server) if e["path"] == "/v1/chat/completions"]
    assert len(chat) == 1 and chat[0]["model"] == "test-model" and chat[0]["max_tokens"] == 1
    assert "records" not in json.dumps(chat[0]) and "response_format" not in chat[0]


def test_a_model_served_under_another_name_passes(tiny, server, make_settings) -> None:
    # llama-server lists its file name and serves any model name: the minimal request shows it
    api = LLMCandidateAPI(tiny, make_settings(model="qwen2.5-7b-instruct"))
    api.check_endpoint()
    assert [e["status"] for e in _requests(server)] == [200, 200]
    assert len(api.store) == 0


def test_a_server_without_a_models_list(tiny, server, make_settings) -> None:
    server.control(models_route=False, models=["served-model"])
    LLMCandidateAPI(tiny, make_settings(model="served-model")).check_endpoint()
    with pytest.raises(LLMEndpointError, match="does not serve model 'test-model'") as caught:
        LLMCandidateAPI(tiny, make_settings()).check_endpoint()
    assert "SYNTH_ASSETS_LLM_MODEL" in str(caught.value)


def test_a_slow_model_does_not_fail_the_preflight(tiny, server, make_settings) -> None:
    # the server answered the models lookup: a minimal request that is slow (a model loading) passes
    server.control(slow={"count": 1, "delay": 1.5})
    LLMCandidateAPI(tiny, make_settings(model="loading-model", preflight_timeout=0.5)).check_endpoint()


# ------------------------------------------------------------------------------------ generation


def test_generation_stops_soon_after_the_server_dies(tiny, own_server, make_settings) -> None:
    own_server.control(die_after=3)
    settings = make_settings(
        base_url=own_server.base_url,
        concurrency=2,
        max_retries=6,
        backoff_initial=1.0,  # the real backoff: without the breaker this call would retry for minutes
        backoff_max=60.0,
        connection_failure_window=2.0,
    )
    api = LLMCandidateAPI(tiny, settings)
    started = time.monotonic()
    with pytest.raises(LLMEndpointError) as caught:
        api.random(200, seed=1)
    elapsed = time.monotonic() - started
    assert elapsed < 10
    message = str(caught.value)
    assert "connection" in message and settings.endpoint in message and "re-run" in message
    assert "SHORTFALL" not in message and "offline" not in message
    _assert_safe(message)
    assert caught.value.reason == "connection"
    # what arrived is kept: the third answer may still be in flight when the breaker trips
    assert 2 <= len(ResultStore(settings.cache_path() / tiny.name)) <= 3
    assert api.report.errors["APIConnectionError"] >= 2 and api.report.records_filled_offline == 0


def test_connection_failures_are_never_filled_offline(tiny, server, make_settings, dead_port) -> None:
    settings = make_settings(
        base_url=f"http://127.0.0.1:{dead_port}/v1", max_retries=1, max_shortfall_fraction=1.0
    )
    api = LLMCandidateAPI(tiny, settings)
    with pytest.raises(LLMEndpointError) as caught:
        api.random(10, seed=1)
    message = str(caught.value)
    assert "connection" in message and settings.endpoint in message
    assert "SHORTFALL" not in message
    assert api.report.records_filled_offline == 0
    assert api.report.failed_responses["connection_failed"] == 2


def test_a_batch_run_against_a_dead_port_names_the_connection(tiny, server, make_settings, dead_port) -> None:
    settings = make_settings(
        base_url=f"http://127.0.0.1:{dead_port}/v1", mode="batch", structured_output="json_schema", max_retries=1
    )
    started = time.monotonic()
    with pytest.raises(LLMEndpointError, match="connection") as caught:
        LLMCandidateAPI(tiny, settings).random(10, seed=1)
    assert time.monotonic() - started < 15 and settings.endpoint in str(caught.value)


def test_a_wrong_key_during_generation_is_an_endpoint_error(tiny, server, make_settings) -> None:
    server.control(api_key="sk-the-right-key")
    with pytest.raises(LLMEndpointError, match="answered 401") as caught:
        LLMCandidateAPI(tiny, make_settings(concurrency=1)).random(30, seed=5)
    assert "SYNTH_ASSETS_LLM_API_KEY" in str(caught.value) and caught.value.reason == "key"
    _assert_safe(str(caught.value), "sk-the-right-key")
    assert server.stats()["chat"] == 1


def test_requests_failing_at_the_server_are_an_endpoint_error(tiny, server, make_settings) -> None:
    server.control(fail_always=503)
    settings = make_settings(max_retries=1, max_topup_rounds=0)
    with pytest.raises(LLMEndpointError, match="re-run to resume") as caught:
        LLMCandidateAPI(tiny, settings).random(10, seed=2)
    message = str(caught.value)
    assert "http_503" in message and settings.endpoint in message and "SHORTFALL" not in message


def test_a_genuine_shortfall_says_what_raising_the_share_would_do(tiny, server, make_settings) -> None:
    server.control(malformed={"count": 2})
    api = LLMCandidateAPI(tiny, make_settings(concurrency=1, max_topup_rounds=0))
    with pytest.raises(LLMGenerationError) as caught:
        api.random(10, seed=14)
    assert not isinstance(caught.value, LLMEndpointError)
    message = str(caught.value)
    assert "10 of 10 records are missing" in message and "malformed_json" in message
    assert "SYNTH_ASSETS_LLM_MAX_SHORTFALL" in message
    assert "replace" in message and "offline" in message


# --------------------------------------------------------------------------------- the pieces


def _failure(error_class, cause: BaseException) -> openai.APIConnectionError:
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    error = error_class(request=request)
    error.__cause__ = cause
    return error


def test_causes_in_plain_words(make_settings) -> None:
    settings = make_settings(timeout=30.0)
    refused = _failure(openai.APIConnectionError, httpx2.ConnectError("[Errno 111] Connection refused"))
    dns = _failure(openai.APIConnectionError, httpx2.ConnectError("[Errno -2] Name or service not known"))
    closed = _failure(openai.APIConnectionError, httpx2.RemoteProtocolError("Server disconnected"))
    connect = _failure(openai.APITimeoutError, httpx2.ConnectTimeout("timed out"))
    read = _failure(openai.APITimeoutError, httpx2.ReadTimeout("timed out"))
    assert connection_cause(refused, settings).startswith("connection refused")
    assert "host name could not be resolved" in connection_cause(dns, settings)
    assert "closed or reset" in connection_cause(closed, settings)
    assert connection_cause(connect, settings) == "the connection timed out (no connection within 10 s)"
    assert "connected, but no answer within 30 s" in connection_cause(read, settings)
    # key-like words are masked wherever a server message is shown
    assert scrub("Incorrect API key provided: sk-proj-****abcd. And sk-test-key", settings) == (
        "Incorrect API key provided: sk-***. And ***"
    )


def test_the_breaker_rule() -> None:
    now = [0.0]
    breaker = ConnectionBreaker(60.0, clock=lambda: now[0])
    assert breaker.remaining() is None
    assert not breaker.failure("connection refused")
    now[0] = 30.0
    assert not breaker.failure("connection refused") and breaker.remaining() == 30.0
    breaker.response()  # any HTTP answer (a 503 too) ends the streak
    now[0] = 80.0
    assert not breaker.failure("connection refused") and breaker.failures == 1
    now[0] = 139.0
    assert not breaker.failure("connection refused")
    now[0] = 140.0
    assert breaker.failure("connection refused") and breaker.failures == 3 and breaker.elapsed() == 60.0


def test_the_error_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(LLMEndpointError("down", endpoint="http://h/v1", reason="connection")))
    assert str(error) == "down" and error.endpoint == "http://h/v1" and error.reason == "connection"

"""A generation killed with SIGKILL mid-way resumes without sending again what was already answered:
in real time (the answered requests are in the Parquet store) and in batch mode (the open batches are
in the journal and are re-attached, not submitted again)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from synth_assets.pe.llm import LLMCandidateAPI, ResultStore

SCRIPT = Path(__file__).with_name("run_generation.py")


def _env(server, cache: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNTH_ASSETS_LLM_", "OPENAI_"))}
    env.update(
        SYNTH_ASSETS_LLM_MODEL="test-model",
        SYNTH_ASSETS_LLM_BASE_URL=server.base_url,
        SYNTH_ASSETS_LLM_API_KEY="sk-test-key",
        SYNTH_ASSETS_LLM_CACHE_DIR=str(cache),
        SYNTH_ASSETS_LLM_RECORDS_PER_REQUEST="5",
        SYNTH_ASSETS_LLM_STRUCTURED_OUTPUT="json_schema",
        **extra,
    )
    return env


def _wait(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _stored(cache: Path, dataset: str) -> int:
    store = ResultStore(cache / dataset)
    return len(store)


def _start(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_killed_realtime_generation_resumes_without_paying_twice(
    tiny, tiny_dataset_dir, server, make_settings, tmp_path
) -> None:
    cache = tmp_path / "cache"
    answered_before_kill = 5
    server.control(hang_after=answered_before_kill)
    process = _start(
        [str(tiny_dataset_dir), str(tmp_path / "out.parquet"), "random", "60", "42"],
        _env(server, cache, SYNTH_ASSETS_LLM_CONCURRENCY="3"),
    )
    try:
        _wait(lambda: server.stats()["hanging"] >= 1, "a request to hang")
        _wait(lambda: _stored(cache, tiny.name) == answered_before_kill, "the answered requests to be stored")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "out.parquet").exists()
    logged = process.stderr.read()
    assert "sending 12 requests to" in logged and "sk-test-key" not in logged  # logs never show the key
    first_run = server.log()
    answered = {e["body"] for e in first_run if e["status"] == 200}
    assert len(answered) == answered_before_kill
    server.control(hang_after=None)  # the endpoint works again

    sent_before = server.stats()["chat"]
    # the same settings as the killed process (same model, endpoint, cache)
    api = LLMCandidateAPI(tiny, make_settings(structured_output="json_schema", cache_dir=str(cache)))
    resumed = api.random(60, seed=42)
    rerun = server.log()[len(first_run):]
    assert server.stats()["chat"] - sent_before == 12 - answered_before_kill  # only the missing requests
    assert not answered & {e["body"] for e in rerun}  # none of the answered requests was sent again
    assert api.report.cache_hits == answered_before_kill and api.report.requests_sent == 7

    # the resumed result is the one an uninterrupted run gives
    clean = LLMCandidateAPI(tiny, make_settings(structured_output="json_schema", cache_dir=str(tmp_path / "clean")))
    assert clean.random(60, seed=42).equals(resumed)


def test_killed_batch_generation_reattaches_to_its_batches(
    tiny, tiny_dataset_dir, server, make_settings, tmp_path
) -> None:
    cache = tmp_path / "cache"
    server.control(batch_hold=True)
    out = tmp_path / "out.parquet"
    process = _start(
        [str(tiny_dataset_dir), str(out), "random", "40", "7"],
        _env(server, cache, SYNTH_ASSETS_LLM_MODE="batch", SYNTH_ASSETS_LLM_BATCH_SIZE="5"),
    )
    try:
        _wait(lambda: server.stats()["batches_created"] == 2, "two batches to be created")
        journal = cache / tiny.name / "batches.jsonl"
        _wait(lambda: journal.is_file() and len(journal.read_text().splitlines()) == 2, "the journal")
        _wait(lambda: server.stats()["batch_retrieves"] >= 4, "polling")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    assert server.stats()["batch_lines"] == 0  # nothing processed yet
    server.control(batch_hold=False)

    api = LLMCandidateAPI(tiny, make_settings(mode="batch", structured_output="json_schema", batch_size=5, cache_dir=str(cache)))
    pool = api.random(40, seed=7)
    assert pool.height == 40
    stats = server.stats()
    assert stats["batches_created"] == 2 and stats["files_uploaded"] == 2  # nothing submitted again
    assert stats["batch_lines"] == 8 and stats["chat"] == 0
    assert api.report.batches_resumed == 2 and api.report.batches_created == 0
    assert api.report.requests_sent == 0
    # a further run is served from the store alone
    again = LLMCandidateAPI(tiny, make_settings(mode="batch", structured_output="json_schema", cache_dir=str(cache)))
    assert again.random(40, seed=7).equals(pool)
    assert server.stats()["batch_retrieves"] == stats["batch_retrieves"]

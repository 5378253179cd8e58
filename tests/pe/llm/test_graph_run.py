"""`synth-assets run` with an OpenAI-compatible endpoint configured: the candidate pool comes from it,
and a run killed during generation sends, when run again, only the requests that had not completed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _environment(server, tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNTH_ASSETS_LLM_", "OPENAI_"))}
    env.update(
        SYNTH_ASSETS_WAREHOUSE=str(tmp_path / "warehouse"),
        SYNTH_ASSETS_LLM_MODEL="test-model",
        SYNTH_ASSETS_LLM_BASE_URL=server.base_url,
        SYNTH_ASSETS_LLM_API_KEY="sk-secret-test-key",
        SYNTH_ASSETS_LLM_RECORDS_PER_REQUEST="50",
        SYNTH_ASSETS_LLM_CONCURRENCY="2",
    )
    env.pop("DAGSTER_HOME", None)
    return env


def _command(dataset: Path) -> list[str]:
    # the candidate pool is what this test is about: the evaluation is tested on its own
    return [sys.executable, "-m", "synth_assets.cli", "run", "--dataset", str(dataset), "--epsilon", "1", "--json",
            "--no-evaluation"]


@pytest.mark.slow
def test_run_takes_its_pool_from_the_endpoint_and_resumes_after_a_kill(
    server, tiny_dataset_dir: Path, tmp_path: Path
) -> None:
    first = tmp_path / "first"
    completed = subprocess.run(
        _command(tiny_dataset_dir), env=_environment(server, first), capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr
    (summary,) = json.loads(completed.stdout)
    total = server.stats()["chat"]
    assert total == 40  # a pool of 2,000 candidates, 50 per request
    assert summary["n_synthetic"] > 0 and summary["epsilon_composed"] == pytest.approx(1.0, abs=1e-6)
    assert "sk-secret-test-key" not in completed.stdout + completed.stderr

    server.reset()
    second = tmp_path / "second"
    server.control(hang_after=15)
    process = subprocess.Popen(
        _command(tiny_dataset_dir), env=_environment(server, second),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while server.stats()["chat_ok"] < 15 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # let the client store what it received
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)
    answered = server.stats()["chat_ok"]
    assert answered == 15

    server.reset()
    rerun = subprocess.run(
        _command(tiny_dataset_dir), env=_environment(server, second), capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr
    assert server.stats()["chat"] == total - answered  # only what had not completed
    (summary,) = json.loads(rerun.stdout)
    assert summary["n_synthetic"] > 0

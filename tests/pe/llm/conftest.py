"""Fixtures of the LLM tests: the loopback OpenAI-protocol server (a subprocess), reset before every
test, and settings that point the LLM candidate API at it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from synth_assets.datasets.loading import Dataset, load_dataset
from synth_assets.pe.llm.settings import LLMSettings

SERVER = Path(__file__).with_name("openai_server.py")


class FakeOpenAI:
    """Handle on the test server: its base URL, failure modes and counters."""

    def __init__(self, port: int, process: subprocess.Popen):
        self.port = port
        self.process = process
        self.base_url = f"http://127.0.0.1:{port}/v1"

    def _call(self, method: str, path: str, payload=None):
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def reset(self) -> None:
        self._call("POST", "/_reset", {})

    def control(self, **modes) -> dict:
        return self._call("POST", "/_control", modes)

    def stats(self) -> dict:
        return self._call("GET", "/_stats")

    def log(self) -> list[dict]:
        return self._call("GET", "/_log")


@pytest.fixture(autouse=True)
def _no_llm_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own LLM settings or key never reach these tests."""
    for name in list(os.environ):
        if name.startswith(("SYNTH_ASSETS_LLM_", "OPENAI_")):
            monkeypatch.delenv(name)


def start_server() -> FakeOpenAI:
    process = subprocess.Popen(
        [sys.executable, str(SERVER)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    line = process.stdout.readline()
    if not line.startswith("PORT "):
        process.kill()
        raise RuntimeError(f"test server did not start: {line!r} {process.stderr.read()}")
    return FakeOpenAI(int(line.split()[1]), process)


def stop_server(server: FakeOpenAI) -> None:
    server.process.kill()
    server.process.wait(10)


@pytest.fixture(scope="session")
def openai_server():
    server = start_server()
    yield server
    stop_server(server)


@pytest.fixture
def own_server():
    """A server of this test alone, which the test may stop (the shared one must stay up)."""
    server = start_server()
    yield server
    stop_server(server)


@pytest.fixture
def dead_port() -> int:
    """A loopback port that was bound and closed again: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(openai_server: FakeOpenAI) -> FakeOpenAI:
    openai_server.reset()
    yield openai_server
    openai_server.reset()  # releases requests left hanging by a test


@pytest.fixture(scope="module")
def tiny(tiny_dataset_dir: Path) -> Dataset:
    return load_dataset(tiny_dataset_dir)


@pytest.fixture
def make_settings(server: FakeOpenAI, tmp_path: Path):
    """LLMSettings against the test server, fast backoff and polling, a per-test cache dir."""

    def make(**overrides) -> LLMSettings:
        fields = {
            "model": "test-model",
            "base_url": server.base_url,
            "api_key": "sk-test-key",
            "records_per_request": 5,
            "concurrency": 4,
            "max_retries": 3,
            "timeout": 5.0,
            "backoff_initial": 0.01,
            "backoff_max": 0.05,
            "batch_poll_seconds": 0.02,
            "cache_dir": str(tmp_path / "llm_cache"),
        }
        fields.update(overrides)
        return LLMSettings(**fields)

    return make

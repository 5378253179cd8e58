"""Sending requests: the real-time runner (``openai.AsyncOpenAI``, bounded concurrency, retries) and the
Batch API runner (JSONL upload, batches of at most ``batch_size`` requests, poll, download).

Both take requests that are NOT in the result store, store every completed one at once (so a crash
loses at most the requests in flight) and return what happened to each. They never log the key.

Retries (real-time): 429, 408/409, every 5xx, timeouts and connection errors are retried up to
``max_retries`` times. The delay honours the server's ``retry-after-ms`` / ``Retry-After`` header
(capped at ``retry_after_max``) plus a little jitter; without one it is exponential backoff with jitter:
``d = min(backoff_max, backoff_initial * 2**attempt)``, waiting ``d/2 + uniform(0, d/2)``.
Connection-level failures also feed the circuit breaker (synth_assets.pe.llm.endpoint): when they have
gone on for ``connection_failure_window`` seconds with no answer from the endpoint in between, the run
stops with ``LLMEndpointError``; backoffs are capped so that a retry happens when that window ends, and
waiting requests stop at once. A 401/403/404 stops the run at once (``LLMEndpointError``, the key or the
model). Connections time out after ``connect_timeout`` seconds, answers after ``timeout``.
Retries (batch): requests in the error file, or in a batch that failed, expired or was cancelled, are
submitted again in a new batch, up to ``max_retries`` times; results in a partial output file are kept.
A 400/422 whose message says the structured-output ``response_format`` is unsupported is reported as
``format_unsupported`` so that the caller can fall back to JSON mode or a plain prompt.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import hashlib
import json
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import openai

from synth_assets.pe.llm.endpoint import (
    ConnectionBreaker,
    LLMEndpointError,
    LLMGenerationError,
    connection_cause,
    connection_error,
    http_timeout,
    status_error,
)
from synth_assets.pe.llm.endpoint import error_message as _message
from synth_assets.pe.llm.report import GenerationReport
from synth_assets.pe.llm.settings import LLMSettings
from synth_assets.pe.llm.store import ResultStore, StoredResult

__all__ = [
    "BatchRunner",
    "LLMEndpointError",
    "LLMGenerationError",
    "LLMRequest",
    "Outcome",
    "RealtimeRunner",
    "chunked",
    "request_id",
]

TERMINAL = ("completed", "failed", "expired", "cancelled")
_FORMAT_WORDS = ("response_format", "json_schema", "structured output", "json_object", "response format")


@dataclass(frozen=True)
class LLMRequest:
    """One chat-completions request. ``request_id`` is the hash of the endpoint and the whole body
    (model, messages, seed, response_format with its schema, temperature, token cap)."""

    request_id: str
    body: dict
    kind: str
    records: int


def request_id(endpoint: str, body: dict) -> str:
    canonical = json.dumps({"endpoint": endpoint, "body": body}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:40]


@dataclass
class Outcome:
    results: dict[str, StoredResult] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def format_unsupported(self) -> bool:
        return "format_unsupported" in self.failures.values()


def chunked(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def is_format_unsupported(status: int | None, message: str) -> bool:
    text = (message or "").lower()
    return status in (400, 422) and any(word in text for word in _FORMAT_WORDS)


def retry_after_seconds(headers) -> float | None:
    """Seconds the server asks us to wait (``retry-after-ms``, then ``Retry-After`` in seconds or as an
    HTTP date), or None."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(float(value) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def backoff_delay(settings: LLMSettings, attempt: int, retry_after: float | None, rng: random.Random) -> float:
    if retry_after is not None:
        wait = min(retry_after, settings.retry_after_max)
        return wait + rng.uniform(0, 0.1 * wait + 0.01)
    cap = min(settings.backoff_max, settings.backoff_initial * (2**attempt))
    return cap / 2 + rng.uniform(0, cap / 2)


def stored_result(
    rid: str, completion: dict, *, mode: str, kind: str | None, batch_id: str | None = None
) -> StoredResult:
    """A store row from a chat completion (as a dict)."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] or {}
    message = choice.get("message") or {}
    usage = completion.get("usage") or {}
    return StoredResult(
        request_id=rid,
        response_text=message.get("content"),
        refusal=message.get("refusal"),
        finish_reason=choice.get("finish_reason"),
        input_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0),
        model=completion.get("model"),
        mode=mode,
        batch_id=batch_id,
        kind=kind,
        created_at=time.time(),
    )


def _account(report: GenerationReport, settings: LLMSettings, result: StoredResult, *, batch: bool) -> None:
    report.tokens_in += result.input_tokens
    report.tokens_out += result.output_tokens
    report.estimated_cost_usd += settings.prices.cost(result.input_tokens, result.output_tokens, batch=batch)


def run_sync(coroutine):
    """Run a coroutine from synchronous code, also when an event loop is already running here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


# ------------------------------------------------------------------------------------- real time


class RealtimeRunner:
    """Async requests with bounded concurrency, retries and immediate checkpointing."""

    def __init__(
        self,
        settings: LLMSettings,
        store: ResultStore,
        *,
        log: Callable[[str], None] | None = None,
        breaker: ConnectionBreaker | None = None,
    ):
        self.settings = settings
        self.store = store
        self.log = log or (lambda message: None)
        self.rng = random.Random()
        self.spent_before = 0.0  # estimated cost of earlier calls, for the cost cap
        # shared by the calls of one LLMCandidateAPI: a streak of connection failures spans calls
        self.breaker = breaker or ConnectionBreaker(settings.connection_failure_window)

    def execute(self, requests: list[LLMRequest], report: GenerationReport) -> Outcome:
        return run_sync(self._execute(requests, report))

    async def _execute(self, requests: list[LLMRequest], report: GenerationReport) -> Outcome:
        outcome = Outcome()
        state: dict = {"stop": None, "fatal": None, "stopped": asyncio.Event()}
        semaphore = asyncio.Semaphore(self.settings.concurrency)
        client = openai.AsyncOpenAI(
            api_key=self.settings.key(),
            base_url=self.settings.base_url,
            timeout=http_timeout(self.settings),
            max_retries=0,  # retries are ours: counted, with Retry-After and jitter
        )
        async with client:
            await asyncio.gather(
                *(self._one(client, semaphore, request, report, outcome, state) for request in requests)
            )
        if state["fatal"]:
            raise state["fatal"]
        return outcome

    def _fatal(self, state: dict, error: LLMGenerationError) -> None:
        """Stop the run: requests not sent yet are not sent, waiting ones stop waiting."""
        if state["fatal"] is None:
            state["fatal"] = error
        state["stopped"].set()

    async def _wait(self, delay: float, state: dict) -> bool:
        """Sleep ``delay`` seconds, or less when the run stops; True when it stopped."""
        try:
            await asyncio.wait_for(state["stopped"].wait(), delay)
        except TimeoutError:
            pass
        return state["fatal"] is not None

    async def _one(self, client, semaphore, request: LLMRequest, report, outcome: Outcome, state: dict) -> None:
        settings = self.settings
        async with semaphore:
            if state["stop"] or state["fatal"]:
                outcome.failures[request.request_id] = state["stop"] or "aborted"
                return
            spent = self.spent_before + report.estimated_cost_usd
            if settings.max_cost_usd is not None and spent >= settings.max_cost_usd:
                state["stop"] = "budget_exceeded"
                outcome.failures[request.request_id] = "budget_exceeded"
                return
            attempt = 0
            report.requests_sent += 1
            while True:
                connection = False
                try:
                    completion = await client.chat.completions.create(**request.body)
                except (openai.APITimeoutError, openai.APIConnectionError) as error:
                    kind, headers, status, connection = type(error).__name__, None, None, True
                    if self.breaker.failure(connection_cause(error, settings)):
                        report.errors[kind] += 1
                        outcome.failures[request.request_id] = "connection_failed"
                        self._fatal(state, connection_error(
                            settings, self.breaker.cause, failures=self.breaker.failures,
                            seconds=self.breaker.elapsed(), stored=len(self.store),
                        ))
                        return
                except openai.APIStatusError as error:
                    self.breaker.response()
                    status = error.status_code
                    kind, headers = f"http_{status}", error.response.headers
                    message = _message(error)
                    if is_format_unsupported(status, message):
                        state["stop"] = "format_unsupported"
                        outcome.failures[request.request_id] = "format_unsupported"
                        self.log(f"endpoint refused the response_format ({status}): {message[:200]}")
                        return
                    if status in (401, 403, 404):
                        self._fatal(state, status_error(
                            settings, status, message,
                            tail=" Results so far are stored and a re-run resumes.",
                        ))
                        outcome.failures[request.request_id] = kind
                        return
                    if status not in (408, 409, 429) and status < 500:
                        report.errors[kind] += 1
                        outcome.failures[request.request_id] = "request_failed"
                        self.log(f"request {request.request_id[:12]} refused ({status}): {message[:200]}")
                        return
                else:
                    self.breaker.response()
                    result = stored_result(
                        request.request_id, completion.model_dump(), mode="realtime", kind=request.kind
                    )
                    self.store.put([result])
                    _account(report, settings, result, batch=False)
                    outcome.results[request.request_id] = result
                    return
                report.errors[kind] += 1
                if attempt >= settings.max_retries:
                    outcome.failures[request.request_id] = "connection_failed" if connection else "request_failed"
                    self.log(f"request {request.request_id[:12]} failed after {attempt + 1} attempts ({kind})")
                    return
                delay = backoff_delay(settings, attempt, retry_after_seconds(headers), self.rng)
                remaining = self.breaker.remaining() if connection else None
                if remaining is not None:  # retry when the breaker's window ends, at the latest
                    delay = min(delay, remaining + self.rng.uniform(0.01, 0.1))
                attempt += 1
                report.retries += 1
                if await self._wait(delay, state):
                    outcome.failures[request.request_id] = "aborted"
                    return


# ----------------------------------------------------------------------------------------- batch


class BatchRunner:
    """The Batch API: upload JSONL, create batches, poll, download output and error files.

    Every batch is written to the store's journal as soon as it is created; a re-run re-attaches to open
    batches that hold requests it needs instead of submitting them again.
    """

    endpoint_path = "/v1/chat/completions"

    def __init__(
        self,
        settings: LLMSettings,
        store: ResultStore,
        *,
        log: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.settings = settings
        self.store = store
        self.log = log or (lambda message: None)
        self.sleep = sleep

    def _client(self) -> openai.OpenAI:
        return openai.OpenAI(
            api_key=self.settings.key(),
            base_url=self.settings.base_url,
            timeout=http_timeout(self.settings),
            max_retries=self.settings.max_retries,  # control-plane calls (upload, create, poll)
        )

    def execute(self, requests: list[LLMRequest], report: GenerationReport) -> Outcome:
        """Run the requests; an endpoint that cannot be reached, or refuses the key, is an
        ``LLMEndpointError`` (the control-plane calls have already been retried by the client)."""
        try:
            return self._execute(requests, report)
        except openai.APIConnectionError as error:
            raise connection_error(
                self.settings, connection_cause(error, self.settings), failures=self.settings.max_retries + 1,
                stored=len(self.store),
            ) from error
        except openai.APIStatusError as error:
            status_failure = status_error(
                self.settings, error.status_code, _message(error),
                tail=" Open batches are in the journal and a re-run re-attaches to them.",
            ) if error.status_code in (401, 403) else None
            if status_failure is None:
                raise
            raise status_failure from None

    def _execute(self, requests: list[LLMRequest], report: GenerationReport) -> Outcome:
        settings = self.settings
        outcome = Outcome()
        pending = {r.request_id: r for r in requests}
        if not pending:
            return outcome
        submissions: dict[str, int] = {}
        active: dict[str, set[str]] = {}
        for batch_id, entry in self.store.open_batches().items():
            ids = set(entry.get("request_ids", ()))
            if ids & pending.keys():
                active[batch_id] = ids
                for rid in ids & pending.keys():
                    submissions[rid] = 1
                report.batches_resumed += 1
                self.log(f"re-attaching to batch {batch_id} ({len(ids)} requests) from an earlier run")
        with self._client() as client:
            started = time.monotonic()
            while True:
                covered = set().union(*active.values()) if active else set()
                todo = [
                    r for rid, r in pending.items()
                    if rid not in covered and rid not in outcome.results and rid not in outcome.failures
                ]
                for chunk in chunked(todo, settings.batch_size):
                    batch_id = self._submit(client, chunk)
                    active[batch_id] = {r.request_id for r in chunk}
                    report.batches_created += 1
                    for request in chunk:
                        if submissions.get(request.request_id, 0):
                            report.retries += 1
                        else:
                            report.requests_sent += 1
                        submissions[request.request_id] = submissions.get(request.request_id, 0) + 1
                if not active:
                    break
                finished = self._poll(client, active, started)
                for batch in finished:
                    ids = active.pop(batch.id)
                    kinds = {rid: pending[rid].kind for rid in ids & pending.keys()}
                    results, errors = self._collect(client, batch, ids, report, kinds)
                    self.store.journal("collected", batch_id=batch.id, status=batch.status)
                    self.log(
                        f"batch {batch.id} {batch.status}: {len(results)} results, {len(errors)} failed requests"
                    )
                    for rid in ids & pending.keys():
                        if rid in results:
                            outcome.results[rid] = results[rid]
                            continue
                        status, message = errors.get(rid, (None, f"batch {batch.status}"))
                        report.errors[f"batch_{status}" if status else f"batch_{batch.status}"] += 1
                        if is_format_unsupported(status, message):
                            outcome.failures[rid] = "format_unsupported"
                        elif status in (401, 403, 404) or (
                            status is not None and status < 500 and status not in (408, 409, 429)
                        ) or submissions.get(rid, 1) > settings.max_retries:
                            outcome.failures[rid] = "request_failed"
                        # else: not covered any more, submitted again on the next loop
        return outcome

    def _submit(self, client: openai.OpenAI, chunk: list[LLMRequest]) -> str:
        lines = [
            json.dumps(
                {"custom_id": r.request_id, "method": "POST", "url": self.endpoint_path, "body": r.body},
                ensure_ascii=False,
                separators=(",", ":"),
            )
            for r in chunk
        ]
        data = ("\n".join(lines) + "\n").encode("utf-8")
        uploaded = client.files.create(file=("synth_assets_batch.jsonl", data, "application/jsonl"), purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id,
            endpoint=self.endpoint_path,
            completion_window="24h",
            metadata={"source": "synth_assets"},
        )
        self.store.journal(
            "created",
            batch_id=batch.id,
            input_file_id=uploaded.id,
            request_ids=[r.request_id for r in chunk],
        )
        self.log(f"created batch {batch.id} with {len(chunk)} requests")
        return batch.id

    def _poll(self, client: openai.OpenAI, active: dict[str, set[str]], started: float) -> list:
        while True:
            finished = []
            for batch_id in list(active):
                batch = client.batches.retrieve(batch_id)
                if batch.status in TERMINAL:
                    finished.append(batch)
            if finished:
                return finished
            if time.monotonic() - started > self.settings.batch_max_wait_seconds:
                raise LLMGenerationError(
                    f"batches {sorted(active)} are still running after "
                    f"{self.settings.batch_max_wait_seconds:.0f} s; re-run later to collect them (nothing is "
                    "submitted again)"
                )
            self.sleep(self.settings.batch_poll_seconds)

    def _collect(
        self, client: openai.OpenAI, batch, ids: set[str], report: GenerationReport, kinds: dict[str, str]
    ) -> tuple[dict[str, StoredResult], dict[str, tuple[int | None, str]]]:
        results: dict[str, StoredResult] = {}
        errors: dict[str, tuple[int | None, str]] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            text = client.files.content(file_id).text
            for line in text.splitlines():
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                rid = entry.get("custom_id")
                if rid not in ids:
                    continue
                response = entry.get("response") or {}
                status = response.get("status_code")
                body = response.get("body")
                if isinstance(body, str):
                    try:
                        body = json.loads(body)
                    except json.JSONDecodeError:
                        body = {"error": {"message": body}}
                if status == 200 and not entry.get("error") and isinstance(body, dict) and body.get("choices"):
                    results[rid] = stored_result(rid, body, mode="batch", kind=kinds.get(rid), batch_id=batch.id)
                else:
                    message = ""
                    if isinstance(body, dict):
                        inner = body.get("error")
                        message = inner.get("message", "") if isinstance(inner, dict) else str(inner or "")
                    if entry.get("error"):
                        message = message or str((entry["error"] or {}).get("message", ""))
                    errors[rid] = (status, message)
        if batch.status != "completed" and batch.errors is not None:
            details = "; ".join(f"{e.code}: {e.message}" for e in (batch.errors.data or [])[:3])
            self.log(f"batch {batch.id} {batch.status}: {details[:300]}")
        stored = list(results.values())
        self.store.put(stored)
        for result in stored:
            _account(report, self.settings, result, batch=True)
        return results, errors

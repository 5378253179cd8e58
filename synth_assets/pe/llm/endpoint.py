"""The endpoint itself: the preflight that finds a misconfigured endpoint before anything is spent, the
circuit breaker that stops a run whose endpoint stopped answering, and the errors that say which
endpoint failed, why, and what to do about it.

Preflight (:func:`check_endpoint`, ``LLMCandidateAPI.check_endpoint()``), with a short timeout
(``preflight_timeout``, 5 s) and two attempts per request, so that even a dead or silent endpoint fails
within about 11 s:

1. ``GET {base}/models``. No answer at all: ``LLMEndpointError`` (reason ``connection``). 401: the key
   (reason ``key``). The model listed: done, nothing else is sent.
2. Otherwise (the model is not listed, or there is no list: 404, 403 for a key without the models
   scope, an empty list) one minimal chat request: the configured model, the words "Reply with OK.",
   one output token. It holds no record and nothing from the dataset. 401/403: the key. 404, or a
   400/422 that says the model does not exist: the model (reason ``model``), with the models the server
   listed. Answered: the model is served under that name (llama-server serves any name). If the server
   answered step 1 but is slow to answer this request (a model loading), the preflight passes.

Circuit breaker (:class:`ConnectionBreaker`), during generation: a connection-level failure (refused,
reset, closed, DNS, TLS, timeout) starts a clock; any HTTP response from the endpoint (even a 429 or a
5xx) stops it. When connection failures have gone on for ``connection_failure_window`` seconds (60)
with no response in between, the run stops with ``LLMEndpointError``. Retries are scheduled so that one
happens at the end of that window, so a dead server stops the run after about a minute.

No message holds the API key: server messages are shown with anything that looks like a key masked.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import openai

from synth_assets.pe.llm.settings import LLMSettings

__all__ = [
    "ConnectionBreaker",
    "LLMEndpointError",
    "LLMGenerationError",
    "check_endpoint",
    "connection_cause",
    "connection_error",
    "error_message",
    "http_timeout",
    "status_error",
]

PREFLIGHT_ATTEMPTS = 2
PREFLIGHT_PAUSE = 0.5  # seconds between the two attempts
MODELS_SHOWN = 20
KEY_VARIABLES = "SYNTH_ASSETS_LLM_API_KEY or OPENAI_API_KEY"
_KEY_LIKE = re.compile(r"\bsk-[\w*.\-]*[\w*]")
_UNKNOWN_MODEL = re.compile(r"model.*(not (be )?found|does not exist|doesn't exist|unknown|no such|invalid)|"
                            r"(unknown|invalid|no such) model", re.IGNORECASE | re.DOTALL)


class LLMGenerationError(RuntimeError):
    """Generation cannot go on (authentication, budget, too many failures). Results so far are stored:
    a re-run resumes from them."""


class LLMEndpointError(LLMGenerationError):
    """The endpoint cannot be used as configured: it cannot be reached (``reason`` ``connection``),
    refuses the key (``key``), does not serve the model (``model``), or failed the requests after every
    retry (``server``). The message names the endpoint (never the key), the cause and the fix."""

    def __init__(self, message: str, *, endpoint: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.reason = reason

    def __reduce__(self):
        return (type(self), (str(self),), {"endpoint": self.endpoint, "reason": self.reason})


def http_timeout(settings: LLMSettings) -> openai.Timeout:
    """Timeouts of generation requests: ``timeout`` to answer, at most ``connect_timeout`` to connect
    (so that an endpoint that drops packets fails in seconds, not in ``timeout``)."""
    return openai.Timeout(settings.timeout, connect=min(settings.connect_timeout, settings.timeout))


def scrub(text: str, settings: LLMSettings) -> str:
    """``text`` without the key, without credentials of the base URL, and with key-like words masked
    (OpenAI echoes a masked key in its 401 message)."""
    if settings.api_key is not None:
        text = text.replace(settings.key(), "***")
    text = text.replace(settings.base_url, settings.endpoint)
    return _KEY_LIKE.sub("sk-***", text)


def error_message(error: Exception) -> str:
    """The server's message of an API error (the ``error.message`` of its JSON body when there is one)."""
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return str(getattr(error, "message", "") or error)


# ---------------------------------------------------------------------------------------- causes


def _chain(error: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def connection_cause(error: BaseException, settings: LLMSettings, timeout: float | None = None) -> str:
    """A connection-level failure in plain words."""
    chain = _chain(error)
    names = {type(e).__name__ for e in chain}
    text = " | ".join(str(e) for e in chain).lower()
    if isinstance(error, openai.APITimeoutError):
        if "ConnectTimeout" in names:
            limit = timeout or min(settings.connect_timeout, settings.timeout)
            return f"the connection timed out (no connection within {limit:g} s)"
        return f"the connection timed out (connected, but no answer within {timeout or settings.timeout:g} s)"
    if isinstance(error, ConnectionRefusedError) or "connection refused" in text or "errno 111" in text:
        return "connection refused (nothing listens at that address and port)"
    if any(word in text for word in ("name or service not known", "nodename nor servname", "name resolution",
                                     "getaddrinfo", "no address associated")):
        return "connection failed: the host name could not be resolved (DNS)"
    if "ssl" in text or "certificate" in text or "SSLError" in names:
        return "connection failed: TLS handshake failed (" + scrub(str(chain[-1]), settings)[:200] + ")"
    if "RemoteProtocolError" in names or "ConnectionResetError" in names or "disconnected" in text or "reset" in text:
        return "connection closed or reset by the server without an answer"
    detail = next((str(e) for e in reversed(chain) if str(e)), type(chain[-1]).__name__)
    return "connection failed: " + scrub(detail, settings)[:200]


def connection_error(
    settings: LLMSettings,
    cause: str,
    *,
    preflight: bool = False,
    failures: int = 1,
    seconds: float = 0.0,
    stored: int = 0,
    what: str = "",
) -> LLMEndpointError:
    """The endpoint could not be reached: in the preflight, during generation (the breaker), or as the
    reason of a shortfall (``what`` says what is missing)."""
    endpoint = settings.endpoint
    fix = (
        "Check SYNTH_ASSETS_LLM_BASE_URL (or OPENAI_BASE_URL) and that the server is running and reachable "
        "from this machine"
    )
    if "no answer within" in cause:
        fix += (
            f"; if it is only slow, raise SYNTH_ASSETS_LLM_TIMEOUT (now {settings.timeout:g} s) or lower "
            f"SYNTH_ASSETS_LLM_CONCURRENCY (now {settings.concurrency})"
        )
    if preflight:
        message = f"cannot open a connection to the LLM endpoint {endpoint}: {cause}. {fix}. Nothing was generated."
    else:
        resume = f"{stored} answers are stored: a re-run resumes without sending them again."
        if what:
            message = (
                f"{what} because requests could not reach the LLM endpoint {endpoint}: {failures} requests "
                f"failed on the connection after every retry (last: {cause}). {fix}. {resume} Records "
                "missing because of the connection are never filled offline."
            )
        else:
            silence = f" and no answer for {seconds:.0f} s" if seconds else ""
            message = (
                f"lost the connection to the LLM endpoint {endpoint}: {failures} connection failures{silence} "
                f"(last: {cause}). {fix}. {resume}"
            )
    return LLMEndpointError(message, endpoint=endpoint, reason="connection")


def _listing(models: list[str] | None) -> str:
    if not models:
        return "the models the server serves (it does not list them here: see its documentation or its log)"
    shown = ", ".join(models[:MODELS_SHOWN])
    more = f" and {len(models) - MODELS_SHOWN} more" if len(models) > MODELS_SHOWN else ""
    return f"the server's models: {shown}{more}"


def status_error(
    settings: LLMSettings, status: int, message: str, *, models: list[str] | None = None, tail: str = ""
) -> LLMEndpointError | None:
    """The error of a 401/403 (the key) or a 404 (the model), or None for other statuses."""
    endpoint, model = settings.endpoint, settings.model
    said = scrub(message or "", settings)[:300]
    head = f"{endpoint} answered {status} for model {model!r}" + (f" ({said})" if said else "")
    if status in (401, 403):
        if settings.api_key is None:
            cause = f"no API key is set. Set {KEY_VARIABLES} to the endpoint's key"
        elif status == 401:
            cause = f"the API key was refused. Set {KEY_VARIABLES} to a valid key for this endpoint"
        else:
            cause = (
                f"the API key was refused or has no access to model {model!r}. Set {KEY_VARIABLES} to a key "
                "with access to it, or choose another model (SYNTH_ASSETS_LLM_MODEL)"
            )
        return LLMEndpointError(f"{head}: {cause}.{tail}", endpoint=endpoint, reason="key")
    if status in (400, 404, 422):
        return LLMEndpointError(
            f"{head}: the endpoint does not serve model {model!r} (or has no chat completions at "
            f"{endpoint}/chat/completions). Check SYNTH_ASSETS_LLM_MODEL against {_listing(models)}; "
            f"and that SYNTH_ASSETS_LLM_BASE_URL is the OpenAI-compatible base URL, usually ending in /v1.{tail}",
            endpoint=endpoint,
            reason="model",
        )
    return None


# --------------------------------------------------------------------------------------- breaker


class ConnectionBreaker:
    """Stops a run whose endpoint stopped answering (see the module docstring).

    ``failure()`` after each connection-level failure returns True when the breaker trips;
    ``response()`` after any HTTP response; ``remaining()`` is how long the current streak may still go
    on (None without a streak): the runner caps its backoff to it, so that a retry happens when the
    window ends.
    """

    def __init__(self, window: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.clock = clock
        self.since: float | None = None
        self.failures = 0
        self.cause = ""

    def response(self) -> None:
        self.since = None
        self.failures = 0

    def failure(self, cause: str) -> bool:
        now = self.clock()
        if self.since is None:
            self.since = now
        self.failures += 1
        self.cause = cause
        return now - self.since >= self.window

    def elapsed(self) -> float:
        return 0.0 if self.since is None else self.clock() - self.since

    def remaining(self) -> float | None:
        return None if self.since is None else max(self.since + self.window - self.clock(), 0.0)


# ------------------------------------------------------------------------------------- preflight


def _attempt(call: Callable):
    """``call()``, tried again once after a short pause when the connection fails."""
    for attempt in range(PREFLIGHT_ATTEMPTS):
        try:
            return call()
        except openai.APIConnectionError:
            if attempt + 1 == PREFLIGHT_ATTEMPTS:
                raise
            time.sleep(PREFLIGHT_PAUSE)
    raise AssertionError("unreachable")


def _listed_models(client: openai.OpenAI, settings: LLMSettings, log) -> list[str] | None:
    """The models the endpoint lists; None when it has no list (the caller then asks once)."""
    try:
        page = _attempt(client.models.list)
    except openai.APIConnectionError as error:
        cause = connection_cause(error, settings, settings.preflight_timeout)
        raise connection_error(settings, cause, preflight=True) from error
    except openai.APIStatusError as error:
        if error.status_code == 401:
            raise status_error(settings, 401, error_message(error)) from None
        log(f"{settings.endpoint} did not list its models ({error.status_code}): checking the model with one minimal request")
        return None
    except openai.APIError:
        log(f"{settings.endpoint} answered GET /models with something else than a model list")
        return None
    names = [getattr(entry, "id", None) for entry in (getattr(page, "data", None) or [])]
    return [name for name in names if isinstance(name, str)] or None


def check_endpoint(settings: LLMSettings, *, log: Callable[[str], None] | None = None) -> None:
    """Raise :class:`LLMEndpointError` when the endpoint cannot be reached, refuses the key or does not
    serve the model (see the module docstring). Sends no record and nothing from the dataset."""
    log = log or (lambda message: None)
    client = openai.OpenAI(
        api_key=settings.key(),
        base_url=settings.base_url,
        timeout=openai.Timeout(settings.preflight_timeout),
        max_retries=0,  # ours: two quick attempts
    )
    with client:
        models = _listed_models(client, settings, log)
        if models and settings.model in models:
            log(f"{settings.endpoint} serves model {settings.model!r}")
            return
        body = {
            "model": settings.model,
            "messages": [{"role": "user", "content": "Reply with OK."}],
            "max_completion_tokens" if settings.is_openai else "max_tokens": 1,
        }
        try:
            _attempt(lambda: client.chat.completions.create(**body))
        except openai.APITimeoutError:
            # the server answered GET /models: a slow answer here is a busy server or a model loading
            log(
                f"{settings.endpoint} did not answer a minimal request within {settings.preflight_timeout:g} s; "
                "the model is checked by the first generation request"
            )
            return
        except openai.APIConnectionError as error:
            cause = connection_cause(error, settings, settings.preflight_timeout)
            raise connection_error(settings, cause, preflight=True) from error
        except openai.APIStatusError as error:
            status, message = error.status_code, error_message(error)
            if status in (401, 403, 404) or (status in (400, 422) and _UNKNOWN_MODEL.search(message or "")):
                raise status_error(settings, status, message, models=models) from None
            log(f"{settings.endpoint} answered {status} to a minimal request: {scrub(message, settings)[:200]}")
            return
        log(f"{settings.endpoint} serves model {settings.model!r} (not in its model list, but it answers)")

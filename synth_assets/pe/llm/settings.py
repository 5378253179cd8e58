"""Settings of the LLM candidate API: endpoint, model, key and limits, from the environment or the
Dagster resource (synth_assets.pe.llm.resource).

The API key is held as a :class:`pydantic.SecretStr`: it is sent to the endpoint in the
``Authorization`` header and nowhere else (never logged, never in asset metadata, ``describe()``,
reports or checkpoints). In the Dagster resource it is read from an environment variable through
``dagster.EnvVar``, so the UI shows the variable's name, not its value.

Environment variables (only ``SYNTH_ASSETS_LLM_MODEL`` is required to switch the LLM on):

=====================================  ===============================================================
SYNTH_ASSETS_LLM_MODEL                 model name; unset (and no base URL): the offline generator
SYNTH_ASSETS_LLM_BASE_URL              OpenAI-compatible base URL, e.g. http://127.0.0.1:8080/v1
                                       (unset: OPENAI_BASE_URL, else https://api.openai.com/v1)
SYNTH_ASSETS_LLM_API_KEY               key (falls back to OPENAI_API_KEY; local servers need none)
SYNTH_ASSETS_LLM_MODE                  realtime (default) | batch
SYNTH_ASSETS_LLM_STRUCTURED_OUTPUT     auto (default) | json_schema | json_object | prompt
SYNTH_ASSETS_LLM_CONCURRENCY           parallel requests in realtime mode (default 8)
SYNTH_ASSETS_LLM_MAX_RETRIES           retries per request on 429 / 5xx / timeouts (default 6)
SYNTH_ASSETS_LLM_TIMEOUT               seconds per HTTP request (default 120)
SYNTH_ASSETS_LLM_RECORDS_PER_REQUEST   records asked for in one request (default 20)
SYNTH_ASSETS_LLM_TEMPERATURE           sampling temperature (default 1.0; "none": not sent)
SYNTH_ASSETS_LLM_MAX_OUTPUT_TOKENS     cap on output tokens per request (default: not sent)
SYNTH_ASSETS_LLM_PRICE_INPUT           USD per 1M input tokens (default 0: cost not estimated)
SYNTH_ASSETS_LLM_PRICE_OUTPUT          USD per 1M output tokens (default 0)
SYNTH_ASSETS_LLM_BATCH_PRICE_FACTOR    price multiplier of the Batch API (default 0.5)
SYNTH_ASSETS_LLM_MAX_COST_USD          refuse to start / stop sending beyond this estimated cost
SYNTH_ASSETS_LLM_CACHE_DIR             Parquet result store (default: llm_cache/ beside the warehouse)
SYNTH_ASSETS_LLM_BATCH_SIZE            requests per batch (default 800)
SYNTH_ASSETS_LLM_BATCH_POLL_SECONDS    seconds between batch status polls (default 30)
SYNTH_ASSETS_LLM_FILL_SHORTFALL        offline (default) | error: what to do with missing records
SYNTH_ASSETS_LLM_MAX_SHORTFALL         largest share of records the offline generator may fill (0.1)
=====================================  ===============================================================
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from synth_assets.warehouse import llm_cache_root

__all__ = [
    "ENV_PREFIX",
    "LLMSettings",
    "PriceTable",
    "llm_settings_from_env",
    "public_endpoint",
]

ENV_PREFIX = "SYNTH_ASSETS_LLM_"
OPENAI_BASE_URL = "https://api.openai.com/v1"
NO_KEY = "sk-no-key-required"  # sent to local servers that need no key (they ignore it)

Mode = Literal["realtime", "batch"]
StructuredOutput = Literal["auto", "json_schema", "json_object", "prompt"]
FillShortfall = Literal["offline", "error"]


class PriceTable(BaseModel):
    """USD per one million tokens; the Batch API is billed at ``batch_factor`` of these prices."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_million: float = Field(default=0.0, ge=0)
    output_per_million: float = Field(default=0.0, ge=0)
    batch_factor: float = Field(default=0.5, gt=0, le=1)

    @property
    def known(self) -> bool:
        return self.input_per_million > 0 or self.output_per_million > 0

    def cost(self, tokens_in: int, tokens_out: int, *, batch: bool = False) -> float:
        factor = self.batch_factor if batch else 1.0
        return factor * (tokens_in * self.input_per_million + tokens_out * self.output_per_million) / 1e6


class LLMSettings(BaseModel):
    """Everything the LLM candidate API needs. ``api_key`` is a SecretStr: its repr is ``'**********'``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1)
    base_url: str = Field(default=OPENAI_BASE_URL, repr=False)  # may carry credentials: see .endpoint
    api_key: SecretStr | None = None
    mode: Mode = "realtime"
    structured_output: StructuredOutput = "auto"
    concurrency: int = Field(default=8, ge=1, le=1024)
    max_retries: int = Field(default=6, ge=0)
    timeout: float = Field(default=120.0, gt=0)
    connect_timeout: float = Field(
        default=10.0, gt=0, description="Longest wait to connect (TCP and TLS), at most `timeout` (seconds)."
    )
    connection_failure_window: float = Field(
        default=60.0,
        ge=0,
        description="Connection failures (refused, reset, timeouts) going on this long with no answer from the "
        "endpoint in between stop the run with LLMEndpointError (seconds).",
    )
    preflight_timeout: float = Field(
        default=5.0, gt=0, description="Timeout of each request of check_endpoint() (seconds)."
    )
    records_per_request: int = Field(default=20, ge=1, le=500)
    temperature: float | None = Field(default=1.0, ge=0, le=2)
    max_output_tokens: int | None = Field(default=None, ge=1)
    prices: PriceTable = Field(default_factory=PriceTable)
    max_cost_usd: float | None = Field(default=None, gt=0)
    cache_dir: str | None = Field(default=None, description="Unset: llm_cache/ beside the warehouse.")
    batch_size: int = Field(default=800, ge=1, le=50_000)
    batch_poll_seconds: float = Field(default=30.0, gt=0)
    batch_max_wait_seconds: float = Field(default=26 * 3600.0, gt=0)
    backoff_initial: float = Field(default=1.0, ge=0, description="First backoff delay (seconds).")
    backoff_max: float = Field(default=60.0, ge=0, description="Longest backoff delay (seconds).")
    retry_after_max: float = Field(default=900.0, ge=0, description="Longest Retry-After honoured.")
    max_topup_rounds: int = Field(
        default=3, ge=0, description="Extra rounds of requests when rejected records leave a shortfall."
    )
    fill_shortfall: FillShortfall = "offline"
    max_shortfall_fraction: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Records still missing after the top-up rounds are filled by the offline generator "
        "if at most this share is missing; beyond it the call fails (a re-run resumes from the cache).",
    )

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {value!r}")
        return value

    @property
    def endpoint(self) -> str:
        """The base URL without credentials or query string: safe to log and record."""
        return public_endpoint(self.base_url)

    @property
    def is_openai(self) -> bool:
        return urlsplit(self.base_url).hostname == "api.openai.com"

    def key(self) -> str:
        """The secret itself, for the HTTP client only."""
        return self.api_key.get_secret_value() if self.api_key else NO_KEY

    def cache_path(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir)
        return llm_cache_root()

    def public(self) -> dict:
        """JSON-able settings without the key (for logs and metadata)."""
        data = self.model_dump(mode="json", exclude={"api_key", "base_url"})
        data["endpoint"] = self.endpoint
        data["api_key_set"] = self.api_key is not None
        return data


def public_endpoint(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


# ------------------------------------------------------------------------------------ environment


def _env(name: str, environ) -> str | None:
    value = environ.get(ENV_PREFIX + name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _number(name: str, environ, cast=float):
    value = _env(name, environ)
    if value is None:
        return None
    try:
        return cast(value)
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}{name}={value!r} is not a valid {cast.__name__}") from exc


def _env_fields(environ) -> dict:
    """Settings given by the environment (key excluded), as LLMSettings/LLMResource field values."""
    fields: dict = {}
    text = {
        "MODEL": "model",
        "MODE": "mode",
        "STRUCTURED_OUTPUT": "structured_output",
        "CACHE_DIR": "cache_dir",
        "FILL_SHORTFALL": "fill_shortfall",
    }
    for env, field in text.items():
        value = _env(env, environ)
        if value is not None:
            fields[field] = value
    base_url = _env("BASE_URL", environ) or (environ.get("OPENAI_BASE_URL") or "").strip() or None
    if base_url:
        fields["base_url"] = base_url
    numbers = {
        "CONCURRENCY": ("concurrency", int),
        "MAX_RETRIES": ("max_retries", int),
        "TIMEOUT": ("timeout", float),
        "RECORDS_PER_REQUEST": ("records_per_request", int),
        "MAX_OUTPUT_TOKENS": ("max_output_tokens", int),
        "MAX_COST_USD": ("max_cost_usd", float),
        "BATCH_SIZE": ("batch_size", int),
        "BATCH_POLL_SECONDS": ("batch_poll_seconds", float),
        "PRICE_INPUT": ("price_input_per_million", float),
        "PRICE_OUTPUT": ("price_output_per_million", float),
        "BATCH_PRICE_FACTOR": ("batch_price_factor", float),
        "MAX_SHORTFALL": ("max_shortfall_fraction", float),
    }
    for env, (field, cast) in numbers.items():
        value = _number(env, environ, cast)
        if value is not None:
            fields[field] = value
    temperature = _env("TEMPERATURE", environ)
    if temperature is not None:
        fields["temperature"] = None if temperature.lower() == "none" else _number("TEMPERATURE", environ)
    return fields


def _key_variable(environ) -> str | None:
    """Name of the environment variable that holds the key, if any."""
    for name in (ENV_PREFIX + "API_KEY", "OPENAI_API_KEY"):
        if (environ.get(name) or "").strip():
            return name
    return None


_ENV_NAMES = {
    "model": "MODEL", "base_url": "BASE_URL", "mode": "MODE", "structured_output": "STRUCTURED_OUTPUT",
    "concurrency": "CONCURRENCY", "max_retries": "MAX_RETRIES", "timeout": "TIMEOUT",
    "records_per_request": "RECORDS_PER_REQUEST", "temperature": "TEMPERATURE",
    "max_output_tokens": "MAX_OUTPUT_TOKENS", "max_cost_usd": "MAX_COST_USD", "cache_dir": "CACHE_DIR",
    "batch_size": "BATCH_SIZE", "batch_poll_seconds": "BATCH_POLL_SECONDS", "fill_shortfall": "FILL_SHORTFALL",
    "max_shortfall_fraction": "MAX_SHORTFALL", "input_per_million": "PRICE_INPUT",
    "output_per_million": "PRICE_OUTPUT", "batch_factor": "BATCH_PRICE_FACTOR",
}


def _settings(fields: dict, api_key: str | None) -> LLMSettings:
    """LLMSettings from field values; a bad value is reported with the variable that sets it."""
    try:
        return _build_settings(fields, api_key)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            name = str(item["loc"][-1]) if item["loc"] else ""
            variable = ENV_PREFIX + _ENV_NAMES.get(name, name.upper())
            shown = "" if name == "api_key" else f"={item.get('input')!r}"
            problems.append(f"{variable}{shown}: {item['msg']}")
        raise ValueError("invalid LLM settings: " + "; ".join(problems)) from None


def _build_settings(fields: dict, api_key: str | None) -> LLMSettings:
    fields = dict(fields)
    prices = PriceTable(
        input_per_million=fields.pop("price_input_per_million", 0.0) or 0.0,
        output_per_million=fields.pop("price_output_per_million", 0.0) or 0.0,
        batch_factor=fields.pop("batch_price_factor", 0.5) or 0.5,
    )
    fields = {k: v for k, v in fields.items() if v is not None or k == "temperature"}
    return LLMSettings(**fields, prices=prices, api_key=SecretStr(api_key) if api_key else None)


def _check_model(fields: dict) -> bool:
    """True when the LLM is configured; an endpoint without a model is an error with the fix."""
    if fields.get("model"):
        return True
    if fields.get("base_url") and fields.get("base_url") != OPENAI_BASE_URL:
        raise ValueError(
            f"an LLM endpoint is set ({public_endpoint(fields['base_url'])}) but no model: set "
            f"{ENV_PREFIX}MODEL to the model the server serves (see GET {public_endpoint(fields['base_url'])}/models)"
        )
    return False


def llm_settings_from_env(environ=None) -> LLMSettings | None:
    """Settings from ``SYNTH_ASSETS_LLM_*`` variables; None when no model is set (offline default)."""
    environ = os.environ if environ is None else environ
    fields = _env_fields(environ)
    if not (_env("MODEL", environ) or _env("BASE_URL", environ)):
        return None
    if not _check_model(fields):
        return None
    key_variable = _key_variable(environ)
    return _settings(fields, environ[key_variable].strip() if key_variable else None)

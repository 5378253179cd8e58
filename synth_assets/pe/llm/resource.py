"""The Dagster resource of the LLM candidate API: ``LLMResource.from_env()`` reads the
``SYNTH_ASSETS_LLM_*`` variables (see synth_assets.pe.llm.settings) and passes the key as
``dagster.EnvVar``, so that neither the UI nor the run config ever shows its value."""

from __future__ import annotations

import os

import dagster as dg
from pydantic import Field

from synth_assets.pe.llm.settings import (
    OPENAI_BASE_URL,
    LLMSettings,
    _check_model,
    _env,
    _env_fields,
    _key_variable,
    _settings,
)

__all__ = ["LLMResource"]



class LLMResource(dg.ConfigurableResource):
    """The LLM behind the candidate pool. Unconfigured (no model): the offline generator is used.

    Build it with :meth:`from_env`; the key is passed as ``dagster.EnvVar`` so that neither the UI nor
    the run config ever shows its value.
    """

    model: str | None = Field(default=None, description="Model name; unset: offline generator.")
    base_url: str | None = Field(default=None, description="OpenAI-compatible base URL.")
    api_key: str | None = Field(
        default=None, description="API key; give it as EnvVar('OPENAI_API_KEY'), never literally."
    )
    mode: str = Field(default="realtime", description="realtime | batch")
    structured_output: str = Field(default="auto", description="auto | json_schema | json_object | prompt")
    concurrency: int = 8
    max_retries: int = 6
    timeout: float = 120.0
    records_per_request: int = 20
    temperature: float | None = 1.0
    max_output_tokens: int | None = None
    price_input_per_million: float = Field(default=0.0, description="USD per 1M input tokens.")
    price_output_per_million: float = Field(default=0.0, description="USD per 1M output tokens.")
    batch_price_factor: float = 0.5
    max_cost_usd: float | None = None
    cache_dir: str | None = None
    batch_size: int = 800
    batch_poll_seconds: float = 30.0
    fill_shortfall: str = "offline"
    max_shortfall_fraction: float = 0.1

    @classmethod
    def from_env(cls, environ=None) -> LLMResource:
        """The resource configured from ``SYNTH_ASSETS_LLM_*`` (unset: disabled)."""
        environ = os.environ if environ is None else environ
        fields = _env_fields(environ)
        if not (_env("MODEL", environ) or _env("BASE_URL", environ)):
            return cls()
        _check_model(fields)
        key_variable = _key_variable(environ)
        if key_variable:
            fields["api_key"] = dg.EnvVar(key_variable)
        return cls(**fields)

    @property
    def enabled(self) -> bool:
        return bool(self.model)

    def settings(self) -> LLMSettings | None:
        if not self.enabled:
            if self.base_url:
                _check_model({"base_url": self.base_url})
            return None
        fields = self.model_dump(exclude={"api_key"})
        fields["base_url"] = fields.get("base_url") or OPENAI_BASE_URL
        return _settings(fields, self.api_key)

    def candidate_api(self, dataset, prior=None, *, log=None):
        """An :class:`LLMCandidateAPI` when enabled, else None (the caller keeps the offline one)."""
        settings = self.settings()
        if settings is None:
            return None
        from synth_assets.pe.llm.api import LLMCandidateAPI

        return LLMCandidateAPI(dataset, settings, prior=prior, log=log)

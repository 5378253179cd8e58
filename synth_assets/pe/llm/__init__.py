"""LLM-backed candidate API of Private Evolution (see docs/llm.md).

Setting ``SYNTH_ASSETS_LLM_MODEL`` (and, for a local llama.cpp / vLLM / Ollama server,
``SYNTH_ASSETS_LLM_BASE_URL``) makes the candidate pool come from an OpenAI-compatible endpoint instead
of the offline generator. Prompts hold only public material (the spec, the public population
description, and for variation the DP-selected synthetic records); results are checkpointed to Parquet
and reused, so an interrupted run resumes without paying again.
"""

from synth_assets.pe.llm.api import LLMCandidateAPI
from synth_assets.pe.llm.client import LLMRequest, request_id
from synth_assets.pe.llm.endpoint import LLMEndpointError, LLMGenerationError
from synth_assets.pe.llm.report import GenerationReport
from synth_assets.pe.llm.schema import record_model, response_model, strict_json_schema
from synth_assets.pe.llm.settings import LLMSettings, PriceTable, llm_settings_from_env
from synth_assets.pe.llm.store import ResultStore

__all__ = [
    "GenerationReport",
    "LLMCandidateAPI",
    "LLMEndpointError",
    "LLMGenerationError",
    "LLMRequest",
    "LLMResource",
    "LLMSettings",
    "PriceTable",
    "ResultStore",
    "llm_settings_from_env",
    "record_model",
    "request_id",
    "response_model",
    "strict_json_schema",
]


def __getattr__(name: str):
    if name == "LLMResource":  # imported on first use: dagster is slow to import and generation needs none
        from synth_assets.pe.llm.resource import LLMResource

        return LLMResource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

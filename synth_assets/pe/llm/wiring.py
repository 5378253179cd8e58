"""Helpers to show and bound what the LLM candidate API does inside the asset graph.

``generation_metadata(api)`` is
the asset metadata of what the API did (empty for the offline API); ``reference_api(api)`` is the
offline API to use for bulk public samples (the ``cells`` reference sample of ``draw_population``:
100,000 rows by default would be thousands of paid requests).
"""

from __future__ import annotations

from synth_assets.pe.generators import CandidateAPI
from synth_assets.pe.llm.api import LLMCandidateAPI
from synth_assets.pe.llm.report import GenerationReport

__all__ = ["generation_metadata", "reference_api"]


def generation_metadata(api: CandidateAPI) -> dict:
    report = getattr(api, "report", None)
    return report.to_metadata() if isinstance(report, GenerationReport) else {}


def reference_api(api: CandidateAPI) -> CandidateAPI:
    return api.fallback if isinstance(api, LLMCandidateAPI) else api

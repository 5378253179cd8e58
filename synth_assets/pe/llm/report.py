"""Accounting of LLM generation: what was sent, served from the cache, retried, rejected and paid."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["GenerationReport"]


@dataclass
class GenerationReport:
    """Counters of one or more generation calls (``LLMCandidateAPI.report`` accumulates all calls).

    requests          distinct requests a call needed (all rounds, cached ones included)
    cache_hits        of those, answered from the result store (not sent, not paid again)
    requests_sent     distinct requests sent to the endpoint (first attempts)
    retries           further attempts after 429 / 5xx / timeouts (realtime) or failed batch entries
    requests_failed   requests that still had no result after every retry
    batches_created / batches_resumed   Batch API jobs created, and re-attached after a restart
    tokens_in / tokens_out              tokens of the requests paid in this run (usage of each response)
    cached_tokens_in / cached_tokens_out tokens of the results served from the store (not paid again)
    records_requested / records_valid / records_filled_offline   rows asked for, rows kept, rows filled
                      by the offline generator because the LLM fell short
    rejected_rows     invalid returned rows, by reason (unknown_category, out_of_bounds, ...)
    failed_responses  responses that yielded no rows at all, by reason (malformed_json, truncated, ...,
                      request_failed, connection_failed: no answer after every retry)
    estimated_cost_usd   tokens_in/out priced with the price table (batch discount applied)
    saved_cost_usd       what the cache hits would have cost
    wall_seconds      time spent in generation calls
    """

    model: str = ""
    endpoint: str = ""
    mode: str = ""
    structured_output: str = ""
    calls: int = 0
    requests: int = 0
    cache_hits: int = 0
    requests_sent: int = 0
    retries: int = 0
    requests_failed: int = 0
    batches_created: int = 0
    batches_resumed: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cached_tokens_in: int = 0
    cached_tokens_out: int = 0
    records_requested: int = 0
    records_valid: int = 0
    records_filled_offline: int = 0
    rejected_rows: Counter = field(default_factory=Counter)
    failed_responses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    estimated_cost_usd: float = 0.0
    saved_cost_usd: float = 0.0
    prices_known: bool = False
    wall_seconds: float = 0.0

    def add(self, other: GenerationReport) -> None:
        """Accumulate another report into this one."""
        for name in (
            "calls", "requests", "cache_hits", "requests_sent", "retries", "requests_failed",
            "batches_created", "batches_resumed", "tokens_in", "tokens_out", "cached_tokens_in",
            "cached_tokens_out", "records_requested", "records_valid", "records_filled_offline",
            "estimated_cost_usd", "saved_cost_usd", "wall_seconds",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.rejected_rows.update(other.rejected_rows)
        self.failed_responses.update(other.failed_responses)
        self.errors.update(other.errors)
        for name in ("model", "endpoint", "mode", "structured_output"):
            if getattr(other, name):
                setattr(self, name, getattr(other, name))
        self.prices_known = self.prices_known or other.prices_known

    @property
    def rows_rejected(self) -> int:
        return int(sum(self.rejected_rows.values()))

    def to_dict(self) -> dict:
        """JSON-able summary (no secret: the report never sees the key)."""
        data = {k: v for k, v in self.__dict__.items() if not isinstance(v, Counter)}
        data["rejected_rows"] = dict(sorted(self.rejected_rows.items()))
        data["failed_responses"] = dict(sorted(self.failed_responses.items()))
        data["errors"] = dict(sorted(self.errors.items()))
        data["estimated_cost_usd"] = round(self.estimated_cost_usd, 6)
        data["saved_cost_usd"] = round(self.saved_cost_usd, 6)
        data["wall_seconds"] = round(self.wall_seconds, 3)
        return data

    def rejections_markdown(self) -> str:
        lines = ["| reason | count |", "|---|---|"]
        for reason, count in sorted(self.rejected_rows.items()):
            lines.append(f"| row: {reason} | {count} |")
        for reason, count in sorted(self.failed_responses.items()):
            lines.append(f"| response: {reason} | {count} |")
        if len(lines) == 2:
            lines.append("| (none) | 0 |")
        return "\n".join(lines)

    def to_metadata(self, prefix: str = "llm_") -> dict:
        """Dagster asset metadata: cost, tokens, requests and rejections at a glance."""
        import dagster as dg  # lazy: generation itself does not need dagster

        cost = (
            dg.MetadataValue.float(round(self.estimated_cost_usd, 6))
            if self.prices_known
            else dg.MetadataValue.text("unknown: set SYNTH_ASSETS_LLM_PRICE_INPUT/_OUTPUT")
        )
        return {
            f"{prefix}model": self.model,
            f"{prefix}endpoint": self.endpoint,
            f"{prefix}mode": self.mode,
            f"{prefix}structured_output": self.structured_output,
            f"{prefix}estimated_cost_usd": cost,
            f"{prefix}saved_by_cache_usd": round(self.saved_cost_usd, 6),
            f"{prefix}tokens_in": self.tokens_in,
            f"{prefix}tokens_out": self.tokens_out,
            f"{prefix}requests": self.requests,
            f"{prefix}requests_sent": self.requests_sent,
            f"{prefix}cache_hits": self.cache_hits,
            f"{prefix}retries": self.retries,
            f"{prefix}requests_failed": self.requests_failed,
            f"{prefix}batches": self.batches_created,
            f"{prefix}records_valid": self.records_valid,
            f"{prefix}rows_rejected": self.rows_rejected,
            f"{prefix}records_filled_offline": self.records_filled_offline,
            f"{prefix}rejections": dg.MetadataValue.md(self.rejections_markdown()),
            f"{prefix}report": dg.MetadataValue.json(self.to_dict()),
            f"{prefix}wall_seconds": round(self.wall_seconds, 3),
        }

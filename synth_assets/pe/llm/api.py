"""``LLMCandidateAPI``: PE's RANDOM_API and VARIATION_API served by an OpenAI-compatible LLM endpoint.

random(n, seed)
    ``ceil(n / records_per_request)`` requests, each asking for ``records_per_request`` records (the
    last one for the rest) from a prompt built from the spec and the public population description only.
variation(selected, n_per_record, iteration, iterations, seed)
    The selected records (DP outputs) in groups of ``max(1, records_per_request // n_per_record)``; each
    request asks for ``n_per_record`` variations of every record of its group, each tagged with the
    number of its parent. The prompt asks for about r(t) of the columns to change, r the Tab-PE
    mutation rate. Output layout as the offline generator: row ``i * len(selected) + k`` is the i-th
    variation of record k.

Every returned record is validated locally and invalid ones are dropped (counted by reason). Records
still missing are asked for again in up to ``max_topup_rounds`` further rounds of requests (new seeds);
what is still missing then is filled by the offline generator (the DP-prior one if a prior is given)
when it is at most ``max_shortfall_fraction`` of the call, else the call fails (a re-run resumes).
Records missing because requests could not reach the endpoint are never filled: that is an
``LLMEndpointError``, as is a shortfall beyond that share because requests failed at the server.

check_endpoint()
    The preflight (synth_assets.pe.llm.endpoint): reachable, key accepted, model served, in seconds and
    without sending any record. Call it before spending any privacy budget.

Requests are identified by the hash of endpoint + body (model, messages, seed, response_format schema,
temperature): identical requests are answered from the Parquet result store, across calls, runs,
processes and epsilon partitions. ``api.report`` accumulates a :class:`GenerationReport` over calls.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable

import polars as pl

from synth_assets.datasets.loading import Dataset
from synth_assets.pe.generators import (
    CandidateAPI,
    candidate_schema,
    mutation_rate,
    validate_candidates,
)
from synth_assets.pe.llm.client import (
    BatchRunner,
    LLMEndpointError,
    LLMGenerationError,
    LLMRequest,
    Outcome,
    RealtimeRunner,
    request_id,
)
from synth_assets.pe.llm.endpoint import ConnectionBreaker, check_endpoint, connection_error
from synth_assets.pe.llm.prompts import (
    PROMPT_VERSION,
    random_messages,
    variation_messages,
)
from synth_assets.pe.llm.report import GenerationReport
from synth_assets.pe.llm.schema import (
    PARENT_FIELD,
    ParsedResponse,
    parse_response,
    record_model,
    records_to_frame,
    response_model,
    strict_json_schema,
)
from synth_assets.pe.llm.settings import LLMSettings
from synth_assets.pe.llm.store import ResultStore, StoredResult

__all__ = ["LLMCandidateAPI", "LLMEndpointError", "LLMGenerationError"]

FALLBACK_ORDER = ("json_schema", "json_object", "prompt")
RESPONSE_SCHEMA_NAME = "candidates"
OUTPUT_TOKENS_PER_CELL = 8  # rough size of one "column": value pair, for cost estimates before sending


def _derive(seed: int, *words) -> int:
    text = ":".join(str(w) for w in (seed, *words))
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % (2**31 - 1)


class LLMCandidateAPI:
    """Candidate API backed by an LLM (see the module docstring). Implements ``CandidateAPI``."""

    name = "llm"

    def __init__(
        self,
        dataset: Dataset,
        settings: LLMSettings,
        *,
        prior=None,
        fallback: CandidateAPI | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if not dataset.spec.modelled_columns:
            raise ValueError(f"dataset {dataset.name!r} has no categorical or numeric column to model")
        if settings.max_cost_usd is not None and not settings.prices.known:
            raise ValueError(
                "max_cost_usd is set but the price table is empty: set SYNTH_ASSETS_LLM_PRICE_INPUT and "
                "SYNTH_ASSETS_LLM_PRICE_OUTPUT (USD per 1M tokens) so that the cost can be estimated"
            )
        self.dataset = dataset
        self.settings = settings
        self.schema = candidate_schema(dataset)
        if fallback is None:
            from synth_assets.pe.priors import prior_api

            fallback = prior_api(dataset, prior)
        self.fallback = fallback
        self.log = log or (lambda message: None)
        self.store = ResultStore(settings.cache_path() / dataset.name)
        self._auto = settings.structured_output == "auto"
        known = self.store.capability(settings.endpoint, settings.model) if self._auto else None
        self.structured_output = (
            settings.structured_output if not self._auto else (known or FALLBACK_ORDER[0])
        )
        self._capability_known = known is not None
        self._models: dict = {}
        self._schemas: dict = {}
        self.breaker = ConnectionBreaker(settings.connection_failure_window)  # across the calls of a run
        self.report = self._new_report()
        self.reports: list[tuple[str, GenerationReport]] = []

    def check_endpoint(self) -> None:
        """The preflight: raise :class:`LLMEndpointError` within seconds when the endpoint cannot be
        reached, refuses the key or does not serve the model. It sends no record (a models lookup, and at
        most one minimal request) and stores nothing; call it before spending any privacy budget."""
        check_endpoint(self.settings, log=self.log)

    # ------------------------------------------------------------------------------------ metadata

    def describe(self) -> dict:
        """Settings that determine the candidates (no key, no limits that only affect speed)."""
        s = self.settings
        return {
            "name": self.name,
            "dataset": self.dataset.name,
            "model": s.model,
            "endpoint": s.endpoint,
            "structured_output": s.structured_output,
            "records_per_request": s.records_per_request,
            "temperature": s.temperature,
            "max_output_tokens": s.max_output_tokens,
            "max_topup_rounds": s.max_topup_rounds,
            "prompt_version": PROMPT_VERSION,
            "prompt_material": ["dataset spec", "public population description", "selected synthetic records"],
            "fallback": self.fallback.describe(),
        }

    def _new_report(self) -> GenerationReport:
        return GenerationReport(
            model=self.settings.model,
            endpoint=self.settings.endpoint,
            mode=self.settings.mode,
            structured_output=self.structured_output,
            prices_known=self.settings.prices.known,
        )

    # ------------------------------------------------------------------------------------ requests

    def _body(self, messages: list[dict], seed: int, schema: dict, mode: str) -> dict:
        s = self.settings
        body: dict = {"model": s.model, "messages": messages, "seed": seed}
        if s.temperature is not None:
            body["temperature"] = s.temperature
        if s.max_output_tokens:
            body["max_completion_tokens" if s.is_openai else "max_tokens"] = s.max_output_tokens
        if mode == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": RESPONSE_SCHEMA_NAME, "strict": True, "schema": schema},
            }
        elif mode == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body

    def _record_model(self, parents: int | None):
        if parents not in self._models:
            self._models[parents] = record_model(self.dataset, parents=parents)
        return self._models[parents]

    def _response_schema(self, count: int, parents: int | None) -> dict:
        if (count, parents) not in self._schemas:
            self._schemas[(count, parents)] = strict_json_schema(response_model(self.dataset, count, parents=parents))
        return self._schemas[(count, parents)]

    def _request(self, kind: str, messages_for, seed: int, count: int, parents: int | None, mode: str) -> LLMRequest:
        schema = self._response_schema(count, parents)
        messages = messages_for(schema if mode != "json_schema" else None)
        body = self._body(messages, seed, schema, mode)
        return LLMRequest(request_id(self.settings.endpoint, body), body, kind, count)

    def _builder(self, kind: str, messages_for, seed: int, count: int, parents: int | None):
        """The request for a structured-output mode (the body depends on the mode)."""
        return lambda mode: self._request(kind, messages_for, seed, count, parents, mode)

    def _estimate_cost(self, requests: list[LLMRequest]) -> float:
        columns = len(self.schema) + 1
        tokens_in = sum(len(json.dumps(r.body, ensure_ascii=False)) // 4 for r in requests)
        tokens_out = sum(r.records * columns * OUTPUT_TOKENS_PER_CELL + 20 for r in requests)
        return self.settings.prices.cost(tokens_in, tokens_out, batch=self.settings.mode == "batch")

    def _execute(
        self, builders: list[Callable[[str], LLMRequest]], report: GenerationReport
    ) -> tuple[list[StoredResult | None], Counter]:
        """Results of the requests made by ``builders`` (one per builder, None where it failed), and the
        failed ones by reason: from the store when there, else sent; falls back to a simpler
        structured-output mode when refused."""
        results: list[StoredResult | None] = [None] * len(builders)
        failures: dict[int, str] = {}
        self.store.refresh()
        while True:
            todo_index = [i for i in range(len(builders)) if results[i] is None and i not in failures]
            requests = {i: builders[i](self.structured_output) for i in todo_index}
            unique: dict[str, LLMRequest] = {}
            for request in requests.values():
                unique.setdefault(request.request_id, request)
            report.requests += len(unique)
            send = []
            for rid, request in unique.items():
                stored = self.store.get(rid)
                if stored is None:
                    send.append(request)
                    continue
                report.cache_hits += 1
                report.cached_tokens_in += stored.input_tokens
                report.cached_tokens_out += stored.output_tokens
                report.saved_cost_usd += self.settings.prices.cost(
                    stored.input_tokens, stored.output_tokens, batch=stored.mode == "batch"
                )
            self._check_budget(send, report)
            outcome = self._send(send, report)
            for i, request in requests.items():
                stored = self.store.get(request.request_id) or outcome.results.get(request.request_id)
                if stored is not None:
                    results[i] = stored
                elif request.request_id in outcome.failures:
                    failures[i] = outcome.failures[request.request_id]
            if any(results) and self._auto and not self._capability_known:
                self.store.set_capability(self.settings.endpoint, self.settings.model, self.structured_output)
                self._capability_known = True
            if outcome.format_unsupported and self._auto:
                position = FALLBACK_ORDER.index(self.structured_output)
                if position + 1 < len(FALLBACK_ORDER):
                    self.log(
                        f"{self.settings.endpoint} does not support response_format "
                        f"{self.structured_output!r}: falling back to {FALLBACK_ORDER[position + 1]!r}"
                    )
                    self.structured_output = FALLBACK_ORDER[position + 1]
                    report.structured_output = self.structured_output
                    self._capability_known = False
                    failures = {i: r for i, r in failures.items() if r != "format_unsupported"}
                    continue
            if outcome.format_unsupported:
                raise LLMGenerationError(
                    f"{self.settings.endpoint} refused response_format {self.structured_output!r} for model "
                    f"{self.settings.model!r}: set SYNTH_ASSETS_LLM_STRUCTURED_OUTPUT=auto (falls back to JSON "
                    "mode, then to a plain prompt) or to a mode the server supports"
                )
            break
        for reason in failures.values():
            report.requests_failed += 1
            report.failed_responses[reason if reason in ("budget_exceeded", "connection_failed") else "request_failed"] += 1
        if "budget_exceeded" in failures.values():
            raise LLMGenerationError(
                f"stopped at the cost cap SYNTH_ASSETS_LLM_MAX_COST_USD={self.settings.max_cost_usd}: "
                f"spent about ${self.report.estimated_cost_usd + report.estimated_cost_usd:.4f}. Results so "
                "far are stored; raise the cap and re-run to resume."
            )
        return results, Counter(failures.values())

    def _check_budget(self, send: list[LLMRequest], report: GenerationReport) -> None:
        cap = self.settings.max_cost_usd
        if cap is None or not send:
            return
        spent = self.report.estimated_cost_usd + report.estimated_cost_usd
        estimate = self._estimate_cost(send)
        if spent + estimate > cap:
            raise LLMGenerationError(
                f"{len(send)} requests would cost about ${estimate:.4f} (already spent ${spent:.4f}), "
                f"beyond SYNTH_ASSETS_LLM_MAX_COST_USD={cap}: nothing was sent. Raise the cap, lower the "
                "pool size, or use SYNTH_ASSETS_LLM_MODE=batch (cheaper)."
            )

    def _send(self, send: list[LLMRequest], report: GenerationReport) -> Outcome:
        outcome = Outcome()
        if not send:
            return outcome
        realtime = RealtimeRunner(self.settings, self.store, log=self.log, breaker=self.breaker)
        realtime.spent_before = self.report.estimated_cost_usd
        if self.settings.mode == "realtime":
            self.log(
                f"sending {len(send)} requests to {self.settings.endpoint} ({self.settings.model}, "
                f"{self.structured_output}, concurrency {self.settings.concurrency})"
            )
            return realtime.execute(send, report)
        if self._auto and not self._capability_known:
            # probe the structured-output mode with one real request (its result is kept) before a batch
            probe = realtime.execute(send[:1], report)
            outcome.results.update(probe.results)
            outcome.failures.update(probe.failures)
            if probe.format_unsupported:
                return outcome  # the caller falls back to the next mode and builds the requests again
            send = send[1:]
            if probe.results:
                self.store.set_capability(self.settings.endpoint, self.settings.model, self.structured_output)
                self._capability_known = True
            if not send:
                return outcome
        self.log(f"submitting {len(send)} requests to the Batch API of {self.settings.endpoint}")
        batched = BatchRunner(self.settings, self.store, log=self.log).execute(send, report)
        outcome.results.update(batched.results)
        outcome.failures.update(batched.failures)
        return outcome

    def _parse(self, result: StoredResult | None, parents: int | None, report: GenerationReport) -> ParsedResponse:
        if result is None:
            return ParsedResponse(failure="request_failed")
        parsed = parse_response(
            self.dataset,
            result.response_text,
            parents=parents,
            finish_reason=result.finish_reason,
            refusal=result.refusal,
            model=self._record_model(parents),
        )
        if parsed.failure:
            report.failed_responses[parsed.failure] += 1
        report.rejected_rows.update(parsed.rejected)
        return parsed

    def _finish(self, kind: str, report: GenerationReport, started: float) -> None:
        report.calls += 1
        report.wall_seconds += time.perf_counter() - started
        self.report.add(report)
        self.reports.append((kind, report))
        self.store.compact()
        self.log(
            f"{kind}: {report.records_valid} valid records, {report.rows_rejected} rows rejected, "
            f"{report.records_filled_offline} filled offline; {report.requests_sent} requests sent, "
            f"{report.cache_hits} from cache, {report.retries} retries; tokens {report.tokens_in} in / "
            f"{report.tokens_out} out" + (f", ~${report.estimated_cost_usd:.4f}" if report.prices_known else "")
        )

    def _shortfall(self, missing: int, total: int, report: GenerationReport, kind: str, failed: Counter) -> None:
        """Fill or fail: may the offline generator fill ``missing`` of ``total`` records? ``failed`` holds
        the requests of the last round that got no answer, by reason.

        Records missing because requests could not reach the endpoint are never filled; beyond the share,
        requests that failed at the server make an ``LLMEndpointError`` too. Only a genuine shortfall (the
        model answered, with too few valid records) is a plain ``LLMGenerationError``."""
        if missing <= 0:
            return
        s = self.settings
        what = f"{kind}: {missing} of {total} records are missing"
        if failed["connection_failed"]:
            raise connection_error(
                s, self.breaker.cause or "connection failed", failures=failed["connection_failed"],
                stored=len(self.store), what=what,
            )
        share = missing / max(total, 1)
        if s.fill_shortfall == "offline" and share <= s.max_shortfall_fraction:
            report.records_filled_offline += missing
            self.log(f"{kind}: {missing} of {total} records filled by the {self.fallback.name} generator")
            return
        stored = f"{len(self.store)} results are stored: re-run to resume without paying for them again."
        local = f"records of the local {self.fallback.name!r} generator (not from the LLM)"
        if failed["request_failed"]:
            errors = {k: v for k, v in report.errors.items() if v}
            raise LLMEndpointError(
                f"{what} because {failed['request_failed']} requests to the LLM endpoint {s.endpoint} got no "
                f"usable answer after every retry (errors seen: {errors}). Check the server (its log, its "
                f"load, its limits) and re-run once it answers. {stored}",
                endpoint=s.endpoint,
                reason="server",
            )
        responses = {k: v for k, v in report.failed_responses.items() if v}
        hint = ""
        if responses.get("truncated"):
            hint = (
                " Answers were cut off: lower SYNTH_ASSETS_LLM_RECORDS_PER_REQUEST (now "
                f"{s.records_per_request}) or give the server a longer context."
            )
        if s.fill_shortfall == "offline":
            setting = (
                f"SYNTH_ASSETS_LLM_MAX_SHORTFALL (now {s.max_shortfall_fraction:g}) is the largest share filled "
                f"offline; raising it would replace the missing LLM candidates with {local}."
            )
        else:
            setting = (
                "SYNTH_ASSETS_LLM_FILL_SHORTFALL=error: no record is filled offline (with `offline`, up to "
                f"SYNTH_ASSETS_LLM_MAX_SHORTFALL of them would be replaced by {local})."
            )
        raise LLMGenerationError(
            f"{what} after {s.max_topup_rounds} top-up rounds: the model {s.model!r} answered, but with too "
            f"few valid records (responses without records: {responses}; rejected rows: "
            f"{dict(report.rejected_rows)}).{hint} {stored} {setting}"
        )

    # ---------------------------------------------------------------------------------- random API

    def random(self, n: int, *, seed: int) -> pl.DataFrame:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        started = time.perf_counter()
        report = self._new_report()
        report.records_requested = n
        try:
            frame = self._random(n, seed, report)
        finally:
            self._finish("random", report, started)
        return frame

    def _random(self, n: int, seed: int, report: GenerationReport) -> pl.DataFrame:
        per_request = self.settings.records_per_request
        frames: list[pl.DataFrame] = []
        have = 0
        failed: Counter = Counter()  # requests of the last round without an answer, by reason
        for round_ in range(self.settings.max_topup_rounds + 1):
            missing = n - have
            if missing <= 0:
                break
            sizes = [per_request] * (missing // per_request) + ([missing % per_request] if missing % per_request else [])
            builders = []
            for index, size in enumerate(sizes):
                request_seed = _derive(seed, "random", round_, index)
                label = f"request {index + 1} of {len(sizes)}, round {round_}, seed {request_seed}"

                def messages_for(schema, size=size, label=label):
                    return random_messages(self.dataset, size, label=label, schema_in_prompt=schema)

                builders.append(self._builder("random", messages_for, request_seed, size, None))
            results, failed = self._execute(builders, report)
            answered = 0
            for result in results:
                parsed = self._parse(result, None, report)
                if parsed.failure is None:
                    answered += 1
                if not parsed.records:
                    continue
                frame, rejected, _kept = records_to_frame(self.dataset, parsed.records)
                report.rejected_rows.update(rejected)
                frame = frame.head(n - have)
                frames.append(frame)
                have += frame.height
            if answered == 0:
                break  # nothing came back at all: more rounds would not help
        missing = n - have
        report.records_valid = have
        self._shortfall(missing, n, report, "random", failed)
        if missing > 0:
            frames.append(self.fallback.random(missing, seed=_derive(seed, "random-fill")).select(list(self.schema)))
        report.records_valid = have
        if not frames:
            return pl.DataFrame(schema=self.schema)
        return pl.concat(frames, how="vertical").cast(self.schema).select(list(self.schema))

    # ------------------------------------------------------------------------------- variation API

    def _check_selected(self, selected: pl.DataFrame) -> pl.DataFrame:
        names = list(self.schema)
        missing = [name for name in names if name not in selected.columns]
        if missing:
            raise ValueError(f"selected candidates lack modelled columns {missing}")
        selected = selected.select(names)
        problems = {k: v for k, v in validate_candidates(self.dataset, selected).items() if v}
        if problems:
            raise ValueError(f"selected candidates are not valid candidates: {problems}")
        return selected.cast(self.schema)

    def variation(
        self, selected: pl.DataFrame, n_per_record: int, *, iteration: int, iterations: int, seed: int
    ) -> pl.DataFrame:
        if n_per_record < 1:
            raise ValueError(f"n_per_record must be >= 1, got {n_per_record}")
        rate = mutation_rate(iteration, iterations)
        selected = self._check_selected(selected)
        started = time.perf_counter()
        report = self._new_report()
        report.records_requested = selected.height * n_per_record
        try:
            frame = self._variation(selected, n_per_record, iteration, iterations, seed, rate, report)
        finally:
            self._finish("variation", report, started)
        return frame

    def _variation(
        self,
        selected: pl.DataFrame,
        n_per_record: int,
        iteration: int,
        iterations: int,
        seed: int,
        rate: float,
        report: GenerationReport,
    ) -> pl.DataFrame:
        total = selected.height * n_per_record
        children: list[list[dict]] = [[] for _ in range(selected.height)]
        per_request = self.settings.records_per_request
        failed: Counter = Counter()  # requests of the last round without an answer, by reason
        for round_ in range(self.settings.max_topup_rounds + 1):
            needy = [k for k in range(selected.height) if len(children[k]) < n_per_record]
            if not needy:
                break
            per = max(n_per_record - len(children[k]) for k in needy)
            group = max(1, per_request // per)
            groups = [needy[start : start + group] for start in range(0, len(needy), group)]
            builders = []
            for index, members in enumerate(groups):
                request_seed = _derive(seed, "variation", iteration, round_, index)
                label = f"request {index + 1} of {len(groups)}, round {round_}, seed {request_seed}"
                parents = selected[members]

                def messages_for(schema, parents=parents, per=per, label=label):
                    return variation_messages(
                        self.dataset, parents, per, rate=rate, label=label, schema_in_prompt=schema
                    )

                builders.append(self._builder("variation", messages_for, request_seed, len(members) * per, len(members)))
            results, failed = self._execute(builders, report)
            answered = 0
            for members, result in zip(groups, results, strict=True):
                parsed = self._parse(result, len(members), report)
                if parsed.failure is None:
                    answered += 1
                if not parsed.records:
                    continue
                _frame, rejected, kept = records_to_frame(self.dataset, parsed.records)
                report.rejected_rows.update(rejected)
                for index in kept:
                    record = parsed.records[index]
                    k = members[record[PARENT_FIELD] - 1]
                    if len(children[k]) < n_per_record:
                        children[k].append({name: record[name] for name in self.schema})
                    else:
                        report.rejected_rows["surplus"] += 1
            if answered == 0:
                break
        have = sum(len(c) for c in children)
        missing = total - have
        report.records_valid = have
        self._shortfall(missing, total, report, "variation", failed)
        fill: list[dict] = []
        if missing:
            needy = [k for k in range(selected.height) for _ in range(n_per_record - len(children[k]))]
            filled = self.fallback.variation(
                selected[needy], 1, iteration=iteration, iterations=iterations,
                seed=_derive(seed, "variation-fill", iteration),
            )
            fill = filled.select(list(self.schema)).to_dicts()
            for k, record in zip(needy, fill, strict=True):
                children[k].append(record)
        report.records_valid = have
        rows = [children[k][i] for i in range(n_per_record) for k in range(selected.height)]
        names = list(self.schema)
        return pl.DataFrame([[r[name] for name in names] for r in rows], schema=self.schema, orient="row")



"""Structured outputs: pydantic models generated from the dataset spec, their strict JSON schema, and
the local validation of every record an endpoint returns.

``record_model(dataset)`` has one field per modelled column, named by its wide name:

* categorical: ``Literal[*categories]`` (an ``enum`` in the JSON schema);
* numeric: ``int`` or ``float`` with ``ge=min, le=max`` (``minimum``/``maximum``), no NaN/infinity;
* nullable columns are ``Optional`` (``anyOf [..., {"type": "null"}]``) but still required, as strict
  structured outputs demand;
* the column description is the field description; unknown fields are forbidden.

The response of one request is ``{"records": [record, ...]}`` with exactly the number of records asked
for (``minItems`` = ``maxItems``); a variation record also carries ``parent``, the 1-based number of the
selected record it varies. Whatever the endpoint claims, every record is validated again here (the
pydantic model, then :func:`synth_assets.pe.generators.validate_candidates` on the frame) and dropped
with a counted reason when invalid.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Annotated, Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from synth_assets.datasets.loading import Dataset
from synth_assets.datasets.spec import CategoricalColumn, DateColumn, temporal_number
from synth_assets.datasets.temporal import date_columns
from synth_assets.pe.generators import candidate_schema, validate_candidates

__all__ = [
    "PARENT_FIELD",
    "REJECTION_REASONS",
    "ParsedResponse",
    "extract_json",
    "parse_response",
    "record_model",
    "records_to_frame",
    "response_model",
    "strict_json_schema",
]

PARENT_FIELD = "parent"
RECORDS_FIELD = "records"

# Why a returned record is dropped (rows), and why a whole response yields nothing (responses).
REJECTION_REASONS = (
    "not_an_object",
    "wrong_columns",
    "unknown_category",
    "not_a_number",
    "out_of_bounds",
    "non_integer",
    "null_in_non_nullable",
    "bad_parent",
    "surplus",
    "invalid",
)
RESPONSE_FAILURES = ("malformed_json", "truncated", "refusal", "no_records", "request_failed")


def _field_name(index: int) -> str:
    return f"c{index}"


def record_model(dataset: Dataset, *, parents: int | None = None) -> type[BaseModel]:
    """The pydantic model of one candidate record (with a ``parent`` field when ``parents`` is given)."""
    fields: dict[str, Any] = {}
    if parents is not None:
        fields["p"] = (
            Annotated[int, Field(ge=1, le=max(parents, 1), strict=True)],
            Field(alias=PARENT_FIELD, description="Number of the record this one is a variation of."),
        )
    for index, column in enumerate(dataset.spec.modelled_columns):
        if isinstance(column, CategoricalColumn):
            base: Any = Literal[tuple(column.categories)]  # type: ignore[valid-type]
        elif isinstance(column, DateColumn):
            base = Annotated[
                date if column.role == "date" else datetime,
                Field(ge=column.value(column.min), le=column.value(column.max)),
            ]
        else:
            python_type = int if column.type == "integer" else float
            base = Annotated[
                python_type,
                Field(ge=_bound(column.min, column.type), le=_bound(column.max, column.type), allow_inf_nan=False),
            ]
        annotation = base | None if column.nullable else base
        fields[_field_name(index)] = (
            annotation,
            Field(alias=column.wide_name, description=column.description or None),
        )
    name = "VariationRecord" if parents is not None else "Record"
    return create_model(name, __config__=ConfigDict(extra="forbid", populate_by_name=False), **fields)


def _bound(value: float, kind: str) -> int | float:
    return int(value) if kind == "integer" else float(value)


def response_model(dataset: Dataset, count: int, *, parents: int | None = None) -> type[BaseModel]:
    """``{"records": [record] * count}``: the response of one request."""
    record = record_model(dataset, parents=parents)
    return create_model(
        "Candidates",
        __config__=ConfigDict(extra="forbid"),
        records=(list[record], Field(min_length=count, max_length=count)),  # type: ignore[valid-type]
    )


def strict_json_schema(model: type[BaseModel]) -> dict:
    """The model's JSON schema in the form strict structured outputs accept: references inlined,
    titles and defaults dropped, ``const`` written as a one-value ``enum``, every object closed."""
    schema = model.model_json_schema(by_alias=True)
    definitions = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                target = node["$ref"].split("/")[-1]
                merged = {**copy.deepcopy(definitions[target]), **{k: v for k, v in node.items() if k != "$ref"}}
                return walk(merged)
            out = {}
            for key, value in node.items():
                if key in ("title", "default"):
                    continue
                if key == "const":
                    out["enum"] = [value]
                    continue
                if key == "properties":
                    out[key] = {name: walk(sub) for name, sub in value.items()}
                    continue
                out[key] = walk(value)
            if out.get("type") == "object":
                out["additionalProperties"] = False
                out["required"] = list(out.get("properties", {}))
            return out
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    return walk(schema)


# ------------------------------------------------------------------------------------------ parsing


_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


def extract_json(text: str) -> Any:
    """The JSON value in a free-text answer: the whole text, a fenced block, or the outermost
    ``{...}``/``[...]`` span. Raises ValueError when there is none."""
    candidates = [text.strip()]
    candidates += [match.strip() for match in _FENCE.findall(text)]
    for opener, closer in (("{", "}"), ("[", "]")):
        start, end = text.find(opener), text.rfind(closer)
        if 0 <= start < end:
            candidates.append(text[start : end + 1])
    for candidate in candidates:
        if not candidate:
            continue
        try:
            return json.loads(candidate, parse_constant=_constant)
        except (json.JSONDecodeError, ValueError):
            continue
    raise ValueError("no JSON value found in the response")


def _constant(name: str) -> float:
    return float(name.replace("Infinity", "inf"))  # NaN / Infinity: kept, then rejected as not_a_number


@dataclass
class ParsedResponse:
    """Valid records of one response (as dicts keyed by wide name) and the counted rejections."""

    records: list[dict] = field(default_factory=list)
    rejected: Counter = field(default_factory=Counter)
    failure: str | None = None


def _reason(error: dict, column_kinds: dict[str, str]) -> str:
    kind = error["type"]
    location = error.get("loc") or ()
    name = location[0] if location else None
    if name == PARENT_FIELD:
        return "bad_parent"
    if kind in ("missing", "extra_forbidden"):
        return "wrong_columns"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return "not_an_object"
    if error.get("input", object()) is None:
        return "null_in_non_nullable"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return "out_of_bounds"
    if kind == "int_from_float":
        return "non_integer"
    if kind == "literal_error" or column_kinds.get(name) == "categorical":
        return "unknown_category"
    if kind in ("finite_number", "int_parsing", "float_parsing", "int_type", "float_type", "bool_type"):
        return "not_a_number"
    return "invalid"


def validate_record(model: type[BaseModel], raw: Any, column_kinds: dict[str, str]) -> tuple[dict | None, str | None]:
    """One record: (values by wide name, None) or (None, reason)."""
    if not isinstance(raw, dict):
        return None, "not_an_object"
    for name, kind in column_kinds.items():
        value = raw.get(name)
        if kind == "numeric" and isinstance(value, bool):
            return None, "not_a_number"  # JSON true/false is not a number, whatever pydantic's lax mode says
        if kind == "numeric" and isinstance(value, float) and not math.isfinite(value):
            return None, "not_a_number"
    try:
        record = model.model_validate(raw)
    except ValidationError as error:
        return None, _reason(error.errors()[0], column_kinds)
    return record.model_dump(by_alias=True), None


def parse_response(
    dataset: Dataset,
    text: str | None,
    *,
    parents: int | None = None,
    finish_reason: str | None = None,
    refusal: str | None = None,
    model: type[BaseModel] | None = None,
) -> ParsedResponse:
    """Parse and validate the content of one chat completion (``model``: the record model, if built)."""
    result = ParsedResponse()
    if refusal:
        result.failure = "refusal"
        return result
    try:
        value = extract_json(text or "")
    except ValueError:
        result.failure = "truncated" if finish_reason == "length" else "malformed_json"
        return result
    if isinstance(value, dict) and isinstance(value.get(RECORDS_FIELD), list):
        raw_records = value[RECORDS_FIELD]
    elif isinstance(value, list):
        raw_records = value
    elif isinstance(value, dict) and len(value) == 1 and isinstance(next(iter(value.values())), list):
        raw_records = next(iter(value.values()))  # {"candidates": [...]}: a harmless naming slip
    else:
        result.failure = "no_records"
        return result
    model = model or record_model(dataset, parents=parents)
    kinds = {
        c.wide_name: "categorical" if isinstance(c, CategoricalColumn) else "numeric"
        for c in dataset.spec.modelled_columns
    }
    for raw in raw_records:
        record, reason = validate_record(model, raw, kinds)
        if reason:
            result.rejected[reason] += 1
        else:
            result.records.append(record)
    return result


def _whole_second(value: date | datetime) -> date | datetime:
    return value.replace(microsecond=0) if isinstance(value, datetime) else value


def records_to_frame(dataset: Dataset, records: list[dict]) -> tuple[pl.DataFrame, Counter, list[int]]:
    """Candidate frame (modelled columns, candidate dtypes) from validated records, checked once more
    with ``validate_candidates``; rows it objects to are dropped and counted. Also returns the indices
    of the records kept."""
    schema = candidate_schema(dataset)
    names = list(schema)
    dated = {c.wide_name: c.role for c in date_columns(dataset.spec)}
    rows = [
        [
            temporal_number(_whole_second(record[name]), dated[name])
            if name in dated and isinstance(record.get(name), (date, datetime))
            else record.get(name)
            for name in names
        ]
        for record in records
    ]
    frame = pl.DataFrame(rows, schema=schema, orient="row")
    rejected: Counter = Counter()
    keep = list(range(frame.height))
    if frame.height and sum(validate_candidates(dataset, frame).values()):
        keep = []
        for index in range(frame.height):
            problems = {k: v for k, v in validate_candidates(dataset, frame[index : index + 1]).items() if v}
            if problems:
                rejected[next(iter(problems))] += 1
            else:
                keep.append(index)
        frame = frame[keep]
    return frame, rejected, keep


def schema_text(schema: dict) -> str:
    return json.dumps(schema, indent=None, separators=(",", ":"), ensure_ascii=False)

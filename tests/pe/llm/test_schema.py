"""Structured outputs from the spec, local validation of returned records, request identity."""

from __future__ import annotations

import json
import typing

import pytest

from synth_assets.pe.generators import OfflineGenerator, validate_candidates
from synth_assets.pe.llm import (
    record_model,
    request_id,
    response_model,
    strict_json_schema,
)
from synth_assets.pe.llm.schema import extract_json, parse_response, records_to_frame


def _valid_record(tiny) -> dict:
    row = OfflineGenerator(tiny).random(1, seed=3).to_dicts()[0]
    return {**row, "model": "alpha", "region": "north", "purchase_year": 2015}


def test_record_model_follows_the_spec(tiny) -> None:
    model = record_model(tiny)
    fields = {f.alias: f for f in model.model_fields.values()}
    assert list(fields) == [c.wide_name for c in tiny.spec.modelled_columns]
    assert typing.get_args(fields["model"].annotation) == ("alpha", "beta", "gamma", "other")
    assert fields["purchase_year"].is_required()
    schema = strict_json_schema(model)
    properties = schema["properties"]
    assert properties["model"] == {"enum": ["alpha", "beta", "gamma", "other"], "type": "string"}
    assert properties["purchase_year"] == {"type": "integer", "minimum": 2000, "maximum": 2030}
    assert properties["minutes"]["anyOf"] == [
        {"type": "number", "minimum": 0.0, "maximum": 100000.0},
        {"type": "null"},
    ]
    assert properties["sessions"]["anyOf"][0]["type"] == "integer"
    assert schema["additionalProperties"] is False
    assert schema["required"] == list(properties)  # strict: every field required, nullable or not


def test_response_schema_is_strict_and_self_contained(tiny) -> None:
    schema = strict_json_schema(response_model(tiny, 7, parents=3))
    text = json.dumps(schema)
    assert "$ref" not in text and "$defs" not in text and '"title"' not in text and '"default"' not in text
    records = schema["properties"]["records"]
    assert records["minItems"] == records["maxItems"] == 7
    item = records["items"]
    assert item["additionalProperties"] is False
    assert next(iter(item["properties"])) == "parent"
    assert item["properties"]["parent"] == {
        "description": "Number of the record this one is a variation of.",
        "maximum": 3,
        "minimum": 1,
        "type": "integer",
    }


def test_descriptions_reach_the_schema(tiny_copy) -> None:
    from synth_assets.datasets.loading import load_dataset

    spec = tiny_copy / "dataset.yaml"
    spec.write_text(
        spec.read_text().replace(
            "{from: usage.minutes, role: numeric,",
            "{from: usage.minutes, description: Total minutes of use., role: numeric,",
        )
    )
    schema = strict_json_schema(record_model(load_dataset(tiny_copy)))
    assert schema["properties"]["minutes"]["description"] == "Total minutes of use."


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"model": "delta"}, "unknown_category"),
        ({"model": None}, "null_in_non_nullable"),
        ({"purchase_year": 1999}, "out_of_bounds"),
        ({"purchase_year": 2015.5}, "non_integer"),
        ({"purchase_year": "soon"}, "not_a_number"),
        ({"purchase_year": True}, "not_a_number"),
        ({"minutes": float("nan")}, "not_a_number"),
        ({"extra": 1}, "wrong_columns"),
        ({"region": ...}, "wrong_columns"),
    ],
)
def test_invalid_records_are_dropped_by_reason(tiny, change, reason) -> None:
    good = _valid_record(tiny)
    bad = {**good, **{k: v for k, v in change.items() if v is not ...}}
    for key, value in change.items():
        if value is ...:
            bad.pop(key)
    text = json.dumps({"records": [good, bad, good]}, allow_nan=True)
    parsed = parse_response(tiny, text)
    assert parsed.failure is None
    assert len(parsed.records) == 2
    assert dict(parsed.rejected) == {reason: 1}
    frame, rejected, kept = records_to_frame(tiny, parsed.records)
    assert frame.height == 2 and not rejected and kept == [0, 1]
    assert sum(validate_candidates(tiny, frame).values()) == 0


def test_parent_numbers_are_checked(tiny) -> None:
    good = _valid_record(tiny)
    text = json.dumps({"records": [{"parent": 1, **good}, {"parent": 3, **good}, {"parent": 1.0, **good}]})
    parsed = parse_response(tiny, text, parents=2)
    assert [r["parent"] for r in parsed.records] == [1]
    assert dict(parsed.rejected) == {"bad_parent": 2}


def test_response_level_failures(tiny) -> None:
    good = _valid_record(tiny)
    assert parse_response(tiny, '{"records": [{"model": "al').failure == "malformed_json"
    assert parse_response(tiny, '{"records": [{"model": "al', finish_reason="length").failure == "truncated"
    assert parse_response(tiny, "", refusal="I can't help").failure == "refusal"
    assert parse_response(tiny, '{"rows": 3}').failure == "no_records"
    # plain-prompt answers: JSON in a fenced block, or a bare list, are found
    fenced = "Sure!\n```json\n" + json.dumps({"records": [good]}) + "\n```\nanything else?"
    assert len(parse_response(tiny, fenced).records) == 1
    assert len(parse_response(tiny, "Here: " + json.dumps([good, good]) + " done").records) == 2
    with pytest.raises(ValueError):
        extract_json("no json here")


def test_request_identity_covers_model_prompt_seed_and_schema(tiny) -> None:
    schema = strict_json_schema(response_model(tiny, 5))
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hello"}],
        "seed": 1,
        "response_format": {"type": "json_schema", "json_schema": {"name": "c", "strict": True, "schema": schema}},
    }
    base = request_id("http://x/v1", body)
    assert base == request_id("http://x/v1", json.loads(json.dumps(body)))  # canonical: key order irrelevant
    other_schema = strict_json_schema(response_model(tiny, 6))
    variants = [
        {**body, "model": "n"},
        {**body, "messages": [{"role": "user", "content": "hello!"}]},
        {**body, "seed": 2},
        {**body, "response_format": {**body["response_format"], "json_schema": {"name": "c", "strict": True, "schema": other_schema}}},
    ]
    ids = {request_id("http://x/v1", v) for v in variants}
    assert len(ids) == 4 and base not in ids
    assert request_id("http://y/v1", body) != base

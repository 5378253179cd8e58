"""Private Evolution's candidates and the LLM record schema on date and timestamp columns: numbers inside
(days, seconds since 1970) within the public bounds, ISO dates towards the model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import polars as pl
import pytest

from synth_assets.datasets.loading import Dataset, load_dataset
from synth_assets.pe.generators import OfflineGenerator, validate_candidates
from synth_assets.pe.llm.prompts import render_records
from synth_assets.pe.llm.schema import parse_response, records_to_frame


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    path = Path(__file__).parents[1] / "datasets" / "dated_dataset.py"
    spec = importlib.util.spec_from_file_location("dated_dataset", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return load_dataset(module.write_dated_dataset(tmp_path_factory.mktemp("dated") / "members", members=50))


def test_offline_candidates_hold_day_and_second_numbers_within_the_bounds(members) -> None:
    candidates = OfflineGenerator(members).random(300, seed=0)
    assert candidates.schema["joined"] == pl.Int64 and candidates.schema["last_visit"] == pl.Int64
    joined = next(c for c in members.spec.modelled_columns if c.wide_name == "joined")
    assert joined.min <= candidates["joined"].min() and candidates["joined"].max() <= joined.max
    assert candidates["joined"].null_count() == 0  # not nullable
    assert not any(validate_candidates(members, candidates).values())


def test_llm_records_are_iso_dates_in_and_out(members) -> None:
    good = {"region": "north", "joined": "2010-05-01", "born": None, "visits": 3,
            "last_visit": "2024-01-02T03:04:05"}
    early = {**good, "joined": "1999-12-31"}
    null = {**good, "joined": None}
    parsed = parse_response(members, json.dumps({"records": [good, early, null]}))
    assert parsed.rejected == {"out_of_bounds": 1, "null_in_non_nullable": 1}
    frame, rejected, _ = records_to_frame(members, parsed.records)
    assert not rejected
    assert frame["joined"].to_list() == [14730] and frame["last_visit"].to_list() == [1704164645]
    assert json.loads(render_records(members, frame)[0]) == good

"""What leaves the machine: only public material (the spec, the public population description) and
DP-selected synthetic records. A value that occurs only in the private data never reaches a request,
and the key reaches nothing but the Authorization header."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest

from synth_assets.datasets.loading import load_dataset
from synth_assets.datasets.sources import read_source
from synth_assets.generators.private_evolution import PrivateEvolution
from synth_assets.pe.evolution import PEConfig
from synth_assets.pe.llm import LLMCandidateAPI
from synth_assets.privacy.releases import synthesize
from synth_assets.tables.build import build_reporting_table, build_wide_table

PLANTED_DEVICE = "dev-PRIVATE-7731"
PLANTED_MINUTES = 4242.42
DESCRIPTION = "Field devices sold to utilities in four regions; most are used daily. PUBLIC-MARKER-51."
KEY = "sk-test-key"
_NUMBER = re.compile(r"-?\d+\.\d+")


def _plant(directory: Path) -> None:
    devices = directory / "data" / "devices.csv"
    text = devices.read_bytes().decode("latin-1").rstrip("\n")
    devices.write_bytes((text + f"\n{PLANTED_DEVICE},gamma,north,2019\n").encode("latin-1"))
    sessions = pl.read_parquet(directory / "data" / "sessions.parquet")
    planted = pl.DataFrame(
        {"device_id": [PLANTED_DEVICE], "minutes": [PLANTED_MINUTES], "crashes": [3]}, schema=sessions.schema
    )
    pl.concat([sessions, planted]).write_parquet(directory / "data" / "sessions.parquet")
    (directory / "population.md").write_text(DESCRIPTION + "\n")
    spec = directory / "dataset.yaml"
    spec.write_text(spec.read_text() + "population_description: population.md\n")


def _wide(dataset) -> pl.DataFrame:
    sources = {name: read_source(dataset, name) for name in dataset.spec.sources}
    reporting = {t: build_reporting_table(dataset, t, sources) for t in dataset.spec.reporting_tables}
    return build_wide_table(dataset, reporting)[0]


def _outgoing(server) -> list[str]:
    """Everything sent to the endpoint: chat bodies, and the request bodies inside uploaded batch files
    (their custom_id is a hash, left out so that its hex digits cannot look like a value)."""
    texts = []
    for entry in server.log():
        if entry["method"] != "POST":
            continue
        if entry["path"] == "/v1/files":
            texts += [json.dumps(json.loads(line)["body"]) for line in entry["body"].splitlines() if line.strip()]
        else:
            texts.append(entry["body"])
    return texts


def _leaks(texts: list[str], private_strings: set[str], private_numbers: set[float]) -> list[str]:
    found = []
    for text in texts:
        found += [s for s in private_strings if s in text]
        found += [n for n in _NUMBER.findall(text) if float(n) in private_numbers]
    return found


@pytest.mark.parametrize("mode", ["realtime", "batch"])
def test_no_private_value_reaches_a_request(tiny_copy, server, make_settings, tmp_path, mode) -> None:
    _plant(tiny_copy)
    dataset = load_dataset(tiny_copy)
    wide = _wide(dataset)
    assert wide.filter(pl.col("device_id") == PLANTED_DEVICE)["minutes"].to_list() == [PLANTED_MINUTES]

    # private-only values: every entity key, and every real float value that is not public knowledge
    public_numbers = {float(n) for n in _NUMBER.findall((tiny_copy / "dataset.yaml").read_text() + DESCRIPTION)}
    public_numbers |= {float(c.min) for c in dataset.spec.modelled_columns if hasattr(c, "min")}
    public_numbers |= {float(c.max) for c in dataset.spec.modelled_columns if hasattr(c, "max")}
    private_numbers = {v for v in wide["minutes"].drop_nulls().to_list() if v != int(v)} - public_numbers
    private_strings = set(wide["device_id"].to_list()) | {str(PLANTED_MINUTES)}
    assert PLANTED_MINUTES in private_numbers and len(private_numbers) > 200
    # the check would see a leak: a real row in a request is caught
    assert _leaks([json.dumps(wide.row(0, named=True))], private_strings, private_numbers)

    settings = make_settings(mode=mode, structured_output="json_schema", batch_size=4)
    api = LLMCandidateAPI(dataset, settings)
    config = PEConfig(iterations=2, pool_size=40, selected=10, output="candidates", synthetic_rows=50)
    generator = PrivateEvolution(config, candidates=lambda dataset, prior, log=None: api)
    result = synthesize(dataset, generator, 2.0, wide, delta=1e-5, ledger=None)
    assert result.population.height == 50
    assert [kind for kind, _ in api.reports] == ["random", "variation"]  # both APIs went to the endpoint
    assert api.report.records_filled_offline == 0

    texts = _outgoing(server)
    assert len(texts) >= 8
    assert _leaks(texts, private_strings, private_numbers) == []
    # what does go out: the public description, the spec's domain, and selected synthetic records
    prompts = [text for text in texts if '"messages"' in text]
    assert len(prompts) >= 8 and all(DESCRIPTION in text for text in prompts)
    assert any('one of \\"alpha\\", \\"beta\\", \\"gamma\\", \\"other\\"' in text for text in texts)

    # the key went only into the Authorization header: not into bodies, the store, reports or metadata
    assert KEY not in "".join(texts)
    stored = "".join(
        p.read_bytes().decode("latin-1") for p in (tmp_path / "llm_cache").rglob("*") if p.is_file()
    )
    assert KEY not in stored
    assert KEY not in json.dumps(api.report.to_dict()) + json.dumps(api.describe()) + json.dumps(result.model.api)
    assert {e["authorization"] for e in server.log() if e["method"] == "POST"} == {f"Bearer {KEY}"}

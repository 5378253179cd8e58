"""Exporting a release: the wide and reporting tables in each format, and a manifest that describes them."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import polars as pl
import pytest

from synth_assets.export import FORMATS, MANIFEST, export_release
from synth_assets.generators.independent import IndependentMarginals
from synth_assets.privacy.releases import synthesize
from synth_assets.tables.decompose import decompose


@pytest.fixture(scope="module")
def release(tiny, wide):
    return synthesize(tiny, IndependentMarginals(), 1.0, wide, ledger=None)


def _read(path, fmt):
    return {"parquet": pl.read_parquet, "csv": pl.read_csv, "jsonl": pl.read_ndjson}[fmt](path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_table_is_written_and_described_by_the_manifest(tiny, release, tmp_path, fmt):
    records = [{**dataclasses.asdict(r), "identity": r.identity} for r in release.releases]
    path = export_release(tiny, release.population, tmp_path / fmt, fmt=fmt, generator="independent_marginals",
                          epsilon=1.0, delta=1e-5, releases=records, evaluation={"verdict": "green"})
    manifest = json.loads(path.read_text())
    expected = {"wide": release.population, **decompose(tiny, release.population)}
    assert [f["table"] for f in manifest["files"]] == list(expected)
    for entry in manifest["files"]:
        written = tmp_path / fmt / entry["file"]
        assert hashlib.sha256(written.read_bytes()).hexdigest() == entry["sha256"]
        frame = _read(written, fmt)
        assert frame.height == entry["rows"] == expected[entry["table"]].height
        assert frame.columns == entry["columns"]
    wide = _read(tmp_path / fmt / f"wide.{fmt}", fmt)
    key = tiny.spec.entity.key
    assert sorted(wide[key].cast(pl.Utf8).to_list()) == sorted(release.population[key].cast(pl.Utf8).to_list())
    assert manifest["epsilon"] == 1.0 and manifest["delta"] == 1e-5 and manifest["generator"] == "independent_marginals"
    assert [r["identity"] for r in manifest["releases"]] == [r.identity for r in release.releases]
    assert manifest["dataset_fingerprint"] == tiny.fingerprint and "one entity" in manifest["neighbouring_relation"]


def test_nothing_is_overwritten_unless_asked_and_bad_requests_are_refused(tiny, release, tmp_path):
    out = tmp_path / "out"
    export_release(tiny, release.population, out, generator="g", epsilon=1.0, delta=1e-5)
    before = (out / MANIFEST).read_text()
    with pytest.raises(FileExistsError, match="already holds files"):
        export_release(tiny, release.population, out, generator="g", epsilon=2.0, delta=1e-5)
    assert (out / MANIFEST).read_text() == before
    export_release(tiny, release.population, out, generator="g", epsilon=2.0, delta=1e-5, overwrite=True)
    assert json.loads((out / MANIFEST).read_text())["epsilon"] == 2.0
    with pytest.raises(ValueError, match="format 'xlsx' is not one of parquet, csv, jsonl"):
        export_release(tiny, release.population, tmp_path / "x", fmt="xlsx", generator="g", epsilon=1.0, delta=None)
    with pytest.raises(Exception, match="empty: nothing to export"):
        export_release(tiny, release.population.head(0), tmp_path / "y", generator="g", epsilon=1.0, delta=None)

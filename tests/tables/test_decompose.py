"""decompose() turns a wide table back into reporting tables; on real data it is exact."""

from pathlib import Path

import polars as pl
import pytest
import yaml

from synth_assets.benchmark.compare import compare
from synth_assets.benchmark.workload import run_workload
from synth_assets.datasets.loading import DEFAULT_DATASET, load_dataset
from synth_assets.datasets.sources import read_source
from synth_assets.tables.build import build_reporting_table, build_wide_table
from synth_assets.tables.decompose import decompose


def _real_tables(dataset):
    sources = {name: read_source(dataset, name) for name in dataset.spec.sources}
    reporting = {t: build_reporting_table(dataset, t, sources) for t in dataset.spec.reporting_tables}
    wide, report = build_wide_table(dataset, reporting)
    return reporting, wide, report


def _sorted(frame: pl.DataFrame, key: str) -> pl.DataFrame:
    return frame.sort(key).select(sorted(frame.columns))


def test_membership_follows_non_null_columns(tiny_dataset_dir: Path) -> None:
    dataset = load_dataset(tiny_dataset_dir)
    wide = pl.DataFrame(
        {
            "device_id": ["a", "b", "c"],
            "model": ["alpha", "beta", "other"],
            "region": ["north", "south", "east"],
            "purchase_year": [2020, 2021, 2022],
            "sessions": [3, None, None],
            "minutes": [12.5, None, 1.0],
            "crashes": [0, None, None],
            "channel": [None, None, "beta"],
            "version": [None, None, None],
        }
    )
    tables = decompose(dataset, wide)
    assert tables["profile"]["device_id"].to_list() == ["a", "b", "c"]
    assert tables["usage"]["device_id"].to_list() == ["a", "c"]  # c has minutes only
    assert tables["updates"]["device_id"].to_list() == ["c"]
    assert tables["usage"].columns == ["device_id", "sessions", "minutes", "crashes"]


def test_round_trip_on_tiny_data_is_exact_except_where_the_spec_maps_values(tiny_dataset_dir: Path) -> None:
    dataset = load_dataset(tiny_dataset_dir)
    reporting, wide, report = _real_tables(dataset)
    rebuilt = decompose(dataset, wide)
    for table in ("usage", "updates"):
        assert _sorted(rebuilt[table], "device_id").equals(_sorted(reporting[table], "device_id"))
    # 'délta' is not a public model name: the spec maps it to 'other', so the profile differs there
    assert report.mapped_to_other["model"] > 0
    scores = {s.name: s for s in compare(dataset.queries, run_workload(dataset.queries, reporting),
                                         run_workload(dataset.queries, rebuilt))}
    assert scores["models"].metrics["devices"] > 0
    for name in ("mean_minutes_by_region", "crash_tail", "busiest_years", "beta_regions"):
        assert scores[name].passed
        assert all(v in (0.0, 1.0) for v in scores[name].metrics.values())


def test_not_rebuildable_table_is_left_out_and_its_queries_fail(tiny_copy: Path) -> None:
    (tiny_copy / "reporting" / "updates.sql").write_text(
        "select device_id, channel, version, version * 10 as build from firmware"
    )
    (tiny_copy / "queries" / "builds.json").write_text(
        '{"name": "builds", "type": "aggregate", "sql": "select avg(build) as mean_build from updates"}'
    )
    path = tiny_copy / "dataset.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["reporting_tables"]["updates"].update(
        rebuildable=False, not_rebuildable_reason="'build' is derived and not in the wide table"
    )
    path.write_text(yaml.safe_dump(spec))
    dataset = load_dataset(tiny_copy)
    reporting, wide, _ = _real_tables(dataset)
    rebuilt = decompose(dataset, wide)
    assert "updates" not in rebuilt
    assert "build" in reporting["updates"].columns and "build" not in wide.columns
    scores = {s.name: s for s in compare(dataset.queries, run_workload(dataset.queries, reporting),
                                         run_workload(dataset.queries, rebuilt))}
    assert not scores["builds"].passed and "could not be rebuilt" in scores["builds"].error


@pytest.mark.slow
def test_round_trip_on_the_embedded_dataset_reproduces_every_answer() -> None:
    dataset = load_dataset(DEFAULT_DATASET)
    reporting, wide, report = _real_tables(dataset)
    assert report.changed_values == 0, "public domain must cover the real data for an exact round trip"
    rebuilt = decompose(dataset, wide)
    not_rebuildable = {t for t, r in dataset.spec.reporting_tables.items() if not r.rebuildable}
    assert set(rebuilt) == set(dataset.spec.reporting_tables) - not_rebuildable
    key = dataset.spec.entity.key
    for table, frame in rebuilt.items():
        original = reporting[table]
        assert _sorted(frame, key).equals(_sorted(original, key)), table
    real = run_workload(dataset.queries, reporting)
    scores = compare(dataset.queries, real, run_workload(dataset.queries, rebuilt))
    assert len(scores) == len(dataset.queries)
    for score in scores:
        assert score.passed, score
        perfect = 0.0 if score.direction == "<=" else 1.0
        assert all(v == perfect for v in score.metrics.values()), score

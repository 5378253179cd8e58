"""Reporting tables are checked against the spec; the wide table is conformed to the public domain."""

from pathlib import Path

import polars as pl
import pytest

from synth_assets.datasets.loading import DatasetError, load_dataset
from synth_assets.datasets.sources import read_source
from synth_assets.tables.build import (
    build_reporting_table,
    build_wide_table,
    conform_to_domain,
    reporting_table_sources,
    slice_entities,
)


def _sources(dataset):
    return {name: read_source(dataset, name) for name in dataset.spec.sources}


def _reporting(dataset):
    sources = _sources(dataset)
    return {t: build_reporting_table(dataset, t, sources) for t in dataset.spec.reporting_tables}


def test_reporting_tables_are_one_row_per_entity_with_declared_types(tiny_dataset_dir: Path) -> None:
    dataset = load_dataset(tiny_dataset_dir)
    tables = _reporting(dataset)
    assert tables["profile"].height == 400
    assert 0 < tables["usage"].height < 400  # only devices that were used
    assert tables["usage"].schema["sessions"] == pl.Int64
    assert tables["usage"].schema["minutes"] == pl.Float64
    assert tables["updates"]["device_id"].is_unique().all()


def test_sources_of_a_reporting_table_come_from_its_sql(tiny_dataset_dir: Path) -> None:
    dataset = load_dataset(tiny_dataset_dir)
    assert reporting_table_sources(dataset, "usage") == ["sessions"]
    assert reporting_table_sources(dataset, "profile") == ["devices"]


def test_wide_table_joins_and_maps_unseen_categories(tiny_dataset_dir: Path) -> None:
    dataset = load_dataset(tiny_dataset_dir)
    reporting = _reporting(dataset)
    wide, report = build_wide_table(dataset, reporting)
    assert wide.shape == (400, 9)
    assert wide.columns == [c.wide_name for c in dataset.spec.wide_table.columns]
    unseen = (reporting["profile"]["model"] == "délta").sum()
    assert unseen > 0
    assert report.mapped_to_other == {"model": unseen}
    assert set(wide["model"].unique()) <= {"alpha", "beta", "gamma", "other"}
    # devices without sessions have structural nulls in the usage columns
    unused = 400 - reporting["usage"].height
    assert wide["sessions"].null_count() == unused


def test_duplicate_entities_are_refused_with_the_fix(tiny_copy: Path) -> None:
    (tiny_copy / "reporting" / "usage.sql").write_text(
        "select device_id, 1::bigint as sessions, minutes, crashes::bigint as crashes from sessions"
    )
    dataset = load_dataset(tiny_copy)
    with pytest.raises(DatasetError) as error:
        build_reporting_table(dataset, "usage", _sources(dataset))
    assert "reporting table 'usage' (reporting/usage.sql): must have one row per device" in str(error.value)
    assert "GROUP BY device_id" in str(error.value)


def test_missing_key_and_missing_column(tiny_copy: Path) -> None:
    (tiny_copy / "reporting" / "updates.sql").write_text("select channel, version from firmware")
    dataset = load_dataset(tiny_copy)
    with pytest.raises(DatasetError, match="has no entity key column 'device_id'"):
        build_reporting_table(dataset, "updates", _sources(dataset))
    (tiny_copy / "reporting" / "updates.sql").write_text("select device_id, channel from firmware")
    dataset = load_dataset(tiny_copy)
    with pytest.raises(DatasetError, match=r"takes columns \['version'\] from it"):
        build_reporting_table(dataset, "updates", _sources(dataset))


def test_sql_error_names_the_file(tiny_copy: Path) -> None:
    (tiny_copy / "reporting" / "updates.sql").write_text("select device_id, chanel from firmware")
    dataset = load_dataset(tiny_copy)
    with pytest.raises(DatasetError, match=r"updates\.sql: SQL of reporting table 'updates' failed"):
        build_reporting_table(dataset, "updates", _sources(dataset))


def test_rows_with_every_column_null_cannot_be_rebuilt(tiny_copy: Path) -> None:
    (tiny_copy / "reporting" / "updates.sql").write_text(
        "select device_id, case when channel = 'beta' then channel end as channel,\n"
        "       case when channel = 'beta' then version end as version from firmware"
    )
    dataset = load_dataset(tiny_copy)
    with pytest.raises(DatasetError, match="rows have every column null"):
        build_reporting_table(dataset, "updates", _sources(dataset))


def test_extra_columns_make_a_table_not_rebuildable(tiny_copy: Path) -> None:
    (tiny_copy / "reporting" / "updates.sql").write_text(
        "select device_id, channel, version, 'x' as note from firmware"
    )
    dataset = load_dataset(tiny_copy)
    with pytest.raises(DatasetError, match=r"columns \['note'\] are not in the wide table"):
        build_reporting_table(dataset, "updates", _sources(dataset))


def test_domain_rules_clip_error_and_nullability(tiny_dataset_dir: Path) -> None:
    dataset = load_dataset(tiny_dataset_dir)
    wide, _ = build_wide_table(dataset, _reporting(dataset))
    # crashes is declared in [0, 500]: push two values out and they are clipped
    pushed = wide.with_columns(
        pl.when(pl.int_range(pl.len()) < 2).then(10_000).otherwise(pl.col("crashes")).alias("crashes")
    )
    from synth_assets.tables.build import WideTableReport

    report = WideTableReport(rows=pushed.height)
    conformed = conform_to_domain(dataset, pushed, report)
    assert report.clipped == {"crashes": 2}
    assert conformed["crashes"].max() == 500
    unknown_region = wide.with_columns(pl.lit("mars").alias("region"))
    with pytest.raises(DatasetError, match=r"'region' \(profile.region\): 400 values are not in its categories"):
        conform_to_domain(dataset, unknown_region)
    null_year = wide.with_columns(pl.lit(None, dtype=pl.Int64).alias("purchase_year"))
    with pytest.raises(DatasetError, match="400 rows are null but the column is not nullable"):
        conform_to_domain(dataset, null_year)


def test_entity_slice_is_deterministic_and_consistent_across_tables(tiny_dataset_dir: Path) -> None:
    dataset = load_dataset(tiny_dataset_dir)
    devices = read_source(dataset, "devices")
    sessions = read_source(dataset, "sessions")
    first = slice_entities(devices, "device_id", 0.25)
    assert first.equals(slice_entities(devices, "device_id", 0.25))
    assert 50 < first.height < 150
    kept_sessions = slice_entities(sessions, "device_id", 0.25)
    assert set(kept_sessions["device_id"]) <= set(first["device_id"])
    assert slice_entities(devices, "device_id", 1.0).height == devices.height


@pytest.mark.parametrize("column", ['a"b', "a b", 'x") from frame; select ("1'])
def test_slice_entities_quotes_the_column(column: str) -> None:
    ids = [f"d{i:04d}" for i in range(2000)]
    frame = pl.DataFrame({column: ids, "n": range(2000)})
    plain = slice_entities(pl.DataFrame({"id": ids, "n": range(2000)}), "id", 0.3)
    sliced = slice_entities(frame, column, 0.3)
    assert sliced.columns == [column, "n"]
    assert sliced[column].to_list() == plain["id"].to_list()  # the same entities whatever the column name
    assert 400 < sliced.height < 800


def test_slice_entities_keeps_a_column_named_like_its_bucket() -> None:
    frame = pl.DataFrame({"id": [f"d{i}" for i in range(1000)], "__bucket": range(1000)})
    sliced = slice_entities(frame, "id", 0.5)
    assert sliced.columns == ["id", "__bucket"]
    assert 0 < sliced.height < 1000

"""Great Expectations suites built from the spec: they pass on what the pipeline produces and count
what breaks the domain, the keys or the schema; importing the project never imports GX."""

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from synth_assets.checks.expectations import (
    gx_type_name,
    to_pandas,
    validate_domain,
    validate_reporting_table,
    validate_table_set,
    validate_wide_table,
)
from synth_assets.datasets.loading import load_dataset
from synth_assets.datasets.sources import read_source
from synth_assets.pe.generators import OfflineGenerator, validate_candidates
from synth_assets.tables.build import build_reporting_table, build_wide_table, reporting_table_sources
from synth_assets.tables.decompose import decompose


@pytest.fixture(scope="module")
def tiny(tiny_dataset_dir: Path):
    dataset = load_dataset(tiny_dataset_dir)
    sources = {name: read_source(dataset, name) for name in dataset.spec.sources}
    reporting = {
        table: build_reporting_table(
            dataset, table, {s: sources[s] for s in reporting_table_sources(dataset, table)}
        )
        for table in dataset.spec.reporting_tables
    }
    wide, _ = build_wide_table(dataset, reporting)
    return dataset, reporting, wide


def _counts(report) -> dict[str, int]:
    return report.unexpected_counts(failed_only=True)


def test_candidates_from_the_generator_are_in_domain(tiny) -> None:
    dataset, _, _ = tiny
    pool = OfflineGenerator(dataset).random(300, seed=3)
    report = validate_domain(dataset, pool)
    assert report.success, report.to_markdown()
    assert report.rows == 300 and report.unexpected_total == 0
    assert "| model | column_values_to_be_in_set | in {alpha, beta, gamma, other} | 0 / 300 | pass |" in (
        report.to_markdown()
    )


def test_values_outside_the_domain_are_counted_per_expectation(tiny) -> None:
    dataset, _, _ = tiny
    pool = OfflineGenerator(dataset).random(100, seed=4)
    row = pl.int_range(pl.len())
    bad = pool.with_columns(
        pl.when(row < 3).then(pl.lit("zeta")).otherwise(pl.col("model")).alias("model"),
        pl.when(row < 2).then(pl.lit(2040)).otherwise(pl.col("purchase_year")).alias("purchase_year"),
        pl.when(row < 4).then(None).otherwise(pl.col("region")).alias("region"),
        pl.when(row == 0).then(pl.lit(float("nan"))).otherwise(pl.col("minutes")).alias("minutes"),
        pl.when(row < 5).then(pl.lit(2.5)).otherwise(pl.col("version").cast(pl.Float64)).alias("version"),
    )
    report = validate_domain(dataset, bad)
    assert not report.success
    assert _counts(report) == {
        "model: column_values_to_be_in_set": 3,
        "purchase_year: column_values_to_be_between": 2,
        "region: column_values_to_not_be_null": 4,
        "minutes: column_values_to_be_between": 1,  # NaN is outside [min, max]
        "version: column_values_to_be_integral": 5,
    }
    # a float column declared integer also fails its type, with the observed dtype
    version_type = next(
        o for o in report.failed if o.column == "version" and o.expectation.endswith("type_list")
    )
    assert version_type.observed == "Float64"
    markdown = report.to_markdown()
    assert "| model | column_values_to_be_in_set | in {alpha, beta, gamma, other} | 3 / 100 | **FAIL** | 'zeta'" in markdown
    assert "minutes: column_values_to_be_between (1)" in report.summary()
    # the same defects as the generator's own validation finds
    plain = validate_candidates(dataset, bad)
    assert plain["unknown_category"] == 3 and plain["null_in_non_nullable"] == 4
    assert plain["out_of_bounds"] + plain["not_a_number"] == 3


def test_wrong_columns_fail_and_are_named(tiny) -> None:
    dataset, _, _ = tiny
    pool = OfflineGenerator(dataset).random(20, seed=5).drop("crashes").with_columns(pl.lit(1).alias("extra"))
    report = validate_domain(dataset, pool)
    columns = report.outcomes[0]
    assert columns.expectation == "expect_table_columns_to_match_set" and not columns.success
    assert "crashes" in columns.observed and "extra" in columns.observed
    missing = [o for o in report.failed if o.column == "crashes"]
    assert missing and all(o.error == "column 'crashes' missing" for o in missing)


def test_population_needs_a_unique_key(tiny) -> None:
    dataset, _, wide = tiny
    report = validate_domain(dataset, wide, population=True)
    assert report.success, report.to_markdown()
    duplicated = pl.concat([wide, wide.head(7)])
    assert _counts(validate_domain(dataset, duplicated, population=True)) == {
        "device_id: column_values_to_be_unique": 14
    }


def test_reporting_and_wide_tables_pass_and_key_defects_fail(tiny) -> None:
    dataset, reporting, wide = tiny
    for table, frame in reporting.items():
        assert validate_reporting_table(dataset, table, frame).success, table
    assert validate_wide_table(dataset, wide).success

    usage = reporting["usage"]
    broken = pl.concat([usage, usage.head(2)]).with_columns(pl.col("minutes").cast(pl.Utf8))
    broken = broken.with_columns(
        pl.when(pl.int_range(pl.len()) == 5).then(None).otherwise(pl.col("device_id")).alias("device_id")
    )
    report = validate_reporting_table(dataset, "usage", broken.drop("crashes"))
    assert _counts(report) == {
        "device_id: column_values_to_be_unique": 4,
        "device_id: column_values_to_not_be_null": 1,
    }
    failed = {o.label for o in report.failed}
    assert "crashes: column_to_exist" in failed
    assert "minutes: column_values_to_be_in_type_list" in failed
    # private data: the markdown of a real table can leave values out
    assert "examples" not in report.to_markdown(examples=False)


def test_decomposed_tables_must_have_the_reporting_schema(tiny) -> None:
    dataset, reporting, wide = tiny
    schemas = {t: dict(reporting[t].schema) for t in ("profile", "usage", "updates")}
    tables = decompose(dataset, wide)
    assert validate_table_set(tables, schemas).success

    tables["usage"] = tables["usage"].with_columns(pl.col("sessions").cast(pl.Float64))
    del tables["updates"]
    report = validate_table_set(tables, schemas)
    failed = {o.label: o for o in report.failed}
    assert set(failed) == {"usage.sessions: column_values_to_be_in_type_list", "updates.(table): table_in_set"}
    assert failed["usage.sessions: column_values_to_be_in_type_list"].observed == "Float64"
    assert "| usage | sessions | column_values_to_be_in_type_list | dtype Int64 | — | **FAIL** (observed Float64) |" in (
        report.to_markdown(examples=False)
    )


def test_pandas_conversion_keeps_types_and_nan_apart_from_null() -> None:
    frame = pl.DataFrame(
        {"i": [1, None], "f": [float("nan"), None], "s": ["a", None], "b": [True, None]},
        schema={"i": pl.Int32, "f": pl.Float64, "s": pl.String, "b": pl.Boolean},
    )
    pdf = to_pandas(frame)
    assert [type(pdf[c].dtype).__name__ for c in pdf] == ["Int32Dtype", "Float64Dtype", "StringDtype", "BooleanDtype"]
    assert pdf["f"].isna().tolist() == [False, True]
    assert gx_type_name(pl.Int64) == "Int64Dtype" and gx_type_name(pl.String) == "StringDtype"


def test_importing_the_project_does_not_import_great_expectations() -> None:
    code = (
        "import sys\n"
        "import synth_assets, synth_assets.checks, synth_assets.defs.graph\n"
        "import synth_assets.defs.real.checks, synth_assets.defs.synthetic.checks\n"
        "print('great_expectations' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_a_large_frame_is_checked_in_batches_with_the_same_outcome(tiny, monkeypatch) -> None:
    import synth_assets.checks.expectations as expectations

    dataset, _, _ = tiny
    pool = OfflineGenerator(dataset).random(100, seed=4)
    row = pl.int_range(pl.len())
    bad = pool.with_columns(  # breaks in the first, a middle and the last batch
        pl.when(row.is_in([0, 45, 99])).then(pl.lit("zeta")).otherwise(pl.col("model")).alias("model"),
        pl.when(row == 60).then(pl.lit(2040)).otherwise(pl.col("purchase_year")).alias("purchase_year"),
    )
    whole = validate_domain(dataset, bad)
    monkeypatch.setattr(expectations, "DOMAIN_BATCH_ROWS", 30)
    batched = validate_domain(dataset, bad)
    assert batched.rows == 100 and _counts(batched) == _counts(whole) == {
        "model: column_values_to_be_in_set": 3, "purchase_year: column_values_to_be_between": 1}
    assert [(o.expectation, o.column, o.success) for o in batched.outcomes] == [
        (o.expectation, o.column, o.success) for o in whole.outcomes]
    model = next(o for o in batched.failed if o.column == "model")
    assert model.element_count == 100 and set(model.examples) == {"zeta"}

"""Date and timestamp columns: the spec, reading them from the reporting SQL, bounds, and nullability."""

from __future__ import annotations

import importlib.util
import re
from datetime import date, datetime
from pathlib import Path

import polars as pl
import pytest
from pydantic import TypeAdapter, ValidationError

from synth_assets.benchmark.compare import compare
from synth_assets.benchmark.workload import run_workload
from synth_assets.datasets.loading import DatasetError, load_dataset
from synth_assets.datasets.spec import DateColumn, WideColumn
from synth_assets.datasets.temporal import as_dates, as_numbers
from synth_assets.generators.independent import IndependentMarginals
from synth_assets.tables.build import WideTableReport, build_real_tables, conform_to_domain
from synth_assets.tables.decompose import decompose


def _helper():
    """tests/datasets/dated_dataset.py (the tests are not a package)."""
    spec = importlib.util.spec_from_file_location("dated_dataset", Path(__file__).with_name("dated_dataset.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


write_dated_dataset = _helper().write_dated_dataset

COLUMN = TypeAdapter(WideColumn)


@pytest.fixture(scope="module")
def dated_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dated_dataset(tmp_path_factory.mktemp("dated") / "members", members=600)


@pytest.fixture(scope="module")
def dated_real(dated_dir: Path):
    dataset = load_dataset(dated_dir)
    return dataset, build_real_tables(dataset)


def _spec_with(directory: Path, old: str, new: str) -> None:
    spec = directory / "dataset.yaml"
    text = spec.read_text()
    assert old in text
    spec.write_text(text.replace(old, new))


# ---------------------------------------------------------------------------------------------- spec


def test_bounds_are_dates_held_as_days_or_seconds_since_1970() -> None:
    joined = COLUMN.validate_python({"from": "p.joined", "role": "date", "min": date(2000, 1, 1),
                                     "max": "2024-12-31", "bins": 25})
    assert isinstance(joined, DateColumn)
    assert (joined.min, joined.max) == (10957, 20088)
    assert joined.value(joined.max) == date(2024, 12, 31) and joined.type == "integer"
    seen = COLUMN.validate_python({"from": "p.seen", "role": "timestamp", "min": "2020-01-01T00:00:00",
                                   "max": datetime(2020, 1, 2, 12, 0, 0)})
    assert (seen.min, seen.max) == (1577836800, 1577836800 + 36 * 3600)
    assert seen.label(seen.max) == "2020-01-02 12:00:00"
    # the dump gives the dates back, and reads again as the same column
    dumped = joined.model_dump(mode="json", by_alias=True)
    assert dumped["min"] == "2000-01-01" and "type" not in dumped and "scale" not in dumped
    assert COLUMN.validate_python(dumped) == joined


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("min", 1990, "min: 1990 is not a date: write a date as YYYY-MM-DD"),
        ("min", "1990-13-01", "min: '1990-13-01' is not a date"),
        ("max", "yesterday", "max: 'yesterday' is not a date"),
        ("min", datetime(2000, 1, 1, 10, 30), "has a time of day, but a date column holds dates"),
    ],
)
def test_a_bound_that_is_not_a_date_is_refused_with_its_value(field, value, message) -> None:
    column = {"from": "p.joined", "role": "date", "min": "2000-01-01", "max": "2024-12-31", field: value}
    with pytest.raises(ValidationError, match=re.escape(message)):
        COLUMN.validate_python(column)


def test_numeric_settings_and_reversed_bounds_are_refused() -> None:
    base = {"from": "p.joined", "role": "date", "min": "2000-01-01", "max": "2024-12-31"}
    with pytest.raises(ValidationError, match="a date column takes no type"):
        COLUMN.validate_python({**base, "type": "integer"})
    with pytest.raises(ValidationError, match="binned linearly"):
        COLUMN.validate_python({**base, "scale": "log"})
    with pytest.raises(ValidationError, match=r"min \(2024-12-31\) must be before max \(2000-01-01\)"):
        COLUMN.validate_python({**base, "min": "2024-12-31", "max": "2000-01-01"})
    with pytest.raises(ValidationError, match="is not a timestamp"):
        COLUMN.validate_python({**base, "role": "timestamp", "min": "noon"})


def test_a_bad_bound_in_the_file_names_the_file_the_column_and_the_value(tmp_path: Path) -> None:
    directory = write_dated_dataset(tmp_path / "members", members=50)
    _spec_with(directory, "min: 2000-01-01", "min: 2000-02-30")
    with pytest.raises(DatasetError) as error:
        load_dataset(directory)
    message = str(error.value)
    assert str(directory / "dataset.yaml") in message
    assert "wide_table.columns.2.date.min" in message and "(the column from: profile.joined)" in message
    assert "'2000-02-30' is not a date" in message


# --------------------------------------------------------------------------------------- reading


def test_reporting_and_wide_tables_hold_dates(dated_real) -> None:
    dataset, real = dated_real
    assert real.reporting["profile"].schema["joined"] == pl.Date
    assert real.reporting["activity"].schema["last_visit"] == pl.Datetime("us")
    assert real.wide.schema["joined"] == pl.Date and real.wide.schema["born"] == pl.Date
    assert real.wide.schema["last_visit"] == pl.Datetime("us")
    assert real.wide["born"].null_count() > 0  # the empty CSV cells
    numbers = as_numbers(dataset.spec, real.wide)
    assert numbers.schema["joined"] == pl.Int64
    assert as_dates(dataset.spec, numbers).equals(real.wide)


def test_dates_outside_the_bounds_are_clipped_or_refused(dated_real, tmp_path: Path) -> None:
    dataset, real = dated_real
    early = real.wide.with_columns(
        pl.when(pl.int_range(pl.len()) < 3).then(pl.lit(date(1999, 6, 1))).otherwise(pl.col("joined"))
        .alias("joined")
    )
    report = WideTableReport(rows=early.height)
    conformed = conform_to_domain(dataset, early, report)
    assert report.clipped == {"joined": 3}
    assert conformed["joined"].min() == date(2000, 1, 1) and conformed.schema["joined"] == pl.Date
    directory = write_dated_dataset(tmp_path / "members", members=50)
    _spec_with(directory, "max: 2024-12-31, bins: 25}", "max: 2024-12-31, bins: 25, out_of_bounds: error}")
    strict = load_dataset(directory)
    with pytest.raises(DatasetError, match=r"'joined' \(profile.joined\): 3 values fall outside "
                                           r"\[2000-01-01, 2024-12-31\], e.g. 1999-06-01"):
        conform_to_domain(strict, early)


def test_a_source_column_that_is_not_a_date_is_refused(tmp_path: Path) -> None:
    directory = write_dated_dataset(tmp_path / "members", members=50)
    (directory / "reporting" / "profile.sql").write_text(
        "select member_id, region, year(joined::date) as joined, born from members\n"
    )
    with pytest.raises(DatasetError) as error:
        build_real_tables(load_dataset(directory))
    message = str(error.value)
    assert str(directory / "reporting" / "profile.sql") in message
    assert "reporting table 'profile'" in message and "column 'joined'" in message
    assert "not dates" in message and "make_date(year, month, day)" in message
    (directory / "reporting" / "profile.sql").write_text(
        "select member_id, region, case when member_id = 'm00007' then '31/12/2001' else joined::varchar "
        "end as joined, born from members\n"
    )
    with pytest.raises(DatasetError, match=r"1 values of column 'joined' are not dates, e.g. '31/12/2001'"):
        build_real_tables(load_dataset(directory))


def test_workload_sql_over_dates_runs_and_scores_on_synthetic_tables(dated_real) -> None:
    dataset, real = dated_real
    generator = IndependentMarginals()
    plan = generator.plan(dataset, 100.0, 1e-6)
    synthetic = generator.sample(dataset, generator.fit(dataset, real.wide, plan), rows=real.wide.height)
    tables = decompose(dataset, synthetic)
    assert tables["profile"].schema["joined"] == pl.Date
    assert tables["activity"].schema["last_visit"] == pl.Datetime("us")
    answers = run_workload(dataset.queries, tables)
    real_answers = run_workload(dataset.queries, real.reporting)
    years = real_answers["joined_by_year"]["year"]
    assert years.dtype.is_temporal() and years.min() >= datetime(2000, 1, 1)  # date_trunc gives a timestamp
    scores = {s.name: s for s in compare(dataset.queries, real_answers, answers)}
    assert all(s.error is None for s in scores.values())
    assert scores["joined_by_year"].passed and scores["joined_since_2020"].passed


# ------------------------------------------------------------------------------------------- nulls


@pytest.mark.parametrize(
    "column, table, nullable_line",
    [
        ("born", "profile", "{from: profile.born, role: date, min: 1930-01-01, max: 2009-12-31, nullable: true}"),
        ("visits", "activity",
         "{from: activity.visits, role: numeric, type: integer, min: 0, max: 100, nullable: true}"),
        ("region", "profile", None),
    ],
)
def test_a_null_in_a_column_that_is_not_nullable_stops_the_build(tmp_path, column, table, nullable_line) -> None:
    """A date with empty cells, a numeric column of a table some entities have no row in, a category
    the SQL makes null: each refused, naming the spec file, the column, its table and SQL file, the count."""
    directory = write_dated_dataset(tmp_path / "members", members=200)
    if nullable_line is None:
        (directory / "reporting" / "profile.sql").write_text(
            "select member_id, case when member_id < 'm00005' then null else region end as region, joined, "
            "born from members\n"
        )
        nulls = 5
    else:
        nulls = build_real_tables(load_dataset(directory)).wide[column].null_count()
        _spec_with(directory, nullable_line, nullable_line.replace(", nullable: true}", "}"))
    assert nulls > 0
    with pytest.raises(DatasetError) as error:
        build_real_tables(load_dataset(directory))
    message = str(error.value)
    assert message.startswith(f"{directory / 'dataset.yaml'}: wide_table column {column!r}")
    assert f"from reporting table {table!r} (reporting/{table}.sql)" in message
    assert f": {nulls} rows are null but the column is not nullable" in message
    assert "set nullable: true" in message and "fix the SQL" in message


def test_absent_entities_are_named_as_the_source_of_nulls(tmp_path) -> None:
    directory = write_dated_dataset(tmp_path / "members", members=200)
    _spec_with(directory, "max: 2024-12-31T23:59:59, nullable: true}", "max: 2024-12-31T23:59:59}")
    with pytest.raises(DatasetError, match="an entity with no row in 'activity' is null in every column"):
        build_real_tables(load_dataset(directory))

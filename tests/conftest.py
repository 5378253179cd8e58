"""Shared fixtures: a small dataset directory written by the tests, in every source format."""

from __future__ import annotations

import os
import re
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

from synth_assets.datasets.loading import Dataset, load_dataset
from synth_assets.tables.build import RealTables, build_real_tables

DOCS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "dataset-spec.md"


def example_files_from_docs(page: Path = DOCS_PAGE) -> dict[str, str]:
    """The files of the documented example: every "`path`:" line followed by inline code or a block."""
    text = page.read_text().split("## A small complete example", 1)[1]
    files = {}
    for match in re.finditer(r"^`([\w./]+)`:(?: `([^\n]+)`[ \t]*$|[ \t]*\n\n```\w*\n(.*?)\n```)", text, re.M | re.S):
        path, inline, block = match.groups()
        files[path] = inline if inline is not None else block
    return files


TINY_GENERATORS = ["private_evolution", "independent_marginals"]
"""The tiny dataset's branches in the tests: the graphical models' branches are tested on their own
(tests/defs/synthetic/test_graphical_branch.py), so that every other graph test stays quick."""


def write_tiny_dataset(
    directory: Path, n_devices: int = 400, seed: int = 7, generators: list[str] | None = TINY_GENERATORS
) -> Path:
    """Write the documented 'devices' example: the spec, SQL and queries come from docs/dataset-spec.md,
    the data (CSV, Parquet and DuckDB sources) is generated here. ``generators`` are written as its
    ``synthesis.generators`` (None: the spec's default)."""
    rng = np.random.default_rng(seed)
    (directory / "data").mkdir(parents=True, exist_ok=True)
    (directory / "reporting").mkdir(exist_ok=True)
    (directory / "queries").mkdir(exist_ok=True)
    ids = [f"d{i:05d}" for i in range(n_devices)]
    # 'délta' is an unseen model (mapped to 'other'), in Latin-1 to exercise the encoding option.
    models = rng.choice(["alpha", "beta", "gamma", "délta"], size=n_devices, p=[0.5, 0.3, 0.15, 0.05])
    devices = pl.DataFrame(
        {
            "device_id": ids,
            "model": models,
            "region": rng.choice(["north", "south", "east", "west"], size=n_devices),
            "purchase_year": rng.integers(2010, 2025, size=n_devices),
        }
    )
    (directory / "data" / "devices.csv").write_bytes(devices.write_csv().encode("latin-1"))
    used = [i for i in ids if rng.random() < 0.8]
    n_sessions = len(used) * 5
    sessions = pl.DataFrame(
        {
            "device_id": rng.choice(used, size=n_sessions),
            "minutes": rng.gamma(2.0, 20.0, size=n_sessions).round(2),
            "crashes": rng.poisson(0.3, size=n_sessions),
        }
    )
    sessions.write_parquet(directory / "data" / "sessions.parquet")
    updated = [i for i in ids if rng.random() < 0.5]
    firmware = pl.DataFrame(
        {
            "device_id": updated,
            "channel": rng.choice(["stable", "beta"], size=len(updated), p=[0.8, 0.2]),
            "version": rng.integers(1, 12, size=len(updated)),
        }
    )
    database = directory / "data" / "firmware.duckdb"
    database.unlink(missing_ok=True)
    with duckdb.connect(str(database)) as connection:
        connection.register("firmware_frame", firmware.to_arrow())
        connection.execute("create table firmware as select * from firmware_frame")
    for relative, content in example_files_from_docs().items():
        (directory / relative).write_text(content + "\n")
    if generators is not None:
        spec = directory / "dataset.yaml"
        spec.write_text(spec.read_text() + f"synthesis:\n  generators: [{', '.join(generators)}]\n")
    return directory


@pytest.fixture(scope="session")
def tiny_dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("devices"))


@pytest.fixture(scope="session")
def tiny(tiny_dataset_dir: Path) -> Dataset:
    """The tiny dataset, loaded."""
    return load_dataset(tiny_dataset_dir)


@pytest.fixture(scope="session")
def tiny_real(tiny: Dataset) -> RealTables:
    """The tiny dataset's real half, built in memory."""
    return build_real_tables(tiny)


@pytest.fixture(scope="session")
def wide(tiny_real: RealTables) -> pl.DataFrame:
    """The tiny dataset's real wide table."""
    return tiny_real.wide


@pytest.fixture
def tiny_copy(tmp_path: Path) -> Path:
    """A fresh, writable copy of the tiny dataset for tests that break it on purpose."""
    return write_tiny_dataset(tmp_path / "devices")


@pytest.fixture
def tiny_with_default_generators(tmp_path: Path) -> Path:
    """The tiny dataset with the spec's default generators (the graphical models' branches included)."""
    return write_tiny_dataset(tmp_path / "devices_all", generators=None)


@pytest.fixture(autouse=True)
def _isolated_warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test writes its DuckDB warehouse under its own temporary directory."""
    monkeypatch.setenv("SYNTH_ASSETS_WAREHOUSE", str(tmp_path / "warehouse"))
    monkeypatch.delenv("SYNTH_ASSETS_DATASET", raising=False)
    for name in list(os.environ):  # never send a test to an endpoint a developer configured
        if name.startswith(("SYNTH_ASSETS_LLM_", "OPENAI_")):
            monkeypatch.delenv(name)


@pytest.fixture
def epsilon_instance():
    """``epsilon_instance(dataset, epsilons=None)``: an ephemeral Dagster instance on which the epsilons
    (default: the dataset's grid) are partitions, as the CLI and the grid's sensor make them."""
    import dagster as dg

    from synth_assets.defs.synthetic.assets import add_epsilon_partitions

    def make(dataset: Dataset, epsilons=None) -> dg.DagsterInstance:
        instance = dg.DagsterInstance.ephemeral()
        add_epsilon_partitions(instance, dataset, epsilons or dataset.spec.privacy.epsilon_grid)
        return instance

    return make

"""The warehouse's two stores: DuckDB tables, or Parquet files (one per partition) behind DuckDB views."""

import stat
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from synth_assets.datasets.loading import load_dataset
from synth_assets.export import stored_release
from synth_assets.io_managers import (
    PARQUET_ROOT_ENV_VAR,
    DuckDBWarehouseIOManager,
    ParquetWarehouseIOManager,
    warehouse_io_manager,
)
from synth_assets.pipeline import run_pipeline

REFERENCE = "independent_marginals"


def _run(dataset, tmp_path: Path, name: str, epsilons=(1.0,)):
    database = tmp_path / f"{name}.duckdb"
    run = run_pipeline(dataset, list(epsilons), instance=dg.DagsterInstance.ephemeral(), database=str(database),
                       generators=[REFERENCE])
    return database, run


def test_the_parquet_store_holds_the_same_release_as_duckdb_one_file_per_partition(
    tiny_dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = load_dataset(tiny_dataset_dir)
    in_duckdb, _ = _run(dataset, tmp_path, "tables")
    root = tmp_path / "parquet"
    monkeypatch.setenv(PARQUET_ROOT_ENV_VAR, str(root))
    in_parquet, run = _run(dataset, tmp_path, "files", epsilons=(1.0, 4.0))
    assert run.comparison is not None  # the evaluation and the comparison read through the views

    population = root / "reference" / "independent_marginals"
    files = sorted(p.relative_to(population).as_posix() for p in population.rglob("*.parquet"))
    assert files == ["__partition_key=1/data.parquet", "__partition_key=4/data.parquet"]
    assert stat.S_IMODE((population / "__partition_key=1" / "data.parquet").stat().st_mode) == 0o600
    assert (root / "real" / "training" / "data.parquet").is_file()  # not partitioned: one file
    assert (root / "synthetic" / "decomposed_tables__members").is_dir() is False  # PE did not run
    assert any((root / "reference").glob("decomposed_tables__*"))  # a table set: one table per member

    with duckdb.connect(str(in_parquet), read_only=True) as connection:
        kinds = dict(connection.execute(
            "select table_schema || '.' || table_name, table_type from information_schema.tables").fetchall())
    assert kinds["reference.independent_marginals"] == "VIEW" and kinds["real.training"] == "VIEW"
    assert kinds["ledger.releases"] == "BASE TABLE"  # the ledger stays in DuckDB

    # the same seed, data and settings: the same release, whichever store holds it
    from_files = stored_release(dataset, 1.0, REFERENCE, database=in_parquet)
    from_tables = stored_release(dataset, 1.0, REFERENCE, database=in_duckdb)
    assert from_files.population.equals(from_tables.population)
    assert from_files.population.equals(pl.read_parquet(population / "__partition_key=1" / "data.parquet"))
    assert [r["identity"] for r in from_files.releases] == [r["identity"] for r in from_tables.releases]


def test_the_store_is_chosen_by_the_environment_and_a_duckdb_table_is_not_shadowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster_duckdb import DuckDBResource

    resource = DuckDBResource(database=str(tmp_path / "w.duckdb"))
    monkeypatch.delenv(PARQUET_ROOT_ENV_VAR, raising=False)
    assert isinstance(warehouse_io_manager(resource), DuckDBWarehouseIOManager)
    monkeypatch.setenv(PARQUET_ROOT_ENV_VAR, str(tmp_path / "files"))
    manager = warehouse_io_manager(resource)
    assert isinstance(manager, ParquetWarehouseIOManager) and manager.root == str(tmp_path / "files")

    with duckdb.connect(str(tmp_path / "w.duckdb")) as connection:
        connection.execute("create schema real; create table real.training as select 1 as x")

    @dg.asset(key=["real", "training"])
    def training() -> pl.DataFrame:
        return pl.DataFrame({"x": [2]})

    result = dg.materialize([training], resources={"io_manager": manager}, raise_on_error=False)
    assert not result.success
    message = next(e for e in result.all_events if e.is_step_failure).event_specific_data.error.to_string()
    assert "real.training is a table of the DuckDB warehouse" in message and PARQUET_ROOT_ENV_VAR in message

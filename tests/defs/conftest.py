"""Fixtures of the graph tests: the tiny dataset's real half, materialized through Dagster once."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from synth_assets.datasets.loading import load_dataset
from synth_assets.defs.graph import build_assets, build_resources
from synth_assets.defs.real.assets import build_real_assets


@pytest.fixture(scope="session")
def tiny_real_warehouse(tiny_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DuckDB warehouse holding the tiny dataset's real half, as ``dg.materialize`` of the real keys
    writes it. Tests that start from the real half take a copy (``real_half_database``) instead of
    materializing the same tables again; the real half itself is tested in tests/defs/real/."""
    dataset = load_dataset(tiny_dataset_dir)
    database = tmp_path_factory.mktemp("real_half") / "w.duckdb"
    real = [k for a in build_real_assets(dataset) for k in a.keys]
    result = dg.materialize(
        build_assets(dataset), resources=build_resources(dataset, database=str(database)), selection=real
    )
    assert result.success
    with duckdb.connect(str(database)) as connection:
        connection.execute("checkpoint")  # everything in the one file: no write-ahead log to copy
    return database


@pytest.fixture
def real_half_database(tiny_real_warehouse: Path, tmp_path: Path) -> Path:
    """``tmp_path / "w.duckdb"``: a fresh copy of ``tiny_real_warehouse`` for this test to write to."""
    database = tmp_path / "w.duckdb"
    shutil.copyfile(tiny_real_warehouse, database)
    return database


def _failure_text(result: dg.ExecuteInProcessResult) -> str:
    lines = []
    for event in (e for e in result.all_events if e.is_step_failure):
        refusal = event.event_specific_data.user_failure_data
        if refusal is not None:
            lines.append(str(refusal.metadata["refusal"].value))
        lines.append(event.event_specific_data.error.to_string())
    return "\n".join(lines)


@pytest.fixture
def failure_text():
    """``failure_text(result)``: the failed steps' errors; a refusal (a dg.Failure) adds its kind, e.g.
    BudgetExceeded."""
    return _failure_text

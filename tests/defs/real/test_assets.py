"""The real-data half materializes through Dagster into a real DuckDB file, for any dataset directory."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from synth_assets.benchmark.workload import run_workload
from synth_assets.datasets.loading import DEFAULT_DATASET, load_dataset
from synth_assets.defs.graph import build_definitions, build_resources
from synth_assets.defs.real.assets import build_real_assets
from synth_assets.sql import fetch_polars

REPO = Path(__file__).resolve().parents[3]


def _tables(database: Path) -> set[str]:
    with duckdb.connect(str(database), read_only=True) as connection:
        rows = connection.execute(
            "select table_schema || '.' || table_name from information_schema.tables"
        ).fetchall()
    return {r[0] for r in rows}


def test_tiny_dataset_materializes_into_duckdb(tiny_dataset_dir: Path, tmp_path: Path) -> None:
    dataset = load_dataset(tiny_dataset_dir)
    database = tmp_path / "devices.duckdb"
    result = dg.materialize(build_real_assets(dataset), resources=build_resources(dataset, database=str(database)))
    assert result.success
    tables = _tables(database)
    assert {"raw.devices", "raw.sessions", "raw.firmware"} <= tables
    assert {"reporting.profile", "reporting.usage", "reporting.updates", "real.devices_wide"} <= tables
    assert {f"real.benchmark_answers__{q.name}" for q in dataset.queries} <= tables

    with duckdb.connect(str(database), read_only=True) as connection:
        wide = fetch_polars(connection, "select * from real.devices_wide")
        usage = fetch_polars(connection, "select * from reporting.usage")
        stored = fetch_polars(connection, "select * from real.benchmark_answers__models")
    assert wide.shape == (400, 9)
    assert usage["device_id"].is_unique().all()
    assert stored["devices"].sum() == 400

    wide_event = result.asset_materializations_for_node("real__devices_wide")[0]
    metadata = wide_event.metadata
    assert metadata["entities"].value == 400
    assert metadata["categorical_columns"].value == 3
    assert metadata["values_changed_by_domain"].value > 0  # the unseen model name was mapped
    answers = result.asset_materializations_for_node("real__benchmark_answers")[0].metadata
    assert answers["queries"].value == 5


def test_answers_loaded_by_a_downstream_asset_equal_a_fresh_run(tiny_dataset_dir: Path, tmp_path: Path) -> None:
    dataset = load_dataset(tiny_dataset_dir)
    seen = {}

    @dg.asset(ins={"answers": dg.AssetIn(key=["real", "benchmark_answers"]),
                   "usage": dg.AssetIn(key=["reporting", "usage"]),
                   "profile": dg.AssetIn(key=["reporting", "profile"]),
                   "updates": dg.AssetIn(key=["reporting", "updates"])})
    def check_answers(answers: dict, usage, profile, updates) -> None:
        seen["answers"] = answers
        seen["fresh"] = run_workload(dataset.queries, {"usage": usage, "profile": profile, "updates": updates})

    resources = build_resources(dataset, database=str(tmp_path / "w.duckdb"))
    assert dg.materialize([*build_real_assets(dataset), check_answers], resources=resources).success
    assert set(seen["answers"]) == {q.name for q in dataset.queries}
    for name, fresh in seen["fresh"].items():
        stored = seen["answers"][name]
        keys = dataset.query(name).keys or stored.columns
        assert stored.sort(keys).equals(fresh.sort(keys)), name


def test_rematerializing_replaces_tables(tiny_dataset_dir: Path, tmp_path: Path) -> None:
    dataset = load_dataset(tiny_dataset_dir)
    resources = build_resources(dataset, database=str(tmp_path / "w.duckdb"))
    assets = build_real_assets(dataset)
    assert dg.materialize(assets, resources=resources).success
    assert dg.materialize(assets, resources=resources).success
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as connection:
        assert connection.execute("select count(*) from reporting.profile").fetchall()[0][0] == 400


def test_a_bad_reporting_table_fails_its_step_with_the_message(tiny_copy: Path, tmp_path: Path) -> None:
    (tiny_copy / "reporting" / "usage.sql").write_text("select device_id, minutes, crashes from sessions")
    dataset = load_dataset(tiny_copy)
    result = dg.materialize(
        build_real_assets(dataset),
        resources=build_resources(dataset, database=str(tmp_path / "w.duckdb")),
        raise_on_error=False,
    )
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    assert failures[0].step_key == "reporting__usage"
    assert "takes columns ['sessions'] from it" in failures[0].event_specific_data.error.to_string()


def test_embedded_dataset_real_half_on_a_slice(tmp_path: Path) -> None:
    dataset = load_dataset(DEFAULT_DATASET)
    database = tmp_path / "lahman.duckdb"
    resources = build_resources(dataset, entity_fraction=0.03, database=str(database))
    result = dg.materialize(build_real_assets(dataset), resources=resources)
    assert result.success
    with duckdb.connect(str(database), read_only=True) as connection:
        wide = fetch_polars(connection, f"select * from real.{dataset.spec.wide_table.name}")
    assert 300 < wide.height < 1000  # about 3% of 20k players
    assert wide.width == len(dataset.spec.wide_table.columns)
    assert wide[dataset.spec.entity.key].is_unique().all()


def test_definitions_load_for_the_default_and_for_a_dataset_named_in_the_environment(
    tiny_dataset_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = build_definitions()
    keys = {k.to_user_string() for k in default.resolve_asset_graph().get_all_asset_keys()}
    assert "real/benchmark_answers" in keys and "reporting/profile" in keys
    monkeypatch.setenv("SYNTH_ASSETS_DATASET", str(tiny_dataset_dir))
    devices = build_definitions()
    keys = {k.to_user_string() for k in devices.resolve_asset_graph().get_all_asset_keys()}
    assert {"raw/firmware", "reporting/updates", "real/devices_wide"} <= keys


@pytest.mark.slow
def test_dagster_cli_validates_the_workspace(tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    completed = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Validation successful" in completed.stdout + completed.stderr

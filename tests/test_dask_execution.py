"""The asset graph executed by dagster-dask's executor on a Dask cluster: the same releases as in process."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from synth_assets.datasets.loading import load_dataset
from synth_assets.defs.evaluation.assets import build_evaluation_assets
from synth_assets.defs.graph import build_definitions
from synth_assets.defs.synthetic.assets import add_epsilon_partitions
from synth_assets.privacy.ledger import PrivacyLedger
from synth_assets.resources import PrivateEvolutionResource

pytest.importorskip("dagster_dask")
distributed = pytest.importorskip("distributed")

SMALL = {"pool_size": 150, "selected": 50, "reference_points": 3000, "iterations": 2}


def _releases(database: Path) -> list[dict]:
    """The ledger's releases, without when and by which run each was recorded."""
    frame = PrivacyLedger(database).releases("devices").drop("run_id", "recorded_at", "last_seen_at", strict=False)
    return sorted(frame.to_dicts(), key=lambda r: r["identity"])


def _noisy_votes(database: Path) -> pl.DataFrame:
    """The last round's candidates' noisy votes, as the warehouse holds them (a DP release)."""
    with duckdb.connect(str(database), read_only=True) as connection:
        return connection.sql("select * from synthetic.dp_histogram__votes").pl()


def _grid_selection(dataset) -> list[dg.AssetKey]:
    """The epsilon-grid job's assets but the evaluation stage (its attacks take most of the time; it
    records no release): every DP release, the synthetic tables and the scores."""
    defs = build_definitions(dataset, database=":memory:")
    evaluation = {k for a in build_evaluation_assets(dataset) for k in a.keys}
    return sorted(set(defs.resolve_job_def("epsilon_grid").asset_layer.selected_asset_keys) - evaluation)


def _in_process(dataset, tmp_path: Path) -> Path:
    """The real half and partition 1, as build_definitions' in-process executor runs them."""
    database = tmp_path / "in_process.duckdb"
    pe = PrivateEvolutionResource(**SMALL, checkpoint_dir=str(tmp_path / "ck_in_process"))
    defs = build_definitions(dataset, database=str(database), pe=pe)
    instance = dg.DagsterInstance.ephemeral()
    add_epsilon_partitions(instance, dataset, [1.0])
    assert defs.resolve_job_def("real_tables").execute_in_process(instance=instance).success
    grid = defs.resolve_job_def("epsilon_grid")
    assert grid.execute_in_process(partition_key="1", instance=instance, asset_selection=_grid_selection(dataset)).success
    return database


@pytest.mark.slow
def test_the_real_half_and_a_partition_run_on_dask_and_record_the_in_process_releases(
    tiny_dataset_dir: Path, tmp_path: Path
) -> None:
    from synth_assets.dask_execution import execute_on_dask

    dataset = load_dataset(tiny_dataset_dir)
    database = tmp_path / "dask.duckdb"
    pe = {**SMALL, "checkpoint_dir": str(tmp_path / "ck_dask")}  # its own checkpoints: nothing reused
    home = tmp_path / "dagster_home"  # a persistent instance: the workers record their steps' events in it
    home.mkdir()
    # Steps' stdout is not captured to files: Dagster's capture runs `tail -F` and stops it with SIGTERM,
    # which the worker's children can inherit as ignored, leaving the step waiting for its tail.
    no_compute_logs = {"compute_logs": {"module": "dagster._core.storage.noop_compute_log_manager",
                                        "class": "NoOpComputeLogManager"}}
    # one worker with one thread: the steps of a run write one DuckDB file, one at a time
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster, dg.instance_for_test(temp_dir=str(home), overrides=no_compute_logs) as instance:
        add_epsilon_partitions(instance, dataset, [1.0])
        address = cluster.scheduler_address
        real = execute_on_dask("real_tables", tiny_dataset_dir, address, instance, database=database, pe=pe)
        assert real.success
        grid = execute_on_dask(
            "epsilon_grid", tiny_dataset_dir, address, instance, partition_key="1", database=database, pe=pe,
            asset_selection=_grid_selection(dataset),
        )
        assert grid.success
        run = instance.get_run_by_id(grid.run_id)
        assert run.tags["dagster/partition"] == "1"
        materialized = {e.asset_key.to_user_string() for e in grid.get_asset_materialization_events()}
        assert {"synthetic/dp_histogram", "synthetic/selected_population", "synthetic/benchmark_scores"} <= materialized

    releases = _releases(database)
    assert {r["kind"] for r in releases} >= {"nn_histogram", "independent_marginals"}
    in_process = _in_process(dataset, tmp_path)
    assert releases == _releases(in_process)
    votes = _noisy_votes(database)
    assert votes.height == SMALL["pool_size"] and votes.equals(_noisy_votes(in_process))


def test_the_dask_definitions_are_the_graph_with_the_dask_executor(tiny_dataset_dir: Path, tmp_path, monkeypatch):
    from synth_assets.dask_execution import DASK_SCHEDULER_ENV, build_dask_definitions

    dataset = load_dataset(tiny_dataset_dir)
    monkeypatch.delenv(DASK_SCHEDULER_ENV, raising=False)
    with pytest.raises(ValueError, match=DASK_SCHEDULER_ENV):
        build_dask_definitions(dataset, database=str(tmp_path / "w.duckdb"))
    monkeypatch.setenv(DASK_SCHEDULER_ENV, "tcp://127.0.0.1:8786")
    defs = build_dask_definitions(dataset, database=str(tmp_path / "w.duckdb"))
    local = build_definitions(dataset, database=str(tmp_path / "w.duckdb"))
    for name in ("real_tables", "epsilon_grid"):
        job = defs.resolve_job_def(name)
        assert job.executor_def.name == "dask_existing_cluster"
        assert job.executor_def.executor_creation_fn  # configured with the address, nothing else to give
        assert set(job.asset_layer.selected_asset_keys) == set(local.resolve_job_def(name).asset_layer.selected_asset_keys)
    assert local.resolve_job_def("epsilon_grid").executor_def.name == "in_process"  # the default is unchanged

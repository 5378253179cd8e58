"""Runs of the named jobs in this process, as synth-assets makes them."""

from pathlib import Path

import dagster as dg
import pytest

from synth_assets.datasets.loading import load_dataset
from synth_assets.defs.graph import build_definitions
from synth_assets.defs.real.assets import wide_key
from synth_assets.defs.synthetic.jobs import REAL_TABLES_JOB
from synth_assets.pipeline import run_job


def test_a_run_keeps_its_events_and_leaves_its_tables_to_the_warehouse(tiny_dataset_dir: Path, tmp_path: Path):
    dataset = load_dataset(tiny_dataset_dir)
    definitions = build_definitions(dataset, database=str(tmp_path / "w.duckdb"))
    instance = dg.DagsterInstance.ephemeral()
    result = run_job(definitions, REAL_TABLES_JOB, instance)
    assert result.success and instance.get_run_by_id(result.run_id).job_name == REAL_TABLES_JOB
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert wide_key(dataset) in materialized
    with pytest.raises(dg.DagsterInvariantViolationError):  # no table of the run is held in memory
        result.output_for_node("real__" + wide_key(dataset).path[-1])

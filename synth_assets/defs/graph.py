"""Assemble the asset graph of a dataset: every stage's assets, checks, schedules and sensors, and the
resources they need. ``synth_assets.definitions`` builds it for the configured dataset."""

from __future__ import annotations

import dagster as dg
from dagster_duckdb import DuckDBResource

from synth_assets.datasets.loading import Dataset, configured_dataset_dir, load_dataset
from synth_assets.defs.evaluation.assets import build_evaluation_assets
from synth_assets.defs.real.assets import build_real_assets
from synth_assets.defs.real.checks import build_real_checks
from synth_assets.defs.synthetic.assets import build_synthetic_assets
from synth_assets.defs.synthetic.checks import build_synthetic_checks
from synth_assets.defs.synthetic.jobs import (
    build_epsilon_grid_job,
    build_epsilon_grid_schedule,
    build_grid_partitions_sensor,
    build_real_tables_job,
    build_resume_sensor,
    grid_job_assets,
)
from synth_assets.io_managers import warehouse_io_manager
from synth_assets.pe.llm.resource import LLMResource
from synth_assets.resources import DatasetResource, PrivateEvolutionResource
from synth_assets.warehouse import warehouse_path


def build_resources(
    dataset: Dataset,
    *,
    entity_fraction: float = 1.0,
    database: str | None = None,
    pe: PrivateEvolutionResource | None = None,
    llm: LLMResource | None = None,
) -> dict:
    duckdb = DuckDBResource(database=database or str(warehouse_path(dataset.name)))
    return {
        "dataset": DatasetResource(directory=str(dataset.directory), entity_fraction=entity_fraction),
        "duckdb": duckdb,
        "io_manager": warehouse_io_manager(duckdb),
        "pe": pe or PrivateEvolutionResource(),
        "llm": llm or LLMResource.from_env(),
    }


def build_assets(dataset: Dataset) -> list[dg.AssetsDefinition]:
    return [*build_real_assets(dataset), *build_synthetic_assets(dataset), *build_evaluation_assets(dataset)]


def build_checks(dataset: Dataset) -> list[dg.AssetChecksDefinition]:
    return [*build_real_checks(dataset), *build_synthetic_checks(dataset)]


def build_definitions(dataset: Dataset | None = None, **resource_options) -> dg.Definitions:
    dataset = dataset or load_dataset(configured_dataset_dir())
    synthetic = [*build_synthetic_assets(dataset), *build_evaluation_assets(dataset)]
    job = build_epsilon_grid_job(dataset)
    return dg.Definitions(
        assets=[*build_real_assets(dataset), *synthetic],
        asset_checks=build_checks(dataset),
        jobs=[build_real_tables_job(), job],
        schedules=[build_epsilon_grid_schedule(dataset, job)],
        sensors=[
            build_resume_sensor(job, grid_job_assets(dataset, synthetic)),
            build_grid_partitions_sensor(dataset),
        ],
        resources=build_resources(dataset, **resource_options),
        # One process per run: a step process costs about 15 s of imports here, the machine has two
        # cores, and DuckDB has one writer. Runs still execute in parallel, up to dagster.yaml's limit.
        executor=dg.in_process_executor,
    )


"""Dagster resources: which dataset a run reads, and where the warehouse lives."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from synth_assets.datasets.loading import Dataset, load_dataset

WAREHOUSE_ENV_VAR = "SYNTH_ASSETS_WAREHOUSE"


def warehouse_path(dataset_name: str) -> Path:
    """DuckDB file of a dataset: $SYNTH_ASSETS_WAREHOUSE, else $DAGSTER_HOME/warehouse, else ./dagster_home."""
    directory = os.environ.get(WAREHOUSE_ENV_VAR)
    if not directory:
        home = os.environ.get("DAGSTER_HOME") or "dagster_home"
        directory = os.path.join(home, "warehouse")
    path = Path(directory).resolve() / f"{dataset_name}.duckdb"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


class DatasetResource(ConfigurableResource):
    """The dataset directory a run reads, and the share of its entities to use."""

    directory: str = Field(description="Dataset directory (a dataset.yaml with its SQL and queries).")
    entity_fraction: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Use a deterministic slice of the entities (e.g. 0.05 for a quick trial run).",
    )

    def load(self) -> Dataset:
        return load_dataset(self.directory)

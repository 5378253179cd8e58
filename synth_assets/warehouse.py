"""Where a dataset's warehouse, ledger, checkpoints and LLM answers live on disk (plain Python)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DELTA = 1e-6

WAREHOUSE_ENV_VAR = "SYNTH_ASSETS_WAREHOUSE"


def warehouse_dir() -> Path:
    """$SYNTH_ASSETS_WAREHOUSE, else $DAGSTER_HOME/warehouse, else ./dagster_home/warehouse."""
    directory = os.environ.get(WAREHOUSE_ENV_VAR)
    if not directory:
        home = os.environ.get("DAGSTER_HOME") or "dagster_home"
        directory = os.path.join(home, "warehouse")
    path = Path(directory).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def warehouse_path(dataset_name: str) -> Path:
    """The DuckDB file of a dataset (its tables and its privacy ledger)."""
    return warehouse_dir() / f"{dataset_name}.duckdb"


def checkpoint_root() -> Path:
    """Stage checkpoints, beside the warehouse files."""
    return warehouse_dir() / "checkpoints"


def llm_cache_root() -> Path:
    """Stored LLM answers, beside the warehouse files."""
    return warehouse_dir() / "llm_cache"

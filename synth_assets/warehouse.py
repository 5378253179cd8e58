"""Where a dataset's warehouse, ledger, checkpoints and LLM answers live on disk (plain Python)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DELTA = 1e-6

WAREHOUSE_ENV_VAR = "SYNTH_ASSETS_WAREHOUSE"


def default_home() -> Path:
    """Where warehouses live when neither variable is set: the user's data directory
    ($XDG_DATA_HOME/synth_assets, else ~/.local/share/synth_assets), never the working directory, so that
    running from another directory cannot silently start a fresh privacy budget."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "synth_assets"


def warehouse_dir() -> Path:
    """$SYNTH_ASSETS_WAREHOUSE, else $DAGSTER_HOME/warehouse, else :func:`default_home`/warehouse. Created
    readable by its owner only (0700): it holds private data and the privacy ledger."""
    directory = os.environ.get(WAREHOUSE_ENV_VAR)
    if not directory:
        home = os.environ.get("DAGSTER_HOME")
        directory = os.path.join(home, "warehouse") if home else str(default_home() / "warehouse")
    path = Path(directory).resolve()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def owner_only(path: str | os.PathLike[str]) -> None:
    """Make a warehouse file (and DuckDB's write-ahead log beside it) readable by its owner only."""
    for candidate in (Path(path), Path(f"{path}.wal")):
        try:
            if candidate.exists() and candidate.stat().st_mode & 0o077:
                candidate.chmod(0o600)
        except PermissionError:  # not the owner: leave it as it is
            pass


def warehouse_path(dataset_name: str) -> Path:
    """The DuckDB file of a dataset (its tables and its privacy ledger)."""
    return warehouse_dir() / f"{dataset_name}.duckdb"


def checkpoint_root() -> Path:
    """Stage checkpoints, beside the warehouse files."""
    return warehouse_dir() / "checkpoints"


def llm_cache_root() -> Path:
    """Stored LLM answers, beside the warehouse files."""
    return warehouse_dir() / "llm_cache"

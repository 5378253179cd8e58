"""Where a dataset's warehouse and ledger live, and who may read them."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import duckdb

from synth_assets.privacy.ledger import PrivacyLedger
from synth_assets.warehouse import warehouse_dir

WHERE = "from synth_assets.warehouse import warehouse_path; print(warehouse_path('lahman'))"


def _where(cwd: Path, env: dict) -> str:
    return subprocess.run([sys.executable, "-c", WHERE], cwd=cwd, env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_without_either_variable_the_ledger_does_not_follow_the_working_directory(tmp_path, monkeypatch):
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "SYNTH_ASSETS_WAREHOUSE")}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = _where(tmp_path / "a", env), _where(tmp_path / "b", env)
    assert first == second == str(tmp_path / "data" / "synth_assets" / "warehouse" / "lahman.duckdb")
    env["DAGSTER_HOME"] = str(tmp_path / "home")
    assert _where(tmp_path / "a", env) == str(tmp_path / "home" / "warehouse" / "lahman.duckdb")
    env["SYNTH_ASSETS_WAREHOUSE"] = str(tmp_path / "wh")
    assert _where(tmp_path / "a", env) == str(tmp_path / "wh" / "lahman.duckdb")


def test_the_warehouse_and_the_ledger_are_readable_by_their_owner_only(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTH_ASSETS_WAREHOUSE", str(tmp_path / "fresh"))
    directory = warehouse_dir()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    path = directory / "d.duckdb"
    duckdb.connect(str(path)).close()
    path.chmod(0o644)  # as DuckDB creates it under a usual umask
    PrivacyLedger(path)._open().close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

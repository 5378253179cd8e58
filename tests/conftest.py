"""Shared fixtures: a small dataset directory written by the tests, in every source format."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

TINY_SPEC = """\
spec_version: 1
name: devices
title: Field devices
description: A small fleet of devices, their usage sessions and firmware.
entity: {name: device, key: device_id, population: profile}
sources:
  devices: {format: csv, path: data/devices.csv, entity_column: device_id, encoding: latin1}
  sessions: {format: parquet, path: data/sessions.parquet, entity_column: device_id}
  firmware: {format: duckdb, path: data/firmware.duckdb, table: main.firmware, entity_column: device_id}
reporting_tables:
  profile: {sql: reporting/profile.sql, description: One row per device.}
  usage: {sql: reporting/usage.sql, description: Session totals of devices that were used.}
  updates: {sql: reporting/updates.sql, description: Firmware of devices that were updated.}
wide_table:
  name: devices_wide
  columns:
    - {from: profile.device_id, role: identifier}
    - {from: profile.model, role: categorical, categories: [alpha, beta, gamma, other], unseen: map, map_to: other}
    - {from: profile.region, role: categorical, categories: [north, south, east, west]}
    - {from: profile.purchase_year, role: numeric, type: integer, min: 2000, max: 2030}
    - {from: usage.sessions, role: numeric, type: integer, min: 0, max: 1000, nullable: true}
    - {from: usage.minutes, role: numeric, type: float, min: 0, max: 100000, nullable: true}
    - {from: usage.crashes, role: numeric, type: integer, min: 0, max: 500, nullable: true}
    - {from: updates.channel, role: categorical, categories: [stable, beta], nullable: true}
    - {from: updates.version, role: numeric, type: integer, min: 1, max: 20, nullable: true}
privacy:
  epsilon_grid: [1, 4]
"""

TINY_SQL = {
    "profile.sql": "select device_id, model, region, purchase_year from devices",
    "usage.sql": (
        "select device_id, count(*)::bigint as sessions, round(sum(minutes), 2) as minutes,\n"
        "       sum(crashes)::bigint as crashes\n"
        "from sessions group by device_id"
    ),
    "updates.sql": "select device_id, channel, version from firmware",
}

TINY_QUERIES = [
    {
        "name": "mean_minutes_by_region",
        "type": "aggregate",
        "description": "Average minutes of use per region, over used devices.",
        "sql": "select p.region, avg(u.minutes) as mean_minutes, count(*)::double as devices "
        "from profile p join usage u using (device_id) group by p.region",
        "keys": ["region"],
        "max_relative_error": 0.2,
        "floor": 1.0,
    },
    {
        "name": "crash_tail",
        "type": "aggregate",
        "sql": "select quantile_cont(crashes, 0.9) as p90_crashes from usage",
        "max_relative_error": 0.3,
    },
    {
        "name": "models",
        "type": "distribution",
        "sql": "select model, count(*) as devices from profile group by model",
        "keys": ["model"],
        "max_tvd": 0.1,
    },
    {
        "name": "busiest_years",
        "type": "ranking",
        "sql": "select p.purchase_year, sum(u.sessions) as sessions from profile p "
        "join usage u using (device_id) group by p.purchase_year",
        "keys": ["purchase_year"],
        "min_spearman": 0.6,
    },
    {
        "name": "beta_regions",
        "type": "coverage",
        "sql": "select p.region from profile p join updates f using (device_id) "
        "where f.channel = 'beta' group by p.region having count(*) >= 2",
        "keys": ["region"],
        "min_jaccard": 0.5,
    },
]


def write_tiny_dataset(directory: Path, n_devices: int = 400, seed: int = 7) -> Path:
    """Write the 'devices' dataset: CSV, Parquet and DuckDB sources, three reporting tables, five queries."""
    rng = np.random.default_rng(seed)
    (directory / "data").mkdir(parents=True, exist_ok=True)
    (directory / "reporting").mkdir(exist_ok=True)
    (directory / "queries").mkdir(exist_ok=True)
    ids = [f"d{i:05d}" for i in range(n_devices)]
    # 'délta' is an unseen model (mapped to 'other'), in Latin-1 to exercise the encoding option.
    models = rng.choice(["alpha", "beta", "gamma", "délta"], size=n_devices, p=[0.5, 0.3, 0.15, 0.05])
    devices = pl.DataFrame(
        {
            "device_id": ids,
            "model": models,
            "region": rng.choice(["north", "south", "east", "west"], size=n_devices),
            "purchase_year": rng.integers(2010, 2025, size=n_devices),
        }
    )
    (directory / "data" / "devices.csv").write_bytes(devices.write_csv().encode("latin-1"))
    used = [i for i in ids if rng.random() < 0.8]
    n_sessions = len(used) * 5
    sessions = pl.DataFrame(
        {
            "device_id": rng.choice(used, size=n_sessions),
            "minutes": rng.gamma(2.0, 20.0, size=n_sessions).round(2),
            "crashes": rng.poisson(0.3, size=n_sessions),
        }
    )
    sessions.write_parquet(directory / "data" / "sessions.parquet")
    updated = [i for i in ids if rng.random() < 0.5]
    firmware = pl.DataFrame(
        {
            "device_id": updated,
            "channel": rng.choice(["stable", "beta"], size=len(updated), p=[0.8, 0.2]),
            "version": rng.integers(1, 12, size=len(updated)),
        }
    )
    database = directory / "data" / "firmware.duckdb"
    database.unlink(missing_ok=True)
    with duckdb.connect(str(database)) as connection:
        connection.register("firmware_frame", firmware.to_arrow())
        connection.execute("create table firmware as select * from firmware_frame")
    (directory / "dataset.yaml").write_text(TINY_SPEC)
    for name, sql in TINY_SQL.items():
        (directory / "reporting" / name).write_text(sql + "\n")
    for query in TINY_QUERIES:
        (directory / "queries" / f"{query['name']}.json").write_text(json.dumps(query, indent=2))
    return directory


@pytest.fixture(scope="session")
def tiny_dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("devices"))


@pytest.fixture
def tiny_copy(tmp_path: Path) -> Path:
    """A fresh, writable copy of the tiny dataset for tests that break it on purpose."""
    return write_tiny_dataset(tmp_path / "devices")


@pytest.fixture(autouse=True)
def _isolated_warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test writes its DuckDB warehouse under its own temporary directory."""
    monkeypatch.setenv("SYNTH_ASSETS_WAREHOUSE", str(tmp_path / "warehouse"))
    monkeypatch.delenv("SYNTH_ASSETS_DATASET", raising=False)

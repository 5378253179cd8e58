"""A small dataset directory with a date and a timestamp column, written by the tests that need one.

Members of a club: when they joined (a date, skewed towards recent years), their birth date (a nullable
date, unknown for some) and the last of their visits (a timestamp of the ``activity`` table, which
members who never visited have no row in).
"""

from __future__ import annotations

import importlib.util
import json
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

SPEC = """\
spec_version: 1
name: members
entity: {name: member, key: member_id, population: profile}
sources:
  members: {format: csv, path: data/members.csv, entity_column: member_id}
  visits: {format: parquet, path: data/visits.parquet, entity_column: member_id}
reporting_tables:
  profile: {sql: reporting/profile.sql}
  activity: {sql: reporting/activity.sql}
wide_table:
  columns:
    - {from: profile.member_id, role: identifier}
    - {from: profile.region, role: categorical, categories: [north, south]}
    - {from: profile.joined, role: date, min: 2000-01-01, max: 2024-12-31, bins: 25}
    - {from: profile.born, role: date, min: 1930-01-01, max: 2009-12-31, nullable: true}
    - {from: activity.visits, role: numeric, type: integer, min: 0, max: 100, nullable: true}
    - {from: activity.last_visit, role: timestamp, min: 2023-01-01T00:00:00, max: 2024-12-31T23:59:59, nullable: true}
privacy:
  holdout_fraction: 0
  epsilon_grid: [1]
"""

PROFILE_SQL = "select member_id, region, joined, born from members"
ACTIVITY_SQL = (
    "select member_id, count(*)::bigint as visits, max(visited_at) as last_visit from visits group by member_id"
)

QUERIES = {
    "joined_by_year": {
        "type": "distribution", "keys": ["year"], "max_tvd": 0.1,
        "sql": "select date_trunc('year', joined) as year, count(*) as members from profile group by 1",
    },
    "joined_since_2020": {
        "type": "aggregate", "max_relative_error": 0.1,
        "sql": "select count(*)::double as members from profile where joined >= DATE '2020-01-01'",
    },
    "visits_by_month": {
        "type": "distribution", "keys": ["month"], "max_tvd": 0.2,
        "sql": "select date_trunc('month', last_visit) as month, count(*) as members from activity "
               "where last_visit < TIMESTAMP '2025-01-01 00:00:00' group by 1",
    },
}


def write_dated_dataset(directory: Path, members: int = 2000, seed: int = 3) -> Path:
    """Write the members dataset (spec, SQL, queries and data) into ``directory``."""
    rng = np.random.default_rng(seed)
    for sub in ("data", "reporting", "queries"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    ids = [f"m{i:05d}" for i in range(members)]
    start = date(2000, 1, 1)
    span = (date(2024, 12, 31) - start).days
    joined = [start + timedelta(days=int(d)) for d in span * np.sqrt(rng.random(members))]
    born = [
        None if rng.random() < 0.1 else (date(1940, 1, 1) + timedelta(days=int(rng.integers(0, 25_000))))
        for _ in ids
    ]
    profile = pl.DataFrame(
        {
            "member_id": ids,
            "region": rng.choice(["north", "south"], size=members, p=[0.7, 0.3]),
            "joined": [d.isoformat() for d in joined],
            "born": [d.isoformat() if d else "" for d in born],
        }
    )
    profile.write_csv(directory / "data" / "members.csv")
    visitors = [i for i in ids if rng.random() < 0.7]
    visits = len(visitors) * 3
    first = datetime(2023, 1, 1)
    seconds = (datetime(2024, 12, 31, 23, 59, 59) - first).total_seconds()
    pl.DataFrame(
        {
            "member_id": rng.choice(visitors, size=visits),
            "visited_at": [first + timedelta(seconds=int(s)) for s in seconds * rng.beta(2.0, 1.0, size=visits)],
        }
    ).write_parquet(directory / "data" / "visits.parquet")
    (directory / "dataset.yaml").write_text(SPEC)
    (directory / "reporting" / "profile.sql").write_text(PROFILE_SQL + "\n")
    (directory / "reporting" / "activity.sql").write_text(ACTIVITY_SQL + "\n")
    for name, query in QUERIES.items():
        (directory / "queries" / f"{name}.json").write_text(json.dumps({"name": name, **query}))
    return directory


def load_helper_module():
    """This module, for test files in other directories (the tests are not a package)."""
    spec = importlib.util.spec_from_file_location("dated_dataset", Path(__file__))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

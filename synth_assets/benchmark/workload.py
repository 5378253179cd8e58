"""Run a dataset's workload queries against any set of reporting tables (real or synthetic)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import duckdb
import polars as pl

from synth_assets.datasets.loading import DatasetError
from synth_assets.datasets.spec import Query
from synth_assets.sql import fetch_polars, referenced_tables


def query_tables(query: Query) -> set[str]:
    """Names of the tables a query reads (lower case), parsed from its SQL."""
    try:
        return referenced_tables(query.sql)
    except ValueError as exc:
        raise DatasetError(f"query {query.name!r}: {exc}") from exc


def _connection_with(tables: Mapping[str, pl.DataFrame]) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    for name, frame in tables.items():
        connection.register(name, frame.to_arrow())
    return connection


def _run(query: Query, connection: duckdb.DuckDBPyConnection, available: Sequence[str]) -> pl.DataFrame:
    missing = sorted(query_tables(query) - {name.lower() for name in available})
    if missing:
        raise DatasetError(
            f"query {query.name!r} reads tables {missing} that are not available "
            f"(available: {sorted(available)})"
        )
    try:
        result = fetch_polars(connection, query.sql)
    except duckdb.Error as exc:
        raise DatasetError(f"query {query.name!r} failed: {exc}") from exc
    absent = [k for k in query.keys if k not in result.columns]
    if absent:
        raise DatasetError(
            f"query {query.name!r}: keys {absent} are not among its output columns {result.columns}"
        )
    return result


def run_query(query: Query, tables: Mapping[str, pl.DataFrame]) -> pl.DataFrame:
    """Run one query over ``tables``; its output columns are checked against its declared keys."""
    connection = _connection_with(tables)
    try:
        return _run(query, connection, list(tables))
    finally:
        connection.close()


def run_workload(
    queries: Sequence[Query], tables: Mapping[str, pl.DataFrame]
) -> dict[str, pl.DataFrame]:
    """Run every query whose tables are all available; returns results by query name."""
    available = {name.lower() for name in tables}
    runnable = [q for q in queries if query_tables(q) <= available]
    connection = _connection_with(tables)
    try:
        return {query.name: _run(query, connection, list(tables)) for query in runnable}
    finally:
        connection.close()

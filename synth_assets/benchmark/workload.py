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


def run_query(query: Query, tables: Mapping[str, pl.DataFrame]) -> pl.DataFrame:
    """Run one query; its result columns are checked against the query's declared keys."""
    needed = query_tables(query)
    available = {name.lower() for name in tables}
    missing = sorted(needed - available)
    if missing:
        raise DatasetError(
            f"query {query.name!r} reads tables {missing} that are not available "
            f"(available: {sorted(tables)})"
        )
    connection = duckdb.connect()
    try:
        for name, frame in tables.items():
            connection.register(name, frame.to_arrow())
        try:
            result = fetch_polars(connection, query.sql)
        except duckdb.Error as exc:
            raise DatasetError(f"query {query.name!r} failed: {exc}") from exc
    finally:
        connection.close()
    absent = [k for k in query.keys if k not in result.columns]
    if absent:
        raise DatasetError(
            f"query {query.name!r}: keys {absent} are not among its output columns {result.columns}"
        )
    return result


def run_workload(
    queries: Sequence[Query], tables: Mapping[str, pl.DataFrame]
) -> dict[str, pl.DataFrame]:
    """Run every query whose tables are all available; returns results by query name."""
    available = {name.lower() for name in tables}
    return {
        query.name: run_query(query, tables)
        for query in queries
        if query_tables(query) <= available
    }


def results_to_frame(results: Mapping[str, pl.DataFrame]) -> pl.DataFrame:
    """Store many query results as one long table: query, row number, column, value (as text + number)."""
    rows = []
    for name, result in results.items():
        for row_number, row in enumerate(result.iter_rows(named=True)):
            for column, value in row.items():
                rows.append(
                    {
                        "query": name,
                        "row": row_number,
                        "column": column,
                        "position": result.columns.index(column),
                        "dtype": str(result.schema[column]),
                        "text": None if value is None else str(value),
                    }
                )
    schema = {
        "query": pl.Utf8,
        "row": pl.Int64,
        "column": pl.Utf8,
        "position": pl.Int64,
        "dtype": pl.Utf8,
        "text": pl.Utf8,
    }
    return pl.DataFrame(rows, schema=schema)

"""DuckDB helpers shared by every stage: run SQL over polars frames, fetch results as polars."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import duckdb
import polars as pl


def fetch_polars(
    connection: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None
) -> pl.DataFrame:
    """Execute ``sql`` and return its result as a polars frame (through Arrow, no copy of columns)."""
    return connection.sql(sql, params=params).pl()


def run_sql(sql: str, tables: Mapping[str, pl.DataFrame]) -> pl.DataFrame:
    """Run DuckDB SQL with ``tables`` visible under their names, in a private in-memory database."""
    connection = duckdb.connect()
    try:
        for name, frame in tables.items():
            connection.register(name, frame.to_arrow())
        return fetch_polars(connection, sql)
    finally:
        connection.close()


@cache
def _parse_sql_json(sql: str) -> str:
    connection = duckdb.connect()
    try:
        return connection.execute("select json_serialize_sql(?)", [sql]).fetchall()[0][0]
    finally:
        connection.close()


def parse_sql(sql: str) -> dict:
    """DuckDB's parse tree of ``sql`` (parsing only: no table needs to exist)."""
    tree = json.loads(_parse_sql_json(sql))
    if tree.get("error"):
        raise ValueError(f"SQL does not parse: {tree.get('error_message', tree)}")
    return tree


def _walk(node: Any):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def referenced_tables(sql: str) -> set[str]:
    """Tables a statement reads (lower case), common table expressions excluded."""
    tree = parse_sql(sql)
    tables, ctes = set(), set()
    for node in _walk(tree):
        if node.get("type") == "BASE_TABLE" and not node.get("schema_name"):
            tables.add(node["table_name"].lower())
        elif node.get("type") == "BASE_TABLE":
            tables.add(f"{node['schema_name']}.{node['table_name']}".lower())
        cte_map = node.get("cte_map")
        if isinstance(cte_map, dict):
            ctes.update(entry["key"].lower() for entry in cte_map.get("map", []))
    return tables - ctes


def referenced_columns(sql: str) -> set[str]:
    """Column names a statement mentions (lower case, unqualified), including USING columns."""
    columns = set()
    for node in _walk(parse_sql(sql)):
        if node.get("class") == "COLUMN_REF":
            columns.add(node["column_names"][-1].lower())
        if node.get("type") == "JOIN":
            columns.update(c.lower() for c in node.get("using_columns", []))
    return columns

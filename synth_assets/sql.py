"""DuckDB helpers shared by every stage: run SQL over polars frames, fetch results as polars."""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import duckdb
import polars as pl


def fetch_polars(
    connection: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None
) -> pl.DataFrame:
    """Execute ``sql`` and return its result as a polars frame (through Arrow, no copy of columns)."""
    return connection.sql(sql, params=params).pl()


def quote_identifier(name: str) -> str:
    """``name`` as a DuckDB identifier in double quotes (any ``"`` doubled): safe for any name."""
    return '"' + name.replace('"', '""') + '"'


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


def statement_count(sql: str) -> int:
    """How many statements ``sql`` holds (it must parse)."""
    return len(parse_sql(sql)["statements"])


# Table references whose output columns the parse tree tells: any other kind (a table function,
# VALUES, PIVOT, DESCRIBE) makes the columns of a statement unknown.
_TRANSPARENT_TABLE_REFS = {"BASE_TABLE", "JOIN", "SUBQUERY", "EMPTY"}
# DuckDB names an unaliased expression after its text (``count_star()``, ``(a + 1)``): never a plain name.
_PLAIN_NAME = re.compile(r"^[^\W\d]\w*$")


@dataclass(frozen=True)
class UnresolvedColumn:
    """A column reference that no table a statement reads and no name it defines can resolve."""

    name: str
    qualifier: str | None
    tables: tuple[str, ...]


@dataclass
class _Names:
    """What a statement defines and reads, from its parse tree (lower case, scopes merged)."""

    defined: set[str] = field(default_factory=set)
    relations: set[str] = field(default_factory=set)
    bound: dict[str, set[str]] = field(default_factory=dict)
    tables: set[str] = field(default_factory=set)
    ctes: set[str] = field(default_factory=set)
    opaque: bool = False
    references: list[tuple[int, tuple[str, ...]]] = field(default_factory=list)


def _statement_names(tree: dict) -> _Names:
    names = _Names()
    for node in _walk(tree):
        cte_map = node.get("cte_map")
        if isinstance(cte_map, dict):
            for entry in cte_map.get("map", []):
                names.ctes.add(entry["key"].lower())
                names.defined.update(a.lower() for a in entry["value"].get("aliases", []))
        names.defined.update(a.lower() for a in node.get("column_name_alias") or [])
        names.defined.update(e["value"].lower() for e in node.get("rename_list") or [])
        alias = (node.get("alias") or "").lower()
        if "class" in node:  # an expression
            if alias:
                names.defined.add(alias)
            if node["class"] == "COLUMN_REF":
                names.references.append((node["query_location"], tuple(node["column_names"])))
            elif node["class"] == "LAMBDA":
                names.defined.update(
                    n["column_names"][-1].lower()
                    for n in _walk(node["lhs"])
                    if n.get("class") == "COLUMN_REF"
                )
        elif "query_location" in node:  # a table reference
            kind = node.get("type")
            if kind == "BASE_TABLE":
                table = node["table_name"].lower()
                if node.get("schema_name"):
                    table = f"{node['schema_name'].lower()}.{table}"
                names.tables.add(table)
                names.bound.setdefault(alias or node["table_name"].lower(), set()).add(table)
            elif alias:
                names.relations.add(alias)
            if kind == "JOIN":
                using = node.get("using_columns") or []
                names.references.extend((node["query_location"], (c,)) for c in using)
            elif kind not in _TRANSPARENT_TABLE_REFS:
                names.opaque = True
    names.relations |= names.ctes
    return names


@cache
def _binds_without_tables(name: str) -> bool:
    """Whether DuckDB resolves ``name`` with no table at all (``current_date``, ``user``)."""
    connection = duckdb.connect()
    try:
        connection.execute(f"select {quote_identifier(name)}")
        return True
    except duckdb.Error:
        return False
    finally:
        connection.close()


def unresolved_columns(
    sql: str, columns: Mapping[str, Collection[str] | None]
) -> list[UnresolvedColumn]:
    """Column references of ``sql`` that certainly cannot resolve, given the ``columns`` of each table.

    ``columns`` maps table names to their column names, or to None when they are unknown.
    When in doubt a reference is not reported: names the statement defines anywhere (aliases, CTE
    names and column lists, lambda parameters, struct fields), references qualified by anything but a
    table alias, unqualified references when a table's columns are unknown, and names DuckDB resolves
    without a table all pass. Each unresolved column is reported once, in the order of the text.
    """
    names = _statement_names(parse_sql(sql))
    known = {t.lower(): {c.lower() for c in cs} for t, cs in columns.items() if cs is not None}
    read = sorted(t for t in names.tables if t in known)
    unknown_read = names.opaque or any(
        t not in known and t not in names.ctes for t in names.tables
    )
    resolvable = names.defined.union(*(known[t] for t in read))
    found: dict[tuple[str | None, str], UnresolvedColumn] = {}
    for _, parts in sorted(names.references, key=lambda reference: reference[0]):
        if len(parts) == 1:
            name, qualifier, tables = parts[0], None, tuple(read)
            if (
                unknown_read
                or name.lower() in resolvable
                or not _PLAIN_NAME.match(name)
                or _binds_without_tables(name)
            ):
                continue
        else:
            qualifier, name = parts[0], parts[1]
            bound = names.bound.get(qualifier.lower())
            if (
                not bound
                or qualifier.lower() in names.relations | names.defined
                or any(t not in known or t in names.ctes for t in bound)
                or name.lower() in names.defined
                or any(name.lower() in known[t] for t in bound)
            ):
                continue
            tables = tuple(sorted(bound))
        key = (qualifier.lower() if qualifier else None, name.lower())
        found.setdefault(key, UnresolvedColumn(name, qualifier, tables))
    return list(found.values())

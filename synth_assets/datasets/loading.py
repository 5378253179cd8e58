"""Read a dataset directory into a validated :class:`Dataset`, failing fast with errors that name the file."""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import yaml
from pydantic import TypeAdapter, ValidationError

from synth_assets.datasets.spec import SPEC_FILENAME, SPEC_VERSION, DatasetSpec, Query
from synth_assets.sql import (
    UnresolvedColumn,
    referenced_tables,
    statement_count,
    unresolved_columns,
)

BUILTIN_DIR = Path(__file__).parent / "builtin"
DEFAULT_DATASET = BUILTIN_DIR / "lahman"
DATASET_ENV_VAR = "SYNTH_ASSETS_DATASET"

_QUERY_ADAPTER: TypeAdapter[Query] = TypeAdapter(Query)


class DatasetError(ValueError):
    """A dataset directory, spec file or query file is wrong. The message says where and what to do."""


@dataclass(frozen=True)
class Dataset:
    """A validated dataset directory: the spec, the reporting SQL and the workload. ``files`` holds the
    text of every file it was read from (the shared SQL included), by its path as the spec gives it."""

    directory: Path
    spec: DatasetSpec
    reporting_sql: dict[str, str]
    queries: list[Query]
    population_description: str | None = None
    files: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def fingerprint(self) -> str:
        """Hash of what determines a release: the spec, SQL, the queries' names and SQL, and descriptions.
        The budget, the epsilon grid, the list of generators, the evaluation settings and how queries are
        scored (thresholds, columns, group sizes) are left out: they change no release, so partitions
        already paid for keep their identity in the ledger."""
        digest = hashlib.sha256()
        for relative in sorted(self.files):
            content = self.files[relative]
            if relative == SPEC_FILENAME:
                settings = self.spec.model_dump(mode="json", by_alias=True)
                for planning_only in ("budget_epsilon", "epsilon_grid"):
                    settings["privacy"].pop(planning_only, None)
                settings.pop("synthesis", None)  # which generators exist changes none's releases
                settings.pop("evaluation", None)  # how tables are evaluated neither
                content = json.dumps(settings, sort_keys=True)
            elif relative.endswith(".json"):  # a query file: only its name and SQL reach a release
                query = json.loads(content)
                content = json.dumps({"name": query.get("name"), "sql": query.get("sql")}, sort_keys=True)
            digest.update(relative.encode())
            digest.update(content.encode())
        return digest.hexdigest()[:16]

    def query(self, name: str) -> Query:
        for query in self.queries:
            if query.name == name:
                return query
        raise KeyError(f"dataset {self.name!r} has no query {name!r}")

    @property
    def shared_views(self) -> list[SharedView]:
        """The views of the spec's ``shared_sql`` files, in the order they are created."""
        return parse_shared_sql(self.spec, self.directory, self.files)


@dataclass(frozen=True)
class SharedView:
    """A view that a shared SQL file defines over the sources, for the reporting SQL to read."""

    name: str
    file: str  # as listed under shared_sql
    statement: str  # the CREATE VIEW statement, as written
    reads: frozenset[str]  # the sources and earlier views its SELECT reads (lower case)


_SQL_SPACE = r"(?:\s|--[^\n]*(?:\n|$)|/\*.*?\*/)+"
_CREATE_VIEW = re.compile(
    rf"^create(?:{_SQL_SPACE}or{_SQL_SPACE}replace)?(?:{_SQL_SPACE}(?:temp|temporary))?{_SQL_SPACE}"
    rf"view(?:{_SQL_SPACE}if{_SQL_SPACE}not{_SQL_SPACE}exists)?{_SQL_SPACE}"
    rf"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:{_SQL_SPACE})?(?P<columns>\([^()]*\))?"
    rf"(?:{_SQL_SPACE}|(?<=\)))as(?:{_SQL_SPACE}|(?=\())(?P<select>.*)$",
    re.IGNORECASE | re.DOTALL,
)


def _statements(path: Path, sql: str) -> list[tuple[duckdb.StatementType, str]]:
    connection = duckdb.connect()
    try:
        return [(s.type, s.query) for s in connection.extract_statements(sql)]
    except duckdb.Error as exc:
        raise DatasetError(f"{path}: shared SQL does not parse ({exc}); fix the file") from exc
    finally:
        connection.close()


def parse_shared_sql(
    spec: DatasetSpec, directory: Path, files: Mapping[str, str]
) -> list[SharedView]:
    """The views of the ``shared_sql`` files (their text in ``files``), checked: each file holds only
    ``CREATE VIEW name AS SELECT ...`` statements, each view has a name of its own and reads only
    sources and the views defined before it."""
    sources = {s.lower(): s for s in spec.sources}
    reporting = {t.lower() for t in spec.reporting_tables}
    views: dict[str, SharedView] = {}
    for relative in spec.shared_sql:
        path = spec.resolve(directory, relative)
        if relative not in files:
            raise DatasetError(f"{path}: shared SQL file was not loaded with the dataset; load it again")
        statements = _statements(path, files[relative])
        if not statements:
            raise DatasetError(
                f"{path}: shared SQL file holds no statement; write CREATE VIEW name AS SELECT ... "
                f"statements, or remove it from shared_sql in {SPEC_FILENAME}"
            )
        for number, (kind, statement) in enumerate(statements, start=1):
            match = _CREATE_VIEW.match(statement.strip())
            shown = " ".join(statement.split())
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            if kind != duckdb.StatementType.CREATE or match is None:
                raise DatasetError(
                    f"{path}: statement {number} ({shown!r}) is not a CREATE VIEW; a shared SQL file "
                    f"may only define views, each as CREATE VIEW name AS SELECT ... with a name of "
                    f"letters, digits and underscores"
                )
            name = match["name"]
            where = f"{path}: view {name!r} (statement {number})"
            select = match["select"].strip().rstrip(";")
            try:
                if statement_count(select) != 1:
                    raise ValueError("not one SELECT statement")
                reads = referenced_tables(select)
            except ValueError as exc:
                raise DatasetError(f"{where}: its query is not one SELECT statement ({exc})") from exc
            lowered = name.lower()
            if lowered in sources or lowered in reporting:
                what = "a source" if lowered in sources else "a reporting table"
                raise DatasetError(f"{where}: {name!r} is already the name of {what}; rename the view")
            if lowered in views:
                raise DatasetError(
                    f"{where}: {name!r} is already a view of {views[lowered].file}; rename one of them"
                )
            for table in sorted(reads - set(sources) - set(views)):
                if table in reporting:
                    hint = (
                        "shared SQL runs before the reporting tables are built, so a view reads "
                        "sources and earlier views only"
                    )
                else:
                    hint = "; ".join(
                        ["a view reads sources and the views defined before it"]
                        + _nearest(table, [*spec.sources, *(v.name for v in views.values())])
                    )
                raise DatasetError(
                    f"{where}: reads {table!r}, which is neither a source {sorted(spec.sources)} nor a "
                    f"view defined before it; {hint}"
                )
            views[lowered] = SharedView(name, relative, statement.strip(), frozenset(reads))
    return list(views.values())


def _column_named(raw: object, loc: tuple) -> str:
    """`` (the column from: profile.signup)`` for an error in a wide-table column, else nothing."""
    if len(loc) < 3 or loc[:2] != ("wide_table", "columns") or not isinstance(loc[2], int):
        return ""
    try:
        column = raw["wide_table"]["columns"][loc[2]]  # type: ignore[index]
    except (KeyError, IndexError, TypeError):
        return ""
    if not isinstance(column, dict) or not isinstance(column.get("from"), str):
        return ""
    return f" (the column from: {column['from']})"


def _format_validation_error(path: Path, error: ValidationError, raw: object = None) -> str:
    lines = [f"{path}: {error.error_count()} problem(s)"]
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field: check its spelling against docs/dataset-spec.md"
        elif item["type"] == "missing":
            message = "required field is missing"
        shown = ""
        if item["type"] not in ("missing",) and "input" in item:
            value = item["input"]
            if not isinstance(value, (dict, list)):
                shown = f" (got {value!r})"
        lines.append(f"  - {location}: {message}{shown}{_column_named(raw, item['loc'])}")
    return "\n".join(lines)


class _SpecLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a date that does not exist (1990-13-01) stays text, for the spec
    to refuse with the field it is in rather than fail the whole file."""


def _timestamp_or_text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> object:
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except ValueError:
        return loader.construct_scalar(node)


_SpecLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_or_text)


def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise DatasetError(f"{path}: {what} not found; create it or fix the path in {SPEC_FILENAME}")
    return path.read_text(encoding="utf-8")


def load_spec(directory: Path) -> DatasetSpec:
    spec_path = directory / SPEC_FILENAME
    text = _read_text(spec_path, "dataset spec file")
    try:
        raw = yaml.load(text, Loader=_SpecLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise DatasetError(f"{spec_path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise DatasetError(f"{spec_path}: expected a mapping of fields, got {type(raw).__name__}")
    version = raw.get("spec_version")
    if version != SPEC_VERSION:
        raise DatasetError(
            f"{spec_path}: spec_version is {version!r}; this version of synth_assets reads "
            f"spec_version {SPEC_VERSION}"
        )
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError as exc:
        raise DatasetError(_format_validation_error(spec_path, exc, raw)) from exc


def load_query(path: Path) -> Query:
    text = _read_text(path, "query file")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON: {exc}") from exc
    try:
        return _QUERY_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise DatasetError(_format_validation_error(path, exc)) from exc


def _nearest(name: str, choices: list[str]) -> list[str]:
    close = difflib.get_close_matches(name.lower(), sorted({c.lower() for c in choices}), n=1)
    return [f"the nearest name is {close[0]!r}"] if close else []


def reporting_columns(spec: DatasetSpec) -> dict[str, list[str] | None]:
    """The columns a workload query may read from each reporting table: the entity key and the
    reporting columns the wide table takes from it (None for a table that is not rebuildable)."""
    return {
        table: [spec.entity.key] + [c.column for c in spec.columns_of(table)]
        if reporting.rebuildable
        else None
        for table, reporting in spec.reporting_tables.items()
    }


def _unresolved_column_message(
    spec: DatasetSpec, path: Path, unresolved: list[UnresolvedColumn]
) -> str:
    first = unresolved[0]
    columns = reporting_columns(spec)
    tables = [t for t in spec.reporting_tables if t.lower() in first.tables]
    if first.qualifier is not None:
        what = (
            f"sql reads column {first.qualifier}.{first.name}, but reporting table "
            f"{' or '.join(map(repr, tables))} has no column {first.name!r}"
        )
    else:
        what = (
            f"sql reads column {first.name!r}, which is neither a name the query defines nor a "
            f"column of the reporting tables it reads"
        )
    if len(unresolved) > 1:
        what += f" (the same holds for {', '.join(repr(u.name) for u in unresolved[1:])})"
    where = " and ".join(f"{t!r} has the columns {columns[t]}" for t in tables)
    hints = _nearest(first.name, [c for t in tables for c in columns[t] or []])
    elsewhere = [
        t
        for t, cs in columns.items()
        if t not in tables and first.name.lower() in (c.lower() for c in cs or [])
    ]
    if elsewhere:
        hints.append(f"{first.name!r} is a column of {' and '.join(map(repr, elsewhere))}")
    for column in spec.wide_table.columns:
        if column.name and column.name.lower() == first.name.lower():
            hints.append(
                f"{first.name!r} is the wide-table name of {column.source}: queries read the "
                f"reporting column {column.column!r}"
            )
    return (
        f"{path}: {what}; workload queries run on reporting tables rebuilt from the wide table "
        f"(the entity key and the wide-table columns taken from each), where "
        f"{where or 'the query reads no reporting table'}{''.join(f'; {h}' for h in hints)}. "
        f"Fix the name in the query's sql, or add the column to wide_table.columns in {SPEC_FILENAME}."
    )


def check_query_sql(
    spec: DatasetSpec, path: Path, query: Query, shared_views: Collection[str] = ()
) -> None:
    """Refuse a query that could only fail when the workload runs: SQL that is not one statement,
    tables that are not reporting tables, columns that the rebuilt reporting tables do not have.
    ``shared_views`` are the names of the views of the shared SQL (only to say so when a query reads one)."""
    try:
        statements = statement_count(query.sql)
        tables = referenced_tables(query.sql)
    except ValueError as exc:
        detail = str(exc).removeprefix("SQL does not parse: ")
        raise DatasetError(
            f"{path}: sql does not parse as a DuckDB SELECT statement ({detail}); fix the query's sql."
        ) from exc
    if statements != 1:
        raise DatasetError(
            f"{path}: sql holds {statements} SQL statements, but a query is exactly one SELECT "
            f"statement; keep one, and give every other question a query file of its own."
        )
    reporting = sorted(spec.reporting_tables)
    lowered = {t.lower() for t in reporting}
    for table in sorted(tables - lowered):
        unqualified = table.rsplit(".", 1)[-1]
        if unqualified != table and unqualified in lowered:
            hints = [f"write it without the schema, as {unqualified!r}"]
        elif table in {s.lower() for s in spec.sources}:
            hints = [f"{table!r} is a source: read the reporting table built from it"]
        elif table in {v.lower() for v in shared_views}:
            hints = [f"{table!r} is a view of the shared SQL, over the sources: read a reporting table"]
        else:
            hints = _nearest(table, reporting)
        raise DatasetError(
            f"{path}: sql reads table {table!r}, which is not a reporting table; workload queries "
            f"run on the reporting tables {reporting} only{''.join(f'; {h}' for h in hints)}. "
            f"Fix the table name in the query's sql."
        )
    unresolved = unresolved_columns(query.sql, reporting_columns(spec))
    if unresolved:
        raise DatasetError(_unresolved_column_message(spec, path, unresolved))


def load_dataset(directory: str | os.PathLike[str] | None = None) -> Dataset:
    """Load and validate a dataset directory (default: the embedded Baseball Databank)."""
    directory = Path(directory) if directory is not None else DEFAULT_DATASET
    if not directory.is_dir():
        raise DatasetError(
            f"{directory}: dataset directory not found; it must contain {SPEC_FILENAME}"
        )
    directory = directory.resolve()
    spec = load_spec(directory)
    files = {SPEC_FILENAME: (directory / SPEC_FILENAME).read_text(encoding="utf-8")}

    reporting_sql = {}
    for table, reporting in spec.reporting_tables.items():
        sql_path = spec.resolve(directory, reporting.sql)
        sql = _read_text(sql_path, f"SQL file of reporting table {table!r}")
        if not sql.strip():
            raise DatasetError(f"{sql_path}: SQL file of reporting table {table!r} is empty")
        reporting_sql[table] = sql
        files[reporting.sql] = sql

    for relative in spec.shared_sql:
        files[relative] = _read_text(spec.resolve(directory, relative), "shared SQL file (shared_sql)")
    view_names = [view.name for view in parse_shared_sql(spec, directory, files)]

    workload_dir = spec.resolve(directory, spec.workload_dir)
    if not workload_dir.is_dir():
        raise DatasetError(
            f"{workload_dir}: workload directory not found; create it with one JSON file per query, "
            f"or set workload_dir in {SPEC_FILENAME}"
        )
    queries = []
    names: dict[str, Path] = {}
    for path in sorted(workload_dir.glob("*.json")):
        query = load_query(path)
        check_query_sql(spec, path, query, view_names)
        if query.name in names:
            raise DatasetError(
                f"{path}: query name {query.name!r} is already used by {names[query.name]}"
            )
        names[query.name] = path
        queries.append(query)
        files[str(path.relative_to(directory))] = path.read_text(encoding="utf-8")
    if not queries:
        raise DatasetError(f"{workload_dir}: no query files (*.json); a dataset needs a workload")

    description = None
    if spec.population_description:
        description_path = spec.resolve(directory, spec.population_description)
        description = _read_text(description_path, "population description")
        files[spec.population_description] = description

    return Dataset(
        directory=directory,
        spec=spec,
        reporting_sql=reporting_sql,
        queries=queries,
        population_description=description,
        files=files,
    )


def configured_dataset_dir() -> Path:
    """The dataset directory named by SYNTH_ASSETS_DATASET, or the embedded default."""
    value = os.environ.get(DATASET_ENV_VAR)
    return Path(value) if value else DEFAULT_DATASET

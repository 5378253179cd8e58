"""Store asset values as tables in the project's DuckDB warehouse.

An asset ``["schema", "name"]`` returning a polars frame becomes the table ``schema.name``. An asset that
returns a mapping of frames (a table set, such as the decomposed reporting tables) becomes one table per
member, ``schema.name__member``. Partitioned assets share one table with a ``__partition_key`` column (names starting with ``__``
are the platform's: a dataset spec cannot use them), and
re-materializing a partition replaces only its rows.

With $SYNTH_ASSETS_PARQUET_ROOT set, :class:`ParquetWarehouseIOManager` keeps the same tables as Parquet
files instead (one per partition, so that runs of different partitions never wait for DuckDB's single
writer), each a view of the warehouse: :func:`warehouse_io_manager` chooses.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_origin

import duckdb
import polars as pl
from dagster import (
    ConfigurableIOManager,
    InputContext,
    MetadataValue,
    OutputContext,
    TableColumn,
    TableSchema,
)
from dagster_duckdb import DuckDBResource

from synth_assets.sql import fetch_polars
from synth_assets.warehouse import owner_only

PARTITION_COLUMN = "__partition_key"
_MEMBERS_SUFFIX = "__members"


def _location(asset_key_path: list[str]) -> tuple[str, str]:
    schema = asset_key_path[-2] if len(asset_key_path) > 1 else "main"
    return schema, asset_key_path[-1]


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def table_schema_metadata(frame: pl.DataFrame) -> MetadataValue:
    return MetadataValue.table_schema(
        TableSchema(columns=[TableColumn(name=n, type=str(t)) for n, t in frame.schema.items()])
    )


def _table_exists(connection: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return bool(
        connection.execute(
            "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
            [schema, table],
        ).fetchall()[0][0]
    )


def write_frame(
    connection: duckdb.DuckDBPyConnection,
    schema: str,
    table: str,
    frame: pl.DataFrame,
    partition: str | None = None,
) -> None:
    """Write ``frame`` as ``schema.table`` (or as the rows of one partition of it)."""
    connection.execute(f"create schema if not exists {_quote(schema)}")
    target = f"{_quote(schema)}.{_quote(table)}"
    arrow = frame.to_arrow()
    connection.register("__frame", arrow)
    try:
        if partition is None:
            connection.execute(f"create or replace table {target} as select * from __frame")
            return
        select = f"select ? as {PARTITION_COLUMN}, * from __frame"
        if not _table_exists(connection, schema, table):
            connection.execute(f"create table {target} as {select}", [partition])
            return
        existing = [
            row[0]
            for row in connection.execute(
                "select column_name from information_schema.columns "
                "where table_schema = ? and table_name = ? order by ordinal_position",
                [schema, table],
            ).fetchall()
        ]
        if existing != [PARTITION_COLUMN, *frame.columns]:
            # The shape of the asset changed (a new spec): keep other partitions only if they fit.
            others = connection.execute(
                f"select count(*) from {target} where {PARTITION_COLUMN} <> ?", [partition]
            ).fetchall()[0][0]
            if others:
                raise ValueError(
                    f"table {schema}.{table} holds other partitions with columns {existing[1:]}, "
                    f"but this partition has {frame.columns}; re-materialize every partition "
                    f"(or drop the table) after changing the dataset spec"
                )
            connection.execute(f"create or replace table {target} as {select}", [partition])
            return
        connection.execute(f"delete from {target} where {PARTITION_COLUMN} = ?", [partition])
        connection.execute(f"insert into {target} {select}", [partition])
    finally:
        connection.unregister("__frame")


def read_frame(
    connection: duckdb.DuckDBPyConnection, schema: str, table: str, partition: str | None = None
) -> pl.DataFrame:
    target = f"{_quote(schema)}.{_quote(table)}"
    if not _table_exists(connection, schema, table):
        raise FileNotFoundError(
            f"table {schema}.{table} is not in the warehouse yet: materialize its asset first"
        )
    if partition is None:
        return fetch_polars(connection, f"select * from {target}")
    return fetch_polars(
        connection,
        f"select * exclude ({PARTITION_COLUMN}) from {target} where {PARTITION_COLUMN} = ?",
        [partition],
    )


class DuckDBWarehouseIOManager(ConfigurableIOManager):
    """Polars frames and table sets in DuckDB, through dagster-duckdb's connection resource."""

    duckdb: DuckDBResource

    def _partition(self, context: OutputContext | InputContext) -> str | None:
        return context.asset_partition_key if context.has_asset_partitions else None

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        if obj is None:
            return
        schema, table = _location(list(context.asset_key.path))
        partition = self._partition(context)
        with self.duckdb.get_connection() as connection:
            if isinstance(obj, pl.DataFrame):
                write_frame(connection, schema, table, obj, partition)
                context.add_output_metadata(
                    {
                        "rows": obj.height,
                        "columns": obj.width,
                        "table": f"{schema}.{table}",
                        "schema": table_schema_metadata(obj),
                    }
                )
            elif isinstance(obj, Mapping):
                members = pl.DataFrame({"member": list(obj)}, schema={"member": pl.Utf8})
                for name, frame in obj.items():
                    write_frame(connection, schema, f"{table}__{name}", frame, partition)
                write_frame(connection, schema, f"{table}{_MEMBERS_SUFFIX}", members, partition)
                context.add_output_metadata(
                    {
                        "tables": MetadataValue.md(
                            "\n".join(
                                f"- `{schema}.{table}__{name}`: {frame.height} rows x {frame.width} columns"
                                for name, frame in obj.items()
                            )
                        )
                    }
                )
            else:
                raise TypeError(
                    f"asset {context.asset_key.to_user_string()} returned {type(obj).__name__}; the "
                    "DuckDB warehouse stores polars DataFrames or mappings of them"
                )
        owner_only(self.duckdb.database)

    def load_input(self, context: InputContext) -> Any:
        schema, table = _location(list(context.asset_key.path))
        partition = self._partition(context)
        wanted = context.dagster_type.typing_type if context.dagster_type else None
        wants_mapping = wanted is dict or get_origin(wanted) in (dict, Mapping)
        with self.duckdb.get_connection() as connection:
            if wants_mapping:
                return read_frames(connection, schema, table, partition)
            return read_frame(connection, schema, table, partition)


def read_frames(
    connection: duckdb.DuckDBPyConnection, schema: str, table: str, partition: str | None = None
) -> dict[str, pl.DataFrame]:
    """A table set written from a mapping of frames, by member name."""
    members = read_frame(connection, schema, f"{table}{_MEMBERS_SUFFIX}", partition)
    return {
        name: read_frame(connection, schema, f"{table}__{name}", partition)
        for name in members["member"].to_list()
    }


PARQUET_ROOT_ENV_VAR = "SYNTH_ASSETS_PARQUET_ROOT"
_DATA_FILE = "data.parquet"


class ParquetWarehouseIOManager(ConfigurableIOManager):
    """Polars frames and table sets as Parquet files under ``root``, each table also a view of the DuckDB
    warehouse, so that SQL, the commands and the other stages read it where the DuckDB IO manager would
    have put it.

    A table is the directory ``root/<schema>/<table>/``: ``data.parquet`` when it is not partitioned, else
    one directory per partition (``__partition_key=<key>/data.parquet``, Hive's layout), so that runs of
    different partitions write different files: no single writer to wait for. A file is written beside
    its place and renamed into it. ``root`` is a directory every run can reach (a shared volume); the
    DuckDB file keeps the privacy ledger and the views, both small."""

    duckdb: DuckDBResource
    root: str

    def _partition(self, context: OutputContext | InputContext) -> str | None:
        return context.asset_partition_key if context.has_asset_partitions else None

    def _directory(self, schema: str, table: str) -> Path:
        return Path(self.root) / schema / table

    def _file(self, schema: str, table: str, partition: str | None) -> Path:
        directory = self._directory(schema, table)
        if partition is not None:
            directory = directory / f"{PARTITION_COLUMN}={partition}"
        return directory / _DATA_FILE

    def _write(self, connection: duckdb.DuckDBPyConnection, schema: str, table: str, frame: pl.DataFrame,
               partition: str | None) -> None:
        path = self._file(schema, table, partition)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        frame.write_parquet(temporary)
        os.chmod(temporary, 0o600)  # private rows, like the warehouse file
        os.replace(temporary, path)
        connection.execute(f"create schema if not exists {_quote(schema)}")
        kind = connection.execute(
            "select table_type from information_schema.tables where table_schema = ? and table_name = ?",
            [schema, table]).fetchall()
        if kind and kind[0][0] != "VIEW":
            raise ValueError(
                f"{schema}.{table} is a table of the DuckDB warehouse {self.duckdb.database}, written before "
                f"{PARQUET_ROOT_ENV_VAR} was set: drop it or use a new warehouse, and re-materialize")
        if partition is None:
            source = f"read_parquet({_literal(str(path))})"
        else:
            pattern = str(self._directory(schema, table) / f"{PARTITION_COLUMN}=*" / _DATA_FILE)
            source = (f"read_parquet({_literal(pattern)}, hive_partitioning = true, union_by_name = true, "
                      f"hive_types = {{'{PARTITION_COLUMN}': VARCHAR}})")
        connection.execute(f"create or replace view {_quote(schema)}.{_quote(table)} as select * from {source}")

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        if obj is None:
            return
        schema, table = _location(list(context.asset_key.path))
        partition = self._partition(context)
        if isinstance(obj, pl.DataFrame):
            frames = {table: obj}
        elif isinstance(obj, Mapping):
            frames = {f"{table}__{name}": frame for name, frame in obj.items()}
            frames[f"{table}{_MEMBERS_SUFFIX}"] = pl.DataFrame({"member": list(obj)}, schema={"member": pl.Utf8})
        else:
            raise TypeError(
                f"asset {context.asset_key.to_user_string()} returned {type(obj).__name__}; the "
                "Parquet warehouse stores polars DataFrames or mappings of them"
            )
        with self.duckdb.get_connection() as connection:
            for name, frame in frames.items():
                self._write(connection, schema, name, frame, partition)
        owner_only(self.duckdb.database)
        context.add_output_metadata({
            "rows": sum(f.height for n, f in frames.items() if not n.endswith(_MEMBERS_SUFFIX)),
            "files": MetadataValue.md("\n".join(
                f"- `{self._file(schema, n, partition)}`" for n in frames if not n.endswith(_MEMBERS_SUFFIX))),
        })

    def _read(self, schema: str, table: str, partition: str | None) -> pl.DataFrame:
        path = self._file(schema, table, partition)
        if not path.is_file():
            raise FileNotFoundError(f"{path} is not in the warehouse yet: materialize its asset first")
        return pl.read_parquet(path)

    def load_input(self, context: InputContext) -> Any:
        schema, table = _location(list(context.asset_key.path))
        partition = self._partition(context)
        wanted = context.dagster_type.typing_type if context.dagster_type else None
        if wanted is dict or get_origin(wanted) in (dict, Mapping):
            members = self._read(schema, f"{table}{_MEMBERS_SUFFIX}", partition)
            return {name: self._read(schema, f"{table}__{name}", partition) for name in members["member"]}
        return self._read(schema, table, partition)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def warehouse_io_manager(duckdb: DuckDBResource, parquet_root: str | None = None) -> ConfigurableIOManager:
    """The IO manager of the asset graph: tables in the DuckDB warehouse, or with ``parquet_root`` (default
    $SYNTH_ASSETS_PARQUET_ROOT) Parquet files under it, each a view of the warehouse."""
    root = parquet_root or os.environ.get(PARQUET_ROOT_ENV_VAR)
    if root:
        return ParquetWarehouseIOManager(duckdb=duckdb, root=str(Path(root).expanduser().resolve()))
    return DuckDBWarehouseIOManager(duckdb=duckdb)

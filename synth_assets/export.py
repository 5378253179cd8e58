"""Write a synthetic release as files a user can hand over: the wide table and the reporting tables
rebuilt from it, in Parquet, CSV or JSON lines, beside a manifest that says what they are (dataset,
generator, epsilon and delta, the ledger's releases with their noise and seeds, the evaluation's
verdicts) and a SHA-256 of every file. :func:`stored_release` reads one release back from a dataset's
warehouse (without Dagster), for the export and for any other place a release is handed to."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import duckdb
import polars as pl

from synth_assets.datasets.loading import Dataset, DatasetError
from synth_assets.sql import fetch_polars, quote_identifier
from synth_assets.tables.decompose import decompose
from synth_assets.warehouse import warehouse_path

FORMATS = ("parquet", "csv", "jsonl")
MANIFEST = "manifest.json"
NEIGHBOURING = ("add or remove one entity (every row of every source table about it): the guarantee holds "
                "for each entity of the training rows")


def _write(frame: pl.DataFrame, path: Path, fmt: str) -> None:
    if fmt == "parquet":
        frame.write_parquet(path)
    elif fmt == "csv":
        frame.write_csv(path)
    else:
        frame.write_ndjson(path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _package_version() -> str:
    try:
        return version("synth_assets")
    except PackageNotFoundError:
        return "unknown"


def export_release(
    dataset: Dataset,
    population: pl.DataFrame,
    out: str | Path,
    *,
    fmt: str = "parquet",
    generator: str,
    epsilon: float | None,
    delta: float | None,
    releases: Sequence[Mapping] = (),
    evaluation: Mapping | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``population`` (a synthetic wide table) and its reporting tables to ``out`` in ``fmt``, with
    a manifest; returns the manifest's path. ``releases``: the ledger's records of the DP releases the
    table was made from; ``evaluation``: its report's verdicts and path. A directory that already holds
    files is refused unless ``overwrite``."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if population.height == 0:
        raise DatasetError(f"the {generator} table of {dataset.name} is empty: nothing to export")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} already holds files: choose an empty directory, or overwrite them "
                              f"(--overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    tables = {"wide": population.drop([c for c in population.columns if c.startswith("__")]),
              **decompose(dataset, population)}
    files = []
    for name, frame in tables.items():
        path = out / f"{name}.{fmt}"
        _write(frame, path, fmt)
        files.append({"table": name, "file": path.name, "rows": frame.height, "columns": frame.columns,
                      "sha256": _sha256(path)})
    manifest = {
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint,
        "generator": generator,
        "epsilon": epsilon,
        "delta": delta,
        "neighbouring_relation": NEIGHBOURING,
        "releases": [dict(r) for r in releases],
        "evaluation": dict(evaluation) if evaluation else None,
        "format": fmt,
        "files": files,
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "synth_assets_version": _package_version(),
    }
    path = out / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, default=str))
    return path


# The warehouse tables the asset graph writes (synth_assets.defs, synth_assets.io_managers), named here so
# that reading a release back does not import Dagster.
PARTITION_COLUMN = "__partition_key"
RELEASE_PLAN_TABLE = ("synthetic", "release_plan")
SCORES_TABLE = ("synthetic", "benchmark_scores__summary")
EVALUATION_TABLE = ("evaluation", "privacy_risk")


def population_table(generator: str) -> tuple[str, str]:
    """The warehouse table of a generator's synthetic wide table (every epsilon partition)."""
    if generator == "private_evolution":
        return ("synthetic", "selected_population")
    if generator == "independent_marginals":
        return ("reference", "independent_marginals")
    return (generator, "population")


class ReleaseNotFound(LookupError):
    """The warehouse holds no synthetic table for this dataset, generator and epsilon."""


@dataclass(frozen=True)
class StoredRelease:
    """One release as the warehouse holds it: the synthetic wide table, the ledger's records of the DP
    releases it was made from, its leaderboard row and its evaluation report (None when not evaluated)."""

    dataset: Dataset
    generator: str
    epsilon: float
    delta: float
    population: pl.DataFrame
    releases: list[dict]
    scores: dict | None
    report: dict | None
    report_page: Path | None

    @property
    def partition(self) -> str:
        return f"{self.epsilon:g}"

    @property
    def evaluation(self) -> dict | None:
        """What the manifest says of the evaluation: its verdicts and the path of its report."""
        if self.report is None:
            return None
        return {"verdict": self.report["verdict"], "verdicts": self.report["verdicts"],
                "report": str(self.report_page)}

    def export(self, out: str | Path, *, fmt: str = "parquet", overwrite: bool = False) -> Path:
        """:func:`export_release` of this release; returns the manifest's path."""
        return export_release(self.dataset, self.population, out, fmt=fmt, generator=self.generator,
                              epsilon=self.epsilon, delta=self.delta, releases=self.releases,
                              evaluation=self.evaluation, overwrite=overwrite)


def _table_exists(connection: duckdb.DuckDBPyConnection, table: tuple[str, str]) -> bool:
    return bool(connection.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
        list(table)).fetchall()[0][0])


def _read_partition(connection: duckdb.DuckDBPyConnection, table: tuple[str, str],
                    partition: str) -> pl.DataFrame | None:
    if not _table_exists(connection, table):
        return None
    name = ".".join(quote_identifier(part) for part in table)
    return fetch_polars(connection, f"select * exclude ({PARTITION_COLUMN}) from {name} "
                                    f"where {PARTITION_COLUMN} = ?", [partition])


def _partitions(connection: duckdb.DuckDBPyConnection, table: tuple[str, str]) -> list[str]:
    if not _table_exists(connection, table):
        return []
    name = ".".join(quote_identifier(part) for part in table)
    keys = connection.execute(f"select distinct {PARTITION_COLUMN} from {name}").fetchall()
    return sorted((row[0] for row in keys), key=float)


def stored_release(dataset: Dataset, epsilon: float, generator: str | None = None, *,
                   database: str | Path | None = None) -> StoredRelease:
    """The release of ``generator`` (default: the first of ``synthesis.generators``) at ``epsilon``, read
    from ``database`` (default: the dataset's warehouse). Raises :class:`ReleaseNotFound`, saying what to
    run, when it has not been materialized."""
    from synth_assets.privacy.ledger import PrivacyLedger
    from synth_assets.privacy.releases import resolve_delta

    generator = generator or dataset.spec.synthesis.generators[0]
    partition = f"{epsilon:g}"
    path = Path(database) if database is not None else warehouse_path(dataset.name)
    hint = f"run 'synth-assets run --epsilon {partition} --generator {generator}' first"
    if not path.is_file():
        raise ReleaseNotFound(f"no warehouse at {path}: {hint}")
    table = population_table(generator)
    with duckdb.connect(str(path), read_only=True) as connection:
        population = _read_partition(connection, table, partition)
        if population is None or population.height == 0:
            made = _partitions(connection, table)
            made_text = f" (it has epsilon {', '.join(made)})" if made else ""
            raise ReleaseNotFound(
                f"{generator} has no synthetic table at epsilon {partition}{made_text}: {hint}")
        plan = _read_partition(connection, RELEASE_PLAN_TABLE, partition)
        board = _read_partition(connection, SCORES_TABLE, partition)
        evaluated = _read_partition(connection, EVALUATION_TABLE, partition)
    identities = set() if plan is None else set(plan.filter(pl.col("generator") == generator)["identity"])
    ledger = PrivacyLedger(path).releases(dataset.name)
    releases = [{k: v for k, v in row.items() if k != "parameters"}
                for row in ledger.filter(pl.col("identity").is_in(sorted(identities))).iter_rows(named=True)]
    scores = [] if board is None else board.filter(pl.col("generator") == generator).to_dicts()
    rows = [] if evaluated is None else evaluated.filter(pl.col("generator") == generator).to_dicts()
    report = json.loads(rows[0]["report_json"]) if rows and rows[0].get("report_json") else None
    page = Path(rows[0]["report"]) if report is not None else None
    return StoredRelease(dataset, generator, float(epsilon), resolve_delta(dataset), population, releases,
                         scores[0] if scores else None, report, page)

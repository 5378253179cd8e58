"""Write a synthetic release as files a user can hand over: the wide table and the reporting tables
rebuilt from it, in Parquet, CSV or JSON lines, beside a manifest that says what they are (dataset,
generator, epsilon and delta, the ledger's releases with their noise and seeds, the evaluation's
verdicts) and a SHA-256 of every file."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import polars as pl

from synth_assets.datasets.loading import Dataset, DatasetError
from synth_assets.tables.decompose import decompose

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

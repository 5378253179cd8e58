"""Build reporting tables from sources, and the wide one-row-per-entity table from reporting tables.

The wide table is the private input of every generator: its columns are conformed to the spec's public
domain (categories mapped, numerics clipped) so that nothing about the domain is learnt from the data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import duckdb
import polars as pl

from synth_assets.datasets.loading import Dataset, DatasetError, SharedView
from synth_assets.datasets.spec import (
    SPEC_FILENAME,
    CategoricalColumn,
    DateColumn,
    IdentifierColumn,
    NumericColumn,
)
from synth_assets.datasets.temporal import as_dates, as_numbers, to_temporal
from synth_assets.sql import fetch_polars, quote_identifier, referenced_tables, run_sql

_POLARS_TYPE = {"integer": pl.Int64, "float": pl.Float64}


def slice_entities(frame: pl.DataFrame, column: str, fraction: float) -> pl.DataFrame:
    """Keep a deterministic ``fraction`` of the entities (the same ones in every table)."""
    if fraction >= 1.0:
        return frame
    buckets = 10_000
    keep = int(round(fraction * buckets))
    bucket = f"hash(cast({quote_identifier(column)} as varchar)) % {buckets}"
    return run_sql(f"select * from frame where {bucket} < {keep}", {"frame": frame})


def _conform_reporting_types(dataset: Dataset, table: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Cast the columns the spec describes to their declared types (integer, float, text, date,
    timestamp)."""
    casts = []
    for column in dataset.spec.columns_of(table):
        if column.column not in frame.columns:
            continue  # reported by check_reporting_table
        if isinstance(column, DateColumn):
            where = (
                f"{dataset.directory / dataset.spec.reporting_tables[table].sql}: reporting table "
                f"{table!r}, wide_table column {column.wide_name!r} (role: {column.role})"
            )
            try:
                casts.append(to_temporal(column, frame[column.column], where))
            except ValueError as exc:
                raise DatasetError(str(exc)) from exc
        elif isinstance(column, NumericColumn):
            casts.append(pl.col(column.column).cast(_POLARS_TYPE[column.type], strict=False))
        elif isinstance(column, CategoricalColumn):
            casts.append(pl.col(column.column).cast(pl.Utf8))
    key = dataset.spec.entity.key
    if key in frame.columns:
        casts.append(pl.col(key).cast(pl.Utf8))
    return frame.with_columns(casts) if casts else frame


def check_reporting_table(dataset: Dataset, table: str, frame: pl.DataFrame) -> None:
    """Fail with a clear message if a reporting table breaks the rules of the spec."""
    spec = dataset.spec
    key = spec.entity.key
    sql_file = spec.reporting_tables[table].sql
    where = f"reporting table {table!r} ({sql_file})"
    if key not in frame.columns:
        raise DatasetError(
            f"{where}: has no entity key column {key!r}; its SQL must select it (columns: {frame.columns})"
        )
    missing = [c.column for c in spec.columns_of(table) if c.column not in frame.columns]
    if missing:
        raise DatasetError(
            f"{where}: the wide table takes columns {missing} from it, but its SQL does not produce "
            f"them (columns: {frame.columns})"
        )
    if frame[key].null_count():
        raise DatasetError(f"{where}: {frame[key].null_count()} rows have a null {key!r}")
    duplicated = frame.group_by(key).len().filter(pl.col("len") > 1)
    if duplicated.height:
        example = duplicated[key][0]
        raise DatasetError(
            f"{where}: must have one row per {spec.entity.name}, but {duplicated.height} "
            f"{key!r} values repeat (e.g. {example!r}); GROUP BY {key} in its SQL"
        )
    reporting = spec.reporting_tables[table]
    wide_columns = {c.column for c in spec.columns_of(table)}
    extra = [c for c in frame.columns if c != key and c not in wide_columns]
    if reporting.rebuildable and extra:
        raise DatasetError(
            f"{where}: columns {extra} are not in the wide table, so decomposing it cannot rebuild "
            f"this table; add them to wide_table.columns or set rebuildable: false with a reason"
        )
    if reporting.rebuildable and table != spec.entity.population and wide_columns and frame.height:
        all_null = frame.select(
            pl.all_horizontal(pl.col(c).is_null() for c in sorted(wide_columns)).sum()
        ).item()
        if all_null:
            raise DatasetError(
                f"{where}: {all_null} rows have every column null, so decomposing the wide table "
                f"cannot tell that these {spec.entity.name}s belong in it; add a column that is never "
                f"null (e.g. a count) or set rebuildable: false with a reason"
            )


def build_reporting_table(
    dataset: Dataset, table: str, sources: Mapping[str, pl.DataFrame]
) -> pl.DataFrame:
    """Run the reporting SQL of ``table`` over the source frames (after creating the shared views it
    reads), conform its types and check it."""
    views = reporting_table_views(dataset, table)
    if not views:
        try:
            frame = run_sql(dataset.reporting_sql[table], sources)
        except duckdb.Error as exc:
            raise _reporting_sql_failed(dataset, table, exc) from exc
    else:
        connection = duckdb.connect()
        try:
            for name, source in sources.items():
                connection.register(name, source.to_arrow())
            for view in views:
                try:
                    connection.execute(view.statement)
                except duckdb.Error as exc:
                    path = dataset.spec.resolve(dataset.directory, view.file)
                    raise DatasetError(
                        f"{path}: shared view {view.name!r} failed (building reporting table "
                        f"{table!r}): {exc}"
                    ) from exc
            try:
                frame = fetch_polars(connection, dataset.reporting_sql[table])
            except duckdb.Error as exc:
                raise _reporting_sql_failed(dataset, table, exc) from exc
        finally:
            connection.close()
    frame = _conform_reporting_types(dataset, table, frame)
    check_reporting_table(dataset, table, frame)
    return frame


def _reporting_sql_failed(dataset: Dataset, table: str, exc: duckdb.Error) -> DatasetError:
    sql_file = dataset.spec.reporting_tables[table].sql
    return DatasetError(f"{dataset.directory / sql_file}: SQL of reporting table {table!r} failed: {exc}")


def _reporting_table_reads(dataset: Dataset, table: str) -> set[str]:
    sql_path = dataset.directory / dataset.spec.reporting_tables[table].sql
    try:
        return referenced_tables(dataset.reporting_sql[table])
    except ValueError as exc:
        raise DatasetError(f"{sql_path}: {exc}") from exc


def reporting_table_views(dataset: Dataset, table: str) -> list[SharedView]:
    """The shared views the SQL of reporting table ``table`` reads, directly or through other views,
    in the order they are created."""
    views = dataset.shared_views
    if not views:
        return []
    by_name = {view.name.lower(): view for view in views}
    needed: set[str] = set()
    pending = [t for t in _reporting_table_reads(dataset, table) if t in by_name]
    while pending:
        name = pending.pop()
        if name not in needed:
            needed.add(name)
            pending.extend(t for t in by_name[name].reads if t in by_name)
    return [view for view in views if view.name.lower() in needed]


def reporting_table_sources(dataset: Dataset, table: str) -> list[str]:
    """The sources that the SQL of reporting table ``table`` reads, directly or through shared views,
    in spec order."""
    referenced = _reporting_table_reads(dataset, table)
    for view in reporting_table_views(dataset, table):
        referenced |= view.reads
    used = [name for name in dataset.spec.sources if name.lower() in referenced]
    if not used:
        raise DatasetError(
            f"{dataset.directory / dataset.spec.reporting_tables[table].sql}: reporting table "
            f"{table!r} reads none of the sources {sorted(dataset.spec.sources)}"
            + (", directly or through the shared views" if dataset.spec.shared_sql else "")
        )
    return used


@dataclass
class WideTableReport:
    """What conforming the wide table to the spec's domain changed. Private: stays with the owner."""

    rows: int
    entities_outside_population: dict[str, int] = field(default_factory=dict)
    clipped: dict[str, int] = field(default_factory=dict)
    mapped_to_other: dict[str, int] = field(default_factory=dict)
    nulled: dict[str, int] = field(default_factory=dict)

    @property
    def changed_values(self) -> int:
        return sum(self.clipped.values()) + sum(self.mapped_to_other.values()) + sum(
            self.nulled.values()
        )


def build_wide_table(
    dataset: Dataset, reporting: Mapping[str, pl.DataFrame]
) -> tuple[pl.DataFrame, WideTableReport]:
    """Join the reporting tables into one row per entity and conform every column to the spec."""
    spec = dataset.spec
    key = spec.entity.key
    population = reporting[spec.entity.population].select(pl.col(key))
    report = WideTableReport(rows=population.height)
    wide = population
    for table in spec.reporting_tables:
        columns = spec.columns_of(table)
        if not columns:
            continue
        frame = reporting[table].select(
            [pl.col(key)] + [pl.col(c.column).alias(c.wide_name) for c in columns]
        )
        outside = frame.join(population, on=key, how="anti").height
        if outside:
            report.entities_outside_population[table] = outside
        wide = wide.join(frame, on=key, how="left", maintain_order="left")
    wide = wide.select([c.wide_name for c in spec.wide_table.columns])
    return conform_to_domain(dataset, wide, report), report


def conform_to_domain(
    dataset: Dataset, wide: pl.DataFrame, report: WideTableReport | None = None
) -> pl.DataFrame:
    """Map categories, clip numerics and enforce nullability as the spec says; errors name the column."""
    report = report or WideTableReport(rows=wide.height)
    expressions = []
    for column in dataset.spec.wide_table.columns:
        name = column.wide_name
        values = wide[name]
        if isinstance(column, IdentifierColumn):
            expressions.append(pl.col(name).cast(pl.Utf8))
            continue
        if isinstance(column, DateColumn):
            expressions.append(_conform_dates(dataset, column, wide[name], report))
        elif isinstance(column, CategoricalColumn):
            values = values.cast(pl.Utf8)
            unseen = values.is_not_null() & ~values.is_in(column.categories)
            count = int(unseen.sum())
            if count:
                examples = values.filter(unseen).unique().sort().head(5).to_list()
                if column.unseen == "error":
                    raise DatasetError(
                        f"wide_table column {name!r} ({column.source}): {count} values are not in its "
                        f"categories, e.g. {examples}; add them to 'categories', or set unseen: map "
                        f"(with map_to) or unseen: null"
                    )
                replacement = column.map_to if column.unseen == "map" else None
                target = report.mapped_to_other if column.unseen == "map" else report.nulled
                target[name] = count
                expressions.append(
                    pl.when(pl.col(name).cast(pl.Utf8).is_in(column.categories) | pl.col(name).is_null())
                    .then(pl.col(name).cast(pl.Utf8))
                    .otherwise(pl.lit(replacement, dtype=pl.Utf8))
                    .alias(name)
                )
            else:
                expressions.append(pl.col(name).cast(pl.Utf8))
        elif isinstance(column, NumericColumn):
            dtype = _POLARS_TYPE[column.type]
            numeric = values.cast(pl.Float64, strict=False)
            outside = (numeric < column.min) | (numeric > column.max)
            count = int(outside.sum())
            if count:
                if column.out_of_bounds == "error":
                    raise DatasetError(
                        f"wide_table column {name!r} ({column.source}): {count} values fall outside "
                        f"[{column.min:g}, {column.max:g}]; widen the public bounds or set "
                        f"out_of_bounds: clip"
                    )
                report.clipped[name] = count
                expressions.append(
                    pl.col(name).cast(pl.Float64).clip(column.min, column.max).cast(dtype).alias(name)
                )
            else:
                expressions.append(pl.col(name).cast(dtype))
        if not column.nullable:
            _refuse_nulls(dataset, column, wide[name])
    return wide.with_columns(expressions)


def _refuse_nulls(dataset: Dataset, column: DateColumn | NumericColumn | CategoricalColumn,
                  values: pl.Series) -> None:
    """Stop at the first null of a column that is not nullable: nothing is released from such a table."""
    nulls = values.null_count()
    if not nulls:
        return
    spec = dataset.spec
    reporting = spec.reporting_tables.get(column.table)
    sql = f" ({reporting.sql})" if reporting is not None else ""
    absent = ""
    if column.table != spec.entity.population:
        absent = (
            f" (an entity with no row in {column.table!r} is null in every column taken from it: "
            "such a column is nullable)"
        )
    raise DatasetError(
        f"{dataset.directory / SPEC_FILENAME}: wide_table column {column.wide_name!r} ({column.source}), "
        f"from reporting table {column.table!r}{sql}: {nulls} rows are null but the column is not "
        f"nullable{absent}; set nullable: true on the column, or fix the SQL so that it gives every "
        f"entity a value"
    )


def _conform_dates(
    dataset: Dataset, column: DateColumn, values: pl.Series, report: WideTableReport
) -> pl.Expr:
    """A date or timestamp column as its declared type, clipped to its public bounds (or refused)."""
    name = column.wide_name
    where = f"{dataset.directory / SPEC_FILENAME}: wide_table column {name!r} ({column.source})"
    try:
        dated = to_temporal(column, values, where)
    except ValueError as exc:
        raise DatasetError(str(exc)) from exc
    frame = pl.DataFrame([dated])
    numbers = as_numbers(dataset.spec, frame)[name]
    outside = (numbers < column.min) | (numbers > column.max)
    count = int(outside.sum())
    if not count:
        return pl.lit(dated).alias(name)
    if column.out_of_bounds == "error":
        example = dated.filter(outside)[0]
        raise DatasetError(
            f"{where}: {count} values fall outside [{column.label(column.min)}, "
            f"{column.label(column.max)}], e.g. {example}; widen the public bounds or set "
            f"out_of_bounds: clip"
        )
    report.clipped[name] = count
    clipped = numbers.clip(int(column.min), int(column.max))
    return pl.lit(as_dates(dataset.spec, pl.DataFrame([clipped]))[name]).alias(name)


@dataclass
class RealTables:
    """The real half in memory: source frames, reporting tables, the wide table and its report."""

    sources: dict[str, pl.DataFrame]
    reporting: dict[str, pl.DataFrame]
    wide: pl.DataFrame
    report: WideTableReport


def build_real_tables(dataset: Dataset, *, entity_fraction: float = 1.0) -> RealTables:
    """Read every source and build every reporting table and the wide table, without Dagster."""
    from synth_assets.datasets.sources import read_source

    sources = {}
    for name, source in dataset.spec.sources.items():
        frame = read_source(dataset, name)
        if entity_fraction < 1 and source.entity_column:
            frame = slice_entities(frame, source.entity_column, entity_fraction)
        sources[name] = frame
    reporting = {t: build_reporting_table(dataset, t, sources) for t in dataset.spec.reporting_tables}
    wide, report = build_wide_table(dataset, reporting)
    return RealTables(sources, reporting, wide, report)

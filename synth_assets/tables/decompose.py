"""Turn a wide one-row-per-entity table back into the reporting tables the workload queries.

Membership rule (the sparsity mask): an entity appears in a reporting table when at least one of that
table's columns is non-null in its wide row; the population table holds every entity. The reporting-table
build enforces that real rows never have all their columns null, so the rule is exact on real data.
"""

from __future__ import annotations

import polars as pl

from synth_assets.datasets.loading import Dataset, DatasetError


def decompose(dataset: Dataset, wide: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Split ``wide`` into the dataset's rebuildable reporting tables, each one row per entity."""
    spec = dataset.spec
    key = spec.entity.key
    missing = [c.wide_name for c in spec.wide_table.columns if c.wide_name not in wide.columns]
    if missing:
        raise DatasetError(
            f"cannot decompose: the wide table lacks columns {missing} of dataset {dataset.name!r}"
        )
    tables = {}
    for table, reporting in spec.reporting_tables.items():
        if not reporting.rebuildable:
            continue
        columns = spec.columns_of(table)
        frame = wide.select(
            [pl.col(key)] + [pl.col(c.wide_name).alias(c.column) for c in columns]
        )
        if table != spec.entity.population and columns:
            frame = frame.filter(pl.any_horizontal(pl.col(c.column).is_not_null() for c in columns))
        tables[table] = frame
    return tables

"""Assets of the real-data half, built from a dataset spec: one per source and per reporting table,
the wide table and the ground-truth workload answers. Everything here is private data."""


import time
from collections import Counter

import dagster as dg
import polars as pl

from synth_assets.benchmark.workload import run_workload
from synth_assets.datasets.loading import Dataset
from synth_assets.datasets.sources import read_source
from synth_assets.evaluation.holdout import split_holdout
from synth_assets.resources import DatasetResource
from synth_assets.tables.build import (
    build_reporting_table,
    build_wide_table,
    reporting_table_sources,
    slice_entities,
)

RAW_GROUP = "private_sources"
REPORTING_GROUP = "private_reporting"
REAL_GROUP = "private_wide_and_answers"


def raw_key(source: str) -> dg.AssetKey:
    return dg.AssetKey(["raw", source])


def reporting_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["reporting", table])


def wide_key(dataset: Dataset) -> dg.AssetKey:
    return dg.AssetKey(["real", dataset.spec.wide_table.name])


BENCHMARK_ANSWERS_KEY = dg.AssetKey(["real", "benchmark_answers"])
TRAINING_KEY = dg.AssetKey(["real", "training"])
HOLDOUT_KEY = dg.AssetKey(["real", "holdout"])


def _named_ins(prefix: str, keys: dict[str, dg.AssetKey]) -> dict[str, dg.AssetIn]:
    """Inputs named ``<prefix>__<table>``: asset functions receive them as keyword arguments."""
    return {f"{prefix}__{name}": dg.AssetIn(key=key) for name, key in keys.items()}


def _by_table(prefix: str, inputs: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """The inputs of :func:`_named_ins` back under their table names."""
    return {name.removeprefix(f"{prefix}__"): frame for name, frame in inputs.items()}


def _kinds() -> set[str]:
    return {"duckdb", "polars"}


def _source_asset(dataset: Dataset, name: str) -> dg.AssetsDefinition:
    source = dataset.spec.sources[name]
    described = getattr(source, "path", None) or f"{getattr(source, 'loader', '')}:{getattr(source, 'member', '')}"

    @dg.asset(
        key=raw_key(name),
        group_name=RAW_GROUP,
        kinds=_kinds(),
        description=f"Private source table `{name}` of dataset `{dataset.name}` ({source.format}: {described}).",
    )
    def _raw(context: dg.AssetExecutionContext, dataset: DatasetResource) -> pl.DataFrame:
        frame = read_source(dataset.load(), name)
        if dataset.entity_fraction < 1 and source.entity_column:
            frame = slice_entities(frame, source.entity_column, dataset.entity_fraction)
        context.add_output_metadata({"entity_fraction": dataset.entity_fraction})
        return frame

    return _raw


def _reporting_asset(dataset: Dataset, table: str) -> dg.AssetsDefinition:
    reporting = dataset.spec.reporting_tables[table]
    sources = reporting_table_sources(dataset, table)
    ins = _named_ins("source", {s: raw_key(s) for s in sources})
    rebuild_note = (
        "Rebuilt from the wide table by `decompose`."
        if reporting.rebuildable
        else f"NOT rebuildable from the wide table: {reporting.not_rebuildable_reason}"
    )

    @dg.asset(
        key=reporting_key(table),
        ins=ins,
        group_name=REPORTING_GROUP,
        kinds=_kinds(),
        description=(
            f"{reporting.description or f'Reporting table `{table}`'} One row per "
            f"{dataset.spec.entity.name}, from `{reporting.sql}`. {rebuild_note}"
        ),
    )
    def _reporting(context: dg.AssetExecutionContext, **inputs: pl.DataFrame) -> pl.DataFrame:
        frames = _by_table("source", inputs)
        result = build_reporting_table(dataset, table, frames)
        context.add_output_metadata({"entities": result.height, "rebuildable": reporting.rebuildable})
        return result

    return _reporting


def _wide_asset(dataset: Dataset) -> dg.AssetsDefinition:
    spec = dataset.spec
    tables = [t for t in spec.reporting_tables if spec.columns_of(t) or t == spec.entity.population]
    ins = _named_ins("reporting", {t: reporting_key(t) for t in tables})

    @dg.asset(
        key=wide_key(dataset),
        ins=ins,
        group_name=REAL_GROUP,
        kinds=_kinds(),
        description=(
            f"The wide table: one row per {spec.entity.name}, {len(spec.wide_table.columns)} columns "
            "conformed to the spec's public domain (categories mapped, numerics clipped). Split into "
            "training (the generators' input) and holdout."
        ),
    )
    def _wide(context: dg.AssetExecutionContext, **inputs: pl.DataFrame) -> pl.DataFrame:
        reporting = _by_table("reporting", inputs)
        wide, report = build_wide_table(dataset, reporting)
        roles = Counter(c.role for c in spec.wide_table.columns)
        context.add_output_metadata(
            {
                "entities": wide.height,
                **{f"{role}_columns": count for role, count in sorted(roles.items())},
                "values_changed_by_domain": report.changed_values,
                "domain_changes": dg.MetadataValue.json(
                    {
                        "clipped": report.clipped,
                        "mapped_to_other": report.mapped_to_other,
                        "nulled": report.nulled,
                        "entities_outside_population": report.entities_outside_population,
                    }
                ),
            }
        )
        return wide

    return _wide


def _split_assets(dataset: Dataset) -> dg.AssetsDefinition:
    privacy = dataset.spec.privacy

    @dg.multi_asset(
        outs={
            "training": dg.AssetOut(
                key=TRAINING_KEY, group_name=REAL_GROUP, kinds=_kinds(),
                description="The wide table's training entities: the only input of every generator.",
            ),
            "holdout": dg.AssetOut(
                key=HOLDOUT_KEY, group_name=REAL_GROUP, kinds=_kinds(),
                description=(
                    f"The holdout: {privacy.holdout_fraction:.0%} of the entities, chosen by a hash of the "
                    f"entity key seeded {privacy.holdout_seed}, never given to a generator; the privacy "
                    "risk and utility of every synthetic table are measured against it."
                ),
            ),
        },
        ins={"wide": dg.AssetIn(key=wide_key(dataset))},
    )
    def training_and_holdout(context: dg.AssetExecutionContext, wide: pl.DataFrame):
        training, holdout = split_holdout(dataset, wide)
        split = {"holdout_fraction": privacy.holdout_fraction, "holdout_seed": privacy.holdout_seed}
        yield dg.Output(training, "training", metadata={"entities": training.height, **split})
        yield dg.Output(holdout, "holdout", metadata={"entities": holdout.height, **split})

    return training_and_holdout


def _benchmark_answers_asset(dataset: Dataset) -> dg.AssetsDefinition:
    ins = _named_ins("reporting", {t: reporting_key(t) for t in dataset.spec.reporting_tables})

    @dg.asset(
        key=BENCHMARK_ANSWERS_KEY,
        ins=ins,
        group_name=REAL_GROUP,
        kinds=_kinds(),
        description=(
            f"Ground truth: the answers of the {len(dataset.queries)} workload queries on the real "
            "reporting tables (one table per query)."
        ),
    )
    def benchmark_answers(
        context: dg.AssetExecutionContext, **inputs: pl.DataFrame
    ) -> dict[str, pl.DataFrame]:
        reporting = _by_table("reporting", inputs)
        started = time.perf_counter()
        answers = run_workload(dataset.queries, reporting)
        by_type = Counter(q.type for q in dataset.queries)
        lines = ["| query | type | rows |", "|---|---|---|"] + [
            f"| {q.name} | {q.type} | {answers[q.name].height} |" for q in dataset.queries
        ]
        context.add_output_metadata(
            {
                "queries": len(answers),
                **{f"{kind}_queries": count for kind, count in sorted(by_type.items())},
                "seconds": round(time.perf_counter() - started, 3),
                "answers": dg.MetadataValue.md("\n".join(lines)),
            }
        )
        return answers

    return benchmark_answers


def build_real_assets(dataset: Dataset) -> list[dg.AssetsDefinition]:
    """All assets of the real-data half of ``dataset``."""
    return [
        *(_source_asset(dataset, name) for name in dataset.spec.sources),
        *(_reporting_asset(dataset, table) for table in dataset.spec.reporting_tables),
        _wide_asset(dataset),
        _split_assets(dataset),
        _benchmark_answers_asset(dataset),
    ]

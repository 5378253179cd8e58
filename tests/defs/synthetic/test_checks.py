"""Asset checks of the synthetic half, partitioned by epsilon: the domain checks block what follows a
bad candidate pool, each check reads the partition just materialized, and decomposed tables must keep
the schema of the real reporting tables."""

from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from synth_assets.datasets.loading import load_dataset
from synth_assets.datasets.sources import read_source
from synth_assets.defs.graph import build_assets, build_resources
from synth_assets.defs.real.assets import BENCHMARK_ANSWERS_KEY, build_real_assets, reporting_key
from synth_assets.defs.real.checks import build_real_checks
from synth_assets.defs.synthetic.assets import (
    CANDIDATE_POOL_KEY,
    DECOMPOSED_KEY,
    DP_HISTOGRAM_KEY,
    DP_PRIOR_KEY,
    POPULATION_KEY,
    RELEASE_PLAN_KEY,
    epsilon_partitions,
)
from synth_assets.defs.synthetic.checks import (
    DOMAIN_CHECK,
    SCHEMA_CHECK,
    build_synthetic_checks,
    failed_blocking_checks,
)
from synth_assets.defs.synthetic.jobs import EPSILON_GRID_JOB, build_epsilon_grid_job
from synth_assets.pe.generators import OfflineGenerator
from synth_assets.resources import PrivateEvolutionResource
from synth_assets.tables.build import build_reporting_table, build_wide_table, reporting_table_sources
from synth_assets.tables.decompose import decompose

SMALL = {"pool_size": 150, "selected": 50, "reference_points": 3000, "prior_share": 0.0}


def _evaluations(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.asset_key.to_user_string(): e for e in result.get_asset_check_evaluations()}


def _materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def _subset(checks, *keys: dg.AssetKey):
    return [c for c in checks if {k.asset_key for k in c.check_keys} <= set(keys)]


@pytest.fixture(scope="module")
def real_tables(tiny_dataset_dir: Path):
    """The tiny dataset's reporting tables and wide table, built without Dagster."""
    dataset = load_dataset(tiny_dataset_dir)
    sources = {name: read_source(dataset, name) for name in dataset.spec.sources}
    reporting = {
        t: build_reporting_table(dataset, t, {s: sources[s] for s in reporting_table_sources(dataset, t)})
        for t in dataset.spec.reporting_tables
    }
    return dataset, reporting, build_wide_table(dataset, reporting)[0]


def test_every_check_passes_on_one_partition_of_the_tiny_dataset(
    tiny_dataset_dir: Path, tmp_path: Path, epsilon_instance
) -> None:
    dataset = load_dataset(tiny_dataset_dir)
    instance = epsilon_instance(dataset)
    pe = PrivateEvolutionResource(**SMALL, checkpoint_dir=str(tmp_path / "ck"))
    resources = build_resources(dataset, database=str(tmp_path / "w.duckdb"), pe=pe)
    assets = build_assets(dataset)
    checks = [*build_real_checks(dataset), *build_synthetic_checks(dataset)]
    real = [k for a in build_real_assets(dataset) for k in a.keys if k != BENCHMARK_ANSWERS_KEY]
    synthetic = [
        RELEASE_PLAN_KEY, DP_PRIOR_KEY, CANDIDATE_POOL_KEY, DP_HISTOGRAM_KEY, POPULATION_KEY, DECOMPOSED_KEY
    ]

    first = dg.materialize([*assets, *checks], resources=resources, selection=real)
    second = dg.materialize(
        [*assets, *checks], resources=resources, selection=synthetic, partition_key="1", instance=instance
    )
    assert first.success and second.success
    evaluations = {**_evaluations(first), **_evaluations(second)}
    assert len(evaluations) == 7
    for key, evaluation in evaluations.items():
        assert evaluation.passed, (key, evaluation.metadata["summary"].value)
    for key in ("synthetic/candidate_pool", "synthetic/selected_population", "synthetic/decomposed_tables"):
        assert evaluations[key].partition == "1" and evaluations[key].metadata["partition"].value == "1"
    pool = evaluations["synthetic/candidate_pool"]
    assert pool.check_name == DOMAIN_CHECK and pool.blocking and pool.metadata["rows"].value == 150
    assert evaluations["synthetic/decomposed_tables"].check_name == SCHEMA_CHECK

    # wired as the lead will wire graph.py: the epsilon-grid job runs the synthetic checks
    defs = dg.Definitions(assets=assets, asset_checks=checks, jobs=[build_epsilon_grid_job(dataset)], resources=resources)
    nodes = {node.name for node in defs.resolve_job_def(EPSILON_GRID_JOB).graph.nodes}
    assert {
        "synthetic__candidate_pool_values_in_domain",
        "synthetic__selected_population_values_in_domain",
        "synthetic__decomposed_tables_same_schema_as_reporting",
    } <= nodes


def test_a_bad_candidate_pool_fails_its_blocking_check_in_its_own_partition(
    tiny_dataset_dir: Path, tmp_path: Path, epsilon_instance
) -> None:
    dataset = load_dataset(tiny_dataset_dir)
    partitions = epsilon_partitions(dataset)

    @dg.asset(key=CANDIDATE_POOL_KEY, partitions_def=partitions)
    def candidate_pool(context: dg.AssetExecutionContext) -> pl.DataFrame:
        pool = OfflineGenerator(dataset).random(60, seed=1)
        if context.partition_key == "4":  # out of the domain in partition 4 only
            row = pl.int_range(pl.len())
            pool = pool.with_columns(
                pl.when(row < 7).then(pl.lit("zeta")).otherwise(pl.col("model")).alias("model"),
                pl.when(row < 2).then(pl.lit(1999)).otherwise(pl.col("purchase_year")).alias("purchase_year"),
            )
        return pool

    @dg.asset(key=DP_HISTOGRAM_KEY, partitions_def=partitions, ins={"pool": dg.AssetIn(CANDIDATE_POOL_KEY)})
    def dp_histogram(pool: pl.DataFrame) -> pl.DataFrame:
        return pool

    database = tmp_path / "w.duckdb"
    definitions = [candidate_pool, dp_histogram, *_subset(build_synthetic_checks(dataset), CANDIDATE_POOL_KEY)]
    resources = build_resources(dataset, database=str(database))

    instance = epsilon_instance(dataset)
    bad = dg.materialize(
        definitions, resources=resources, partition_key="4", raise_on_error=False, instance=instance
    )
    evaluation = _evaluations(bad)["synthetic/candidate_pool"]
    assert not evaluation.passed and evaluation.blocking and evaluation.partition == "4"
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["unexpected_counts"].value["model: column_values_to_be_in_set"] == 7
    assert evaluation.metadata["unexpected_counts"].value["purchase_year: column_values_to_be_between"] == 2
    assert evaluation.metadata["unexpected_values"].value == 9
    assert "| model | column_values_to_be_in_set | in {alpha, beta, gamma, other} | 7 / 60 | **FAIL** | 'zeta'" in (
        evaluation.metadata["summary"].value
    )
    assert not bad.success
    assert _materialized(bad) == {"synthetic/candidate_pool"}  # blocked: no histogram from a bad pool
    assert failed_blocking_checks(instance, bad.run_id) == [dg.AssetCheckKey(CANDIDATE_POOL_KEY, DOMAIN_CHECK)]

    # partition 1 is clean: its check reads its own rows, not the bad ones of partition 4 in the table
    good = dg.materialize(definitions, resources=resources, partition_key="1", instance=instance)
    evaluation = _evaluations(good)["synthetic/candidate_pool"]
    assert evaluation.passed and evaluation.partition == "1" and evaluation.metadata["rows"].value == 60
    assert _materialized(good) == {"synthetic/candidate_pool", "synthetic/dp_histogram"}
    assert failed_blocking_checks(instance, good.run_id) == []
    with duckdb.connect(str(database), read_only=True) as connection:
        stored = dict(connection.execute(
            "select __partition_key, count(*) filter (where model = 'zeta') from synthetic.candidate_pool group by 1"
        ).fetchall())
    assert stored == {"1": 0, "4": 7}


def test_a_decomposed_table_with_a_wrong_dtype_fails_the_schema_check(
    real_tables, tmp_path: Path, epsilon_instance
) -> None:
    dataset, reporting, wide = real_tables
    partitions = epsilon_partitions(dataset)

    def reporting_asset(table: str) -> dg.AssetsDefinition:
        @dg.asset(key=reporting_key(table))
        def _asset() -> pl.DataFrame:
            return reporting[table]

        return _asset

    @dg.asset(key=DECOMPOSED_KEY, partitions_def=partitions)
    def decomposed_tables() -> dict[str, pl.DataFrame]:
        tables = decompose(dataset, wide)
        tables["usage"] = tables["usage"].with_columns(pl.col("sessions").cast(pl.Float64))
        return tables

    reporting_assets = [reporting_asset(t) for t in reporting]
    checks = _subset(build_synthetic_checks(dataset), DECOMPOSED_KEY)
    resources = build_resources(dataset, database=str(tmp_path / "w.duckdb"))
    assert dg.materialize(reporting_assets, resources=resources).success

    # The check reads the table as stored: the partition that creates it sets its dtypes (a later
    # partition's values are cast by DuckDB on insert), so the bad partition goes first here.
    result = dg.materialize(
        [decomposed_tables, *checks], resources=resources, partition_key="4", instance=epsilon_instance(dataset)
    )
    evaluation = _evaluations(result)["synthetic/decomposed_tables"]
    assert not evaluation.passed and evaluation.partition == "4"
    assert not evaluation.blocking and result.success  # not blocking: the run goes on
    assert evaluation.metadata["failed_expectations"].value == 1
    assert (
        "| usage | sessions | column_values_to_be_in_type_list | dtype Int64 | — | **FAIL** (observed Float64) |"
        in evaluation.metadata["summary"].value
    )

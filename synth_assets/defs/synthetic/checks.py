"""Asset checks of the synthetic half, partitioned by epsilon like the assets they check.

* ``values_in_domain`` on the candidate pool and on the selected population (BLOCKING): every value
  within the spec's public domain (Great Expectations suite
  :func:`synth_assets.checks.expectations.domain_suite`). A failure stops the downstream steps of the
  run: a candidate pool outside the domain never reaches the DP histogram.
* ``same_schema_as_reporting`` on the decomposed tables: each member has the column names and dtypes
  of the real reporting table of the same name, as stored in the warehouse.

Partitions: each check has the epsilon partitions of its asset (``partitions_def``, a preview feature
of Dagster 1.13). In a run of one partition the check runs in that partition, its input is loaded
through the IO manager for that partition only (the rows of ``__partition_key`` = the run's epsilon), and
its evaluation is recorded against that partition.
"""


import warnings

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from synth_assets.checks.expectations import validate_domain, validate_table_set
from synth_assets.datasets.loading import Dataset
from synth_assets.defs.real.assets import reporting_key
from synth_assets.defs.real.checks import check_result
from synth_assets.defs.synthetic.assets import (
    CANDIDATE_POOL_KEY,
    DECOMPOSED_KEY,
    POPULATION_KEY,
    epsilon_partitions,
)
from synth_assets.sql import fetch_polars

DOMAIN_CHECK = "values_in_domain"
SCHEMA_CHECK = "same_schema_as_reporting"


def _partitioned_check(**kwargs):
    """``dg.asset_check`` with a partitions_def, without the preview warning of Dagster 1.13."""

    def wrap(fn):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dg.PreviewWarning)
            return dg.asset_check(**kwargs)(fn)

    return wrap


def _domain_description(what: str) -> str:
    return (
        f"Great Expectations, blocking: {what} holds exactly the expected columns and every value is "
        "within the spec's public domain: categories in their lists, numerics within [min, max], "
        "integer columns integral, non-nullable columns non-null, declared types. The summary gives "
        "the unexpected count of each expectation."
    )


def _candidate_pool_check(dataset: Dataset, partitions: dg.PartitionsDefinition):
    @_partitioned_check(
        asset=CANDIDATE_POOL_KEY,
        name=DOMAIN_CHECK,
        blocking=True,
        partitions_def=partitions,
        description=_domain_description("the candidate pool (modelled columns)"),
    )
    def _check(context: dg.AssetCheckExecutionContext, candidate_pool: pl.DataFrame) -> dg.AssetCheckResult:
        report = validate_domain(dataset, candidate_pool)
        return check_result(report, examples=True, extra={"partition": context.partition_key})

    return _check


def _population_check(dataset: Dataset, partitions: dg.PartitionsDefinition):
    @_partitioned_check(
        asset=POPULATION_KEY,
        name=DOMAIN_CHECK,
        blocking=True,
        partitions_def=partitions,
        description=_domain_description(
            f"the selected population (wide columns, unique `{dataset.spec.entity.key}`)"
        ),
    )
    def _check(
        context: dg.AssetCheckExecutionContext, selected_population: pl.DataFrame
    ) -> dg.AssetCheckResult:
        report = validate_domain(dataset, selected_population, population=True)
        return check_result(report, examples=True, extra={"partition": context.partition_key})

    return _check


def _stored_schema(duckdb: DuckDBResource, key: dg.AssetKey) -> dict[str, pl.DataType]:
    """Column -> dtype of an unpartitioned asset as the warehouse IO manager stores and loads it."""
    path = list(key.path)
    schema, table = (path[-2] if len(path) > 1 else "main"), path[-1]
    with duckdb.get_connection() as connection:
        exists = connection.execute(
            "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
            [schema, table],
        ).fetchall()[0][0]
        if not exists:
            raise FileNotFoundError(
                f"table {schema}.{table} is not in the warehouse: materialize {key.to_user_string()} first"
            )
        return dict(fetch_polars(connection, f'select * from "{schema}"."{table}" limit 0').schema)


def _decomposed_check(dataset: Dataset, partitions: dg.PartitionsDefinition):
    tables = [t for t, r in dataset.spec.reporting_tables.items() if r.rebuildable]

    @_partitioned_check(
        asset=DECOMPOSED_KEY,
        name=SCHEMA_CHECK,
        partitions_def=partitions,
        additional_deps=[reporting_key(t) for t in tables],
        description=(
            "Great Expectations: every decomposed table has the same column names and dtypes as the "
            f"real reporting table it rebuilds ({', '.join(tables)}), as stored in the warehouse."
        ),
    )
    def _check(
        context: dg.AssetCheckExecutionContext,
        duckdb: DuckDBResource,
        decomposed_tables: dict[str, pl.DataFrame],
    ) -> dg.AssetCheckResult:
        schemas = {t: _stored_schema(duckdb, reporting_key(t)) for t in tables}
        report = validate_table_set(decomposed_tables, schemas, name="decomposed_tables")
        return check_result(report, examples=False, extra={"partition": context.partition_key})

    return _check


def failed_blocking_checks(instance: dg.DagsterInstance, run_id: str) -> list[dg.AssetCheckKey]:
    """Blocking checks that failed with ERROR severity in run ``run_id``.

    Such a run fails on purpose (Dagster fails the check's step and skips what is downstream). A
    sensor that resumes failed runs by requesting only the assets they did not materialize must
    not resume these: the request would not include the failed check's asset, so nothing would stop
    the bad data from flowing downstream.
    """
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, limit=10_000
    ).records
    failed = set()
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if (
            not evaluation.passed
            and evaluation.blocking
            and evaluation.severity == dg.AssetCheckSeverity.ERROR
        ):
            failed.add(evaluation.asset_check_key)
    return sorted(failed, key=lambda k: k.to_user_string())


def build_synthetic_checks(dataset: Dataset) -> list[dg.AssetChecksDefinition]:
    """The checks of the synthetic half, partitioned by epsilon."""
    partitions = epsilon_partitions(dataset)
    return [
        _candidate_pool_check(dataset, partitions),
        _population_check(dataset, partitions),
        _decomposed_check(dataset, partitions),
    ]

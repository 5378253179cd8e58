"""Asset checks of the real-data half, built from a dataset spec: Great Expectations suites on every
reporting table and on the wide table (see :mod:`synth_assets.checks.expectations`).

Each check loads its asset through the IO manager, validates it and reports one row per expectation in
a markdown table (``summary``) with the unexpected counts (``unexpected_counts``). The data is private:
the metadata of these checks holds counts and types only, never values.
"""


import dagster as dg
import polars as pl

from synth_assets.checks.expectations import (
    ValidationReport,
    validate_reporting_table,
    validate_wide_table,
)
from synth_assets.datasets.loading import Dataset
from synth_assets.defs.real.assets import reporting_key, wide_key

TABLE_CHECK = "key_columns_and_types"


def check_result(
    report: ValidationReport,
    *,
    examples: bool,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
    extra: dict | None = None,
) -> dg.AssetCheckResult:
    """The check result of a validation: passed when every expectation passes.

    ``examples``: whether the summary shows a few unexpected values (never for private data).
    """
    return dg.AssetCheckResult(
        passed=report.success,
        severity=severity,
        description=report.summary(),
        metadata={
            **(extra or {}),
            "rows": report.rows,
            "expectations": len(report.outcomes),
            "failed_expectations": len(report.failed),
            "unexpected_values": report.unexpected_total,
            "unexpected_counts": dg.MetadataValue.json(report.unexpected_counts()),
            "summary": dg.MetadataValue.md(report.to_markdown(examples=examples)),
        },
    )


def _reporting_check(dataset: Dataset, table: str) -> dg.AssetChecksDefinition:
    spec = dataset.spec
    required = [spec.entity.key, *(c.column for c in spec.columns_of(table))]

    @dg.asset_check(
        asset=reporting_key(table),
        name=TABLE_CHECK,
        description=(
            f"Great Expectations: `{spec.entity.key}` present, text, unique and non-null; the columns "
            f"the wide table takes ({', '.join(required[1:]) or 'none'}) present and of their "
            "declared types."
        ),
    )
    def _check(table_frame: pl.DataFrame) -> dg.AssetCheckResult:
        return check_result(validate_reporting_table(dataset, table, table_frame), examples=False)

    return _check


def _wide_check(dataset: Dataset) -> dg.AssetChecksDefinition:
    spec = dataset.spec

    @dg.asset_check(
        asset=wide_key(dataset),
        name=TABLE_CHECK,
        description=(
            f"Great Expectations: `{spec.entity.key}` present, text, unique and non-null; all "
            f"{len(spec.wide_table.columns)} wide columns present and of their declared types."
        ),
    )
    def _check(wide_table: pl.DataFrame) -> dg.AssetCheckResult:
        return check_result(validate_wide_table(dataset, wide_table), examples=False)

    return _check


def build_real_checks(dataset: Dataset) -> list[dg.AssetChecksDefinition]:
    """One check per reporting table and one on the wide table (not blocking)."""
    return [
        *(_reporting_check(dataset, table) for table in dataset.spec.reporting_tables),
        _wide_check(dataset),
    ]

"""Data quality checks: Great Expectations suites built from the dataset spec (plain Python, in
:mod:`synth_assets.checks.expectations`); the Dagster asset checks that run them live beside the assets,
in ``synth_assets.defs.real.checks`` and ``synth_assets.defs.synthetic.checks``.

Importing this package does not import great_expectations: it is imported on the first validation.
"""

from synth_assets.checks.expectations import (
    Outcome,
    ValidationReport,
    domain_suite,
    reporting_table_suite,
    schema_suite,
    validate_domain,
    validate_frame,
    validate_reporting_table,
    validate_schema,
    validate_table_set,
    validate_wide_table,
    wide_table_suite,
)

__all__ = [
    "Outcome",
    "ValidationReport",
    "domain_suite",
    "reporting_table_suite",
    "schema_suite",
    "validate_domain",
    "validate_frame",
    "validate_reporting_table",
    "validate_schema",
    "validate_table_set",
    "validate_wide_table",
    "wide_table_suite",
]

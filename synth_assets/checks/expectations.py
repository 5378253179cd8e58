"""Great Expectations suites built from the dataset spec, run on polars frames.

Plain Python, no Dagster: the Dagster asset checks in ``synth_assets.defs.*.checks`` call these.

Suites (all ``great_expectations.ExpectationSuite``, GX 1.x):

:func:`reporting_table_suite`
    A reporting table: its entity key is present, text, unique and non-null; every column the wide
    table takes from it is present and of its declared type (integer, float or text).
:func:`wide_table_suite`
    The wide table: the same, for every wide column (identifiers are text).
:func:`domain_suite`
    A frame of synthetic wide rows (the candidate pool, or with ``population=True`` the selected
    population with its key): exactly the expected columns; per modelled column, every value in the
    public domain of the spec: categories in the list, numerics within [min, max] (NaN and infinities
    are outside), integer columns integral (:data:`INTEGRAL`, a small custom expectation),
    non-nullable columns non-null, and the declared type.
:func:`schema_suite`
    Same column names and dtypes as a reference schema (the decomposed tables against the real
    reporting tables).

:func:`validate_frame` runs a suite on a polars frame and returns a :class:`ValidationReport`: one
:class:`Outcome` per expectation with its unexpected count, and a markdown summary.

Frames are handed to GX's pandas engine with pandas' masked dtypes, so that types survive the
conversion (an integer column with nulls stays ``Int64``, not float) and NaN stays distinct from null.
A polars integer column becomes ``Int{8..64}Dtype``/``UInt..Dtype``, a float column ``Float{32,64}Dtype``,
a string column ``StringDtype``, a boolean column ``BooleanDtype``; other dtypes use polars' default
conversion.

GX is imported inside functions only (it takes seconds to import): importing ``synth_assets`` or its
Dagster definitions never imports ``great_expectations``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from typing import TYPE_CHECKING, Any

import polars as pl

from synth_assets.datasets.loading import Dataset
from synth_assets.datasets.spec import (
    CategoricalColumn,
    DateColumn,
    IdentifierColumn,
    NumericColumn,
)
from synth_assets.datasets.temporal import as_numbers

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from great_expectations import ExpectationSuite

__all__ = [
    "DECLARED_TYPES",
    "INTEGRAL",
    "Outcome",
    "ValidationReport",
    "domain_suite",
    "gx_type_name",
    "reporting_table_suite",
    "schema_suite",
    "to_pandas",
    "validate_domain",
    "validate_frame",
    "validate_reporting_table",
    "validate_schema",
    "validate_table_set",
    "validate_wide_table",
    "wide_table_suite",
]

INTEGRAL = "expect_column_values_to_be_integral"
"""The one custom expectation: every non-null value is a finite whole number."""

_INTEGER_TYPES = [f"{sign}Int{bits}Dtype" for sign in ("", "U") for bits in (8, 16, 32, 64)]
DECLARED_TYPES: dict[str, list[str]] = {
    "integer": _INTEGER_TYPES,
    "float": ["Float32Dtype", "Float64Dtype"],
    "text": ["StringDtype"],
    "date": ["datetime64[s]", "datetime64[ms]", "datetime64[us]", "datetime64[ns]"],
    "timestamp": ["datetime64[us]", "datetime64[ns]"],
}
"""GX type names (pandas masked dtypes, see :func:`to_pandas`) accepted for each declared type."""

_EXAMPLES = 3


# ----------------------------------------------------------------------------------- GX, lazily


@cache
def _gx() -> Any:
    """``great_expectations``, imported on first use."""
    import great_expectations as gx

    return gx


@cache
def _integral_expectation() -> type:
    """The custom expectation :data:`INTEGRAL` (defined, and registered with GX, on first use)."""
    import numpy as np
    from great_expectations.execution_engine import PandasExecutionEngine
    from great_expectations.expectations.expectation import ColumnMapExpectation
    from great_expectations.expectations.metrics import (
        ColumnMapMetricProvider,
        column_condition_partial,
    )

    class ColumnValuesIntegral(ColumnMapMetricProvider):
        condition_metric_name = "column_values.synth_assets_integral"

        @column_condition_partial(engine=PandasExecutionEngine)
        def _pandas(cls, column, **kwargs):
            values = column.astype("float64")
            return np.isfinite(values) & (values % 1 == 0)

    class ExpectColumnValuesToBeIntegral(ColumnMapExpectation):
        """Expect each non-null value to be a finite whole number (integer columns of the spec)."""

        map_metric = "column_values.synth_assets_integral"
        success_keys = ("mostly",)

    return ExpectColumnValuesToBeIntegral


def _context() -> Any:
    gx = _gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        progress_bars=ProgressBarsConfig(globally=False),
        analytics_enabled=False,
    )
    return gx.get_context(mode="ephemeral", project_config=config)


# ------------------------------------------------------------------------------ polars -> pandas


def _pandas_column(series: pl.Series) -> Any:
    import pandas as pd

    dtype = series.dtype
    mask = series.is_null().to_numpy()
    if dtype.is_integer():
        return pd.arrays.IntegerArray(series.fill_null(0).to_numpy(), mask)
    if dtype.is_float():
        # fill_null keeps NaN: the mask marks nulls only, so NaN is a value (outside every range)
        return pd.arrays.FloatingArray(series.fill_null(0).to_numpy(), mask)
    if dtype == pl.Boolean:
        return pd.arrays.BooleanArray(series.fill_null(False).to_numpy(), mask)
    if dtype == pl.String:
        return pd.array(series.to_arrow(), dtype=pd.StringDtype())
    return series.to_pandas()


def to_pandas(frame: pl.DataFrame) -> pd.DataFrame:
    """``frame`` as pandas with masked dtypes (see the module docstring), index 0..n-1."""
    import pandas as pd

    return pd.DataFrame({name: _pandas_column(frame[name]) for name in frame.columns})


def gx_type_name(dtype: pl.DataType) -> str:
    """The GX type name that a column of polars dtype ``dtype`` has after :func:`to_pandas`."""
    import pandas as pd

    converted = _pandas_column(pl.Series("x", [], dtype=dtype)).dtype
    if isinstance(converted, pd.api.extensions.ExtensionDtype):
        return type(converted).__name__
    return str(converted)


# ------------------------------------------------------------------------------------- suites


def _rule(expectation: Any, rule: str) -> Any:
    expectation.meta = {**(expectation.meta or {}), "rule": rule}
    return expectation


def _type_expectation(column: str, declared: str) -> Any:
    E = _gx().expectations
    return _rule(
        E.ExpectColumnValuesToBeInTypeList(column=column, type_list=DECLARED_TYPES[declared]),
        f"type {declared}",
    )


def _key_expectations(key: str, *, present: bool = True) -> list[Any]:
    E = _gx().expectations
    return [
        *([_rule(E.ExpectColumnToExist(column=key), "entity key present")] if present else []),
        _rule(E.ExpectColumnValuesToNotBeNull(column=key), "entity key not null"),
        _rule(E.ExpectColumnValuesToBeUnique(column=key), "entity key unique"),
        _type_expectation(key, "text"),
    ]


def _declared_type(column: CategoricalColumn | NumericColumn | IdentifierColumn) -> str:
    if isinstance(column, DateColumn):
        return column.role
    if isinstance(column, NumericColumn):
        return column.type
    return "text"


def _suite(name: str, expectations: Iterable[Any]) -> ExpectationSuite:
    """A suite that belongs to no data context (adding expectations one by one would need one)."""
    expectations = list(expectations)
    for position, expectation in enumerate(expectations):
        expectation.meta = {**(expectation.meta or {}), "position": position}
    suite = _gx().ExpectationSuite(name=name, expectations=expectations)
    if len(suite.expectations) != len(expectations):  # GX logs and drops invalid configurations
        raise ValueError(f"suite {name!r}: an expectation has an invalid configuration")
    return suite


def reporting_table_suite(dataset: Dataset, table: str) -> ExpectationSuite:
    """Key present, text, unique, non-null; the columns the wide table takes present and typed."""
    E = _gx().expectations
    key = dataset.spec.entity.key
    expectations = _key_expectations(key)
    for column in dataset.spec.columns_of(table):
        expectations.append(
            _rule(E.ExpectColumnToExist(column=column.column), f"present (for {column.wide_name})")
        )
        if not isinstance(column, IdentifierColumn):  # only the key's type is fixed by the build
            expectations.append(_type_expectation(column.column, _declared_type(column)))
    return _suite(f"{dataset.name}.reporting.{table}", expectations)


def wide_table_suite(dataset: Dataset) -> ExpectationSuite:
    """Key present, text, unique, non-null; every wide column present and of its declared type."""
    E = _gx().expectations
    key = dataset.spec.entity.key
    expectations = _key_expectations(key)
    for column in dataset.spec.wide_table.columns:
        if column.wide_name == key:
            continue
        expectations.append(_rule(E.ExpectColumnToExist(column=column.wide_name), "present"))
        expectations.append(_type_expectation(column.wide_name, _declared_type(column)))
    return _suite(f"{dataset.name}.{dataset.spec.wide_table.name}", expectations)


def domain_suite(dataset: Dataset, *, population: bool = False) -> ExpectationSuite:
    """Every value within the spec's public domain (see the module docstring).

    ``population=False``: candidate rows, the modelled columns only. ``population=True``: synthetic
    wide rows, every wide column, with a unique non-null entity key.
    """
    E = _gx().expectations
    spec = dataset.spec
    columns = (
        [c.wide_name for c in spec.wide_table.columns]
        if population
        else [c.wide_name for c in spec.modelled_columns]
    )
    expectations = [
        _rule(
            E.ExpectTableColumnsToMatchSet(column_set=columns, exact_match=True),
            "exactly the " + ("wide" if population else "modelled") + " columns",
        )
    ]
    if population:
        expectations += _key_expectations(spec.entity.key, present=False)
    for column in spec.modelled_columns:
        name = column.wide_name
        if isinstance(column, CategoricalColumn):
            expectations.append(
                _rule(
                    E.ExpectColumnValuesToBeInSet(column=name, value_set=list(column.categories)),
                    "in {" + ", ".join(column.categories) + "}",
                )
            )
        else:
            expectations.append(
                _rule(
                    E.ExpectColumnValuesToBeBetween(
                        column=name, min_value=column.min, max_value=column.max
                    ),
                    f"within [{column.min:g}, {column.max:g}]",
                )
            )
            if column.type == "integer":
                expectations.append(
                    _rule(_integral_expectation()(column=name), "integral")
                )
        if not column.nullable:
            expectations.append(
                _rule(E.ExpectColumnValuesToNotBeNull(column=name), "not null (not nullable)")
            )
        # the domain is checked on numbers: a date column as its days (a timestamp: seconds) since 1970
        declared = "integer" if isinstance(column, DateColumn) else _declared_type(column)
        expectations.append(_type_expectation(name, declared))
    kind = "selected_population" if population else "candidates"
    return _suite(f"{dataset.name}.{kind}.domain", expectations)


def schema_suite(name: str, schema: Mapping[str, pl.DataType]) -> ExpectationSuite:
    """The same column names (any order) and, per column, the same dtype as ``schema``."""
    E = _gx().expectations
    expectations = [
        _rule(
            E.ExpectTableColumnsToMatchSet(column_set=list(schema), exact_match=True),
            "same columns",
        )
    ]
    for column, dtype in schema.items():
        expectations.append(
            _rule(
                E.ExpectColumnValuesToBeInTypeList(column=column, type_list=[gx_type_name(dtype)]),
                f"dtype {dtype}",
            )
        )
    return _suite(name, expectations)


# ------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class Outcome:
    """What one expectation found."""

    expectation: str
    """GX expectation type, e.g. ``expect_column_values_to_be_in_set``."""
    column: str | None
    rule: str
    success: bool
    unexpected_count: int | None = None
    """Cells that break the rule (None for table- and column-level expectations such as types)."""
    element_count: int | None = None
    observed: str | None = None
    """Observed value of table- and column-level expectations (e.g. the dtype)."""
    examples: tuple = ()
    """A few unexpected values."""
    error: str | None = None
    """The exception GX raised, e.g. when the column is missing."""
    table: str | None = None
    """Member of a table set."""

    @property
    def label(self) -> str:
        target = self.column if self.column is not None else "(table)"
        if self.table:
            target = f"{self.table}.{target}"
        return f"{target}: {self.expectation.removeprefix('expect_')}"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of a suite on one frame (or of several suites on a table set)."""

    name: str
    rows: int
    outcomes: tuple[Outcome, ...] = field(default_factory=tuple)

    @property
    def success(self) -> bool:
        return all(o.success for o in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.success]

    @property
    def unexpected_total(self) -> int:
        return sum(o.unexpected_count or 0 for o in self.outcomes)

    def unexpected_counts(self, *, failed_only: bool = False) -> dict[str, int]:
        """``label -> unexpected cells`` of every cell-level expectation."""
        return {
            o.label: o.unexpected_count
            for o in self.outcomes
            if o.unexpected_count is not None and not (failed_only and o.success)
        }

    def to_markdown(self, *, examples: bool = True) -> str:
        """One row per expectation: target, expectation, rule, unexpected count, result."""
        with_table = any(o.table for o in self.outcomes)
        header = (["table"] if with_table else []) + ["column", "expectation", "rule", "unexpected", "result"]
        if examples:
            header.append("examples")
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for o in self.outcomes:
            if o.unexpected_count is not None:
                unexpected = f"{o.unexpected_count} / {o.element_count}"
            else:
                unexpected = "—"
            result = "pass" if o.success else "**FAIL**"
            if o.error:
                result += f" ({o.error})"
            elif o.observed is not None and not o.success:
                result += f" (observed {o.observed})"
            row = ([o.table or ""] if with_table else []) + [
                o.column or "(table)",
                o.expectation.removeprefix("expect_"),
                o.rule,
                unexpected,
                result,
            ]
            if examples:
                row.append(", ".join(repr(v) for v in o.examples))
            lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
        return "\n".join(lines)

    def summary(self) -> str:
        if self.success:
            return f"{self.name}: all {len(self.outcomes)} expectations pass on {self.rows} rows"
        worst = ", ".join(
            f"{o.label} ({o.unexpected_count})" if o.unexpected_count else o.label
            for o in self.failed[:5]
        )
        return (
            f"{self.name}: {len(self.failed)} of {len(self.outcomes)} expectations fail "
            f"({self.unexpected_total} unexpected values): {worst}"
        )

    def with_table(self, table: str) -> ValidationReport:
        return replace(self, outcomes=tuple(replace(o, table=table) for o in self.outcomes))


def _plain(value: Any) -> Any:
    """numpy scalars and pandas NA as plain Python (for metadata and repr)."""
    if value is None:
        return None
    try:
        import pandas as pd

        if value is pd.NA:
            return None
    except ImportError:  # pragma: no cover
        pass
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def _observed(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple, set)):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(_plain(value))


def validate_frame(frame: pl.DataFrame, suite: ExpectationSuite) -> ValidationReport:
    """Run ``suite`` on ``frame`` (GX pandas engine, whole frame as one batch)."""
    context = _context()
    batch_definition = (
        context.data_sources.add_pandas("polars_frames")
        .add_dataframe_asset("frame")
        .add_batch_definition_whole_dataframe("whole_frame")
    )
    batch = batch_definition.get_batch(batch_parameters={"dataframe": to_pandas(frame)})
    result = batch.validate(
        suite, result_format={"result_format": "BASIC", "partial_unexpected_count": _EXAMPLES}
    )
    outcomes = []
    for r in sorted(result.results, key=lambda r: (r.expectation_config.meta or {}).get("position", 0)):
        config = r.expectation_config
        column = config.kwargs.get("column")
        details = r.result or {}
        info = r.exception_info or {}
        raised = info.get("raised_exception") if isinstance(info, dict) else False
        if column is not None and column not in frame.columns:
            error = f"column {column!r} missing"
        elif raised:
            error = str(info.get("exception_message") or "error").splitlines()[0][:200]
        else:
            error = None
        unexpected = details.get("unexpected_count")
        observed = details.get("observed_value")
        if config.type == "expect_column_values_to_be_in_type_list" and column in frame.columns:
            observed = frame.schema[column]
        if config.type == "expect_table_columns_to_match_set" and not r.success:
            mismatched = (details.get("details") or {}).get("mismatched") or {}
            observed = "; ".join(
                f"{kind}: {', '.join(map(str, names))}" for kind, names in mismatched.items() if names
            ) or observed
        outcomes.append(
            Outcome(
                expectation=config.type,
                column=column,
                rule=(config.meta or {}).get("rule", ""),
                success=bool(r.success),
                unexpected_count=None if unexpected is None else int(unexpected),
                element_count=details.get("element_count"),
                observed=_observed(observed),
                examples=()
                if config.type == "expect_column_values_to_not_be_null"
                else tuple(_plain(v) for v in (details.get("partial_unexpected_list") or [])[:_EXAMPLES]),
                error=error,
            )
        )
    return ValidationReport(name=suite.name, rows=frame.height, outcomes=tuple(outcomes))


# ------------------------------------------------------------------------------ conveniences


def validate_reporting_table(dataset: Dataset, table: str, frame: pl.DataFrame) -> ValidationReport:
    return validate_frame(frame, reporting_table_suite(dataset, table))


def validate_wide_table(dataset: Dataset, frame: pl.DataFrame) -> ValidationReport:
    return validate_frame(frame, wide_table_suite(dataset))


DOMAIN_BATCH_ROWS = 200_000
"""Rows the domain suite validates at a time: GX's pandas engine copies what it checks, so a million
synthetic rows are checked in batches and the outcomes added up. Every row is checked (the suite has no
expectation across rows, such as uniqueness, that batches could miss)."""


def validate_domain(
    dataset: Dataset, frame: pl.DataFrame, *, population: bool = False
) -> ValidationReport:
    suite = domain_suite(dataset, population=population)
    numbers = as_numbers(dataset.spec, frame)
    if numbers.height <= DOMAIN_BATCH_ROWS:
        return validate_frame(numbers, suite)
    reports = [validate_frame(numbers.slice(start, DOMAIN_BATCH_ROWS), suite)
               for start in range(0, numbers.height, DOMAIN_BATCH_ROWS)]
    return ValidationReport(name=suite.name, rows=numbers.height,
                            outcomes=tuple(_merged(batch) for batch in zip(*(r.outcomes for r in reports))))


def _merged(outcomes: tuple[Outcome, ...]) -> Outcome:
    """One expectation's outcome over every batch: failed if any batch failed, counts added up."""
    def total(values):
        values = [v for v in values if v is not None]
        return sum(values) if values else None

    failed = [o for o in outcomes if not o.success]
    first = (failed or list(outcomes))[0]
    examples = tuple(e for o in failed for e in o.examples)[:_EXAMPLES]
    return replace(first, success=not failed, unexpected_count=total(o.unexpected_count for o in outcomes),
                   element_count=total(o.element_count for o in outcomes), examples=examples,
                   error=next((o.error for o in outcomes if o.error), None))


def validate_schema(
    frame: pl.DataFrame, schema: Mapping[str, pl.DataType], name: str = "schema"
) -> ValidationReport:
    return validate_frame(frame, schema_suite(name, schema))


def validate_table_set(
    tables: Mapping[str, pl.DataFrame],
    schemas: Mapping[str, Mapping[str, pl.DataType]],
    name: str = "table_set",
) -> ValidationReport:
    """Each member of ``tables`` against the schema of the same name; a member of ``schemas`` that
    ``tables`` lacks, or one ``tables`` has but ``schemas`` lacks, fails (outcome ``table_in_set``)."""
    outcomes: list[Outcome] = []
    rows = 0
    for table in sorted(set(schemas) | set(tables)):
        if table not in tables or table not in schemas:
            outcomes.append(
                Outcome(
                    expectation="expect_table_in_set",
                    column=None,
                    rule="member of the reference set",
                    success=False,
                    error="missing" if table not in tables else "not in the reference set",
                    table=table,
                )
            )
            continue
        report = validate_schema(tables[table], schemas[table], f"{name}.{table}").with_table(table)
        outcomes.extend(report.outcomes)
        rows += report.rows
    return ValidationReport(name=name, rows=rows, outcomes=tuple(outcomes))

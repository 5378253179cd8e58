"""Date and timestamp columns between their two forms: real dates at the edges, numbers inside.

The private wide table, the synthetic wide table and the reporting tables hold a date column as polars
``Date`` and a timestamp column as a naive ``Datetime`` (microseconds, read in UTC). Everything that
bins, measures distances or draws values works on numbers instead: days (date) or seconds (timestamp)
since 1970-01-01, the units of the spec's ``min``, ``max`` and ``point_masses`` of a
:class:`~synth_assets.datasets.spec.DateColumn`. :func:`as_numbers` and :func:`as_dates` turn one form
into the other; both leave a column that is already in the wanted form as it is, so that calling them
twice is harmless.
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl

from synth_assets.datasets.spec import SECONDS_PER_DAY, DatasetSpec, DateColumn

TIMESTAMP_DTYPE = pl.Datetime("us")

__all__ = [
    "TIMESTAMP_DTYPE",
    "as_dates",
    "as_numbers",
    "date_columns",
    "temporal_dtype",
    "to_temporal",
]


Columns = DatasetSpec | Iterable[object]
"""A spec (its wide-table columns) or the columns themselves."""


def date_columns(columns: Columns) -> list[DateColumn]:
    """The date and timestamp columns of a spec's wide table (or among ``columns``)."""
    if isinstance(columns, DatasetSpec):
        columns = columns.wide_table.columns
    return [c for c in columns if isinstance(c, DateColumn)]


def temporal_dtype(column: DateColumn) -> pl.DataType:
    return pl.Date() if column.role == "date" else TIMESTAMP_DTYPE


def _naive_utc(expression: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
        return expression.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    return expression


def _numbers(column: DateColumn, name: str, dtype: pl.DataType) -> pl.Expr:
    """Days or seconds since 1970-01-01 of a Date or Datetime column, as Int64."""
    expression = _naive_utc(pl.col(name), dtype)
    if column.role == "date":
        days = expression.dt.date() if isinstance(dtype, pl.Datetime) else expression
        return days.cast(pl.Int32).cast(pl.Int64).alias(name)
    if dtype == pl.Date:
        return (expression.cast(pl.Int32).cast(pl.Int64) * SECONDS_PER_DAY).alias(name)
    return expression.dt.epoch("s").cast(pl.Int64).alias(name)


def as_numbers(spec: Columns, frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with its date and timestamp columns as Int64 days or seconds since 1970-01-01; columns
    that already hold numbers, and every other column, unchanged."""
    expressions = [
        _numbers(c, c.wide_name, frame.schema[c.wide_name])
        for c in date_columns(spec)
        if c.wide_name in frame.columns and frame.schema[c.wide_name].is_temporal()
    ]
    return frame.with_columns(expressions) if expressions else frame


def _dates(column: DateColumn, name: str) -> pl.Expr:
    whole = pl.col(name).cast(pl.Float64).floor().cast(pl.Int64)
    if column.role == "date":
        return whole.cast(pl.Int32).cast(pl.Date).alias(name)
    return pl.from_epoch(whole, time_unit="s").cast(TIMESTAMP_DTYPE).alias(name)


def as_dates(spec: Columns, frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with the numbers of its date and timestamp columns (days or seconds since 1970-01-01)
    turned into Date and Datetime values; columns that already hold dates unchanged."""
    expressions = [
        _dates(c, c.wide_name)
        for c in date_columns(spec)
        if c.wide_name in frame.columns
        and (frame.schema[c.wide_name].is_numeric() or frame.schema[c.wide_name] == pl.Null)
    ]
    return frame.with_columns(expressions) if expressions else frame


def to_temporal(column: DateColumn, series: pl.Series, where: str) -> pl.Series:
    """A reporting column as its declared type: Date for a date column, a naive Datetime (UTC) for a
    timestamp column.

    Dates, timestamps (a timestamp's date for a date column) and ISO text are read; anything else, or
    text that is not a date, raises ValueError that starts with ``where`` and names the column, a value
    and what to do."""
    target = temporal_dtype(column)
    dtype = series.dtype
    what = "date" if column.role == "date" else "timestamp"
    if dtype == pl.Null:
        return series.cast(target)
    if dtype.is_temporal() and dtype != pl.Time and not isinstance(dtype, pl.Duration):
        name = series.name
        frame = series.to_frame()
        numbers = frame.select(_numbers(column, name, dtype)).to_series()
        return frame.with_columns(numbers).select(_dates(column, name)).to_series()
    if dtype in (pl.Utf8, pl.Categorical) or isinstance(dtype, pl.Enum):
        text = series.cast(pl.Utf8).str.strip_chars()
        if column.role == "date":
            parsed = text.str.to_date("%Y-%m-%d", strict=False)
        else:
            parsed = text.str.to_datetime(time_unit="us", strict=False)
            if isinstance(parsed.dtype, pl.Datetime) and parsed.dtype.time_zone is not None:
                parsed = parsed.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        bad = text.is_not_null() & parsed.is_null()
        count = int(bad.sum())
        if count:
            example = text.filter(bad)[0]
            form = "YYYY-MM-DD" if column.role == "date" else "an ISO date and time, YYYY-MM-DD HH:MM:SS"
            raise ValueError(
                f"{where}: {count} values of column {series.name!r} are not {what}s, e.g. {example!r}; "
                f"write them as {form}, or convert them in the SQL (strptime(text, format)"
                f"{'::date' if column.role == 'date' else ''})"
            )
        return parsed.cast(target).alias(series.name)
    example = series.drop_nulls().head(1).to_list()
    shown = f", e.g. {example[0]!r}" if example else ""
    raise ValueError(
        f"{where}: column {series.name!r} holds {dtype} values{shown}, not {what}s, and a number says "
        f"nothing of the calendar: make it a {what} in the SQL ("
        + ("make_date(year, month, day), or CAST(text AS DATE)" if column.role == "date"
           else "to_timestamp(seconds since 1970), or CAST(text AS TIMESTAMP)")
        + "), or declare the column role: numeric"
    )

"""The workload-aware distance of Private Evolution: encode wide rows so that nearest-candidate votes
favour the columns the workload queries read.

Everything here is a function of the dataset spec (public bounds, categories, nullability) and of the
workload SQL only: nothing is fitted on data, so the encoding itself leaks nothing about the private
rows.

Column usage and weights
------------------------
A workload query *uses* the wide column that comes from ``table.column`` when it reads ``table``
(:func:`synth_assets.sql.referenced_tables`) and mentions ``column`` (:func:`synth_assets.sql.
referenced_columns`); both are parsed from the query SQL, never typed by hand. Column names are matched
unqualified, so a query that reads two tables with a column of the same name counts that name for both
(an over-count, never an under-count). The weight of a modelled column is::

    w_j = D * (1 + u_j) / sum_k (1 + u_k)

with u_j the number of queries using column j and D the number of modelled columns: every column counts
(an unused one has weight proportional to 1), used ones count more, and the weights sum to D, so a
workload that uses nothing gives every column weight 1.

Encoding
--------
* Categorical: the code of the value in the spec's category list (0 .. K-1); null is its own code K; a
  value that is not in the list raises :class:`ValueError` naming the column and the value (the wide
  table build has already mapped or rejected unseen values, so this only happens on bad candidates).
* Numeric: normalised with the spec's PUBLIC bounds, after clipping into [min, max]:
  ``scale: linear`` gives ``(x - min) / (max - min)``, ``scale: log`` gives
  ``log1p(x - min) / log1p(max - min)``; both land in [0, 1]; then multiplied by the column weight.
  NaN is read as null.

Null rule: a null numeric is encoded as -1 before weighting, so two nulls are at distance 0 and a null
against a value v in [0, 1] is at distance ``w * (1 + v)``, between w and 2w: "missing" is always
farther from any value than two values are from each other. A null categorical is its own category
(mismatch costs its weight like any other mismatch). Since a reporting table's membership is "one of its
columns is non-null", being in a table or not is seen by the distance through these null terms.

Distance
--------
``d(a, b) = sum_j wc_j [a_cat_j != b_cat_j] + sum_k |a_num_k - b_num_k|`` on encoded rows (numerics
already weighted). :mod:`synth_assets.pe.nn` computes it fast; :func:`distance` is the slow reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import polars as pl

from synth_assets.datasets.loading import Dataset
from synth_assets.datasets.spec import CategoricalColumn, NumericColumn
from synth_assets.datasets.temporal import as_numbers
from synth_assets.sql import referenced_columns, referenced_tables

__all__ = [
    "EncodedTable",
    "Encoder",
    "build_encoder",
    "category_codes",
    "column_query_names",
    "column_usage",
    "distance",
    "from_unit",
    "to_unit",
]

NULL_NUMERIC = -1.0


# ------------------------------------------------------------------------------------------- usage


def column_query_names(dataset: Dataset) -> dict[str, list[str]]:
    """For each modelled wide column (by ``wide_name``), the names of the workload queries using it."""
    parsed = [
        (query.name, referenced_tables(query.sql), referenced_columns(query.sql))
        for query in dataset.queries
    ]
    names: dict[str, list[str]] = {}
    for column in dataset.spec.modelled_columns:
        table, source_column = column.table.lower(), column.column.lower()
        names[column.wide_name] = [
            name for name, tables, columns in parsed if table in tables and source_column in columns
        ]
    return names


def column_usage(dataset: Dataset) -> dict[str, int]:
    """For each modelled wide column (by ``wide_name``), how many workload queries use it.

    A query uses ``table.column`` when it reads ``table`` and mentions ``column`` (parsed from its SQL).
    """
    return {name: len(queries) for name, queries in column_query_names(dataset).items()}


# ------------------------------------------------------------------------------ numeric transforms


def to_unit(column: NumericColumn, values: np.ndarray) -> np.ndarray:
    """Map values of ``column`` into [0, 1] with its public bounds and scale (NaN stays NaN)."""
    x = np.clip(np.asarray(values, dtype=np.float64), column.min, column.max)
    if column.scale == "log":
        return np.log1p(x - column.min) / np.log1p(column.max - column.min)
    return (x - column.min) / (column.max - column.min)


def from_unit(column: NumericColumn, unit: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_unit`: values in [min, max]; integers are rounded (NaN stays NaN)."""
    u = np.clip(np.asarray(unit, dtype=np.float64), 0.0, 1.0)
    if column.scale == "log":
        x = column.min + np.expm1(u * np.log1p(column.max - column.min))
    else:
        x = column.min + u * (column.max - column.min)
    if column.type == "integer":
        x = np.rint(x)
    return np.clip(x, column.min, column.max)


def category_codes(column: CategoricalColumn) -> dict[str, int]:
    """Category -> code (its position in the spec's list); null gets ``len(categories)``."""
    return {category: code for code, category in enumerate(column.categories)}


# ------------------------------------------------------------------------------------------ tables


@dataclass(frozen=True, eq=False)
class EncodedTable:
    """Encoded rows: ``numeric`` float32[N, dn] (weighted), ``categorical`` int32[N, dc], C-contiguous."""

    numeric: np.ndarray
    categorical: np.ndarray
    categorical_weights: np.ndarray
    numeric_columns: tuple[str, ...]
    categorical_columns: tuple[str, ...]

    def __len__(self) -> int:
        return self.numeric.shape[0]

    @property
    def rows(self) -> int:
        """Number of encoded rows (N)."""
        return self.numeric.shape[0]


def _read_only(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class Encoder:
    """Encodes wide frames for the PE distance; a function of the spec and the workload only.

    Build it with :func:`build_encoder`. ``columns`` are the modelled wide columns in wide-table order;
    ``weights``, ``usage`` and ``used_by`` are keyed by wide name; ``codes`` holds each categorical
    column's category -> code map.
    """

    dataset_name: str
    columns: tuple[CategoricalColumn | NumericColumn, ...]
    weights: Mapping[str, float]
    usage: Mapping[str, int]
    used_by: Mapping[str, tuple[str, ...]]
    codes: Mapping[str, Mapping[str, int]]
    numeric_columns: tuple[str, ...]
    categorical_columns: tuple[str, ...]
    numeric_weights: np.ndarray
    categorical_weights: np.ndarray

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.wide_name for c in self.columns)

    def _column(self, name: str) -> CategoricalColumn | NumericColumn:
        return next(c for c in self.columns if c.wide_name == name)

    def encode(self, frame: pl.DataFrame) -> EncodedTable:
        """Encode the modelled columns of ``frame`` (other columns, such as the key, are ignored)."""
        missing = [name for name in self.column_names if name not in frame.columns]
        if missing:
            raise ValueError(
                f"cannot encode: the frame lacks modelled columns {missing} of dataset "
                f"{self.dataset_name!r}"
            )
        n = frame.height
        frame = as_numbers(self.columns, frame)
        numeric = np.empty((n, len(self.numeric_columns)), dtype=np.float32)
        for k, name in enumerate(self.numeric_columns):
            column = self._column(name)
            assert isinstance(column, NumericColumn)
            series = frame.get_column(name)
            try:
                values = series.cast(pl.Float64).to_numpy()
            except pl.exceptions.PolarsError as exc:
                raise ValueError(
                    f"cannot encode numeric column {name!r}: values of type {series.dtype} are not numbers"
                ) from exc
            values = np.asarray(values, dtype=np.float64)
            null = np.isnan(values)
            unit = to_unit(column, np.where(null, column.min, values))
            unit[null] = NULL_NUMERIC
            numeric[:, k] = unit * self.numeric_weights[k]
        categorical = np.empty((n, len(self.categorical_columns)), dtype=np.int32)
        for k, name in enumerate(self.categorical_columns):
            categorical[:, k] = encode_categorical(self._column(name), frame.get_column(name))
        return EncodedTable(
            numeric=np.ascontiguousarray(numeric),
            categorical=np.ascontiguousarray(categorical),
            categorical_weights=self.categorical_weights,
            numeric_columns=self.numeric_columns,
            categorical_columns=self.categorical_columns,
        )

    def describe(self) -> list[dict]:
        """One JSON-able entry per modelled column: name, kind, source, weight, queries using it."""
        entries = []
        for column in self.columns:
            entry = {
                "column": column.wide_name,
                "kind": "categorical" if isinstance(column, CategoricalColumn) else "numeric",
                "source": column.source,
                "weight": float(self.weights[column.wide_name]),
                "queries": int(self.usage[column.wide_name]),
                "used_by": list(self.used_by[column.wide_name]),
            }
            if isinstance(column, NumericColumn):
                entry["scale"] = column.scale
            else:
                entry["categories"] = len(column.categories)
            entries.append(entry)
        return entries


def encode_categorical(column: CategoricalColumn, series: pl.Series) -> np.ndarray:
    """Codes (int32) of a categorical series: position in the list, null -> len(categories).

    Raises ValueError naming the column and the first value that is not one of its categories.
    """
    if series.dtype != pl.Utf8:
        series = series.cast(pl.Utf8)
    codes = series.replace_strict(
        column.categories, list(range(len(column.categories))), default=-1, return_dtype=pl.Int32
    )
    null = series.is_null()
    unknown = (codes == -1) & ~null
    if unknown.any():
        bad = series.filter(unknown)
        raise ValueError(
            f"column {column.wide_name!r}: value {bad[0]!r} is not one of its categories "
            f"({bad.n_unique()} unknown value(s) in {int(unknown.sum())} row(s)); "
            f"allowed: {column.categories}"
        )
    codes = codes.to_numpy().astype(np.int32)
    codes[null.to_numpy()] = len(column.categories)
    return codes


def build_encoder(dataset: Dataset) -> Encoder:
    """The encoder of ``dataset``: modelled columns, workload weights, category codes."""
    columns = tuple(dataset.spec.modelled_columns)
    if not columns:
        raise ValueError(f"dataset {dataset.name!r} has no categorical or numeric column to model")
    used_by = column_query_names(dataset)
    usage = {name: len(queries) for name, queries in used_by.items()}
    raw = {c.wide_name: 1.0 + usage[c.wide_name] for c in columns}
    scale = len(columns) / sum(raw.values())
    weights = {name: value * scale for name, value in raw.items()}
    numeric = tuple(c.wide_name for c in columns if isinstance(c, NumericColumn))
    categorical = tuple(c.wide_name for c in columns if isinstance(c, CategoricalColumn))
    return Encoder(
        dataset_name=dataset.name,
        columns=columns,
        weights=MappingProxyType(weights),
        usage=MappingProxyType(usage),
        used_by=MappingProxyType({name: tuple(q) for name, q in used_by.items()}),
        codes=MappingProxyType(
            {
                c.wide_name: MappingProxyType(category_codes(c))
                for c in columns
                if isinstance(c, CategoricalColumn)
            }
        ),
        numeric_columns=numeric,
        categorical_columns=categorical,
        numeric_weights=_read_only(np.array([weights[n] for n in numeric], dtype=np.float32)),
        categorical_weights=_read_only(np.array([weights[n] for n in categorical], dtype=np.float32)),
    )


def distance(a: EncodedTable, i: int, b: EncodedTable, j: int) -> float:
    """Slow reference distance between row ``i`` of ``a`` and row ``j`` of ``b`` (for tests)."""
    if a.numeric_columns != b.numeric_columns or a.categorical_columns != b.categorical_columns:
        raise ValueError("the two tables were encoded with different columns")
    total = 0.0
    for k, weight in enumerate(a.categorical_weights):
        if a.categorical[i, k] != b.categorical[j, k]:
            total += float(weight)
    for k in range(a.numeric.shape[1]):
        total += abs(float(a.numeric[i, k]) - float(b.numeric[j, k]))
    return total

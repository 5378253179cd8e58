"""Candidate APIs of Private Evolution: where candidate wide rows come from.

Every source of candidates (the offline one here, an LLM-backed one later) implements
:class:`CandidateAPI`: ``random(n, seed=...)`` draws candidates from public knowledge only (PE's
RANDOM_API) and ``variation(selected, n_per_record, ...)`` perturbs selected candidates, which are DP
outputs already (PE's VARIATION_API). Candidates are wide rows of the modelled columns only (no
identifier), with dtypes Utf8 for categorical, Int64 for integer and Float64 for float columns, in
wide-table order.

:class:`OfflineGenerator` uses the dataset spec only (categories, bounds, scale, nullability):

random
    Reporting tables are respected. The population table is always present: each of its columns is
    filled, and a nullable one is null with probability ``population_null_rate`` (default 0.05). Every
    other reporting table with modelled columns is present with probability ``presence`` (default 0.5;
    a per-table mapping may override it). An absent table makes ALL its columns null; a present one
    fills EVERY column (simplification: real data may hold a null inside a present table, e.g. a batting
    average without an at-bat; candidates never do). A table with a non-nullable column is always
    present, since the spec says its columns are never null. Values: categorical uniform over the
    categories; numeric uniform on [min, max] (integers: uniform over the integers) for linear scale,
    uniform in log1p(x - min) space for log scale (integers rounded), so always within bounds.

variation (Tab-PE)
    Mutation rate ``r(t) = r0 - (r0 - r_end) * (t / T) ** 0.2`` with r0 = 0.5, r_end = 0.01, t the
    iteration and T the number of iterations (:func:`mutation_rate`). The output holds
    ``n_per_record`` rounds of ``len(selected)`` rows: row ``i * len(selected) + k`` is the i-th
    variation of record k (so a caller that keeps only the first m rows still spreads its variations
    evenly over the records). Independently per row:

    * each non-population table flips presence with probability r (tables that are always present
      never flip; ``presence`` only applies to random): switching to present draws fresh random
      values for all its columns, switching to absent nulls them; a table that stays present mutates
      its columns as below;
    * each column of a present table (population included) is mutated with probability r: a categorical
      takes a uniformly random OTHER category; a numeric moves by a Gaussian step of scale r in the
      normalised [0, 1] space of :func:`synth_assets.pe.encoding.to_unit` (i.e. r times the range, on
      the linear or log1p scale), clipped into bounds, integers rounded; a null value (only in a
      nullable population column, or in input from another source) is replaced by a fresh random
      value; a non-null value of a nullable population column becomes null with probability
      ``population_null_rate`` instead of moving.

    Deterministic given the seed (``numpy.random.default_rng(seed)``).

:func:`validate_candidates` counts what is wrong with a frame of candidates, by reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np
import polars as pl

from synth_assets.datasets.loading import Dataset
from synth_assets.datasets.spec import (
    CategoricalColumn,
    IdentifierColumn,
    NumericColumn,
)
from synth_assets.datasets.temporal import as_numbers
from synth_assets.pe.encoding import encode_categorical, from_unit, to_unit

__all__ = [
    "CandidateAPI",
    "OfflineGenerator",
    "VIOLATION_REASONS",
    "candidate_schema",
    "mutation_rate",
    "validate_candidates",
]

R0 = 0.5
R_END = 0.01
EXPONENT = 0.2
DEFAULT_PRESENCE = 0.5
DEFAULT_POPULATION_NULL_RATE = 0.05

ModelledColumn = CategoricalColumn | NumericColumn


@runtime_checkable
class CandidateAPI(Protocol):
    """The one interface of every candidate source (PE's RANDOM_API and VARIATION_API)."""

    name: str

    def describe(self) -> dict:
        """JSON-able settings, recorded in asset metadata."""
        ...

    def random(self, n: int, *, seed: int) -> pl.DataFrame:
        """``n`` candidate wide rows from public knowledge only (modelled columns, no identifier)."""
        ...

    def variation(
        self, selected: pl.DataFrame, n_per_record: int, *, iteration: int, iterations: int, seed: int
    ) -> pl.DataFrame:
        """``n_per_record`` variations of each selected record, same columns."""
        ...


# ----------------------------------------------------------------------------------------- helpers


def mutation_rate(
    iteration: int,
    iterations: int,
    *,
    r0: float = R0,
    r_end: float = R_END,
    exponent: float = EXPONENT,
) -> float:
    """Tab-PE mutation rate ``r0 - (r0 - r_end) * (iteration / iterations) ** exponent``."""
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if not 0 <= iteration <= iterations:
        raise ValueError(f"iteration must be in [0, {iterations}], got {iteration}")
    return r0 - (r0 - r_end) * (iteration / iterations) ** exponent


def candidate_schema(dataset: Dataset) -> dict[str, pl.DataType]:
    """Column -> dtype of candidate frames: modelled columns in wide order."""
    schema: dict[str, pl.DataType] = {}
    for column in dataset.spec.modelled_columns:
        if isinstance(column, CategoricalColumn):
            schema[column.wide_name] = pl.Utf8()
        elif column.type == "integer":
            schema[column.wide_name] = pl.Int64()
        else:
            schema[column.wide_name] = pl.Float64()
    return schema


def _random_values(column: ModelledColumn, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` non-null values: codes (int64) for categorical, float64 for numeric."""
    if isinstance(column, CategoricalColumn):
        return rng.integers(0, len(column.categories), size=n)
    if column.scale == "linear" and column.type == "integer":
        return rng.integers(int(column.min), int(column.max) + 1, size=n).astype(np.float64)
    return from_unit(column, rng.random(n))


def _is_null(column: ModelledColumn, values: np.ndarray) -> np.ndarray:
    return values < 0 if isinstance(column, CategoricalColumn) else np.isnan(values)


def _set_null(column: ModelledColumn, values: np.ndarray, mask: np.ndarray) -> None:
    values[mask] = -1 if isinstance(column, CategoricalColumn) else np.nan


# ---------------------------------------------------------------------------------------- generator


class OfflineGenerator:
    """Candidates from the spec alone: uniform random rows that respect table structure, and Tab-PE
    per-column mutations. See the module docstring for the exact rules."""

    name = "offline"

    def __init__(
        self,
        dataset: Dataset,
        *,
        presence: float | Mapping[str, float] = DEFAULT_PRESENCE,
        population_null_rate: float = DEFAULT_POPULATION_NULL_RATE,
        r0: float = R0,
        r_end: float = R_END,
        exponent: float = EXPONENT,
    ) -> None:
        spec = dataset.spec
        self.dataset = dataset
        self.columns: tuple[ModelledColumn, ...] = tuple(spec.modelled_columns)
        if not self.columns:
            raise ValueError(f"dataset {dataset.name!r} has no categorical or numeric column to model")
        if not 0 <= population_null_rate <= 1:
            raise ValueError(f"population_null_rate must be in [0, 1], got {population_null_rate}")
        if not 0 <= r_end <= r0 <= 1:
            raise ValueError(f"need 0 <= r_end <= r0 <= 1, got r0={r0}, r_end={r_end}")
        self.population = spec.entity.population
        self.population_null_rate = float(population_null_rate)
        self.r0, self.r_end, self.exponent = float(r0), float(r_end), float(exponent)
        self.schema = candidate_schema(dataset)

        # Reporting tables with modelled columns, in order of first appearance in the wide table.
        self.tables: dict[str, tuple[ModelledColumn, ...]] = {}
        for column in self.columns:
            self.tables.setdefault(column.table, ())
            self.tables[column.table] += (column,)

        overrides = presence if isinstance(presence, Mapping) else {}
        unknown = sorted(set(overrides) - set(self.tables) - {self.population})
        if unknown:
            raise ValueError(
                f"presence names tables {unknown} that have no modelled column in dataset "
                f"{dataset.name!r}; tables: {sorted(self.tables)}"
            )
        default = DEFAULT_PRESENCE if isinstance(presence, Mapping) else float(presence)
        self.presence: dict[str, float] = {}
        self.always_present: frozenset[str] = frozenset(
            table
            for table, columns in self.tables.items()
            if table != self.population and not all(c.nullable for c in columns)
        )
        for table in self.tables:
            if table == self.population:
                continue
            p = float(overrides.get(table, default))
            if not 0 <= p <= 1:
                raise ValueError(f"presence of table {table!r} must be in [0, 1], got {p}")
            # a non-nullable column is never null: every entity has this table
            self.presence[table] = 1.0 if table in self.always_present else p

    # ------------------------------------------------------------------------------------- metadata

    def describe(self) -> dict:
        return {
            "name": self.name,
            "dataset": self.dataset.name,
            "presence": dict(self.presence),
            "always_present": sorted(self.always_present),
            "population_null_rate": self.population_null_rate,
            "mutation_rate": {
                "formula": "r0 - (r0 - r_end) * (t / T) ** exponent",
                "r0": self.r0,
                "r_end": self.r_end,
                "exponent": self.exponent,
            },
        }

    def rate(self, iteration: int, iterations: int) -> float:
        return mutation_rate(
            iteration, iterations, r0=self.r0, r_end=self.r_end, exponent=self.exponent
        )

    # ------------------------------------------------------------------------------------ frames

    def _to_frame(self, values: dict[str, np.ndarray]) -> pl.DataFrame:
        series = []
        for column in self.columns:
            array = values[column.wide_name]
            if isinstance(column, CategoricalColumn):
                codes = pl.Series(column.wide_name, array, dtype=pl.Int64)
                series.append(
                    codes.replace_strict(
                        list(range(len(column.categories))),
                        column.categories,
                        default=None,
                        return_dtype=pl.Utf8,
                    )
                )
            else:
                numbers = pl.Series(column.wide_name, array, dtype=pl.Float64, nan_to_null=True)
                series.append(numbers.cast(self.schema[column.wide_name]))
        return pl.DataFrame(series)

    def _from_frame(self, frame: pl.DataFrame) -> dict[str, np.ndarray]:
        names = [c.wide_name for c in self.columns]
        missing = [name for name in names if name not in frame.columns]
        if missing:
            raise ValueError(f"selected candidates lack modelled columns {missing}")
        frame = frame.select(names)
        problems = {
            reason: count
            for reason, count in validate_candidates(self.dataset, frame).items()
            if count
        }
        if problems:
            raise ValueError(f"selected candidates are not valid candidates: {problems}")
        values = {}
        for column in self.columns:
            series = frame.get_column(column.wide_name)
            if isinstance(column, CategoricalColumn):
                codes = encode_categorical(column, series).astype(np.int64)
                codes[codes == len(column.categories)] = -1
                values[column.wide_name] = codes
            else:
                values[column.wide_name] = np.asarray(
                    series.cast(pl.Float64).to_numpy(), dtype=np.float64
                ).copy()
        return values

    # ---------------------------------------------------------------------------------- random API

    def random(self, n: int, *, seed: int) -> pl.DataFrame:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        rng = np.random.default_rng(seed)
        values: dict[str, np.ndarray] = {}
        for table, columns in self.tables.items():
            if table == self.population:
                for column in columns:
                    array = _random_values(column, n, rng)
                    if column.nullable:
                        _set_null(column, array, rng.random(n) < self.population_null_rate)
                    values[column.wide_name] = array
            else:
                absent = rng.random(n) >= self.presence[table]
                for column in columns:
                    array = _random_values(column, n, rng)
                    _set_null(column, array, absent)
                    values[column.wide_name] = array
        return self._to_frame(values)

    # ------------------------------------------------------------------------------- variation API

    def _mutate_column(
        self,
        column: ModelledColumn,
        array: np.ndarray,
        active: np.ndarray,
        rate: float,
        rng: np.random.Generator,
        may_become_null: bool,
    ) -> None:
        """Mutate ``array`` in place, each row of ``active`` with probability ``rate``."""
        n = array.shape[0]
        mutate = active & (rng.random(n) < rate)
        null = _is_null(column, array)
        fresh = _random_values(column, n, rng)
        to_null = rng.random(n) < self.population_null_rate
        if isinstance(column, CategoricalColumn):
            k = len(column.categories)
            shift = rng.integers(1, k, size=n) if k > 1 else np.zeros(n, dtype=np.int64)
            moved = (array + shift) % k
        else:
            step = rng.standard_normal(n) * rate
            moved = from_unit(column, to_unit(column, np.where(null, column.min, array)) + step)
        out = np.where(null, fresh, moved)
        if may_become_null:
            out = np.where(~null & to_null, -1 if isinstance(column, CategoricalColumn) else np.nan, out)
        array[mutate] = out[mutate]

    def variation(
        self,
        selected: pl.DataFrame,
        n_per_record: int,
        *,
        iteration: int,
        iterations: int,
        seed: int,
    ) -> pl.DataFrame:
        if n_per_record < 1:
            raise ValueError(f"n_per_record must be >= 1, got {n_per_record}")
        rate = self.rate(iteration, iterations)
        rng = np.random.default_rng(seed)
        values = {
            name: np.tile(array, n_per_record)
            for name, array in self._from_frame(selected).items()
        }
        n = selected.height * n_per_record
        everywhere = np.ones(n, dtype=bool)
        for table, columns in self.tables.items():
            if table == self.population:
                for column in columns:
                    self._mutate_column(
                        column, values[column.wide_name], everywhere, rate, rng, column.nullable
                    )
                continue
            present = np.zeros(n, dtype=bool)
            for column in columns:
                present |= ~_is_null(column, values[column.wide_name])
            if table in self.always_present:
                flip = np.zeros(n, dtype=bool)
            else:
                flip = rng.random(n) < rate
            switch_on, switch_off = flip & ~present, flip & present
            stays = present & ~flip
            for column in columns:
                array = values[column.wide_name]
                fresh = _random_values(column, n, rng)
                self._mutate_column(column, array, stays, rate, rng, may_become_null=False)
                array[switch_on] = fresh[switch_on]
                _set_null(column, array, switch_off)
        return self._to_frame(values)


# ------------------------------------------------------------------------------------- validation

VIOLATION_REASONS = (
    "wrong_columns",
    "unknown_category",
    "not_a_number",
    "out_of_bounds",
    "non_integer",
    "null_in_non_nullable",
)


def validate_candidates(
    dataset: Dataset, frame: pl.DataFrame, *, allow_identifiers: bool = False
) -> dict[str, int]:
    """Count what is wrong with candidate rows, by reason (every reason present, 0 when clean).

    * ``wrong_columns``: modelled columns missing plus unexpected columns (identifier columns of the
      spec are accepted when ``allow_identifiers``);
    * ``unknown_category``: categorical cells (non-null) not in the column's categories;
    * ``not_a_number``: numeric cells that are not numbers (unparsable text, NaN);
    * ``out_of_bounds``: numeric cells outside [min, max] (infinities included);
    * ``non_integer``: finite cells of an integer column with a fractional part;
    * ``null_in_non_nullable``: null cells in a column that is not nullable.

    Counts are cells (``wrong_columns``: columns). Columns that are missing are not checked further.
    """
    spec = dataset.spec
    frame = as_numbers(spec, frame)
    counts = dict.fromkeys(VIOLATION_REASONS, 0)
    expected = {c.wide_name for c in spec.modelled_columns}
    accepted = set(expected)
    if allow_identifiers:
        accepted |= {c.wide_name for c in spec.wide_table.columns if isinstance(c, IdentifierColumn)}
    counts["wrong_columns"] = len(expected - set(frame.columns)) + len(set(frame.columns) - accepted)
    for column in spec.modelled_columns:
        if column.wide_name not in frame.columns:
            continue
        series = frame.get_column(column.wide_name)
        null = series.is_null()
        if not column.nullable:
            counts["null_in_non_nullable"] += int(null.sum())
        if isinstance(column, CategoricalColumn):
            text = series.cast(pl.Utf8, strict=False)
            known = text.is_in(column.categories)
            counts["unknown_category"] += int((~null & ~known.fill_null(False)).sum())
            continue
        if series.dtype.is_numeric():
            numbers = series.cast(pl.Float64)
        else:
            numbers = series.cast(pl.Utf8, strict=False).str.strip_chars().cast(pl.Float64, strict=False)
        x = np.asarray(numbers.to_numpy(), dtype=np.float64)
        present = ~null.to_numpy()
        nan = present & np.isnan(x)
        counts["not_a_number"] += int(nan.sum())
        finite = present & ~nan
        with np.errstate(invalid="ignore"):
            counts["out_of_bounds"] += int((finite & ((x < column.min) | (x > column.max))).sum())
            if column.type == "integer":
                whole = np.isfinite(x) & (x != np.round(x))
                counts["non_integer"] += int((finite & whole).sum())
    return counts

"""The dataset specification: what a dataset directory must contain, validated with pydantic.

A dataset directory holds ``dataset.yaml`` (this model), the reporting-table SQL files it names and one
JSON file per workload query. Everything the platform knows about the domain of the data (categories,
numeric bounds, nullability) comes from this file, never from the private data: it is public knowledge.
The format is documented in docs/dataset-spec.md.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

SPEC_VERSION = 1
SPEC_FILENAME = "dataset.yaml"

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_PREFIX = "__"

# One part of a table name: a bare identifier, or any characters in double quotes ("" for a quote).
_NAME_PART = r'(?:[^\W\d]\w*|"(?:[^"]|"")+")'
_TABLE_NAME = re.compile(rf"^({_NAME_PART})(?:\.({_NAME_PART}))?$")


def _check_identifier(value: str, what: str) -> str:
    if not _IDENTIFIER.match(value):
        raise ValueError(
            f"{what} {value!r} is not a valid SQL identifier: use letters, digits and underscores, "
            "starting with a letter or underscore"
        )
    return value


def _check_not_reserved(value: str, what: str, fix: str) -> str:
    if value.startswith(RESERVED_PREFIX):
        raise ValueError(
            f"{what} {value!r}: names starting with {RESERVED_PREFIX!r} are reserved for the "
            f"platform's own columns; {fix}"
        )
    return value


def _non_finite(value: Any) -> bool:
    """Whether ``value`` reads as infinity or NaN (YAML's ``.inf`` and ``.nan``, or such a string)."""
    try:
        return not math.isfinite(float(value))
    except OverflowError:
        return True  # an integer too large for a float
    except (TypeError, ValueError):
        return False  # not a number: pydantic's own message says so


def _check_finite(value: Any, message: str) -> Any:
    if _non_finite(value):
        raise ValueError(message)
    return value


def table_name_parts(value: str) -> tuple[str, ...]:
    """The one or two parts of a table name (``table`` or ``schema.table``), double quotes removed."""
    match = _TABLE_NAME.match(value)
    if not match:
        raise ValueError(
            f"table {value!r} is not a table name: give one identifier, or two separated by a dot "
            "(schema.table), each of letters, digits and underscores; put a name with other "
            'characters in double quotes, doubling any " inside (main."my table")'
        )
    parts = (part for part in match.groups() if part is not None)
    return tuple(p[1:-1].replace('""', '"') if p.startswith('"') else p for p in parts)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------- sources


class _SourceBase(_Strict):
    entity_column: str | None = Field(
        default=None,
        min_length=1,
        description="Column holding the entity key, if any: lets a run use a slice of the entities.",
    )


class CsvSource(_SourceBase):
    format: Literal["csv"]
    path: str = Field(
        description="CSV file, relative to the dataset directory (or absolute): plain, gzipped "
        "(.gz) or inside a .zip archive."
    )
    delimiter: str = ","
    encoding: Literal["utf8", "latin1"] = "utf8"
    null_values: list[str] = Field(default_factory=lambda: [""])
    header: bool = Field(default=True, description="Whether the first row holds the column names.")
    columns: list[str] | None = Field(
        default=None,
        description="The column names, in file order: required when header is false, refused otherwise.",
    )
    trim: bool = Field(
        default=False,
        description="Strip leading and trailing spaces from every string value (before null_values "
        "are matched).",
    )
    member: str | None = Field(
        default=None,
        min_length=1,
        description="The file to read inside a .zip archive (needed when it holds more than one).",
    )

    @model_validator(mode="after")
    def _check_header_columns_member(self) -> CsvSource:
        if self.header and self.columns is not None:
            raise ValueError(
                "columns names the columns of a file without a header row; with header: true (the "
                "default) the names come from the file's first row: remove columns, or set header: false"
            )
        if not self.header:
            if not self.columns:
                raise ValueError(
                    "header is false: list the column names in file order under columns "
                    "(columns: [name, ...])"
                )
            if any(not name.strip() for name in self.columns):
                raise ValueError("columns: a column name is empty")
            lowered = [name.lower() for name in self.columns]
            repeated = sorted({n for n in self.columns if lowered.count(n.lower()) > 1})
            if repeated:
                raise ValueError(
                    f"columns names {repeated} more than once (names are compared ignoring case)"
                )
        if self.member is not None and not self.path.lower().endswith(".zip"):
            raise ValueError(
                f"member names a file inside a .zip archive, but path {self.path!r} is not a .zip: "
                "remove member, or point path at the archive"
            )
        return self


class ParquetSource(_SourceBase):
    format: Literal["parquet"]
    path: str = Field(description="Parquet file or glob, relative to the dataset directory.")


class DuckDBSource(_SourceBase):
    format: Literal["duckdb"]
    path: str = Field(description="DuckDB database file, relative to the dataset directory.")
    table: str = Field(
        description='Table or view to read, optionally schema-qualified; "double quotes" around a '
        "part with other characters than letters, digits and underscores."
    )

    @field_validator("table")
    @classmethod
    def _table_is_a_name(cls, value: str) -> str:
        table_name_parts(value)
        return value

    @property
    def table_parts(self) -> tuple[str, ...]:
        """``(table,)`` or ``(schema, table)``, unquoted: quote each part again to use it in SQL."""
        return table_name_parts(self.table)


class PackagedSource(_SourceBase):
    format: Literal["packaged"]
    loader: str = Field(description="Name of a registered loader for data shipped in a package.")
    member: str = Field(description="Which table the loader should return.")


Source = Annotated[
    CsvSource | ParquetSource | DuckDBSource | PackagedSource, Field(discriminator="format")
]

# ------------------------------------------------------------------------------------ reporting tables


class ReportingTable(_Strict):
    sql: str = Field(description="SQL file (DuckDB dialect) over the source tables, relative path.")
    description: str = ""
    rebuildable: bool = Field(
        default=True,
        description="Whether decomposing the wide table gives this table back. A table with columns "
        "that are not in the wide table is not rebuildable; say why in not_rebuildable_reason.",
    )
    not_rebuildable_reason: str | None = None

    @model_validator(mode="after")
    def _reason_when_not_rebuildable(self) -> ReportingTable:
        if not self.rebuildable and not self.not_rebuildable_reason:
            raise ValueError("rebuildable is false: give not_rebuildable_reason")
        return self


# --------------------------------------------------------------------------------------- wide columns


class _WideColumnBase(_Strict):
    name: str | None = Field(
        default=None, description="Column name in the wide table; defaults to the source column name."
    )
    source: str = Field(
        alias="from", description="'table.column': the reporting table and column it comes from."
    )
    description: str = ""
    nullable: bool = Field(
        default=False,
        description="Whether the column may be null: for an entity with no row in its reporting table "
        "(structural nulls, e.g. no pitching record for a non-pitcher) or a null value in a row. false "
        "(the default): a null in the private data stops the wide-table build, before any DP release, "
        "with an error that names the dataset file, the table, the column and the number of nulls. "
        "true: null is one more public bin of the column, its share released with noise like any other "
        "bin and drawn back in that proportion. Generators never write a null into a column that is not "
        "nullable.",
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("source")
    @classmethod
    def _table_dot_column(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) != 2:
            raise ValueError(f"'from' must be 'table.column', got {value!r}")
        for part in parts:
            _check_identifier(part, "name")
        return value

    @model_validator(mode="after")
    def _name_not_reserved(self) -> _WideColumnBase:
        fix = (
            "choose another name"
            if self.name
            else f"set name: to another one (the reporting column {self.source} may keep its own)"
        )
        _check_not_reserved(self.wide_name, "wide_table column name", fix)
        return self

    @property
    def table(self) -> str:
        return self.source.split(".")[0]

    @property
    def column(self) -> str:
        return self.source.split(".")[1]

    @property
    def wide_name(self) -> str:
        return self.name or self.column


class CategoricalColumn(_WideColumnBase):
    role: Literal["categorical"]
    categories: list[str] = Field(min_length=1, description="The public list of categories.")
    unseen: Literal["error", "null", "map"] = Field(
        default="error",
        description="What happens to a value not in the list: fail, become null, or map to map_to.",
    )
    map_to: str | None = Field(default=None, description="Category that unseen values map to.")

    @model_validator(mode="after")
    def _check_categories(self) -> CategoricalColumn:
        duplicates = sorted({c for c in self.categories if self.categories.count(c) > 1})
        if duplicates:
            raise ValueError(f"categories are listed twice: {duplicates}")
        if self.unseen == "map":
            if self.map_to is None:
                raise ValueError("unseen is 'map': set map_to to one of the categories")
            if self.map_to not in self.categories:
                raise ValueError(f"map_to {self.map_to!r} is not one of the categories")
        elif self.map_to is not None:
            raise ValueError("map_to is only used with unseen: map")
        if self.unseen == "null" and not self.nullable:
            raise ValueError("unseen is 'null' but the column is not nullable: set nullable: true")
        return self


class NumericColumn(_WideColumnBase):
    role: Literal["numeric"]
    type: Literal["integer", "float"]
    min: float = Field(description="Public lower bound.")
    max: float = Field(description="Public upper bound.")
    out_of_bounds: Literal["clip", "error"] = Field(
        default="clip", description="What happens to a value outside [min, max]."
    )
    scale: Literal["linear", "log"] = Field(
        default="linear",
        description="How values spread over [min, max], as public knowledge: 'log' for heavy-tailed "
        "counts and amounts (most near min, a few near max). Generators and distances use log(1 + x - min).",
    )
    bins: int | None = Field(
        default=None,
        ge=2,
        le=200,
        description="Equal-width public bins over [min, max] on the scale (default 10): more where a "
        "finer resolution matters (it costs privacy noise per cell in every marginal).",
    )
    point_masses: list[float] | None = Field(
        default=None,
        description="Public values that many entities have exactly (0 weeks worked, the maximum of a "
        "scale): each gets a bin of its own, so that generators and scores keep its share. Unset: 0 for "
        "a log-scale column (counts and amounts) whose bounds include it, else none; [] for none.",
    )

    @field_validator("point_masses", mode="before")
    @classmethod
    def _finite_point_masses(cls, value: Any) -> Any:
        if value is None:
            return value
        return [_check_finite(v, "point masses must be finite numbers") for v in value]

    @property
    def special_values(self) -> list[float]:
        """The point masses in effect (the declared ones, or the default), sorted."""
        if self.point_masses is not None:
            return sorted(self.point_masses)
        return [0.0] if self.scale == "log" and self.min <= 0 <= self.max else []

    @field_validator("min", "max", mode="before")
    @classmethod
    def _finite_bounds(cls, value: Any, info: ValidationInfo) -> Any:
        extreme = "smallest" if info.field_name == "min" else "largest"
        return _check_finite(
            value,
            f"public bounds must be finite numbers; give the {extreme} value the column can take",
        )

    @model_validator(mode="after")
    def _check_bounds(self) -> NumericColumn:
        if not self.min < self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        if self.type == "integer" and (self.min != int(self.min) or self.max != int(self.max)):
            raise ValueError("an integer column needs integer bounds")
        masses = self.point_masses or []
        outside = [v for v in masses if not self.min <= v <= self.max]
        if outside:
            raise ValueError(f"point_masses {outside} lie outside [min, max] = [{self.min}, {self.max}]")
        if len(set(masses)) != len(masses):
            raise ValueError(f"point_masses list a value twice: {masses}")
        if self.type == "integer" and any(v != int(v) for v in masses):
            raise ValueError(f"an integer column's point_masses must be integers, got {masses}")
        return self


_EPOCH_DAY = date(1970, 1, 1)
_EPOCH = datetime(1970, 1, 1)
SECONDS_PER_DAY = 86_400


def temporal_number(value: Any, role: str) -> int:
    """Days (``role`` date) or seconds (timestamp) since 1970-01-01 of a date or an ISO date and time.

    A timestamp with a time zone is read in UTC. Raises ValueError naming the value and the format."""
    fix = (
        "write a date as YYYY-MM-DD (1990-01-01)"
        if role == "date"
        else "write a timestamp as an ISO date and time, YYYY-MM-DDTHH:MM:SS (2020-01-01T00:00:00)"
    )
    parsed: Any = value
    if isinstance(value, str):
        try:
            parsed = (date if role == "date" else datetime).fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a {'date' if role == 'date' else 'timestamp'}: {fix}") from None
    if role == "date":
        if isinstance(parsed, datetime):
            if parsed.time() != time(0) or parsed.tzinfo is not None:
                raise ValueError(
                    f"{value!s} has a time of day, but a date column holds dates: {fix}, or use "
                    "role: timestamp for dates with times"
                )
            parsed = parsed.date()
        if not isinstance(parsed, date):
            raise ValueError(f"{value!r} is not a date: {fix}")
        return (parsed - _EPOCH_DAY).days
    if isinstance(parsed, date) and not isinstance(parsed, datetime):
        parsed = datetime.combine(parsed, time(0))
    if not isinstance(parsed, datetime):
        raise ValueError(f"{value!r} is not a timestamp: {fix}")
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    if parsed.microsecond:
        raise ValueError(f"{value!s}: timestamps are kept to the second; leave out the fraction of a second")
    return int((parsed - _EPOCH).total_seconds())


def temporal_value(number: float, role: str) -> date | datetime:
    """The date (``role`` date) or naive UTC date and time (timestamp) of a number of days or seconds."""
    if role == "date":
        return _EPOCH_DAY + timedelta(days=int(math.floor(number)))
    return _EPOCH + timedelta(seconds=int(math.floor(number)))


def temporal_label(number: float, role: str) -> str:
    """A date as YYYY-MM-DD, a timestamp as YYYY-MM-DD HH:MM:SS (the time left out at midnight)."""
    value = temporal_value(number, role)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d") if value.time() == time(0) else value.strftime("%Y-%m-%d %H:%M:%S")
    return value.isoformat()


class DateColumn(NumericColumn):
    """A date (``role: date``) or a date and time (``role: timestamp``) with public bounds.

    Generators, bins and distances see it as an integer column: days (date) or seconds (timestamp) since
    1970-01-01, which is what ``min``, ``max`` and ``point_masses`` hold once validated. The wide table,
    the synthetic one and the reporting tables hold real dates (polars Date, naive Datetime in UTC).
    """

    role: Literal["date", "timestamp"]  # type: ignore[assignment]
    type: Literal["integer"] = Field(default="integer", exclude=True)  # type: ignore[assignment]
    scale: Literal["linear"] = Field(default="linear", exclude=True)  # type: ignore[assignment]
    min: float = Field(
        description="Public lower bound: a date (1990-01-01), or for a timestamp an ISO date and time "
        "(2020-01-01T00:00:00); held as days (seconds) since 1970-01-01."
    )
    max: float = Field(description="Public upper bound, as min.")
    out_of_bounds: Literal["clip", "error"] = Field(
        default="clip", description="What happens to a date before min or after max: clip it to the bound, or fail."
    )
    bins: int | None = Field(
        default=None,
        ge=2,
        le=200,
        description="Equal-width public bins over [min, max] (default 10): e.g. 35 for the years of "
        "1990-2024.",
    )
    point_masses: list[float] | None = Field(
        default=None,
        description="Public dates (timestamps) that many entities have exactly, each with a bin of its "
        "own (a placeholder date, say). Unset: none.",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_numeric_settings(cls, data: Any) -> Any:
        if isinstance(data, dict):
            role = data.get("role", "date")
            if "type" in data:
                raise ValueError(
                    f"a {role} column takes no type: its values are "
                    + ("dates; use role: timestamp for dates with times" if role == "date"
                       else "dates with times; use role: date for dates alone")
                )
            if data.get("scale", "linear") != "linear":
                raise ValueError(f"a {role} column is binned linearly over [min, max]: remove scale")
        return data

    @field_validator("min", "max", mode="before")
    @classmethod
    def _finite_bounds(cls, value: Any, info: ValidationInfo) -> Any:
        role = info.data.get("role", "date")
        try:
            return temporal_number(value, role)
        except ValueError as exc:
            raise ValueError(f"{info.field_name}: {exc}") from None

    @field_validator("point_masses", mode="before")
    @classmethod
    def _finite_point_masses(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return value
        role = info.data.get("role", "date")
        if not isinstance(value, list):
            raise ValueError(f"point_masses is a list of dates, got {value!r}")
        try:
            return [temporal_number(v, role) for v in value]
        except ValueError as exc:
            raise ValueError(f"point_masses: {exc}") from None

    @field_serializer("min", "max")
    def _bound_as_text(self, value: float) -> str:
        return self.label(value)

    @field_serializer("point_masses")
    def _masses_as_text(self, value: list[float] | None) -> list[str] | None:
        return None if value is None else [self.label(v) for v in value]

    @property
    def special_values(self) -> list[float]:
        return sorted(self.point_masses or [])

    @model_validator(mode="after")
    def _check_bounds(self) -> DateColumn:
        if not self.min < self.max:
            raise ValueError(f"min ({self.label(self.min)}) must be before max ({self.label(self.max)})")
        masses = self.point_masses or []
        outside = [self.label(v) for v in masses if not self.min <= v <= self.max]
        if outside:
            raise ValueError(
                f"point_masses {outside} lie outside [min, max] = [{self.label(self.min)}, {self.label(self.max)}]"
            )
        if len(set(masses)) != len(masses):
            raise ValueError(f"point_masses list a {self.role} twice: {[self.label(v) for v in masses]}")
        return self

    @property
    def unit(self) -> str:
        """What one step of the column's numbers is: a day (date) or a second (timestamp)."""
        return "day" if self.role == "date" else "second"

    def label(self, number: float) -> str:
        """The date (or date and time) of a number of days (seconds) since 1970-01-01."""
        return temporal_label(number, self.role)

    def value(self, number: float) -> date | datetime:
        return temporal_value(number, self.role)


class IdentifierColumn(_WideColumnBase):
    role: Literal["identifier"]


WideColumn = Annotated[
    CategoricalColumn | NumericColumn | IdentifierColumn | DateColumn, Field(discriminator="role")
]


class WideTable(_Strict):
    name: str = "wide"
    columns: list[WideColumn] = Field(min_length=2)

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, value: str) -> str:
        return _check_identifier(value, "wide table name")


# --------------------------------------------------------------------------------------- entity, privacy


class Entity(_Strict):
    name: str = Field(description="What one entity is (player, device, customer).")
    key: str = Field(description="Key column present in every reporting table.")
    population: str = Field(
        description="Reporting table whose rows are the entities of the wide table (one per entity)."
    )

    @field_validator("key")
    @classmethod
    def _key_is_identifier(cls, value: str) -> str:
        _check_identifier(value, "entity key")
        return _check_not_reserved(
            value, "entity key", "rename the key in the reporting SQL and in wide_table.columns"
        )


class Privacy(_Strict):
    delta: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Delta of every release. Unset: 1e-6, which must stay well below 1/n.",
    )
    epsilon_grid: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0, 8.0])
    budget_epsilon: float | None = Field(
        default=None, gt=0, description="Total epsilon that may be spent on this dataset."
    )
    holdout_fraction: float = Field(
        default=0.2,
        ge=0,
        le=0.5,
        description="Share of the entities kept out of every generator's input, to evaluate privacy risk "
        "and utility against (chosen by a seeded hash of the entity key). 0: no holdout; the metrics that "
        "need one then say 'not available'.",
    )
    holdout_seed: int = Field(default=0, ge=0, description="Seed of the hash that chooses the holdout.")

    @field_validator("delta", mode="before")
    @classmethod
    def _finite_delta(cls, value: Any) -> Any:
        return _check_finite(
            value, "delta must be a finite number between 0 and 1, well below 1/n (default 1e-6)"
        )

    @field_validator("budget_epsilon", mode="before")
    @classmethod
    def _finite_budget(cls, value: Any) -> Any:
        return _check_finite(
            value, "budget_epsilon must be a finite number above 0; leave it out to set no budget"
        )

    @field_validator("epsilon_grid", mode="before")
    @classmethod
    def _finite_grid(cls, value: Any) -> Any:
        if isinstance(value, list):
            bad = [v for v in value if _non_finite(v)]
            if bad:
                raise ValueError(f"every epsilon must be a finite number above 0, got {bad}")
        return value

    @field_validator("epsilon_grid")
    @classmethod
    def _positive_grid(cls, value: list[float]) -> list[float]:
        if not value:
            raise ValueError("epsilon_grid needs at least one epsilon")
        bad = [e for e in value if not e > 0]
        if bad:
            raise ValueError(f"every epsilon must be > 0, got {bad}")
        if len(set(value)) != len(value):
            raise ValueError("epsilon_grid lists an epsilon twice")
        return value


GeneratorName = Literal["private_evolution", "mst", "aim", "independent_marginals"]
DEFAULT_GENERATORS: tuple[GeneratorName, ...] = ("private_evolution", "mst", "independent_marginals")


def _repeated(values: list[str]) -> list[str]:
    """The values listed more than once, sorted."""
    return sorted({v for v in values if values.count(v) > 1})


class Synthesis(_Strict):
    generators: list[GeneratorName] = Field(
        default_factory=lambda: list(DEFAULT_GENERATORS),
        min_length=1,
        description="The generators the asset graph has, each a branch of its own; a run may "
        "materialize any of them. independent_marginals is the reference the others must beat.",
    )

    @field_validator("generators")
    @classmethod
    def _listed_once(cls, value: list[str]) -> list[str]:
        twice = _repeated(value)
        if twice:
            raise ValueError(f"generators are listed twice: {twice}")
        return value


class Target(_Strict):
    column: str = Field(description="A modelled wide-table column to predict from the others.")
    task: Literal["classification", "regression"]


class LowerIsBetter(_Strict):
    green: float = Field(description="At most this is green.")
    amber: float = Field(description="At most this (and above green) is amber; above it red.")

    @model_validator(mode="after")
    def _ordered(self) -> "LowerIsBetter":
        if not (math.isfinite(self.green) and math.isfinite(self.amber)) or self.green > self.amber:
            raise ValueError(f"green ({self.green}) must be finite and at most amber ({self.amber})")
        return self


class HigherIsBetter(_Strict):
    green: float = Field(description="At least this is green.")
    amber: float = Field(description="At least this (and below green) is amber; below it red.")

    @model_validator(mode="after")
    def _ordered(self) -> "HigherIsBetter":
        if not (math.isfinite(self.green) and math.isfinite(self.amber)) or self.green < self.amber:
            raise ValueError(f"green ({self.green}) must be finite and at least amber ({self.amber})")
        return self


class Gates(_Strict):
    """Thresholds of the green / amber / red verdicts a release is judged by (the privacy tests that are
    statistical tests, and the audit against the DP bound, are not negotiable and are not here)."""

    marginal_tvd_ratio: LowerIsBetter = Field(
        default_factory=lambda: LowerIsBetter(green=1.5, amber=3.0),
        description="Fidelity: the worst of the 1-, 2- and 3-way mean TVD of the synthetic table to the "
        "training rows, over the same TVD of the holdout (sampling noise alone is 1).",
    )
    detection_auc: LowerIsBetter | None = Field(
        default=None,
        description="Fidelity: a classifier's AUC telling synthetic from training rows (0.5: "
        "indistinguishable). Not gated unless set: on a wide table a classifier tells almost any DP "
        "synthetic table from real rows, so it is reported beside the holdout's value.",
    )
    tstr_ratio: HigherIsBetter = Field(
        default_factory=lambda: HigherIsBetter(green=0.9, amber=0.75),
        description="ML utility: TSTR / TRTR of the headline score (AUC or R2), per target.",
    )
    workload_metric_pass_rate: HigherIsBetter = Field(
        default_factory=lambda: HigherIsBetter(green=0.75, amber=0.5),
        description="Workload: the share of value metrics (query x column) that meet their thresholds.",
    )
    attack_risk: LowerIsBetter = Field(
        default_factory=lambda: LowerIsBetter(green=0.02, amber=0.1),
        description="Privacy: the 95% lower bound of an Anonymeter attack's risk (singling out, "
        "linkability, attribute inference).",
    )


class Evaluation(_Strict):
    gates: Gates = Field(default_factory=Gates)
    targets: list[Target] = Field(
        default_factory=list,
        description="ML utility: models trained on synthetic rows, tested on the holdout (TSTR), against "
        "the same models trained on the training rows (TRTR).",
    )
    sensitive_columns: list[str] = Field(
        default_factory=list,
        description="Columns an attacker who knows every other column of a person would want to learn: "
        "the attribute-inference attack is run on each.",
    )


# ------------------------------------------------------------------------------------------ the spec


class DatasetSpec(_Strict):
    spec_version: Literal[1]
    name: str
    title: str = ""
    description: str = ""
    licence: str = ""
    entity: Entity
    sources: dict[str, Source] = Field(min_length=1)
    reporting_tables: dict[str, ReportingTable] = Field(min_length=1)
    wide_table: WideTable
    workload_dir: str = Field(default="queries", description="Directory of query JSON files.")
    population_description: str | None = Field(
        default=None,
        description="Optional file with a public, prose description of the population.",
    )
    privacy: Privacy = Field(default_factory=Privacy)
    synthesis: Synthesis = Field(default_factory=Synthesis)
    evaluation: Evaluation = Field(default_factory=Evaluation)
    shared_sql: list[str] = Field(
        default_factory=list,
        description="SQL files of CREATE VIEW statements over the sources, run in order before the "
        "reporting tables are built: every reporting table's SQL can read their views.",
    )

    @field_validator("shared_sql")
    @classmethod
    def _shared_sql_listed_once(cls, value: list[str]) -> list[str]:
        repeated = _repeated(value)
        if repeated:
            raise ValueError(f"shared_sql lists {repeated} more than once")
        return value

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, value: str) -> str:
        return _check_identifier(value, "dataset name")

    @field_validator("sources", "reporting_tables")
    @classmethod
    def _keys_are_identifiers(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            _check_identifier(key, "table name")
        return value

    @model_validator(mode="after")
    def _check_references(self) -> DatasetSpec:
        clashes = sorted(set(self.sources) & set(self.reporting_tables))
        if clashes:
            raise ValueError(
                f"sources and reporting_tables share the names {clashes}: give them different names"
            )
        if self.entity.population not in self.reporting_tables:
            raise ValueError(
                f"entity.population {self.entity.population!r} is not one of the reporting_tables "
                f"{sorted(self.reporting_tables)}"
            )
        seen: dict[str, str] = {}
        key_columns = []
        for column in self.wide_table.columns:
            if column.table not in self.reporting_tables:
                raise ValueError(
                    f"wide_table column {column.wide_name!r} comes from {column.source!r}, but "
                    f"{column.table!r} is not one of the reporting_tables {sorted(self.reporting_tables)}"
                )
            _check_identifier(column.wide_name, "wide_table column name")
            if column.wide_name in seen:
                raise ValueError(
                    f"wide_table has two columns named {column.wide_name!r} (from {seen[column.wide_name]!r} "
                    f"and {column.source!r}): give one of them a 'name'"
                )
            seen[column.wide_name] = column.source
            if column.column == self.entity.key:
                key_columns.append(column)
        population_key = f"{self.entity.population}.{self.entity.key}"
        if not any(
            c.source == population_key and isinstance(c, IdentifierColumn) for c in key_columns
        ):
            raise ValueError(
                f"wide_table must hold the entity key as an identifier column: "
                f"add {{from: {population_key}, role: identifier}}"
            )
        modelled = {c.wide_name: c for c in self.wide_table.columns if not isinstance(c, IdentifierColumn)}
        for target in self.evaluation.targets:
            if target.column not in modelled:
                raise ValueError(
                    f"evaluation.targets names {target.column!r}, which is not a modelled wide_table column "
                    f"(one of {sorted(modelled)[:10]}...)"
                )
            if target.task == "regression" and not isinstance(modelled[target.column], NumericColumn):
                raise ValueError(f"evaluation target {target.column!r} is categorical: use task: classification")
        unknown = [c for c in self.evaluation.sensitive_columns if c not in modelled]
        if unknown:
            raise ValueError(f"evaluation.sensitive_columns names {unknown}, which are not modelled wide_table columns")
        for column in key_columns:
            if column.name not in (None, self.entity.key):
                raise ValueError(
                    f"the entity key column keeps its name {self.entity.key!r} in the wide table: "
                    f"remove name: {column.name!r}"
                )
            if column.source != population_key:
                raise ValueError(
                    f"wide_table column {column.source!r} repeats the entity key; the key comes once, "
                    f"from {population_key!r}"
                )
        return self

    # ---------------------------------------------------------------------------------- conveniences

    def columns_of(self, table: str) -> list[WideColumn]:
        """Wide-table columns that come from ``table``, the entity key excluded."""
        return [
            c for c in self.wide_table.columns if c.table == table and c.column != self.entity.key
        ]

    @property
    def key_column(self) -> IdentifierColumn:
        return next(
            c
            for c in self.wide_table.columns
            if isinstance(c, IdentifierColumn) and c.column == self.entity.key
        )

    @property
    def modelled_columns(self) -> list[CategoricalColumn | NumericColumn]:
        """Columns a generator synthesises (categorical, numeric, date and timestamp: a
        :class:`DateColumn` is a :class:`NumericColumn`), in wide-table order."""
        return [
            c for c in self.wide_table.columns if isinstance(c, (CategoricalColumn, NumericColumn))
        ]

    def resolve(self, directory: Path, relative: str) -> Path:
        path = Path(relative)
        return path if path.is_absolute() else directory / path


# ------------------------------------------------------------------------------------------ queries

QueryType = Literal["aggregate", "distribution", "ranking", "coverage"]


class _ColumnBase(_Strict):
    """How one value column of a query is scored: an entry of the query's ``columns``."""

    ignore: bool = Field(
        default=False,
        description="Not scored: a context column (a group count) the analyst does not judge by.",
    )

    @model_validator(mode="after")
    def _ignored_has_no_settings(self) -> _ColumnBase:
        if self.ignore and (
            getattr(self, "threshold", None) is not None or getattr(self, "floor", None) is not None
        ):
            raise ValueError(
                "an ignored column is not scored: give it a threshold (or floor) or ignore it, not both"
            )
        return self


class AggregateColumn(_ColumnBase):
    threshold: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="This column's max_relative_error."
    )
    floor: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="This column's relative-error floor."
    )


def _refuse_floor(value: float | None, query_type: str, metric: str) -> float | None:
    if value is not None:
        raise ValueError(
            f"floor applies to aggregate queries only (their relative error |s - r| / max(|r|, floor)); "
            f"a {query_type} query scores a column by {metric}: leave floor out"
        )
    return value


class DistributionColumn(_ColumnBase):
    threshold: float | None = Field(default=None, gt=0, le=1, description="This column's max_tvd.")
    floor: float | None = None

    @field_validator("floor")
    @classmethod
    def _no_floor(cls, value: float | None) -> float | None:
        return _refuse_floor(value, "distribution", "total variation distance")


class RankingColumn(_ColumnBase):
    threshold: float | None = Field(
        default=None, ge=-1, le=1, description="This column's min_spearman."
    )
    floor: float | None = None

    @field_validator("floor")
    @classmethod
    def _no_floor(cls, value: float | None) -> float | None:
        return _refuse_floor(value, "ranking", "Spearman's rho")


class _QueryBase(_Strict):
    name: str
    description: str = ""
    sql: str = Field(description="DuckDB SQL over the reporting tables.")
    keys: list[str] = Field(
        default_factory=list,
        description="Output columns that identify a group; the other columns are values.",
    )
    columns: dict[str, Any] = Field(
        default_factory=dict,
        description="Per value column: its own threshold (and floor), or ignore: true (not scored).",
    )
    pass_when: Literal["half", "all"] = Field(
        default="half",
        description="The query passes when at least half (or all) of its metrics meet their thresholds.",
    )
    group_size: str | None = Field(
        default=None,
        description="Value column holding each group's number of entities (a count): errors are "
        "reported by group size. Default: a distribution query's first value column.",
    )

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, value: str) -> str:
        return _check_identifier(value, "query name")

    @model_validator(mode="after")
    def _settings_name_value_columns(self) -> _QueryBase:
        keys = [k for k in self.columns if k in self.keys]
        if keys:
            raise ValueError(
                f"columns {keys} are keys of the query: a key names a group and is not scored; "
                "'columns' sets the scoring of value columns only"
            )
        if self.group_size is not None and self.group_size in self.keys:
            raise ValueError(
                f"group_size {self.group_size!r} is a key of the query: it must name the value column "
                "that holds each group's number of entities (a count(*) output)"
            )
        return self


class AggregateQuery(_QueryBase):
    type: Literal["aggregate"]
    columns: dict[str, AggregateColumn] = Field(
        default_factory=dict,
        description="Per value column: threshold (its max_relative_error), floor, or ignore: true.",
    )
    max_relative_error: float = Field(default=0.1, gt=0)
    floor: float = Field(
        default=1.0, gt=0, description="Relative error is |s - r| / max(|r|, floor)."
    )


class DistributionQuery(_QueryBase):
    type: Literal["distribution"]
    columns: dict[str, DistributionColumn] = Field(
        default_factory=dict,
        description="Per value column: threshold (its max_tvd) or ignore: true.",
    )
    max_tvd: float = Field(default=0.1, gt=0, le=1)

    @field_validator("keys")
    @classmethod
    def _needs_keys(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("a distribution query needs keys: the columns that name each group")
        return value


class RankingQuery(_QueryBase):
    type: Literal["ranking"]
    columns: dict[str, RankingColumn] = Field(
        default_factory=dict,
        description="Per value column: threshold (its min_spearman) or ignore: true.",
    )
    min_spearman: float = Field(default=0.5, ge=-1, le=1)
    descending: bool = Field(default=True, description="Rank 1 is the largest value.")

    @field_validator("keys")
    @classmethod
    def _needs_keys(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("a ranking query needs keys: the columns that name each ranked item")
        return value


class CoverageQuery(_QueryBase):
    type: Literal["coverage"]
    min_jaccard: float = Field(default=0.5, ge=0, le=1)

    @field_validator("keys")
    @classmethod
    def _needs_keys(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("a coverage query needs keys: the columns that name each group")
        return value

    @field_validator("columns")
    @classmethod
    def _no_columns(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value:
            raise ValueError(
                "a coverage query has one metric, the Jaccard similarity of its group sets, and no "
                "value columns to set: leave 'columns' out and set min_jaccard"
            )
        return value

    @field_validator("group_size")
    @classmethod
    def _no_group_size(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError(
                "a coverage query scores the set of its groups, not values per group: leave "
                "group_size out"
            )
        return value


Query = Annotated[
    AggregateQuery | DistributionQuery | RankingQuery | CoverageQuery, Field(discriminator="type")
]

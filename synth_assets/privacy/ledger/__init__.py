"""Privacy budget ledger: every DP release from a dataset's private data, kept in its DuckDB warehouse.

What is recorded
----------------
Every materialization of a DP asset from private data is a *release* and releases compose (an epsilon
grid of 0.5, 1, 2, 4 on one dataset spends the composition of all four, and each partition's PE run and
its independent-marginals reference are two releases). The ledger keeps one row per distinct release in
the table ``ledger.releases`` of the dataset's warehouse file (:func:`synth_assets.warehouse.warehouse_path`)
and one row per attempt to record (each materialization) in ``ledger.materializations``.

A release is a Gaussian mechanism on ``histograms`` histograms of L2 sensitivity 1 with noise ``sigma``
each (add/remove-one-entity neighbouring, :mod:`synth_assets.privacy.accounting`), so it is exactly mu-GDP with
``mu = sqrt(histograms) / sigma``. Only (sigma, histograms, delta) are stored; mu and every total are
computed from the stored rows when asked, never kept as counters.

Identity: re-running is free, re-sampling is not
------------------------------------------------
A release's identity is a digest of the dataset name and fingerprint, the mechanism kind, its parameters
(epsilon target, delta, sigma, histograms, T, and a free ``parameters`` mapping for everything else that
determines the output: the PE config, the candidate API, the entity fraction, ...), a digest of the
private input (:func:`synth_assets.pe.evolution.data_fingerprint`) and the seed. Re-running with the same seed on unchanged data
recomputes exactly the same noisy output: publishing it again reveals nothing new, so it is recorded once
(``insert ... on conflict do nothing`` on the identity) and the repeat is counted. Anything that changes
the output (another seed, other data, another sigma) is a new release and is charged. This rule is only
sound when the release is a deterministic function of what enters the identity: a non-deterministic
input (an LLM candidate API at temperature > 0, say) must enter ``parameters`` (e.g. a digest of the
candidate pool) or each run is wrongly treated as free.

Charging rule: per dataset NAME, not per fingerprint
----------------------------------------------------
Totals and the budget are per dataset name. The fingerprint (a hash of the spec, SQL and query files)
changes whenever the *definition* of the data changes (an edited query, new public bins, a comment in
dataset.yaml), but the people in the data are the same: charging per fingerprint would hand out a fresh
budget after every edit, which makes the budget meaningless. The fingerprint is still recorded on every
row (and enters the identity, since a new definition can change the release) and :func:`ledger_view`
shows how many fingerprints a dataset's releases span. Caveats: renaming a dataset, or deleting its
warehouse file, starts a new ledger; two different datasets given the same name share a budget (the
safe direction).

Totals
------
``spent`` composes the recorded releases with GDP, ``mu = sqrt(sum mu_i^2)``, and converts mu to epsilon
at the dataset's delta (:func:`synth_assets.privacy.accounting.epsilon_for_mu`). It also shows the simple sum of
each release's own epsilon (basic composition, valid at the sum of the deltas): always at least the GDP
figure, and much larger when there are many releases.

Budget
------
:func:`check_budget` (or :meth:`PrivacyLedger.charge`, which checks and records in one transaction) is
called BEFORE a DP asset touches private data. It raises :class:`BudgetExceeded` when the recorded
releases composed with the planned ones (those not recorded yet: identical identities are free) exceed
the budget ``privacy.budget_epsilon`` at the dataset's delta.

Concurrency
-----------
DuckDB lets one process at a time open a database file for writing. Opened on a path, the ledger opens,
works and closes on every call, retrying with exponential backoff (and jitter) while another process
holds the file's lock, as dagster_duckdb's DuckDBResource does; calls from threads of one process are
serialised by a lock per file. Opened on a ``duckdb`` connection, it uses that connection as is (the
caller owns it; it must not be inside an open transaction).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb
import polars as pl

from synth_assets.privacy.accounting import compose_mu, epsilon_for_mu, mu_for_epsilon
from synth_assets.sql import fetch_polars

if TYPE_CHECKING:  # imported for annotations only: the ledger must not depend on the PE code at run time
    from synth_assets.datasets.loading import Dataset
    from synth_assets.pe.evolution import BudgetSplit, Release

__all__ = [
    "BudgetCheck",
    "BudgetExceeded",
    "LedgerBusy",
    "LedgerRelease",
    "PrivacyLedger",
    "Spent",
    "check_budget",
    "format_ledger",
    "ledger_view",
    "pe_run_releases",
]

SCHEMA = "ledger"
RELEASES_TABLE = f"{SCHEMA}.releases"
MATERIALIZATIONS_TABLE = f"{SCHEMA}.materializations"

# Relative slack when comparing a composed epsilon with the budget: a release calibrated exactly to the
# remaining budget must pass despite root-finding round-off.
_BUDGET_TOLERANCE = 1e-9
_IDENTITY_VERSION = 1
_MAX_SEED = 2**63 - 1

_DDL = f"""
create schema if not exists {SCHEMA};
create table if not exists {RELEASES_TABLE} (
    identity      varchar primary key,
    dataset       varchar not null,
    fingerprint   varchar not null,
    kind          varchar not null,
    epsilon       double not null,   -- the (epsilon, delta) target of the partition/run
    delta         double not null,
    sigma         double not null,   -- noise of each histogram
    histograms    integer not null,  -- mu = sqrt(histograms) / sigma
    T             integer,           -- PE iterations of the run (NULL if not a PE release)
    seed          bigint not null,
    data_digest   varchar,           -- digest of the private input, see pe.evolution.data_fingerprint()
    parameters    varchar not null,  -- JSON: everything else that determines the release
    run_id        varchar,           -- the run that first recorded it
    partition_key varchar,
    recorded_at   timestamp not null -- UTC
);
create table if not exists {MATERIALIZATIONS_TABLE} (
    identity      varchar not null,
    dataset       varchar not null,
    run_id        varchar,
    partition_key varchar,
    recorded_at   timestamp not null, -- UTC
    new           boolean not null    -- false: a repeat of a recorded release, not charged
);
"""

_RELEASE_SCHEMA: dict[str, pl.DataType] = {
    "identity": pl.Utf8(),
    "dataset": pl.Utf8(),
    "fingerprint": pl.Utf8(),
    "kind": pl.Utf8(),
    "epsilon": pl.Float64(),
    "delta": pl.Float64(),
    "sigma": pl.Float64(),
    "histograms": pl.Int32(),
    "mu": pl.Float64(),
    "release_epsilon": pl.Float64(),
    "T": pl.Int32(),
    "seed": pl.Int64(),
    "data_digest": pl.Utf8(),
    "parameters": pl.Utf8(),
    "run_id": pl.Utf8(),
    "partition_key": pl.Utf8(),
    "recorded_at": pl.Datetime("us"),
    "repeats": pl.Int64(),
    "last_seen_at": pl.Datetime("us"),
}

_MATERIALIZATION_SCHEMA: dict[str, pl.DataType] = {
    "identity": pl.Utf8(),
    "dataset": pl.Utf8(),
    "run_id": pl.Utf8(),
    "partition_key": pl.Utf8(),
    "recorded_at": pl.Datetime("us"),
    "new": pl.Boolean(),
}

_VIEW_SCHEMA: dict[str, pl.DataType] = {
    "dataset": pl.Utf8(),
    "releases": pl.Int64(),
    "repeats": pl.Int64(),
    "fingerprints": pl.Int64(),
    "mu": pl.Float64(),
    "delta": pl.Float64(),
    "epsilon_gdp": pl.Float64(),
    "epsilon_sum": pl.Float64(),
    "budget": pl.Float64(),
    "remaining": pl.Float64(),
}


class BudgetExceeded(RuntimeError):
    """Materializing would spend more than the dataset's privacy budget. Nothing was recorded."""

    def __init__(self, check: BudgetCheck):
        self.check = check
        super().__init__(check.explain())

    def __reduce__(self):  # picklable although __init__ takes the check, not the message
        return (type(self), (self.check,))


class LedgerBusy(RuntimeError):
    """Another process kept the ledger's DuckDB file locked for longer than the ledger waits."""


# ---------------------------------------------------------------------------------------------- records


def _canonical(value: Any) -> Any:
    """A JSON-stable form: floats to 12 significant digits (round-off must not change an identity)."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return format(value, ".12g")
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if hasattr(value, "model_dump"):  # pydantic models (a PEConfig)
        return _canonical(value.model_dump())
    if hasattr(value, "item"):  # numpy scalars
        return _canonical(value.item())
    return str(value)


def _positive_finite(value: Any, name: str) -> float:
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return number


@dataclass(frozen=True)
class LedgerRelease:
    """One DP release from a dataset's private data, as the ledger records it.

    ``epsilon`` and ``delta`` are the target of the run/partition the release belongs to; the release's
    own privacy follows from ``sigma`` and ``histograms`` (``mu = sqrt(histograms) / sigma``).
    ``run_id`` and ``partition_key`` say where it was materialized and are not part of the identity.
    """

    dataset: str
    fingerprint: str
    kind: str
    epsilon: float
    delta: float
    sigma: float
    histograms: int
    T: int | None
    seed: int
    run_id: str | None = None
    partition_key: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict, hash=False)
    data_digest: str | None = None

    def __post_init__(self) -> None:
        if not self.dataset or not self.fingerprint or not self.kind:
            raise ValueError("a release needs a dataset name, a fingerprint and a kind")
        object.__setattr__(self, "epsilon", _positive_finite(self.epsilon, "epsilon"))
        delta = float(self.delta)
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta must lie strictly between 0 and 1, got {self.delta!r}")
        object.__setattr__(self, "delta", delta)
        object.__setattr__(self, "sigma", _positive_finite(self.sigma, "sigma"))
        if isinstance(self.histograms, bool) or int(self.histograms) != self.histograms or self.histograms < 1:
            raise ValueError(f"histograms must be an integer >= 1, got {self.histograms!r}")
        object.__setattr__(self, "histograms", int(self.histograms))
        if self.T is not None:
            if isinstance(self.T, bool) or int(self.T) != self.T or self.T < 1:
                raise ValueError(f"T must be an integer >= 1 or None, got {self.T!r}")
            object.__setattr__(self, "T", int(self.T))
        if isinstance(self.seed, bool) or int(self.seed) != self.seed or not 0 <= self.seed <= _MAX_SEED:
            raise ValueError(f"seed must be an integer in [0, 2^63), got {self.seed!r}")
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "parameters", _canonical(dict(self.parameters)))

    @property
    def mu(self) -> float:
        return math.sqrt(self.histograms) / self.sigma

    @property
    def release_epsilon(self) -> float:
        """This release's own epsilon at its delta."""
        return epsilon_for_mu(self.mu, self.delta)

    @property
    def identity(self) -> str:
        """Digest of everything that determines the release's output (not of where it was run)."""
        payload = {
            "v": _IDENTITY_VERSION,
            "dataset": self.dataset,
            "fingerprint": self.fingerprint,
            "kind": self.kind,
            "epsilon": _canonical(self.epsilon),
            "delta": _canonical(self.delta),
            "sigma": _canonical(self.sigma),
            "histograms": self.histograms,
            "T": self.T,
            "seed": self.seed,
            "parameters": self.parameters,
            "data_digest": self.data_digest,
        }
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    # ------------------------------------------------------------------------------------ constructors

    @classmethod
    def for_dataset(cls, dataset: Dataset, **fields: Any) -> LedgerRelease:
        """A release of ``dataset``: its name and fingerprint filled in, every other field as given."""
        return cls(dataset=dataset.name, fingerprint=dataset.fingerprint, **fields)

    @classmethod
    def from_pe_release(
        cls,
        release: Release,
        *,
        dataset: str,
        fingerprint: str,
        epsilon: float,
        delta: float,
        T: int | None,
        run_id: str | None = None,
        partition_key: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        data_digest: str | None = None,
    ) -> LedgerRelease:
        """From one :class:`synth_assets.pe.evolution.Release` (kind, sigma, histograms and seed)."""
        return cls(
            dataset=dataset,
            fingerprint=fingerprint,
            kind=release.kind,
            epsilon=epsilon,
            delta=delta,
            sigma=release.sigma,
            histograms=release.histograms,
            T=T,
            seed=release.seed,
            run_id=run_id,
            partition_key=partition_key,
            parameters=parameters or {},
            data_digest=data_digest,
        )


def pe_run_releases(
    dataset: Dataset,
    split: BudgetSplit,
    *,
    seed: int,
    run_id: str | None = None,
    partition_key: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    data_digest: str | None = None,
) -> dict[str, LedgerRelease]:
    """The releases a PE run will make, known from its budget split before any private data is read.

    ``{"marginal_prior": ..., "nn_histogram": ...}`` (no prior when the split has none): the prior is
    ``prior_histograms`` histograms with ``prior_sigma``; the T vote histograms are one release of
    ``T`` histograms with ``sigma`` (one materialization of dp_histogram). Together they compose to the
    split's (epsilon, delta).
    """
    common = {
        "epsilon": split.epsilon,
        "delta": split.delta,
        "T": split.iterations,
        "seed": seed,
        "run_id": run_id,
        "partition_key": partition_key,
        "parameters": parameters or {},
        "data_digest": data_digest,
    }
    releases = {}
    if split.prior_histograms and split.prior_sigma:
        releases["marginal_prior"] = LedgerRelease.for_dataset(
            dataset, kind="marginal_prior", sigma=split.prior_sigma, histograms=split.prior_histograms, **common
        )
    releases["nn_histogram"] = LedgerRelease.for_dataset(
        dataset, kind="nn_histogram", sigma=split.sigma, histograms=split.iterations, **common
    )
    return releases


# ---------------------------------------------------------------------------------------------- totals


@dataclass(frozen=True)
class Spent:
    """What a dataset's recorded releases spend together, computed from the rows."""

    dataset: str
    delta: float  # delta at which epsilon_gdp is given
    mu: float  # sqrt(sum mu_i^2)
    epsilon_gdp: float  # epsilon_for_mu(mu, delta)
    epsilon_sum: float  # sum of each release's own epsilon at its own delta (basic composition)
    delta_sum: float  # delta of the basic-composition figure
    releases: int
    repeats: int  # materializations that reproduced a recorded release (not charged)
    fingerprints: int


def _spent_from(dataset: str, frame: pl.DataFrame, delta: float) -> Spent:
    mus = frame["mu"].to_list() if frame.height else []
    mu = compose_mu(mus)
    return Spent(
        dataset=dataset,
        delta=delta,
        mu=mu,
        epsilon_gdp=epsilon_for_mu(mu, delta),
        epsilon_sum=float(sum(frame["release_epsilon"].to_list())) if frame.height else 0.0,
        delta_sum=float(sum(frame["delta"].to_list())) if frame.height else 0.0,
        releases=frame.height,
        repeats=int(frame["repeats"].sum()) if frame.height else 0,
        fingerprints=frame["fingerprint"].n_unique() if frame.height else 0,
    )


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


@dataclass(frozen=True)
class BudgetCheck:
    """The outcome of composing planned releases with what a dataset has spent."""

    dataset: str
    delta: float
    budget_epsilon: float | None
    spent: Spent
    planned: tuple[LedgerRelease, ...]  # every planned release (deduplicated)
    new: tuple[LedgerRelease, ...]  # those not recorded yet: the ones that cost budget
    planned_mu: float  # GDP composition of the new releases alone
    planned_epsilon: float  # their epsilon at delta, alone
    planned_epsilon_sum: float  # sum of their own epsilons
    total_mu: float  # spent and new, composed
    total_epsilon: float
    total_epsilon_sum: float

    @property
    def already_recorded(self) -> tuple[LedgerRelease, ...]:
        new = {r.identity for r in self.new}
        return tuple(r for r in self.planned if r.identity not in new)

    @property
    def exceeded(self) -> bool:
        if self.budget_epsilon is None:
            return False
        return self.total_epsilon > self.budget_epsilon * (1.0 + _BUDGET_TOLERANCE)

    @property
    def remaining(self) -> float | None:
        """Budget minus what is spent (before this materialization), in epsilon at delta."""
        return None if self.budget_epsilon is None else self.budget_epsilon - self.spent.epsilon_gdp

    @property
    def remaining_after(self) -> float | None:
        return None if self.budget_epsilon is None else self.budget_epsilon - self.total_epsilon

    @property
    def largest_next_epsilon(self) -> float | None:
        """The largest epsilon (at delta) one more release could have on top of what is spent.

        GDP composition is not additive in epsilon: this is usually more than ``remaining``.
        """
        if self.budget_epsilon is None:
            return None
        spare = mu_for_epsilon(self.budget_epsilon, self.delta) ** 2 - self.spent.mu**2
        return epsilon_for_mu(math.sqrt(spare), self.delta) if spare > 0 else 0.0

    def explain(self) -> str:
        spent = self.spent
        kinds = ", ".join(
            f"{r.kind} (epsilon target {r.epsilon:g}, sigma {r.sigma:.4g}, {r.histograms} histogram"
            f"{'s' if r.histograms != 1 else ''}, mu {r.mu:.4f})"
            for r in self.new
        ) or "nothing new"
        free = len(self.planned) - len(self.new)
        budget = "none" if self.budget_epsilon is None else _f(self.budget_epsilon)
        verdict = "would be exceeded" if self.exceeded else "check"
        already = f"; {free} planned release{'s' if free != 1 else ''} already recorded (free)" if free else ""
        lines = [
            (
                f"privacy budget of dataset {self.dataset!r} {verdict} (epsilon at delta {self.delta:g}, "
                f"GDP composition; budget {budget}):"
            ),
            (
                f"  spent:   epsilon {_f(spent.epsilon_gdp)} (mu {spent.mu:.4f}) over {spent.releases} recorded "
                f"release{'s' if spent.releases != 1 else ''}; simple sum of epsilons {_f(spent.epsilon_sum)}"
            ),
            (
                f"  planned: this materialization would spend epsilon {_f(self.planned_epsilon)} on its own "
                f"(mu {self.planned_mu:.4f}; simple sum {_f(self.planned_epsilon_sum)}) in {len(self.new)} new "
                f"release{'s' if len(self.new) != 1 else ''}: {kinds}{already}"
            ),
            (
                f"  total:   epsilon {_f(self.total_epsilon)} (mu {self.total_mu:.4f}); simple sum "
                f"{_f(self.total_epsilon_sum)}"
            ),
        ]
        if self.budget_epsilon is not None:
            lines.append(
                f"  remaining: epsilon {_f(self.remaining)} of {_f(self.budget_epsilon)} (budget minus spent); "
                f"one more release of at most epsilon {_f(self.largest_next_epsilon)} would fit"
            )
        if self.exceeded:
            lines.append(
                "  Nothing was released. Re-use a recorded run (same seed, data and settings cost nothing), "
                "release fewer epsilons, or raise privacy.budget_epsilon in the dataset spec if the data "
                "owner agrees."
            )
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- ledger

_T = TypeVar("_T")
_PATH_LOCKS: dict[str, threading.RLock] = {}
_PATH_LOCKS_GUARD = threading.Lock()


def _path_lock(key: str) -> threading.RLock:
    with _PATH_LOCKS_GUARD:
        return _PATH_LOCKS.setdefault(key, threading.RLock())


def _is_lock_error(error: Exception) -> bool:
    text = str(error).lower()
    return "lock" in text or "conflicting" in text


class PrivacyLedger:
    """The privacy ledger of the datasets whose warehouse is ``database`` (a path or a connection)."""

    def __init__(
        self,
        database: str | Path | duckdb.DuckDBPyConnection,
        *,
        lock_timeout: float = 120.0,
        connection_config: Mapping[str, Any] | None = None,
    ):
        if isinstance(database, duckdb.DuckDBPyConnection):
            self.path: Path | None = None
            self._connection: duckdb.DuckDBPyConnection | None = database
            self._lock = _path_lock(f"connection:{id(database)}")
        else:
            if str(database) == ":memory:":
                raise ValueError(
                    "a ':memory:' path would open a new empty database on every call: pass a duckdb "
                    "connection instead"
                )
            self.path = Path(database).expanduser().resolve()
            self._connection = None
            self._lock = _path_lock(str(self.path))
        self.lock_timeout = lock_timeout
        self.connection_config = dict(connection_config or {})

    @classmethod
    def for_dataset(cls, dataset_name: str, **options: Any) -> PrivacyLedger:
        """The ledger in the dataset's warehouse file (:func:`synth_assets.warehouse.warehouse_path`)."""
        from synth_assets.warehouse import warehouse_path

        return cls(warehouse_path(dataset_name), **options)

    def __repr__(self) -> str:
        return f"PrivacyLedger({str(self.path) if self.path else '<connection>'!r})"

    # --------------------------------------------------------------------------------- connections

    def _open(self) -> duckdb.DuckDBPyConnection:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        configs = [self.connection_config]
        if "custom_user_agent" not in self.connection_config:
            # One process may only hold connections of one configuration to a file; dagster_duckdb opens
            # its connections with this user agent, so fall back to it if one of those is open.
            configs.append({**self.connection_config, "custom_user_agent": "dagster"})
        deadline = time.monotonic() + self.lock_timeout
        attempt = 0
        while True:
            try:
                for i, config in enumerate(configs):
                    try:
                        return duckdb.connect(str(self.path), read_only=False, config=dict(config))
                    except duckdb.ConnectionException as error:
                        if "different configuration" not in str(error) or i == len(configs) - 1:
                            raise
            except duckdb.IOException as error:
                if not _is_lock_error(error):
                    raise
                if time.monotonic() >= deadline:
                    raise LedgerBusy(
                        f"could not open the privacy ledger {self.path} within {self.lock_timeout:g} s: "
                        f"another process holds the DuckDB file lock ({error})"
                    ) from error
                delay = min(2.0, 0.02 * 2**attempt) * (0.5 + random.random())
                time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
                attempt += 1

    @contextmanager
    def _session(self, *, create: bool):
        """A connection for one call (None when reading a ledger that does not exist yet)."""
        with self._lock:
            if self._connection is not None:
                if create:
                    self._connection.execute(_DDL)
                yield self._connection
                return
            assert self.path is not None
            if not create and not self.path.exists():
                yield None
                return
            connection = self._open()
            try:
                if create:
                    connection.execute(_DDL)
                yield connection
            finally:
                connection.close()

    def _transaction(self, body: Callable[[duckdb.DuckDBPyConnection], _T], *, retries: int = 5) -> _T:
        for attempt in range(retries + 1):
            with self._session(create=True) as connection:
                connection.execute("begin transaction")
                try:
                    result = body(connection)
                except BaseException:
                    connection.execute("rollback")
                    raise
                try:
                    connection.execute("commit")
                    return result
                except duckdb.TransactionException:
                    if attempt == retries:
                        raise
            time.sleep(0.01 * 2**attempt)
        raise AssertionError("unreachable")

    # --------------------------------------------------------------------------------- reading

    @staticmethod
    def _tables_exist(connection: duckdb.DuckDBPyConnection) -> bool:
        count = connection.execute(
            "select count(*) from information_schema.tables where table_schema = ? "
            "and table_name in ('releases', 'materializations')",
            [SCHEMA],
        ).fetchall()[0][0]
        return count == 2

    @staticmethod
    def _read_releases(connection: duckdb.DuckDBPyConnection | None, dataset: str | None) -> pl.DataFrame:
        if connection is None or not PrivacyLedger._tables_exist(connection):
            return pl.DataFrame(schema=_RELEASE_SCHEMA)
        frame = fetch_polars(
            connection,
            f"""
            select r.identity, r.dataset, r.fingerprint, r.kind, r.epsilon, r.delta, r.sigma, r.histograms,
                   sqrt(r.histograms) / r.sigma as mu, r.T, r.seed, r.data_digest, r.parameters, r.run_id,
                   r.partition_key, r.recorded_at,
                   coalesce(m.repeats, 0) as repeats, coalesce(m.last_seen_at, r.recorded_at) as last_seen_at
            from {RELEASES_TABLE} r
            left join (
                select identity, count(*) filter (where not new) as repeats, max(recorded_at) as last_seen_at
                from {MATERIALIZATIONS_TABLE} group by identity
            ) m on m.identity = r.identity
            where ?::varchar is null or r.dataset = ?::varchar
            order by r.dataset, r.recorded_at, r.identity
            """,
            [dataset, dataset],
        )
        own = [epsilon_for_mu(m, d) for m, d in zip(frame["mu"].to_list(), frame["delta"].to_list())]
        frame = frame.with_columns(pl.Series("release_epsilon", own, dtype=pl.Float64))
        return frame.select(list(_RELEASE_SCHEMA)).cast(_RELEASE_SCHEMA)

    @staticmethod
    def _recorded(connection: duckdb.DuckDBPyConnection, identities: Sequence[str]) -> set[str]:
        if not identities:
            return set()
        rows = connection.execute(
            f"select identity from {RELEASES_TABLE} where identity in (select unnest(?::varchar[]))",
            [list(identities)],
        ).fetchall()
        return {row[0] for row in rows}

    def releases(self, dataset: str | None = None) -> pl.DataFrame:
        """The recorded releases (of one dataset name, or all), oldest first, with mu, each release's own
        epsilon at its delta (``release_epsilon``) and how often it was re-materialized (``repeats``)."""
        with self._session(create=False) as connection:
            return self._read_releases(connection, dataset)

    def materializations(self, dataset: str | None = None) -> pl.DataFrame:
        """Every recording attempt, oldest first; ``new`` is false for repeats (not charged)."""
        with self._session(create=False) as connection:
            if connection is None or not self._tables_exist(connection):
                return pl.DataFrame(schema=_MATERIALIZATION_SCHEMA)
            frame = fetch_polars(
                connection,
                f"select identity, dataset, run_id, partition_key, recorded_at, new "
                f"from {MATERIALIZATIONS_TABLE} where ?::varchar is null or dataset = ?::varchar "
                f"order by recorded_at",
                [dataset, dataset],
            )
            return frame.cast(_MATERIALIZATION_SCHEMA)

    def datasets(self) -> list[str]:
        return sorted(self.releases()["dataset"].unique().to_list())

    def spent(self, dataset: str, delta: float) -> Spent:
        """What the releases recorded under the dataset NAME spend together, epsilon given at ``delta``."""
        return _spent_from(dataset, self.releases(dataset), float(delta))

    def is_recorded(self, release: LedgerRelease) -> bool:
        with self._session(create=False) as connection:
            if connection is None or not self._tables_exist(connection):
                return False
            return bool(self._recorded(connection, [release.identity]))

    # --------------------------------------------------------------------------------- budget

    def _check(
        self,
        connection: duckdb.DuckDBPyConnection | None,
        dataset: str,
        planned: Iterable[LedgerRelease],
        delta: float,
        budget_epsilon: float | None,
    ) -> BudgetCheck:
        delta = float(delta)
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta must lie strictly between 0 and 1, got {delta!r}")
        if budget_epsilon is not None:
            budget_epsilon = _positive_finite(budget_epsilon, "budget_epsilon")
        unique: dict[str, LedgerRelease] = {}
        for release in planned:
            if release.dataset != dataset:
                raise ValueError(
                    f"a planned {release.kind} release belongs to dataset {release.dataset!r}, not {dataset!r}"
                )
            unique.setdefault(release.identity, release)
        frame = self._read_releases(connection, dataset)
        spent = _spent_from(dataset, frame, delta)
        recorded = set(frame["identity"].to_list())
        new = tuple(r for i, r in unique.items() if i not in recorded)
        planned_mu = compose_mu(r.mu for r in new)
        total_mu = compose_mu([spent.mu, planned_mu])
        planned_sum = float(sum(r.release_epsilon for r in new))
        return BudgetCheck(
            dataset=dataset,
            delta=delta,
            budget_epsilon=budget_epsilon,
            spent=spent,
            planned=tuple(unique.values()),
            new=new,
            planned_mu=planned_mu,
            planned_epsilon=epsilon_for_mu(planned_mu, delta),
            planned_epsilon_sum=planned_sum,
            total_mu=total_mu,
            total_epsilon=epsilon_for_mu(total_mu, delta),
            total_epsilon_sum=spent.epsilon_sum + planned_sum,
        )

    def check(
        self,
        dataset: str,
        planned: Iterable[LedgerRelease],
        delta: float,
        budget_epsilon: float | None,
    ) -> BudgetCheck:
        """Compose ``planned`` (minus what is recorded) with what ``dataset`` has spent; raise
        :class:`BudgetExceeded` if that exceeds ``budget_epsilon`` at ``delta`` (None: no budget)."""
        with self._session(create=False) as connection:
            result = self._check(connection, dataset, list(planned), delta, budget_epsilon)
        if result.exceeded:
            raise BudgetExceeded(result)
        return result

    def charge(
        self,
        releases: Sequence[LedgerRelease],
        *,
        delta: float,
        budget_epsilon: float | None,
        upcoming: Sequence[LedgerRelease] = (),
    ) -> BudgetCheck:
        """Check the budget and record ``releases`` in one transaction (no other writer can slip in
        between). ``upcoming`` releases (the rest of the run, e.g. the vote histograms when charging
        the prior) count in the check but are not recorded. Raises :class:`BudgetExceeded` and records
        nothing when the budget does not allow it."""
        releases = list(releases)
        everything = releases + list(upcoming)
        if not everything:
            raise ValueError("nothing to charge")
        datasets = {r.dataset for r in everything}
        if len(datasets) != 1:
            raise ValueError(f"a charge covers one dataset, got {sorted(datasets)}")
        (dataset,) = datasets

        def body(connection: duckdb.DuckDBPyConnection) -> BudgetCheck:
            result = self._check(connection, dataset, everything, delta, budget_epsilon)
            if result.exceeded:
                raise BudgetExceeded(result)
            for release in releases:
                self._insert(connection, release)
            return result

        return self._transaction(body)

    # --------------------------------------------------------------------------------- writing

    @staticmethod
    def _insert(connection: duckdb.DuckDBPyConnection, release: LedgerRelease) -> bool:
        now = datetime.now(UTC).replace(tzinfo=None)
        identity = release.identity
        inserted = connection.execute(
            f"""
            insert into {RELEASES_TABLE} (identity, dataset, fingerprint, kind, epsilon, delta, sigma,
                histograms, T, seed, data_digest, parameters, run_id, partition_key, recorded_at)
            values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            on conflict (identity) do nothing
            """,
            [
                identity,
                release.dataset,
                release.fingerprint,
                release.kind,
                release.epsilon,
                release.delta,
                release.sigma,
                release.histograms,
                release.T,
                release.seed,
                release.data_digest,
                json.dumps(release.parameters, sort_keys=True),
                release.run_id,
                release.partition_key,
                now,
            ],
        ).fetchall()[0][0]
        new = bool(inserted)
        connection.execute(
            f"insert into {MATERIALIZATIONS_TABLE} values (?, ?, ?, ?, ?, ?)",
            [identity, release.dataset, release.run_id, release.partition_key, now, new],
        )
        return new

    def record(self, release: LedgerRelease) -> bool:
        """Record a release; True if it is new (charged), False if an identical one is recorded (the
        repeat is counted, nothing is charged)."""
        return self._transaction(lambda connection: self._insert(connection, release))

    def record_many(self, releases: Iterable[LedgerRelease]) -> list[bool]:
        releases = list(releases)
        return self._transaction(lambda connection: [self._insert(connection, r) for r in releases])


# ---------------------------------------------------------------------------------------------- functions


def _ledger(ledger: PrivacyLedger | str | Path | duckdb.DuckDBPyConnection) -> PrivacyLedger:
    return ledger if isinstance(ledger, PrivacyLedger) else PrivacyLedger(ledger)


def check_budget(
    ledger: PrivacyLedger | str | Path | duckdb.DuckDBPyConnection,
    dataset_name: str,
    planned_releases: Iterable[LedgerRelease],
    delta: float,
    budget_epsilon: float | None,
) -> BudgetCheck:
    """Raise :class:`BudgetExceeded` if the planned releases (those not recorded yet) composed with what
    ``dataset_name`` has spent exceed ``budget_epsilon`` at ``delta``; otherwise return the figures.

    Call it before touching private data. It does not record anything: use :meth:`PrivacyLedger.charge`
    to check and record atomically, or :meth:`PrivacyLedger.record` afterwards.
    """
    return _ledger(ledger).check(dataset_name, planned_releases, delta, budget_epsilon)


def _per_dataset(value: Mapping[str, float | None] | float | None, dataset: str) -> float | None:
    if isinstance(value, Mapping):
        return value.get(dataset)
    return value


def ledger_view(
    ledger: PrivacyLedger | str | Path | duckdb.DuckDBPyConnection,
    *,
    budgets: Mapping[str, float | None] | float | None = None,
    delta: Mapping[str, float] | float | None = None,
    dataset: str | None = None,
) -> pl.DataFrame:
    """One row per dataset name: releases, repeats, fingerprints, mu, the GDP epsilon at delta, the
    simple sum of the releases' epsilons, the budget and what remains (budget - GDP epsilon).

    ``delta`` (one value or per dataset) is the delta epsilon is given at; unset, the smallest delta
    recorded for the dataset (the most demanding). ``budgets`` likewise (unset: no budget).
    """
    frame = _ledger(ledger).releases(dataset)
    rows = []
    for name in sorted(frame["dataset"].unique().to_list()):
        own = frame.filter(pl.col("dataset") == name)
        at = _per_dataset(delta, name)
        at = float(own["delta"].min()) if at is None else float(at)
        spent = _spent_from(name, own, at)
        budget = _per_dataset(budgets, name)
        rows.append(
            {
                "dataset": name,
                "releases": spent.releases,
                "repeats": spent.repeats,
                "fingerprints": spent.fingerprints,
                "mu": spent.mu,
                "delta": at,
                "epsilon_gdp": spent.epsilon_gdp,
                "epsilon_sum": spent.epsilon_sum,
                "budget": None if budget is None else float(budget),
                "remaining": None if budget is None else float(budget) - spent.epsilon_gdp,
            }
        )
    return pl.DataFrame(rows, schema=_VIEW_SCHEMA)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = "  ".join(h.rjust(w) for h, w in zip(header, widths))
    out = [line, "-" * len(line)]
    out += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return out


def format_ledger(
    ledger: PrivacyLedger | str | Path | duckdb.DuckDBPyConnection,
    *,
    budgets: Mapping[str, float | None] | float | None = None,
    delta: Mapping[str, float] | float | None = None,
    dataset: str | None = None,
    details: bool = True,
) -> str:
    """A readable ledger (for ``synth-assets ledger``): each release, then the totals per dataset."""
    ledger = _ledger(ledger)
    frame = ledger.releases(dataset)
    if frame.height == 0:
        where = f" for dataset {dataset!r}" if dataset else ""
        location = f" {ledger.path}" if ledger.path else ""
        return f"privacy ledger{location}: no DP release recorded{where}"
    view = ledger_view(ledger, budgets=budgets, delta=delta, dataset=dataset)
    out = [f"privacy ledger {ledger.path}" if ledger.path else "privacy ledger"]
    for total in view.iter_rows(named=True):
        name = total["dataset"]
        out.append("")
        out.append(f"dataset {name}")
        if details:
            own = frame.filter(pl.col("dataset") == name)
            header = ["recorded (UTC)", "kind", "partition", "target eps", "delta", "sigma", "hist", "T",
                      "seed", "mu", "eps", "repeats", "run", "identity"]
            rows = [
                [
                    r["recorded_at"].strftime("%Y-%m-%d %H:%M:%S"),
                    r["kind"],
                    r["partition_key"] or "-",
                    f"{r['epsilon']:g}",
                    f"{r['delta']:.0e}",
                    f"{r['sigma']:.4g}",
                    str(r["histograms"]),
                    "-" if r["T"] is None else str(r["T"]),
                    str(r["seed"]),
                    f"{r['mu']:.4f}",
                    f"{r['release_epsilon']:.4f}",
                    str(r["repeats"]),
                    (r["run_id"] or "-")[:8],
                    r["identity"][:12],
                ]
                for r in own.iter_rows(named=True)
            ]
            out += ["  " + line for line in _table(header, rows)]
        fingerprints = total["fingerprints"]
        out.append(
            f"  total: {total['releases']} release{'s' if total['releases'] != 1 else ''} "
            f"(re-runs of a recorded release, not charged: {total['repeats']}"
            + (f"; {fingerprints} dataset fingerprints" if fingerprints > 1 else "")
            + f"), mu {total['mu']:.4f}"
        )
        out.append(
            f"  spent: epsilon {total['epsilon_gdp']:.4f} at delta {total['delta']:g} (GDP composition); "
            f"simple sum {total['epsilon_sum']:.4f}"
        )
        if total["budget"] is None:
            out.append("  budget: none set (privacy.budget_epsilon)")
        else:
            out.append(f"  budget: epsilon {total['budget']:.4f}; remaining {total['remaining']:.4f}")
    return "\n".join(out)

"""The ledger's DuckDB store: one row per release and one per materialization, in the dataset's warehouse.

Where it is kept
----------------
The ledger keeps one row per distinct release (:class:`~synth_assets.privacy.ledger.records.LedgerRelease`,
recorded once per identity) in the table ``ledger.releases`` of the dataset's warehouse file
(:func:`synth_assets.warehouse.warehouse_path`) and one row per attempt to record (each materialization) in
``ledger.materializations``.

Charging rule: per dataset NAME, not per fingerprint
----------------------------------------------------
Totals and the budget are per dataset name. The fingerprint (a hash of the spec, SQL and query files)
changes whenever the *definition* of the data changes (an edited query, new public bins, a comment in
dataset.yaml), but the people in the data are the same: charging per fingerprint would hand out a fresh
budget after every edit, which makes the budget meaningless. The fingerprint is still recorded on every
row (and enters the identity, since a new definition can change the release) and
:func:`~synth_assets.privacy.ledger.reports.ledger_view` shows how many fingerprints a dataset's releases
span. Caveats: renaming a dataset, or deleting its warehouse file, starts a new ledger; two different
datasets given the same name share a budget (the safe direction).

Budget
------
:func:`check_budget` (or :meth:`PrivacyLedger.charge`, which checks and records in one transaction) is
called BEFORE a DP asset touches private data. It raises :class:`BudgetExceeded` when the recorded
releases composed with the planned ones (those not recorded yet: identical identities are free) exceed
the budget ``privacy.budget_epsilon`` at the dataset's delta. A release already recorded is never refused
for budget: when every planned release is recorded, nothing is charged and the check passes, even if the
budget has since been lowered below what is spent (see
:attr:`~synth_assets.privacy.ledger.reports.BudgetCheck.exceeded`).

Schema and migration
--------------------
Exponential-mechanism selections (MST, AIM) added the columns ``mechanism``, ``selection_epsilon`` and
``selections`` to ``ledger.releases`` and made ``sigma`` and ``histograms`` nullable (a selection has
neither). A warehouse file written before that is migrated in place the first time a ledger opens it
(:func:`_migrate`: the columns are added, existing rows read as Gaussian releases, nothing else
changes); identities of Gaussian releases are unchanged, so recorded releases still match their re-runs.

Concurrency
-----------
DuckDB lets one process at a time open a database file for writing. Opened on a path, the ledger opens,
works and closes on every call, retrying with exponential backoff (and jitter) while another process
holds the file's lock, as dagster_duckdb's DuckDBResource does; calls from threads of one process are
serialised by a lock per file. Opened on a ``duckdb`` connection, it uses that connection as is (the
caller owns it; it must not be inside an open transaction).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import polars as pl

from synth_assets.privacy.accounting import compose, compose_releases, em_rho
from synth_assets.privacy.ledger.records import LedgerRelease, _check_delta, _positive_finite, own_epsilon
from synth_assets.privacy.ledger.reports import BudgetCheck, Spent, _ledger, _spent_from, mechanism_parts
from synth_assets.sql import fetch_polars
from synth_assets.warehouse import owner_only

SCHEMA = "ledger"
RELEASES_TABLE = f"{SCHEMA}.releases"
MATERIALIZATIONS_TABLE = f"{SCHEMA}.materializations"

_DDL = f"""
create schema if not exists {SCHEMA};
create table if not exists {RELEASES_TABLE} (
    identity      varchar primary key,
    dataset       varchar not null,
    fingerprint   varchar not null,
    kind          varchar not null,
    epsilon       double not null,   -- the (epsilon, delta) target of the partition/run
    delta         double not null,
    sigma         double,            -- noise of each histogram (NULL for a selection)
    histograms    integer,           -- mu = sqrt(histograms) / sigma (NULL for a selection)
    T             integer,           -- PE iterations of the run (NULL if not a PE release)
    seed          bigint not null,
    data_digest   varchar,           -- digest of the private input, computed by the caller
    parameters    varchar not null,  -- JSON: everything else that determines the release
    run_id        varchar,           -- the run that first recorded it
    partition_key varchar,
    recorded_at   timestamp not null, -- UTC
    mechanism     varchar default 'gaussian', -- 'gaussian' or 'exponential'
    selection_epsilon double,        -- exponential mechanism: epsilon of each selection
    selections    integer            -- exponential mechanism: number of selections
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

# Columns added after the first schema, with their DDL: added to an existing warehouse by _migrate.
_ADDED_COLUMNS = {
    "mechanism": "varchar default 'gaussian'",
    "selection_epsilon": "double",
    "selections": "integer",
}
_NULLABLE_NOW = ("sigma", "histograms")

_RELEASE_SCHEMA: dict[str, pl.DataType] = {
    "identity": pl.Utf8(),
    "dataset": pl.Utf8(),
    "fingerprint": pl.Utf8(),
    "kind": pl.Utf8(),
    "epsilon": pl.Float64(),
    "delta": pl.Float64(),
    "sigma": pl.Float64(),
    "histograms": pl.Int32(),
    "mechanism": pl.Utf8(),
    "selection_epsilon": pl.Float64(),
    "selections": pl.Int32(),
    "mu": pl.Float64(),
    "rho": pl.Float64(),
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


class BudgetExceeded(RuntimeError):
    """Materializing would spend more than the dataset's privacy budget. Nothing was recorded."""

    def __init__(self, check: BudgetCheck):
        self.check = check
        super().__init__(check.explain())

    def __reduce__(self):  # picklable although __init__ takes the check, not the message
        return (type(self), (self.check,))


class LedgerBusy(RuntimeError):
    """Another process kept the ledger's DuckDB file locked for longer than the ledger waits."""


# ---------------------------------------------------------------------------------------------- locking

_T = TypeVar("_T")
_PATH_LOCKS: dict[str, threading.RLock] = {}
_PATH_LOCKS_GUARD = threading.Lock()


def _path_lock(key: str) -> threading.RLock:
    with _PATH_LOCKS_GUARD:
        return _PATH_LOCKS.setdefault(key, threading.RLock())


def _is_lock_error(error: Exception) -> bool:
    text = str(error).lower()
    return "lock" in text or "conflicting" in text


# ---------------------------------------------------------------------------------------------- schema


def _migrate(connection: duckdb.DuckDBPyConnection) -> None:
    """Bring a ledger written before exponential-mechanism selections to the current schema: add the
    missing columns (existing rows are Gaussian releases) and let ``sigma``/``histograms`` be null."""
    rows = connection.execute(
        "select column_name, is_nullable from information_schema.columns "
        "where table_schema = ? and table_name = 'releases'",
        [SCHEMA],
    ).fetchall()
    if not rows:
        return
    columns = {name.lower(): nullable == "YES" for name, nullable in rows}
    missing = [name for name in _ADDED_COLUMNS if name not in columns]
    not_null = [name for name in _NULLABLE_NOW if name in columns and not columns[name]]
    if not missing and not not_null:
        return
    for name in missing:
        connection.execute(f"alter table {RELEASES_TABLE} add column {name} {_ADDED_COLUMNS[name]}")
    if "mechanism" in missing:  # a default fills new rows; make the old ones say what they are
        connection.execute(f"update {RELEASES_TABLE} set mechanism = 'gaussian' where mechanism is null")
    for name in not_null:
        connection.execute(f"alter table {RELEASES_TABLE} alter column {name} drop not null")


# ---------------------------------------------------------------------------------------------- ledger


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
                        connection = duckdb.connect(str(self.path), read_only=False, config=dict(config))
                        owner_only(self.path)
                        return connection
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
                _migrate(self._connection)
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
                _migrate(connection)
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
    def _read_releases(
        connection: duckdb.DuckDBPyConnection | None, dataset: str | None, *, run_id: str | None = None
    ) -> pl.DataFrame:
        if connection is None or not PrivacyLedger._tables_exist(connection):
            return pl.DataFrame(schema=_RELEASE_SCHEMA)
        frame = fetch_polars(
            connection,
            f"""
            select r.identity, r.dataset, r.fingerprint, r.kind, r.epsilon, r.delta, r.sigma, r.histograms,
                   coalesce(r.mechanism, 'gaussian') as mechanism, r.selection_epsilon, r.selections,
                   sqrt(r.histograms) / r.sigma as mu, r.T, r.seed, r.data_digest, r.parameters, r.run_id,
                   r.partition_key, r.recorded_at,
                   coalesce(m.repeats, 0) as repeats, coalesce(m.last_seen_at, r.recorded_at) as last_seen_at
            from {RELEASES_TABLE} r
            left join (
                select identity, count(*) filter (where not new) as repeats, max(recorded_at) as last_seen_at
                from {MATERIALIZATIONS_TABLE} group by identity
            ) m on m.identity = r.identity
            where (?::varchar is null or r.dataset = ?::varchar)
              and (?::varchar is null or r.identity in (
                  select identity from {MATERIALIZATIONS_TABLE} where run_id = ?::varchar))
            order by r.dataset, r.recorded_at, r.identity
            """,
            [dataset, dataset, run_id, run_id],
        )
        rhos, own = [], []
        for mechanism, mu, eps, k, delta in zip(
            frame["mechanism"].to_list(), frame["mu"].to_list(), frame["selection_epsilon"].to_list(),
            frame["selections"].to_list(), frame["delta"].to_list(),
        ):
            rho = mu * mu / 2.0 if mechanism == "gaussian" else em_rho(eps, k)
            rhos.append(rho)
            own.append(own_epsilon(mechanism, mu, rho, eps, k, delta))
        frame = frame.with_columns(
            pl.Series("rho", rhos, dtype=pl.Float64), pl.Series("release_epsilon", own, dtype=pl.Float64)
        )
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
        """The recorded releases (of one dataset name, or all), oldest first, with mu (Gaussian releases;
        null for selections), rho, each release's own epsilon at its delta (``release_epsilon``) and how
        often it was re-materialized (``repeats``)."""
        with self._session(create=False) as connection:
            return self._read_releases(connection, dataset)

    def releases_of_run(self, run_id: str) -> pl.DataFrame:
        """The recorded releases (of every dataset) that a materialization of run ``run_id`` recorded or
        repeated, as :meth:`releases` shows them: their ``run_id`` column is still the run that first
        recorded each."""
        with self._session(create=False) as connection:
            return self._read_releases(connection, None, run_id=run_id)

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
        delta = _check_delta(delta)
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
        planned = compose_releases(new)
        recorded_mus, recorded_rhos = mechanism_parts(frame)
        total = compose(
            recorded_mus + [r.mu for r in new if r.is_gaussian],
            recorded_rhos + [r.rho for r in new if not r.is_gaussian],
        )
        planned_sum = float(sum(r.release_epsilon for r in new))
        return BudgetCheck(
            dataset=dataset,
            delta=delta,
            budget_epsilon=budget_epsilon,
            spent=spent,
            planned=tuple(unique.values()),
            new=new,
            planned_mu=planned.mu,
            planned_epsilon=planned.epsilon(delta),
            planned_epsilon_sum=planned_sum,
            total_mu=total.mu,
            total_epsilon=total.epsilon(delta),
            total_epsilon_sum=spent.epsilon_sum + planned_sum,
            planned_rho=planned.rho,
            total_rho=total.rho,
            composition=total.rule,
        )

    def check(
        self,
        dataset: str,
        planned: Iterable[LedgerRelease],
        delta: float,
        budget_epsilon: float | None,
    ) -> BudgetCheck:
        """Compose ``planned`` (minus what is recorded) with what ``dataset`` has spent; raise
        :class:`BudgetExceeded` if that exceeds ``budget_epsilon`` at ``delta`` (None: no budget).
        Planned releases that are all recorded already charge nothing and always pass."""
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
        nothing when the budget does not allow it; releases that are all recorded already (a re-run or a
        resume) are never refused, only their repeats are counted."""
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
                histograms, T, seed, data_digest, parameters, run_id, partition_key, recorded_at,
                mechanism, selection_epsilon, selections)
            values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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
                release.mechanism,
                release.selection_epsilon,
                release.selections,
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

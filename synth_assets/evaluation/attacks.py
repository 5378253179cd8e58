"""Anonymeter's three attacks (Giomi et al. 2023, "A Unified Framework for Quantifying Privacy Risk in
Synthetic Data"), implemented from the paper: each is run on training targets and on holdout controls,
and the risk is the attacker's success on the targets beyond the success on the controls,
(rate_targets - rate_controls) / (1 - rate_controls), so that what the synthetic table teaches about the
population in general is not counted as a leak about individuals. The verdict reads a 95% Wilson lower
bound of the targets' rate through the same formula: red above 0.1, amber above 0.02.

- **Attribute inference**, per sensitive column the spec declares: the attacker knows every other column
  of a person, finds the synthetic row nearest on those and guesses its value of the sensitive column
  (right when equal for a category, within 5% of the public range for a number, on its declared scale).
- **Linkability**: the modelled columns are split in two seeded halves, as if held by two parties; the
  attacker links a person's two halves when their nearest synthetic rows on each half are the same row.
- **Singling out**: the attacker writes predicates from the synthetic table alone, each matching exactly
  one synthetic row, and succeeds on a set of people when a predicate matches exactly one of them.
  *Univariate*: `col == v` (or `col is null`) for a value one synthetic row holds, `col <= min` or
  `col >= max` for a numeric extreme one row holds. *Multivariate*: the conjunction of conditions on
  ``PREDICATE_COLUMNS`` random columns of a random synthetic row, equality on a category or a null,
  `<=` or `>=` at the row's value of a number (towards the tail of the column the value is on). At most
  ``PREDICATES`` of each, one per synthetic row, so that the trials are about different people. The
  success rate depends on the number of people tried, so targets and controls are equally many. Both
  modes are reported; the attack's figures and verdict are those of the riskier one.

Distances (attribute inference, linkability) are the vote's (:mod:`synth_assets.pe.encoding`) restricted
to the columns the attacker knows; singling out compares raw values (categories by their code) and is
vectorised over predicates and rows, a second or two at 20,000 rows of 68 columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import polars as pl

from synth_assets.datasets.loading import Dataset
from synth_assets.datasets.spec import NumericColumn
from synth_assets.datasets.temporal import as_numbers
from synth_assets.pe.encoding import EncodedTable, Encoder, encode_categorical
from synth_assets.pe.nn import nearest_candidates

TOLERANCE = 0.05
"""A numeric guess is right within this share of the column's public range."""
PREDICATES = 1000
"""Singling-out predicates of each mode, at most."""
PREDICATE_COLUMNS = 4
"""Columns of a multivariate singling-out predicate."""
ATTEMPTS = 100
"""Multivariate candidates drawn per predicate wanted, at most."""
NULL = np.float32(-np.inf)
"""A null number in the singling-out tables: below every value, so that no threshold matches it."""
LOWEST = np.finfo(np.float32).min


def _restricted(encoded: EncodedTable, keep: set[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    numeric = encoded.numeric * np.array([c in keep for c in encoded.numeric_columns], dtype=np.float32)
    weights = encoded.categorical_weights * np.array([c in keep for c in encoded.categorical_columns],
                                                     dtype=np.float32)
    return np.ascontiguousarray(numeric), encoded.categorical, weights


def _nearest(queries: EncodedTable, rows: EncodedTable, keep: set[str]) -> np.ndarray:
    qn, qc, weights = _restricted(queries, keep)
    rn, rc, _ = _restricted(rows, keep)
    return nearest_candidates(qn, qc, rn, rc, weights)


def risk(targets: float, controls: float) -> float:
    """Anonymeter's risk: success on targets beyond the controls', as a share of what was left to gain."""
    if math.isnan(targets) or math.isnan(controls) or controls >= 1.0:
        return math.nan
    return max(0.0, (targets - controls) / (1.0 - controls))


def _wilson_low(successes: int, n: int, z: float = 1.96) -> float:
    if n == 0:
        return math.nan
    p = successes / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - margin) / (1 + z * z / n)


def _result(hits_targets: np.ndarray, hits_controls: np.ndarray) -> dict:
    rate_t, rate_c = float(hits_targets.mean()), float(hits_controls.mean())
    low = risk(_wilson_low(int(hits_targets.sum()), hits_targets.size), rate_c)
    value = risk(rate_t, rate_c)
    return {"success_targets": rate_t, "success_controls": rate_c, "risk": value, "risk_low95": low,
            "targets": int(hits_targets.size),
            "verdict": "red" if low > 0.1 else "amber" if low > 0.02 else "green"}


def attribute_inference(dataset: Dataset, encoder: Encoder, targets: pl.DataFrame, controls: pl.DataFrame,
                        synthetic: pl.DataFrame, column: str) -> dict:
    spec = {c.wide_name: c for c in dataset.spec.modelled_columns}[column]
    known = {c.wide_name for c in dataset.spec.modelled_columns} - {column}
    targets, controls, synthetic = (as_numbers(dataset.spec, f) for f in (targets, controls, synthetic))
    encoded_synthetic = encoder.encode(synthetic)
    truth_synthetic = synthetic[column]

    def hits(people: pl.DataFrame) -> np.ndarray:
        guesses = truth_synthetic[_nearest(encoder.encode(people), encoded_synthetic, known)]
        truth = people[column]
        if isinstance(spec, NumericColumn):
            a, b = guesses.cast(pl.Float64).to_numpy(), truth.cast(pl.Float64).to_numpy()
            both_null = np.isnan(a) & np.isnan(b)
            if spec.scale == "log":  # within 5% of the range on the column's own (log) scale
                a, b = np.log1p(a - spec.min), np.log1p(b - spec.min)
                width = math.log1p(spec.max - spec.min)
            else:
                width = spec.max - spec.min
            close = np.abs(a - b) <= TOLERANCE * width
            return both_null | np.nan_to_num(close, nan=False).astype(bool)
        same = (guesses.cast(pl.Utf8) == truth.cast(pl.Utf8)).fill_null(False).to_numpy()
        return same | (guesses.is_null() & truth.is_null()).to_numpy()

    return {"column": column, **_result(hits(targets), hits(controls))}


def linkability(dataset: Dataset, encoder: Encoder, targets: pl.DataFrame, controls: pl.DataFrame,
                synthetic: pl.DataFrame, *, seed: int = 0) -> dict:
    names = [c.wide_name for c in dataset.spec.modelled_columns]
    if len(names) < 2:
        return {"verdict": "not available", "reason": "fewer than two modelled columns"}
    order = np.random.default_rng([seed, 0x11C]).permutation(len(names))
    first = {names[i] for i in order[: len(names) // 2]}
    second = set(names) - first
    encoded_synthetic = encoder.encode(synthetic)

    def hits(people: pl.DataFrame) -> np.ndarray:
        encoded = encoder.encode(people)
        return _nearest(encoded, encoded_synthetic, first) == _nearest(encoded, encoded_synthetic, second)

    return {"halves": [sorted(first), sorted(second)], **_result(hits(targets), hits(controls))}


# ------------------------------------------------------------------------------------ singling out
# A predicate is a conjunction of conditions low <= x[column] <= high on the tables of
# _singling_tables: `== v` is [v, v] (a category by its code, null being its own code), `<= v` is
# [LOWEST, v], `>= v` is [v, inf] and `is null` of a number is [-inf, -inf].


def _singling_tables(encoder: Encoder, frames: list[pl.DataFrame]) -> list[np.ndarray]:
    """The modelled columns of each frame as float32[columns, rows]: each value replaced by its rank
    among the column's values in all the frames (which keeps every comparison between them and makes
    them cheap), a null number by -inf, a category by the rank of its code (null being its own code);
    the rows sorted on their values, so that nothing depends on a frame's row order."""
    columns = {c.wide_name: c for c in encoder.columns}
    frames = [as_numbers(encoder.columns, f) for f in frames]
    width = len(encoder.numeric_columns) + len(encoder.categorical_columns)
    raw = np.empty((width, sum(f.height for f in frames)))
    for j, name in enumerate(encoder.numeric_columns):
        values = np.concatenate([f[name].cast(pl.Float64).to_numpy() for f in frames])
        raw[j] = np.where(np.isnan(values), -np.inf, values)
    for j, name in enumerate(encoder.categorical_columns, start=len(encoder.numeric_columns)):
        raw[j] = np.concatenate([encode_categorical(columns[name], f[name]) for f in frames])
    ranked = np.empty(raw.shape, dtype=np.float32)
    for j in range(raw.shape[0]):
        ranked[j] = np.unique(raw[j], return_inverse=True)[1]
    ranked[raw == -np.inf] = NULL
    tables = np.split(ranked, np.cumsum([f.height for f in frames])[:-1], axis=1)
    return [np.ascontiguousarray(t[:, np.lexsort(t[::-1])]) for t in tables]


def _match_counts(table: np.ndarray, columns: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """How many rows of ``table`` (columns x rows) each predicate (a row of ``columns``, ``low``,
    ``high``) matches."""
    counts = np.zeros(columns.shape[0], dtype=np.int64)
    chunk = max(1, (1 << 22) // max(table.shape[1], 1))
    for start in range(0, columns.shape[0], chunk):
        part = slice(start, start + chunk)
        match = np.ones((columns[part].shape[0], table.shape[1]), dtype=bool)
        for j in range(columns.shape[1]):
            values = table[columns[part, j]]
            match &= (values >= low[part, j, None]) & (values <= high[part, j, None])
        counts[part] = match.sum(axis=1)
    return counts


@dataclass(frozen=True, eq=False)
class Predicates:
    """Predicates of equal width: predicate p holds on a row x when low[p, j] <= x[columns[p, j]] <=
    high[p, j] for every j; ``rows`` is the synthetic row each singles out; ``attempted`` the candidates
    checked to find them."""

    columns: np.ndarray
    low: np.ndarray
    high: np.ndarray
    rows: np.ndarray
    attempted: int

    def __len__(self) -> int:
        return self.columns.shape[0]

    def take(self, index: np.ndarray) -> Predicates:
        return Predicates(self.columns[index], self.low[index], self.high[index], self.rows[index],
                          self.attempted)

    def counts(self, table: np.ndarray) -> np.ndarray:
        return _match_counts(table, self.columns, self.low, self.high)


def _one_per_row(predicates: Predicates, wanted: int, order: np.ndarray) -> Predicates:
    """The first predicate of each synthetic row in ``order``, at most ``wanted``, in that order: the trials
    are then about different people (a row holding many rare values would otherwise weigh many times)."""
    _, first = np.unique(predicates.rows[order], return_index=True)
    return predicates.take(order[np.sort(first)][:wanted])


def univariate_predicates(table: np.ndarray, numeric: np.ndarray, wanted: int,
                          rng: np.random.Generator) -> Predicates:
    """Up to ``wanted`` one-column predicates singling out one row of ``table``, one per row, drawn with
    ``rng`` from every `== v` (`is null`) whose value one row holds and every `<= min` or `>= max` of a
    number whose extreme one row holds. ``attempted``: every distinct value and extreme checked."""
    columns, low, high, rows, attempted = [], [], [], [], 0
    for j in range(table.shape[0]):
        values, where, counts = np.unique(table[j], return_index=True, return_counts=True)
        attempted += values.size
        rare = counts == 1
        columns.append(np.full(int(rare.sum()), j))
        low.append(values[rare])
        high.append(values[rare])
        rows.append(where[rare])
        present = np.flatnonzero(values > NULL)
        if numeric[j] and present.size:
            attempted += 2
            first, last = present[0], present[-1]
            for at, bounds in ((first, (LOWEST, values[first])), (last, (values[last], np.inf))):
                if counts[at] == 1:
                    columns.append([j])
                    low.append([bounds[0]])
                    high.append([bounds[1]])
                    rows.append([where[at]])
    found = Predicates(np.concatenate(columns).astype(np.int64)[:, None],
                       np.concatenate(low).astype(np.float32)[:, None],
                       np.concatenate(high).astype(np.float32)[:, None],
                       np.concatenate(rows).astype(np.int64), attempted)
    return _one_per_row(found, wanted, rng.permutation(len(found)))


def multivariate_predicates(table: np.ndarray, numeric: np.ndarray, wanted: int, rng: np.random.Generator,
                            width: int = PREDICATE_COLUMNS) -> Predicates:
    """Up to ``wanted`` predicates on ``width`` random columns of a random row of ``table``, each singling
    out that row (one per row): a category (or a null) by equality, a number by a threshold at the row's
    value pointing to the column's tail the value is on (`<=` at or below the median, else `>=`).
    Candidates are drawn in batches, at most ``ATTEMPTS * wanted`` of them, and checked on growing blocks
    of rows, so that most are rejected early. ``attempted``: the candidates drawn."""
    d, n = table.shape
    width = min(width, d)
    lower_tail = np.zeros(table.shape, dtype=bool)
    for j in np.flatnonzero(numeric):
        present = np.sort(table[j][table[j] > NULL])
        at_or_below = np.searchsorted(present, table[j], side="right")
        at_or_above = present.size - np.searchsorted(present, table[j], side="left")
        lower_tail[j] = at_or_below <= at_or_above
    order = rng.permutation(n)
    edges = [0]
    while edges[-1] < n:
        edges.append(min(n, max(256, 2 * edges[-1])))
    blocks = [np.ascontiguousarray(table[:, np.sort(order[a:b])]) for a, b in pairwise(edges)]
    found = Predicates(np.empty((0, width), dtype=np.int64), np.empty((0, width), dtype=np.float32),
                       np.empty((0, width), dtype=np.float32), np.empty(0, dtype=np.int64), 0)
    attempted = 0
    while len(found) < wanted and attempted < ATTEMPTS * wanted:
        size = min(ATTEMPTS * wanted - attempted, max(1024, 8 * wanted))
        attempted += size
        rows = rng.integers(n, size=size)
        columns = np.argpartition(rng.random((size, d)), width - 1, axis=1)[:, :width]
        values = table[columns, rows[:, None]]
        threshold = numeric[columns] & (values > NULL)
        below = lower_tail[columns, rows[:, None]]
        low = np.where(threshold & below, LOWEST, values)
        high = np.where(threshold & ~below, np.inf, values)
        alive, counts = np.arange(size), np.zeros(size, dtype=np.int64)
        for block in blocks:  # every candidate matches its own row: a second match rejects it
            counts[alive] += _match_counts(block, columns[alive], low[alive], high[alive])
            alive = alive[counts[alive] <= 1]
        merged = Predicates(*(np.concatenate([old, new[alive]]) for old, new in (
            (found.columns, columns), (found.low, low), (found.high, high), (found.rows, rows))), attempted)
        found = _one_per_row(merged, wanted, np.arange(len(merged)))
    return found


def singling_out(encoder: Encoder, targets: pl.DataFrame, controls: pl.DataFrame, synthetic: pl.DataFrame, *,
                 seed: int = 0, predicates: int = PREDICATES) -> dict:
    """Anonymeter's singling out: predicates made from the synthetic table, each singling out one of its
    rows, succeed on a set of people when they match exactly one of them; training targets against holdout
    controls of the same number (the larger set is sampled down with the seed).

    Both modes are run, :func:`univariate_predicates` and :func:`multivariate_predicates`, at most
    ``predicates`` each; ``univariate`` and ``multivariate`` hold their figures (the keys of the other
    attacks plus ``predicates_attempted`` and ``predicates_kept``, the trials of the rates). The top level
    repeats the figures of the mode with the larger ``risk_low95``, named by ``mode``: its verdict is the
    worse of the two."""
    rng = np.random.default_rng([seed, 0x5106])
    people = min(targets.height, controls.height)
    if people == 0 or synthetic.height == 0 or predicates < 1 or not encoder.columns:
        return {"verdict": "not available", "reason": "no targets, controls, synthetic rows or predicates"}
    table, table_targets, table_controls = _singling_tables(encoder, [synthetic, targets, controls])
    table_targets, table_controls = (t[:, np.sort(rng.choice(t.shape[1], size=people, replace=False))]
                                     if t.shape[1] > people else t for t in (table_targets, table_controls))
    numeric = np.arange(table.shape[0]) < len(encoder.numeric_columns)
    made = {"univariate": univariate_predicates(table, numeric, predicates, rng),
            "multivariate": multivariate_predicates(table, numeric, predicates, rng)}
    modes = {}
    for mode, found in made.items():
        counts = {"predicates_attempted": int(found.attempted), "predicates_kept": len(found)}
        if not len(found):
            modes[mode] = {"verdict": "not available", "reason": "no predicate singles out one synthetic row",
                           **counts}
            continue
        result = _result(found.counts(table_targets) == 1, found.counts(table_controls) == 1)
        modes[mode] = {**result, **counts, "targets": people}
    scored = [mode for mode in modes if "risk" in modes[mode]]
    if not scored:
        return {"verdict": "not available", "reason": "no predicate singles out one synthetic row", **modes}
    worst = max(scored, key=lambda m: -1.0 if math.isnan(modes[m]["risk_low95"]) else modes[m]["risk_low95"])
    top = {key: modes[worst][key] for key in ("success_targets", "success_controls", "risk", "risk_low95",
                                               "targets", "verdict")}
    return {"mode": worst, **top, **modes}

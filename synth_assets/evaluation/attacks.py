"""Two of Anonymeter's attacks (Giomi et al. 2023, "A Unified Framework for Quantifying Privacy Risk in
Synthetic Data"), implemented from the paper: each is run on training targets and on holdout controls,
and the risk is the attacker's success on the targets beyond the success on the controls,
(rate_targets - rate_controls) / (1 - rate_controls), so that what the synthetic table teaches about the
population in general is not counted as a leak about individuals.

- **Attribute inference**, per sensitive column the spec declares: the attacker knows every other column
  of a person, finds the synthetic row nearest on those and guesses its value of the sensitive column
  (right when equal for a category, within 5% of the public range for a number, on its declared scale).
- **Linkability**: the modelled columns are split in two seeded halves, as if held by two parties; the
  attacker links a person's two halves when their nearest synthetic rows on each half are the same row.

Distances are the vote's (:mod:`synth_assets.pe.encoding`) restricted to the columns the attacker knows.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from synth_assets.datasets.loading import Dataset
from synth_assets.datasets.spec import NumericColumn
from synth_assets.pe.encoding import EncodedTable, Encoder
from synth_assets.pe.nn import nearest_candidates

TOLERANCE = 0.05
"""A numeric guess is right within this share of the column's public range."""


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

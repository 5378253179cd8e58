"""Fidelity of a synthetic wide table to the training rows, each figure beside the same figure for the
holdout (a real sample the generator never saw): the holdout's value is what sampling noise alone costs.

- per column: the Kolmogorov-Smirnov statistic of a numeric column's non-null values, the TVD of a
  categorical column's categories, and the difference of null shares;
- per pair: |Pearson - Pearson| and |Spearman - Spearman| over numeric pairs (rows where both are set),
  |Cramer's V - Cramer's V| over categorical pairs;
- detection: the cross-validated AUC of a gradient-boosted classifier telling training rows from the
  other table's rows on the public bins (0.5: indistinguishable), on seeded samples of equal size.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import polars as pl
from scipy import stats

from synth_assets.datasets.loading import Dataset
from synth_assets.datasets.spec import CategoricalColumn, NumericColumn
from synth_assets.datasets.temporal import as_numbers
from synth_assets.evaluation.marginals import bin_labels, bin_table
from synth_assets.evaluation.utility import one_openmp_thread

DETECTION_ROWS = 3000
"""Rows of each side the detection classifier sees at most (a seeded sample)."""


def column_fidelity(dataset: Dataset, real: pl.DataFrame, other: pl.DataFrame) -> pl.DataFrame:
    """One row per modelled column: metric (ks or tvd), its value, and the null-share difference."""
    rows = []
    real, other = as_numbers(dataset.spec, real), as_numbers(dataset.spec, other)
    for column in dataset.spec.modelled_columns:
        a, b = real[column.wide_name], other[column.wide_name]
        null_gap = abs(a.null_count() / max(a.len(), 1) - b.null_count() / max(b.len(), 1))
        if isinstance(column, NumericColumn):
            x, y = a.drop_nulls().cast(pl.Float64).to_numpy(), b.drop_nulls().cast(pl.Float64).to_numpy()
            value = float(stats.ks_2samp(x, y).statistic) if x.size and y.size else math.nan
            metric = "ks"
        else:
            p = a.drop_nulls().value_counts(normalize=True, name="p")
            q = b.drop_nulls().value_counts(normalize=True, name="q")
            joined = p.join(q, on=column.wide_name, how="full", coalesce=True).fill_null(0.0)
            value = 0.5 * float((joined["p"] - joined["q"]).abs().sum()) if p.height and q.height else math.nan
            metric = "tvd"
        rows.append({"column": column.wide_name, "metric": metric, "value": value, "null_share_gap": null_gap})
    return pl.DataFrame(rows, schema={"column": pl.Utf8, "metric": pl.Utf8, "value": pl.Float64,
                                      "null_share_gap": pl.Float64})


def _cramers_v(x: np.ndarray, y: np.ndarray) -> float:
    table = np.zeros((x.max() + 1, y.max() + 1))
    np.add.at(table, (x, y), 1.0)
    table = table[table.sum(1) > 0][:, table.sum(0) > 0]
    if min(table.shape) < 2:
        return math.nan
    chi2 = stats.chi2_contingency(table, correction=False)[0]
    return float(math.sqrt(chi2 / table.sum() / (min(table.shape) - 1)))


def _categorical_codes(frame: pl.DataFrame, column: CategoricalColumn) -> np.ndarray:
    mapping = {c: i for i, c in enumerate(column.categories)}
    return np.array([len(mapping) if v is None else mapping.get(v, len(mapping))
                     for v in frame[column.wide_name].cast(pl.Utf8).to_list()], dtype=np.int64)


def pair_fidelity(dataset: Dataset, real: pl.DataFrame, other: pl.DataFrame, *, max_pairs: int = 500,
                  seed: int = 0) -> pl.DataFrame:
    """One row per pair (a seeded sample of ``max_pairs`` of each kind when there are more): the
    absolute differences of Pearson and Spearman (numeric pairs) or of Cramer's V (categorical pairs)."""
    rng = np.random.default_rng([seed, 0xFA1])
    real, other = as_numbers(dataset.spec, real), as_numbers(dataset.spec, other)
    numeric = [c for c in dataset.spec.modelled_columns if isinstance(c, NumericColumn)]
    categorical = [c for c in dataset.spec.modelled_columns if isinstance(c, CategoricalColumn)]
    rows = []

    def sample(pairs: list) -> list:
        if len(pairs) <= max_pairs:
            return pairs
        return [pairs[i] for i in sorted(rng.choice(len(pairs), max_pairs, replace=False))]

    def values(frame: pl.DataFrame, a: NumericColumn, b: NumericColumn) -> tuple[np.ndarray, np.ndarray]:
        both = frame.select(a.wide_name, b.wide_name).drop_nulls().cast(pl.Float64)
        return both[a.wide_name].to_numpy(), both[b.wide_name].to_numpy()

    for a, b in sample(list(itertools.combinations(numeric, 2))):
        deltas = {}
        for name, correlate in (("pearson", stats.pearsonr), ("spearman", stats.spearmanr)):
            found = []
            for frame in (real, other):
                x, y = values(frame, a, b)
                ok = x.size > 2 and np.ptp(x) > 0 and np.ptp(y) > 0
                found.append(float(correlate(x, y)[0]) if ok else math.nan)
            deltas[name] = abs(found[0] - found[1])
        rows.append({"pair": f"{a.wide_name} x {b.wide_name}", "kind": "numeric",
                     "pearson_delta": deltas["pearson"], "spearman_delta": deltas["spearman"],
                     "cramers_v_delta": math.nan})
    codes = {id(f): {c.wide_name: _categorical_codes(f, c) for c in categorical} for f in (real, other)}
    for a, b in sample(list(itertools.combinations(categorical, 2))):
        v = [_cramers_v(codes[id(f)][a.wide_name], codes[id(f)][b.wide_name]) for f in (real, other)]
        rows.append({"pair": f"{a.wide_name} x {b.wide_name}", "kind": "categorical", "pearson_delta": math.nan,
                     "spearman_delta": math.nan, "cramers_v_delta": abs(v[0] - v[1])})
    return pl.DataFrame(rows, schema={"pair": pl.Utf8, "kind": pl.Utf8, "pearson_delta": pl.Float64,
                                      "spearman_delta": pl.Float64, "cramers_v_delta": pl.Float64})


def detection_auc(dataset: Dataset, real: pl.DataFrame, other: pl.DataFrame, *, seed: int = 0) -> float:
    """3-fold cross-validated ROC AUC of a histogram gradient-boosting classifier telling ``real`` rows
    from ``other`` rows by their public bin codes, on at most :data:`DETECTION_ROWS`
    seeded rows of each."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import cross_val_score

    rng = np.random.default_rng([seed, 0xDE7])
    size = min(real.height, other.height, DETECTION_ROWS)
    if size < 30:
        return math.nan
    a = bin_table(dataset, real[rng.choice(real.height, size, replace=False)])
    b = bin_table(dataset, other[rng.choice(other.height, size, replace=False)])
    features = np.vstack([a.codes, b.codes])
    labels = np.concatenate([np.ones(size), np.zeros(size)])
    classifier = HistGradientBoostingClassifier(max_iter=100, random_state=seed)
    with one_openmp_thread():
        scores = cross_val_score(classifier, features, labels, cv=3, scoring="roc_auc")
    return float(np.mean(scores))


def fidelity_of(dataset: Dataset, training: pl.DataFrame, other: pl.DataFrame, *, seed: int = 0) -> dict:
    """Means of the column and pair metrics and the detection AUC of ``other`` against ``training``."""
    columns = column_fidelity(dataset, training, other)
    pairs = pair_fidelity(dataset, training, other, seed=seed)
    return {
        "ks_mean": _mean(columns.filter(pl.col("metric") == "ks")["value"]),
        "category_tvd_mean": _mean(columns.filter(pl.col("metric") == "tvd")["value"]),
        "null_share_gap_mean": _mean(columns["null_share_gap"]),
        "pearson_delta_mean": _mean(pairs["pearson_delta"]),
        "spearman_delta_mean": _mean(pairs["spearman_delta"]),
        "cramers_v_delta_mean": _mean(pairs["cramers_v_delta"]),
        "detection_auc": detection_auc(dataset, training, other, seed=seed),
    }


def _mean(series: pl.Series) -> float:
    values = series.drop_nulls().drop_nans() if series.dtype == pl.Float64 else series.drop_nulls()
    return float(values.mean()) if values.len() else math.nan


ASSOCIATION_COLUMNS = 40
"""Columns an association heatmap shows at most."""


def association_matrix(dataset: Dataset, frame: pl.DataFrame, *, rows: int = 5000, seed: int = 0) -> np.ndarray:
    """Cramer's V between every pair of modelled columns on their public bins (numbers binned, so every
    kind of pair has the same measure), on at most ``rows`` seeded rows; 1 on the diagonal."""
    if frame.height > rows:
        frame = frame[np.sort(np.random.default_rng([seed, 0xA550]).choice(frame.height, rows, replace=False))]
    table = bin_table(dataset, frame)
    width = table.codes.shape[1]
    matrix = np.eye(width)
    for i, j in itertools.combinations(range(width), 2):
        counts = np.bincount(table.codes[:, i].astype(np.int64) * table.sizes[j] + table.codes[:, j],
                             minlength=int(table.sizes[i] * table.sizes[j])).reshape(table.sizes[i], table.sizes[j])
        counts = counts[counts.sum(1) > 0][:, counts.sum(0) > 0]
        if min(counts.shape) < 2:
            matrix[i, j] = matrix[j, i] = math.nan
            continue
        expected = np.outer(counts.sum(1), counts.sum(0)) / counts.sum()
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        matrix[i, j] = matrix[j, i] = math.sqrt(chi2 / counts.sum() / (min(counts.shape) - 1))
    return matrix


def associations(dataset: Dataset, training: pl.DataFrame, synthetic: pl.DataFrame, *, seed: int = 0) -> dict:
    """Cramer's V matrices of the training and the synthetic rows, JSON-ready, for the report's heatmaps;
    with more than :data:`ASSOCIATION_COLUMNS` columns, the most associated ones in the training rows."""
    names = [c.wide_name for c in dataset.spec.modelled_columns]
    real = association_matrix(dataset, training, seed=seed)
    synthetic_matrix = association_matrix(dataset, synthetic, seed=seed)
    keep = np.arange(len(names))
    if len(names) > ASSOCIATION_COLUMNS:
        strength = np.nansum(real, axis=1) - 1.0
        keep = np.sort(np.argsort(-strength, kind="stable")[:ASSOCIATION_COLUMNS])

    def rounded(matrix: np.ndarray) -> list[list[float | None]]:
        return [[None if math.isnan(v) else round(float(v), 4) for v in row] for row in matrix[np.ix_(keep, keep)]]

    return {"measure": "Cramer's V on the public bins", "columns": [names[k] for k in keep],
            "training": rounded(real), "synthetic": rounded(synthetic_matrix),
            "mean_abs_difference": float(np.nanmean(np.abs(real - synthetic_matrix)[np.triu_indices(len(names), 1)]))
            if len(names) > 1 else math.nan}


def worst_marginals(dataset: Dataset, training: pl.DataFrame, synthetic: pl.DataFrame,
                    holdout: pl.DataFrame | None = None, *, columns: int = 6) -> list[dict]:
    """The 1-way marginals on the public bins of the ``columns`` columns whose synthetic TVD to the
    training rows is largest, JSON-ready: bin labels and the share of each table per bin."""
    frames = {"training": training, "synthetic": synthetic, **({"holdout": holdout} if holdout is not None
                                                               and holdout.height else {})}
    binned = {name: bin_table(dataset, frame) for name, frame in frames.items()}
    sizes = binned["training"].sizes
    shares = {name: [np.bincount(table.codes[:, j], minlength=int(sizes[j])) / max(table.codes.shape[0], 1)
                     for j in range(len(sizes))] for name, table in binned.items()}
    tvd = [0.5 * float(np.abs(shares["training"][j] - shares["synthetic"][j]).sum()) for j in range(len(sizes))]
    spec = dataset.spec.modelled_columns
    return [{"column": spec[j].wide_name, "tvd": tvd[j], "bins": bin_labels(spec[j]),
             **{name: [round(float(v), 5) for v in shares[name][j]] for name in shares}}
            for j in sorted(np.argsort(-np.asarray(tvd), kind="stable")[:columns])]

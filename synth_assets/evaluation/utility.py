"""ML utility: for each target the spec declares, models trained on the synthetic rows and tested on the
holdout (TSTR), beside the same models trained on the training rows and tested on the same holdout
(TRTR). The ratio TSTR / TRTR says how much of the real data's predictive value the synthetic table
keeps.

Features: every other modelled column; numbers as they are (nulls as NaN, which gradient boosting
handles; the linear model sees them imputed by the training mean plus a null indicator); categories as
native categorical features of gradient boosting, one-hot with a null indicator for the linear model.
Models: scikit-learn's histogram gradient boosting and a (logistic) linear model. Classification
reports ROC AUC (one-vs-rest, macro, for several classes), accuracy and macro F1; regression R2 and MAE.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from synth_assets.datasets.loading import Dataset
from synth_assets.datasets.spec import CategoricalColumn, Target
from synth_assets.datasets.temporal import as_numbers

MAX_TRAINING_ROWS = 5_000
"""Rows each model is trained on at most (a seeded sample), so that the suite stays fast."""


def one_openmp_thread():
    """scikit-learn's OpenMP threads, limited to one while models are fitted: on a machine whose other
    core is busy, two threads wait on each other at every barrier and a 1-second fit takes 20."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="openmp")


MAX_CATEGORIES = 255
"""Gradient boosting takes a category column natively up to this many categories (more: its codes)."""


def _features(dataset: Dataset, frame: pl.DataFrame, target: str) -> tuple[np.ndarray, list[int]]:
    """Every other modelled column: numbers as they are (null: NaN), a category as its index in the
    spec's categories (null or unknown: NaN); and the widths of the category columns (0 for a number)."""
    parts, widths = [], []
    for column in dataset.spec.modelled_columns:
        if column.wide_name == target:
            continue
        series = frame[column.wide_name]
        if isinstance(column, CategoricalColumn):
            codes = series.cast(pl.Utf8).replace_strict(
                {c: float(i) for i, c in enumerate(column.categories)}, default=None, return_dtype=pl.Float64)
            parts.append(codes.fill_null(np.nan).to_numpy())
            widths.append(len(column.categories))
        else:
            parts.append(series.cast(pl.Float64).fill_null(np.nan).to_numpy())
            widths.append(0)
    return (np.column_stack(parts) if parts else np.zeros((frame.height, 0))), widths


def _one_hot(x: np.ndarray, widths: list[int]) -> np.ndarray:
    """Category columns one-hot with a null indicator each; numbers unchanged."""
    parts = []
    for j, width in enumerate(widths):
        if width == 0:
            parts.append(x[:, j:j + 1])
            continue
        block = np.zeros((x.shape[0], width + 1))
        codes = np.where(np.isnan(x[:, j]), width, x[:, j]).astype(np.int64)
        block[np.arange(x.shape[0]), codes] = 1.0
        parts.append(block)
    return np.hstack(parts) if parts else x


def _linear_ready(train: np.ndarray, test: np.ndarray, widths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Categories one-hot; NaN replaced by the training column mean, a null indicator per column that
    has nulls, and standardised by the training rows."""
    train, test = _one_hot(train, widths), _one_hot(test, widths)
    means = np.nan_to_num(np.nanmean(np.where(np.isnan(train).all(0), 0.0, train), axis=0))
    with_nulls = np.isnan(train).any(0) | np.isnan(test).any(0)

    def ready(x: np.ndarray) -> np.ndarray:
        filled = np.where(np.isnan(x), means, x)
        return np.hstack([filled, np.isnan(x[:, with_nulls]).astype(np.float64)])

    a, b = ready(train), ready(test)
    scale = a.std(0)
    scale[scale == 0] = 1.0
    centre = a.mean(0)
    return (a - centre) / scale, (b - centre) / scale


def _scores(task: str, model, x_test: np.ndarray, y_test: np.ndarray, classes: np.ndarray | None) -> dict:
    from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, r2_score, roc_auc_score

    if task == "regression":
        predicted = model.predict(x_test)
        return {"r2": float(r2_score(y_test, predicted)), "mae": float(mean_absolute_error(y_test, predicted))}
    predicted = model.predict(x_test)
    scores = {"accuracy": float(accuracy_score(y_test, predicted)),
              "f1_macro": float(f1_score(y_test, predicted, average="macro"))}
    probabilities = np.zeros((x_test.shape[0], classes.size))
    known = list(model.classes_)
    for j, label in enumerate(classes):
        if label in known:
            probabilities[:, j] = model.predict_proba(x_test)[:, known.index(label)]
    try:
        if classes.size == 2:
            scores["auc"] = float(roc_auc_score(y_test == classes[1], probabilities[:, 1]))
        else:
            present = [j for j, c in enumerate(classes) if (y_test == c).any()]
            scores["auc"] = float(roc_auc_score(y_test, probabilities[:, present] /
                                                np.maximum(probabilities[:, present].sum(1, keepdims=True), 1e-12),
                                                labels=classes[present], multi_class="ovr", average="macro"))
    except ValueError:
        scores["auc"] = math.nan
    return scores


def _fit_and_score(task: str, kind: str, x_train, y_train, x_test, y_test, classes, seed: int,
                   widths: list[int]) -> dict:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LogisticRegression, Ridge

    if task == "classification" and np.unique(y_train).size < 2:
        return {"note": "the training rows hold a single class"}
    if kind == "gradient_boosting":
        present = ~np.isnan(x_train).all(axis=0)  # a column null in every training row teaches nothing
        x_train, x_test, widths = x_train[:, present], x_test[:, present], [w for w, p in zip(widths, present) if p]
        native = np.array([0 < w <= MAX_CATEGORIES for w in widths], dtype=bool)
        options = {"random_state": seed, "categorical_features": native if native.any() else None}
        model = (HistGradientBoostingRegressor(**options) if task == "regression"
                 else HistGradientBoostingClassifier(**options))
    else:
        x_train, x_test = _linear_ready(x_train, x_test, widths)
        model = Ridge(alpha=1.0) if task == "regression" else LogisticRegression(max_iter=500)
    with one_openmp_thread():
        model.fit(x_train, y_train)
        return _scores(task, model, x_test, y_test, classes)


def _xy(dataset: Dataset, frame: pl.DataFrame, target: Target, rng: np.random.Generator):
    rows = frame.filter(pl.col(target.column).is_not_null())
    if rows.height > MAX_TRAINING_ROWS:
        rows = rows[np.sort(rng.choice(rows.height, MAX_TRAINING_ROWS, replace=False))]
    y = rows[target.column].cast(pl.Float64 if target.task == "regression" else pl.Utf8).to_numpy()
    x, widths = _features(dataset, rows, target.column)
    return x, y, widths


def ml_utility(dataset: Dataset, training: pl.DataFrame, holdout: pl.DataFrame, synthetic: pl.DataFrame,
               *, seed: int = 0) -> list[dict]:
    """One entry per declared target and model: TSTR and TRTR scores on the holdout and their ratios.
    An empty list when the spec declares no target; 'not available' without a holdout."""
    results = []
    training, holdout, synthetic = (as_numbers(dataset.spec, f) for f in (training, holdout, synthetic))
    for target in dataset.spec.evaluation.targets:
        if holdout.height == 0:
            results.append({"target": target.column, "task": target.task, "verdict": "not available",
                            "reason": "no holdout (privacy.holdout_fraction is 0)"})
            continue
        rng = np.random.default_rng([seed, 0x7575])
        x_real, y_real, widths = _xy(dataset, training, target, rng)
        x_syn, y_syn, _ = _xy(dataset, synthetic, target, rng)
        x_test, y_test, _ = _xy(dataset, holdout, target, rng)
        classes = np.unique(np.concatenate([y_real, y_test])) if target.task == "classification" else None
        for kind in ("gradient_boosting", "linear"):
            trtr = _fit_and_score(target.task, kind, x_real, y_real, x_test, y_test, classes, seed, widths)
            tstr = _fit_and_score(target.task, kind, x_syn, y_syn, x_test, y_test, classes, seed, widths)
            ratio = {k: tstr[k] / trtr[k] for k in trtr if k in tstr and k != "mae" and trtr[k] not in (0, None)
                     and isinstance(trtr[k], float) and not math.isnan(trtr[k])}
            results.append({"target": target.column, "task": target.task, "model": kind,
                            "tstr": tstr, "trtr": trtr, "ratio": ratio,
                            "rows": {"synthetic": int(x_syn.shape[0]), "training": int(x_real.shape[0]),
                                     "holdout": int(x_test.shape[0])}})
    return results

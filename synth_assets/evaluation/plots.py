"""Pictures for materialization metadata: real vs synthetic marginals, and quality against epsilon.

Each function returns PNG bytes; :func:`markdown_image` embeds them in markdown that the Dagster UI shows.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from synth_assets.datasets.loading import Dataset
from synth_assets.datasets.spec import CategoricalColumn
from synth_assets.evaluation.marginals import bin_labels, bin_table


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    _pyplot().close(figure)
    return buffer.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def marginals_png(
    dataset: Dataset, frames: Mapping[str, pl.DataFrame], columns: Sequence[str], *, max_bins: int = 14
) -> bytes:
    """Side-by-side bars of the 1-way marginals of ``columns`` for each named frame (real first)."""
    plt = _pyplot()
    spec_columns = {c.wide_name: c for c in dataset.spec.modelled_columns}
    binned = {name: bin_table(dataset, frame) for name, frame in frames.items()}
    figure, axes = plt.subplots(len(columns), 1, figsize=(9, 2.3 * len(columns)), squeeze=False)
    for axis, name in zip(axes[:, 0], columns):
        column = spec_columns[name]
        labels = bin_labels(column)
        j = next(iter(binned.values())).columns.index(name)
        shares = {}
        for label, table in binned.items():
            counts = np.bincount(table.codes[:, j], minlength=len(labels)).astype(float)
            shares[label] = counts / max(counts.sum(), 1)
        shown = np.argsort(-next(iter(shares.values())))[:max_bins]
        shown.sort()
        width = 0.8 / len(shares)
        for k, (label, share) in enumerate(shares.items()):
            axis.bar(np.arange(shown.size) + k * width, share[shown], width, label=label)
        axis.set_xticks(np.arange(shown.size) + 0.4 - width / 2)
        axis.set_xticklabels([labels[i] for i in shown], rotation=30, ha="right", fontsize=7)
        scale = "" if isinstance(column, CategoricalColumn) else f" (public bins, {column.scale} scale)"
        axis.set_title(f"{name}{scale}", fontsize=9)
        axis.set_ylabel("share", fontsize=8)
    axes[0, 0].legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.12), ncol=len(shares), frameon=False)
    figure.tight_layout()
    return _png(figure)


def epsilon_curve_png(summary: pl.DataFrame) -> bytes:
    """Pass rate and 1-/2-way TVD against epsilon, one line per generator.

    ``summary`` has columns epsilon, generator, pass_rate, tvd_1way, tvd_2way.
    """
    plt = _pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(11, 3))
    for (generator,), rows in summary.sort("epsilon").group_by("generator", maintain_order=True):
        for axis, metric in zip(axes, ("pass_rate", "tvd_1way", "tvd_2way")):
            axis.plot(rows["epsilon"], rows[metric], marker="o", label=generator)
    for axis, title in zip(axes, ("workload pass rate (higher is better)", "mean TVD, 1-way", "mean TVD, 2-way")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("epsilon")
        axis.set_title(title, fontsize=9)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    return _png(figure)


def roc_png(curves: Mapping[str, Mapping], epsilon: float | None, delta: float | None) -> bytes:
    """The membership attack's ROC curve of each named release, with the most any attack can reach under
    (epsilon, delta)-DP drawn as a dashed line (the region above it is impossible for a correct mechanism)."""
    from synth_assets.evaluation.privacy_risk import dp_tpr_bound

    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(4.2, 4))
    grid = np.linspace(0.0, 1.0, 201)
    if epsilon is not None:
        axis.plot(grid, dp_tpr_bound(grid, epsilon, delta or 0.0), "k--", linewidth=1,
                  label=f"({epsilon:g}, {delta or 0:g})-DP bound")
    axis.plot(grid, grid, color="#9e9e9e", linewidth=0.8, label="chance")
    for label, roc in curves.items():
        axis.plot(roc["fpr"], roc["tpr"], linewidth=1.4, label=label)
    axis.set_xlabel("false positive rate")
    axis.set_ylabel("true positive rate")
    axis.set_title("membership attack", fontsize=9)
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    return _png(figure)


def dcr_histogram_png(histogram: Mapping) -> bytes:
    """Distances of the synthetic rows to their closest training row and closest holdout row."""
    plt = _pyplot()
    edges = np.asarray(histogram["edges"])
    centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    figure, axis = plt.subplots(figsize=(5, 3))
    axis.bar(centres, histogram["training"], width * 0.9, alpha=0.6, label="to closest training row")
    axis.bar(centres, histogram["holdout"], width * 0.9, alpha=0.6, label="to closest holdout row")
    axis.set_xlabel("distance (the vote's metric)")
    axis.set_ylabel("synthetic rows")
    axis.set_title("distance to closest record", fontsize=9)
    axis.legend(fontsize=7)
    figure.tight_layout()
    return _png(figure)


def association_heatmaps_png(associations: Mapping) -> bytes:
    """Cramer's V between columns in the training rows, in the synthetic rows, and their difference."""
    plt = _pyplot()
    columns = associations["columns"]
    real = np.array(associations["training"], dtype=float)
    synthetic = np.array(associations["synthetic"], dtype=float)
    size = max(4.0, 0.16 * len(columns) + 2.0)
    figure, axes = plt.subplots(1, 3, figsize=(3 * size, size))
    panels = (("training", real, "viridis", 0.0, 1.0), ("synthetic", synthetic, "viridis", 0.0, 1.0),
              ("synthetic - training", synthetic - real, "coolwarm", -0.5, 0.5))
    for axis, (title, matrix, colours, low, high) in zip(axes, panels):
        image = axis.imshow(matrix, cmap=colours, vmin=low, vmax=high)
        axis.set_title(title, fontsize=9)
        axis.set_xticks(range(len(columns)))
        axis.set_yticks(range(len(columns)))
        fontsize = 7 if len(columns) <= 20 else 4
        axis.set_xticklabels(columns, rotation=90, fontsize=fontsize)
        axis.set_yticklabels(columns, fontsize=fontsize)
        figure.colorbar(image, ax=axis, fraction=0.046, pad=0.02)
    figure.tight_layout()
    return _png(figure)


def utility_bars_png(groups: Mapping[str, Mapping[str, float]], metric: str) -> bytes:
    """Bars of one score per group (e.g. "target, model") and series (TRTR, then one per release)."""
    plt = _pyplot()
    names = list(groups)
    series = list(dict.fromkeys(s for values in groups.values() for s in values))
    figure, axis = plt.subplots(figsize=(max(4.5, 1.2 * len(names) * max(1, len(series)) / 2), 3))
    width = 0.8 / max(len(series), 1)
    for k, label in enumerate(series):
        values = [groups[n].get(label, np.nan) for n in names]
        axis.bar(np.arange(len(names)) + k * width, values, width, label=label)
    axis.set_xticks(np.arange(len(names)) + 0.4 - width / 2)
    axis.set_xticklabels(names, rotation=20, ha="right", fontsize=7)
    axis.set_ylabel(metric)
    axis.set_title(f"ML utility on the holdout ({metric})", fontsize=9)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    figure.tight_layout()
    return _png(figure)


def error_buckets_png(buckets: Sequence[Mapping]) -> bytes:
    """Median relative error of the workload's groups by the real group's size."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5, 3))
    labels = [b["bucket"] for b in buckets]
    values = [b.get("median_error") for b in buckets]
    axis.bar(labels, [np.nan if v is None else v for v in values], color="#5c6bc0")
    for x, b in enumerate(buckets):
        axis.annotate(f"{b['groups']} groups", (x, 0), textcoords="offset points", xytext=(0, 3), ha="center",
                      fontsize=6)
    axis.set_xlabel("real group size (entities)")
    axis.set_ylabel("median relative error")
    axis.set_title("workload error by group size", fontsize=9)
    figure.tight_layout()
    return _png(figure)


def metric_by_epsilon_png(series: Mapping[str, Mapping[float, float]], title: str,
                          bound: Mapping[float, float] | None = None) -> bytes:
    """One line per generator of a metric against epsilon; ``bound``: a dashed line (e.g. the DP bound)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(4.2, 3))
    if bound:
        xs = sorted(bound)
        axis.plot(xs, [bound[x] for x in xs], "k--", linewidth=1, label="DP bound")
    for label, points in series.items():
        xs = sorted(points)
        axis.plot(xs, [points[x] for x in xs], marker="o", label=label)
    axis.set_xscale("log", base=2)
    axis.set_xlabel("epsilon")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7)
    figure.tight_layout()
    return _png(figure)


def worst_marginals_png(marginals: Sequence[Mapping], max_bins: int = 14) -> bytes:
    """Bars of the 1-way marginals :func:`synth_assets.evaluation.fidelity.worst_marginals` chose."""
    plt = _pyplot()
    figure, axes = plt.subplots(len(marginals), 1, figsize=(9, 2.3 * len(marginals)), squeeze=False)
    for axis, marginal in zip(axes[:, 0], marginals):
        series = [k for k in ("training", "holdout", "synthetic") if k in marginal]
        shown = np.sort(np.argsort(-np.asarray(marginal["training"]), kind="stable")[:max_bins])
        width = 0.8 / len(series)
        for k, label in enumerate(series):
            axis.bar(np.arange(shown.size) + k * width, np.asarray(marginal[label])[shown], width, label=label)
        axis.set_xticks(np.arange(shown.size) + 0.4 - width / 2)
        axis.set_xticklabels([marginal["bins"][i] for i in shown], rotation=30, ha="right", fontsize=7)
        axis.set_title(f"{marginal['column']} (TVD {marginal['tvd']:.3f})", fontsize=9)
        axis.set_ylabel("share", fontsize=8)
    axes[0, 0].legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.12), ncol=3, frameon=False)
    figure.tight_layout()
    return _png(figure)

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
from synth_assets.evaluation.marginals import bin_edges, bin_table


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


def _labels(column) -> list[str]:
    if isinstance(column, CategoricalColumn):
        labels = list(column.categories)
    else:
        edges = bin_edges(column)
        labels = [f"{a:.3g}-{b:.3g}" for a, b in zip(edges[:-1], edges[1:])]
        labels += [f"= {v:g}" for v in column.special_values]
    return labels + (["null"] if column.nullable else [])


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
        labels = _labels(column)
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
    axes[0, 0].legend(fontsize=8)
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

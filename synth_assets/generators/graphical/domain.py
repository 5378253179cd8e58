"""The public discrete domain a graphical model lives on: every modelled column's public bins.

Graphical models need a finite domain. It comes from the spec only (:mod:`synth_assets.evaluation.marginals`:
a categorical column's categories, 10 bins over a numeric column's public bounds on its declared scale,
one more bin for null in a nullable column), never from the private data.

MST may *compress* a column's domain after measuring its 1-way marginal (McKenna et al. 2021): bins whose
noisy count is below 3 sigma are merged into one. That is post-processing of a DP release; the merged bins
are drawn back in proportion to their noisy counts (clipped at 0) when sampling.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from synth_assets.datasets.loading import Dataset
from synth_assets.evaluation.marginals import bin_table, column_bins, values_from_bins
from synth_assets.generators.base import as_wide_table


@dataclass(frozen=True)
class PublicDomain:
    """The modelled columns of a dataset, their names in the model and their number of public bins."""

    names: tuple[str, ...]
    sizes: tuple[int, ...]

    @classmethod
    def of(cls, dataset: Dataset) -> PublicDomain:
        columns = dataset.spec.modelled_columns
        return cls(tuple(c.wide_name for c in columns), tuple(column_bins(c) for c in columns))

    @property
    def config(self) -> dict[str, int]:
        return dict(zip(self.names, self.sizes))

    def encode(self, dataset: Dataset, private: pl.DataFrame) -> np.ndarray:
        """Bin codes (N x d, int64) of the private wide table on the public bins. Reads private data."""
        binned = bin_table(dataset, private)
        if tuple(binned.columns) != self.names:
            raise ValueError("the wide table's modelled columns differ from the domain's")
        return binned.codes.astype(np.int64)


@dataclass(frozen=True)
class Compression:
    """Merged bins per column: ``mapping[name][bin]`` is the bin's code in the model; the last code of a
    compressed column stands for all merged bins, drawn back with probabilities ``merged[name]``."""

    mapping: dict[str, np.ndarray] = field(default_factory=dict)
    merged: dict[str, np.ndarray] = field(default_factory=dict)

    def sizes(self, domain: PublicDomain) -> dict[str, int]:
        return {
            name: int(self.mapping[name].max()) + 1 if name in self.mapping else size
            for name, size in zip(domain.names, domain.sizes)
        }

    def compress(self, domain: PublicDomain, codes: np.ndarray) -> np.ndarray:
        out = codes.copy()
        for j, name in enumerate(domain.names):
            if name in self.mapping:
                out[:, j] = self.mapping[name][codes[:, j]]
        return out

    def decompress(self, name: str, codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Public bins of model codes: kept bins map back one to one; the merged code draws one of the
        merged bins in proportion to their noisy counts (uniformly when none is positive)."""
        codes = np.asarray(codes, dtype=np.int64)
        if name not in self.mapping:
            return codes
        mapping = self.mapping[name]
        merged_code = int(mapping.max())
        inverse = np.full(merged_code + 1, -1, dtype=np.int64)
        kept = np.flatnonzero(mapping < merged_code)
        inverse[mapping[kept]] = kept
        out = inverse[codes]
        lumped = codes == merged_code
        merged_bins = np.flatnonzero(mapping == merged_code)
        weights = np.maximum(np.asarray(self.merged[name], dtype=np.float64), 0.0)
        if not weights.sum() > 0:
            weights = np.ones(merged_bins.size)
        out[lumped] = rng.choice(merged_bins, size=int(lumped.sum()), p=weights / weights.sum())
        return out


def compress_on_support(noisy: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray] | None:
    """MST's compression of one column from its noisy 1-way counts: bins at or above ``threshold`` keep a
    code each (in order), the others share the last code. None when every bin is kept (or when only one
    would be merged, which changes nothing). Returns (mapping, noisy counts of the merged bins)."""
    support = noisy >= threshold
    if support.sum() >= noisy.size - 1:
        return None
    mapping = np.empty(noisy.size, dtype=np.int64)
    mapping[support] = np.arange(int(support.sum()))
    mapping[~support] = int(support.sum())
    return mapping, noisy[~support]


def to_wide_table(
    dataset: Dataset,
    domain: PublicDomain,
    codes: dict[str, np.ndarray],
    compression: Compression,
    rng: np.random.Generator,
    prefix: str,
) -> pl.DataFrame:
    """The synthetic wide table of sampled model codes: public bins back to values (a value uniform within a
    numeric bin, integers rounded, the null bin as null) and fresh entity keys."""
    data = {}
    for column in dataset.spec.modelled_columns:
        name = column.wide_name
        bins = compression.decompress(name, codes[name], rng)
        data[name] = values_from_bins(column, bins, rng)
    return as_wide_table(dataset, pl.DataFrame(data), prefix)

"""The split of the real entities into training (the only input of every generator) and a holdout used
only to evaluate: deterministic, by a seeded hash of the entity key, so that an entity is on the same
side in every table and every run."""

from __future__ import annotations

import polars as pl

from synth_assets.datasets.loading import Dataset

BUCKETS = 1_000_000


def holdout_mask(dataset: Dataset, wide: pl.DataFrame) -> pl.Series:
    """True for the rows of ``wide`` in the holdout (``privacy.holdout_fraction`` of the entities)."""
    fraction = dataset.spec.privacy.holdout_fraction
    key = dataset.spec.entity.key
    seed = dataset.spec.privacy.holdout_seed
    buckets = wide[key].cast(pl.Utf8).hash(seed=seed) % BUCKETS
    return (buckets < round(fraction * BUCKETS)).alias("holdout")


def split_holdout(dataset: Dataset, wide: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(training, holdout) rows of the wide table; the holdout is empty when the fraction is 0."""
    mask = holdout_mask(dataset, wide)
    return wide.filter(~mask), wide.filter(mask)

"""The split of the real entities into training (the only input of every generator) and a holdout used
only to evaluate: deterministic, by a seeded BLAKE2b hash of the entity key (stable across library
versions and machines, unlike polars' own hash), so that an entity is on the same side in every table,
every run and every installation. Both sides come sorted by the key, so that every seeded sample drawn
from them is the same whatever order the wide table was built in."""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl

from synth_assets.datasets.loading import Dataset

BUCKETS = 1_000_000


def holdout_mask(dataset: Dataset, wide: pl.DataFrame) -> pl.Series:
    """True for the rows of ``wide`` in the holdout (``privacy.holdout_fraction`` of the entities)."""
    fraction = dataset.spec.privacy.holdout_fraction
    key = dataset.spec.entity.key
    seed = dataset.spec.privacy.holdout_seed
    salt = hashlib.blake2b(str(seed).encode(), digest_size=16).digest()
    buckets = np.fromiter(
        (int.from_bytes(hashlib.blake2b(str(v).encode(), digest_size=8, salt=salt).digest(), "little") % BUCKETS
         for v in wide[key].cast(pl.Utf8).to_list()),
        dtype=np.int64, count=wide.height)
    return pl.Series("holdout", buckets < round(fraction * BUCKETS))


def split_holdout(dataset: Dataset, wide: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(training, holdout) rows of the wide table; the holdout is empty when the fraction is 0."""
    wide = wide.sort(dataset.spec.entity.key)
    mask = holdout_mask(dataset, wide)
    return wide.filter(~mask), wide.filter(mask)

"""The DP priors Private Evolution draws its candidates from, in one place: their stored form and the
offline candidate API each one gives."""

from __future__ import annotations

import polars as pl

from synth_assets.datasets.loading import Dataset
from synth_assets.pe.generators import CandidateAPI, OfflineGenerator
from synth_assets.pe.marginal_prior import MarginalPrior, MarginalPriorGenerator
from synth_assets.pe.model_prior import ModelPrior, ModelPriorGenerator

Prior = MarginalPrior | ModelPrior


def prior_from_frame(frame: pl.DataFrame) -> Prior | None:
    """The prior a frame stores (``to_frame`` of either kind); None for an empty frame (no prior)."""
    if frame.height == 0:
        return None
    return ModelPrior.from_frame(frame) if ModelPrior.is_frame(frame) else MarginalPrior.from_frame(frame)


def prior_api(dataset: Dataset, prior: Prior | None) -> CandidateAPI:
    """The offline candidate API: from the DP prior when there is one, else uniform on the public domain."""
    if isinstance(prior, ModelPrior):
        return ModelPriorGenerator(dataset, prior)
    if isinstance(prior, MarginalPrior):
        return MarginalPriorGenerator(dataset, prior)
    return OfflineGenerator(dataset)

"""Dagster resources: which dataset a run reads, and where the warehouse lives."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from synth_assets.datasets.loading import Dataset, load_dataset
from synth_assets.pe.evolution import PEConfig
from synth_assets.warehouse import checkpoint_root


class DatasetResource(ConfigurableResource):
    """The dataset directory a run reads, and the share of its entities to use."""

    directory: str = Field(description="Dataset directory (a dataset.yaml with its SQL and queries).")
    entity_fraction: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Use a deterministic slice of the entities (e.g. 0.05 for a quick trial run).",
    )

    def load(self) -> Dataset:
        return load_dataset(self.directory)


class PrivateEvolutionResource(ConfigurableResource):
    """Settings of Private Evolution runs (see PEConfig for what each one does) and of their releases."""

    iterations: int = PEConfig.model_fields["iterations"].default
    pool_size: int = PEConfig.model_fields["pool_size"].default
    selected: int = PEConfig.model_fields["selected"].default
    threshold_sigmas: float = PEConfig.model_fields["threshold_sigmas"].default
    selection: str = PEConfig.model_fields["selection"].default
    prior: str = PEConfig.model_fields["prior"].default
    prior_share: float = PEConfig.model_fields["prior_share"].default
    prior_one_way_share: float = PEConfig.model_fields["prior_one_way_share"].default
    calibration_sweeps: int = PEConfig.model_fields["calibration_sweeps"].default
    output: str = PEConfig.model_fields["output"].default
    reference_points: int = PEConfig.model_fields["reference_points"].default
    synthetic_rows: int | None = None
    seed: int = PEConfig.model_fields["seed"].default
    delta: float | None = Field(
        default=None, description="Delta of every release; unset: the dataset's, else 1e-6."
    )
    checkpoint_dir: str | None = Field(
        default=None, description="Stage checkpoints; unset: checkpoints/ beside the warehouse."
    )
    allow_negligible_noise: bool = Field(
        default=False,
        description="Run even when epsilon is so large that a release's noise is below 0.1 per count "
        "(its counts then come out nearly exact). Refused unless set.",
    )

    def config(self) -> PEConfig:
        fields = self.model_dump(exclude={"delta", "checkpoint_dir", "allow_negligible_noise"})
        return PEConfig(**fields)

    def checkpoints(self) -> Path:
        return Path(self.checkpoint_dir) if self.checkpoint_dir else checkpoint_root()

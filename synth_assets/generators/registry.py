"""Generators by name: which ones exist, and how to build one with a seed.

A dataset lists the generators its asset graph has (``synthesis.generators`` in dataset.yaml); a run may
materialize any subset of them. The graphical models import JAX, so they are imported on first use.
"""

from __future__ import annotations

from typing import get_args

from synth_assets.datasets.spec import GeneratorName
from synth_assets.generators.base import Generator
from synth_assets.generators.independent import IndependentMarginals, IndependentSettings
from synth_assets.generators.private_evolution import CandidateSource, PrivateEvolution
from synth_assets.pe.evolution import PEConfig

GENERATOR_NAMES: tuple[str, ...] = get_args(GeneratorName)
REFERENCE = "independent_marginals"


def make_generator(
    name: str,
    *,
    seed: int = 0,
    pe: PEConfig | None = None,
    candidates: CandidateSource | None = None,
) -> Generator:
    """The generator called ``name``, with ``seed`` (PE takes its whole config, seed included)."""
    if name == "private_evolution":
        return PrivateEvolution(pe or PEConfig(seed=seed), candidates=candidates)
    if name == REFERENCE:
        return IndependentMarginals(IndependentSettings(seed=seed))
    if name == "mst":
        from synth_assets.generators.graphical import MST, MSTSettings

        return MST(MSTSettings(seed=seed))
    if name == "aim":
        from synth_assets.generators.graphical import AIM, AIMSettings

        return AIM(AIMSettings(seed=seed))
    raise ValueError(f"unknown generator {name!r}: choose one of {', '.join(GENERATOR_NAMES)}")

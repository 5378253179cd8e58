"""synth_assets: differentially private synthetic twins of private tables, with proof of quality and privacy."""

from synth_assets.benchmark.compare import QueryScore, compare, pass_rate
from synth_assets.benchmark.workload import run_workload
from synth_assets.datasets.loading import Dataset, DatasetError, load_dataset
from synth_assets.tables.decompose import decompose

_LAZY = {  # imported on first use: the generators bring numba and the nearest-neighbour kernel
    "synthesize": "synth_assets.privacy.releases",
    "Synthesis": "synth_assets.privacy.releases",
    "PrivateEvolution": "synth_assets.generators.private_evolution",
    "PEConfig": "synth_assets.pe.evolution",
    "IndependentMarginals": "synth_assets.generators.independent",
    "evaluate": "synth_assets.evaluation.report",
    "EvaluationReport": "synth_assets.evaluation.report",
    "split_holdout": "synth_assets.evaluation.holdout",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'synth_assets' has no attribute {name!r}")


__all__ = [
    "Dataset",
    "DatasetError",
    "EvaluationReport",
    "IndependentMarginals",
    "PEConfig",
    "PrivateEvolution",
    "QueryScore",
    "Synthesis",
    "compare",
    "decompose",
    "evaluate",
    "load_dataset",
    "pass_rate",
    "run_workload",
    "split_holdout",
    "synthesize",
]

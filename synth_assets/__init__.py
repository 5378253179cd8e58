"""synth_assets: differentially private synthetic twins of private tables, with proof of quality and privacy."""

from synth_assets.benchmark.compare import QueryScore, compare, pass_rate
from synth_assets.benchmark.workload import run_workload
from synth_assets.datasets.loading import Dataset, DatasetError, load_dataset
from synth_assets.tables.decompose import decompose

__all__ = [
    "Dataset",
    "DatasetError",
    "QueryScore",
    "compare",
    "decompose",
    "load_dataset",
    "pass_rate",
    "run_workload",
]

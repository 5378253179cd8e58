"""Run one LLM generation in its own process (the tests kill it with SIGKILL and run it again).

    python run_generation.py DATASET_DIR OUT.parquet random N SEED
    python run_generation.py DATASET_DIR OUT.parquet variation SELECTED.parquet N_PER_RECORD SEED

Settings come from the SYNTH_ASSETS_LLM_* environment, as in a real run. Prints the report as JSON.
"""

from __future__ import annotations

import json
import sys

import polars as pl

from synth_assets.datasets.loading import load_dataset
from synth_assets.pe.llm import LLMCandidateAPI, llm_settings_from_env


def main(argv: list[str]) -> None:
    dataset = load_dataset(argv[0])
    out = argv[1]
    settings = llm_settings_from_env()
    if settings is None:
        raise SystemExit("SYNTH_ASSETS_LLM_MODEL is not set")
    fast = {"backoff_initial": 0.01, "backoff_max": 0.05, "batch_poll_seconds": 0.02}
    api = LLMCandidateAPI(dataset, settings.model_copy(update=fast), log=lambda m: print(m, file=sys.stderr, flush=True))
    if argv[2] == "random":
        frame = api.random(int(argv[3]), seed=int(argv[4]))
    else:
        selected = pl.read_parquet(argv[3])
        frame = api.variation(selected, int(argv[4]), iteration=1, iterations=2, seed=int(argv[5]))
    frame.write_parquet(out)
    print(json.dumps(api.report.to_dict()), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

"""Quality of every generator on every built-in dataset: marginal TVD, the workload, time and memory.

    .venv/bin/python bench/quality.py                       # every built-in dataset and generator
    .venv/bin/python bench/quality.py --dataset fertility --generator mst --epsilon 1
    .venv/bin/python bench/quality.py --dataset path/to/my_dataset   # a dataset directory of your own

For each dataset, generator and epsilon (default 0.5, 1 and 4) it prints the mean total variation
distance over all 1-way, all 2-way and 200 sampled 3-way marginals on the dataset's public bins, the
workload pass rate (per query, and per value metric so that an easy count column does not carry a
query), the fit-and-sample time and the peak memory of the process that ran the generator. Beside
them, the floor: the same TVDs between two random halves of the real table, i.e. what sampling noise
alone costs. Each (dataset, generator) runs in a fresh process, so that its peak memory is its own.
Nothing is recorded in any ledger: this measures generators on built-in public data. The last line is
one JSON document with every figure.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

EPSILONS = (0.5, 1.0, 4.0)
DELTA = 1e-6
BUILTIN = Path(__file__).resolve().parents[1] / "synth_assets" / "datasets" / "builtin"


def _datasets(names: list[str] | None) -> list[str]:
    if names:
        return [str(BUILTIN / n) if (BUILTIN / n).is_dir() else n for n in names]
    return [str(p) for p in sorted(BUILTIN.iterdir()) if (p / "dataset.yaml").is_file()]


def measure(dataset_dir: str, generator: str, epsilons: list[float], seed: int) -> dict:
    """Run one generator on one dataset at each epsilon (in this process) and score it."""
    from synth_assets.benchmark.workload import run_workload
    from synth_assets.datasets.loading import load_dataset
    from synth_assets.evaluation.leaderboard import score_generator
    from synth_assets.generators.registry import make_generator
    from synth_assets.privacy.releases import synthesize
    from synth_assets.tables.build import build_real_tables

    dataset = load_dataset(dataset_dir)
    real = build_real_tables(dataset)
    answers = run_workload(dataset.queries, real.reporting)
    rows = []
    for epsilon in epsilons:
        started, cpu = time.perf_counter(), time.process_time()
        result = synthesize(
            dataset, make_generator(generator, seed=seed), epsilon, real.wide, delta=DELTA, ledger=None
        )
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
        summary = score_generator(dataset, generator, answers, real.wide, result.population).summary
        rows.append({**summary, "epsilon": epsilon, "seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2)})
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"dataset": dataset.name, "generator": generator, "rows": rows, "peak_memory_mb": round(peak_mb, 1)}


def floor(dataset_dir: str, seed: int) -> dict:
    """TVDs between two random halves of the real wide table: the sampling-noise floor."""
    import numpy as np

    from synth_assets.datasets.loading import load_dataset
    from synth_assets.evaluation.marginals import mean_tvd
    from synth_assets.tables.build import build_real_tables

    dataset = load_dataset(dataset_dir)
    wide = build_real_tables(dataset).wide
    order = np.random.default_rng(seed).permutation(wide.height)
    half = wide.height // 2
    first, second = wide[order[:half]], wide[order[half:]]
    return {"dataset": dataset.name, "n": wide.height, **mean_tvd(dataset, first, second, three_way=True)}


def _in_subprocess(function: str, *args) -> dict:
    code = (
        "import json, sys; sys.path.insert(0, %r); import quality; "
        "print(json.dumps(quality.%s(*json.loads(sys.argv[1]))))" % (str(Path(__file__).parent), function)
    )
    completed = subprocess.run(
        [sys.executable, "-c", code, json.dumps(list(args))], capture_output=True, text=True
    )
    if completed.returncode != 0:
        return {"error": completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else "failed"}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    from synth_assets.datasets.loading import load_dataset

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", action="append", help="built-in name or directory (default: all built-in)")
    parser.add_argument("--generator", action="append", help="default: the dataset's synthesis.generators")
    parser.add_argument("--epsilon", action="append", type=float, help="default: 0.5, 1 and 4")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    epsilons = args.epsilon or list(EPSILONS)
    report = []
    for directory in _datasets(args.dataset):
        dataset = load_dataset(directory)
        generators = args.generator or list(dataset.spec.synthesis.generators)
        base = _in_subprocess("floor", directory, args.seed)
        print(f"\n{dataset.name}: n = {base.get('n')}; floor (two real halves) TVD 1/2/3-way "
              f"{base.get('tvd_1way', float('nan')):.4f} / {base.get('tvd_2way', float('nan')):.4f} / "
              f"{base.get('tvd_3way', float('nan')):.4f}")
        print(f"{'generator':<22} {'eps':>5} {'tvd1':>7} {'tvd2':>7} {'tvd3':>7} {'pass':>5} {'pass/m':>6} "
              f"{'seconds':>8} {'cpu s':>7} {'peak MB':>8}")
        results = []
        for generator in generators:
            measured = _in_subprocess("measure", directory, generator, epsilons, args.seed)
            results.append(measured)
            if "error" in measured:
                print(f"{generator:<22} failed: {measured['error']}")
                continue
            for row in measured["rows"]:
                print(
                    f"{generator:<22} {row['epsilon']:>5g} {row['tvd_1way']:>7.4f} {row['tvd_2way']:>7.4f} "
                    f"{row['tvd_3way']:>7.4f} {row['pass_rate']:>5.2f} {row['metric_pass_rate']:>6.2f} "
                    f"{row['seconds']:>8.1f} {row['cpu_seconds']:>7.1f} {measured['peak_memory_mb']:>8.0f}"
                )
        report.append({"dataset": dataset.name, "floor": base, "generators": results})
    print(json.dumps({"delta": DELTA, "epsilons": epsilons, "seed": args.seed, "datasets": report}))


if __name__ == "__main__":
    main()

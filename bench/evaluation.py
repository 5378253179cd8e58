"""Time of the evaluation of one synthetic table against the holdout, on the built-in datasets.

    .venv/bin/python bench/evaluation.py            # lahman (20,093 x 68) and fertility (100,000 rows)

The synthetic table is the independent reference at epsilon 1 made from the training rows (how it is
made does not change the time). Prints the seconds of the whole ``evaluate`` (fidelity with heatmaps and
detection, ML utility, the workload, privacy risk with the membership attack's 200 bootstrap draws and
the three Anonymeter attacks) and of each section on its own, and of the HTML page; the last line is JSON.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

BUILTIN = Path(__file__).resolve().parents[1] / "synth_assets" / "datasets" / "builtin"


def measure(name: str, rows: int | None) -> dict:
    from synth_assets import evaluate, split_holdout
    from synth_assets.benchmark.workload import run_workload
    from synth_assets.evaluation import report as sections
    from synth_assets.evaluation.privacy_risk import privacy_risk
    from synth_assets.datasets.loading import load_dataset
    from synth_assets.generators.independent import IndependentMarginals
    from synth_assets.privacy.releases import synthesize
    from synth_assets.tables.build import build_real_tables

    dataset = load_dataset(BUILTIN / name)
    real = build_real_tables(dataset)
    wide = real.wide
    if rows and wide.height > rows:
        wide = wide.sample(rows, seed=0)
    answers = run_workload(dataset.queries, real.reporting)
    training, holdout = split_holdout(dataset, wide)
    synthetic = synthesize(dataset, IndependentMarginals(), 1.0, training, ledger=None).population
    evaluate(dataset, training.head(200), holdout.head(200), synthetic.head(200), epsilon=1.0, delta=1e-6)  # compile
    started = time.perf_counter()
    report = evaluate(dataset, training, holdout, synthetic, epsilon=1.0, delta=1e-6, answers=answers)
    seconds = time.perf_counter() - started
    gates = dataset.spec.evaluation.gates
    parts = {}

    def timed(name, call):
        begun = time.perf_counter()
        value = call()
        parts[name] = round(time.perf_counter() - begun, 2)
        return value

    baseline = timed("holdout_baseline", lambda: sections.holdout_fidelity(dataset, training, holdout))
    timed("fidelity", lambda: sections._fidelity(dataset, training, holdout, synthetic, baseline, gates, 0))
    timed("utility", lambda: sections._utility(dataset, training, holdout, synthetic, gates, 0))
    timed("workload", lambda: sections._workload(dataset, answers, synthetic, gates))
    timed("privacy", lambda: privacy_risk(dataset, training, holdout, synthetic, epsilon=1.0, delta=1e-6))
    timed("html", lambda: report.to_html(Path("/dev/null")))
    return {"dataset": name, "rows": wide.height, "columns": len(dataset.spec.modelled_columns),
            "seconds": round(seconds, 2), "sections": parts, "verdicts": report.verdicts}


def main() -> None:
    results = [measure("lahman", None), measure("fertility", 100_000)]
    for r in results:
        print(f"{r['dataset']:<10} {r['rows']:>8} rows x {r['columns']:>3} columns: evaluate {r['seconds']:>6.1f} s; "
              + ", ".join(f"{k} {v:.1f} s" for k, v in r["sections"].items()))
    print(json.dumps(results))


if __name__ == "__main__":
    main()

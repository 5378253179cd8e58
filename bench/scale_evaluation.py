"""Where the evaluation's time goes at scale: one synthetic table of a scale run, section by section.

    .venv/bin/python bench/scale_evaluation.py WAREHOUSE.duckdb DATASET_DIR [--generator mst] [--partition 1]

Reads the training and holdout rows, the real workload answers and one generator's synthetic wide table
(one epsilon partition) from the warehouse a run of ``bench/scale.py`` left behind, and times what
``evaluation/privacy_risk`` runs for that table (``synth_assets.evaluation.report.evaluate``): the holdout
baseline (once per partition in the asset), fidelity, ML utility, the workload, and the privacy risk taken
apart as ``privacy_risk`` runs it (encoding, exact copies, the two nearest-row distance passes of the
distance to closest record, the membership attack, attribute inference, linkability, singling out), with
the number of distance terms (rows x rows x columns) of each nearest-row pass. Wall and CPU seconds each;
the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("warehouse", type=Path)
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--generator", default="mst", help="schema of the synthetic table (mst, reference, synthetic)")
    ap.add_argument("--partition", default="1")
    args = ap.parse_args(argv)

    import duckdb
    import numpy as np

    from synth_assets.datasets.loading import load_dataset
    from synth_assets.evaluation import attacks
    from synth_assets.evaluation import privacy_risk as pr
    from synth_assets.evaluation import report as sections
    from synth_assets.io_managers import read_frame, read_frames
    from synth_assets.pe.encoding import build_encoder

    table = {"mst": ("mst", "population"), "reference": ("reference", "independent_marginals"),
             "synthetic": ("synthetic", "selected_population")}[args.generator]
    dataset = load_dataset(args.dataset)
    connection = duckdb.connect(str(args.warehouse), read_only=True)
    try:
        training = read_frame(connection, "real", "training")
        holdout = read_frame(connection, "real", "holdout")
        synthetic = read_frame(connection, *table, args.partition)
        answers = read_frames(connection, "real", "benchmark_answers")
    finally:
        connection.close()
    synthetic = synthetic.drop([c for c in synthetic.columns if c.startswith("__")])
    gates = dataset.spec.evaluation.gates
    dims = len(dataset.spec.modelled_columns)
    parts: dict[str, dict] = {}

    def timed(name, call, terms=None):
        c, t = time.process_time(), time.perf_counter()
        value = call()
        parts[name] = {"wall_s": round(time.perf_counter() - t, 2), "cpu_s": round(time.process_time() - c, 2)}
        if terms:
            parts[name]["gterms"] = round(terms / 1e9, 1)
        print(f"  {name:<34} {parts[name]['wall_s']:>8.1f} s wall {parts[name]['cpu_s']:>8.1f} s CPU"
              + (f"   {terms / 1e9:8.1f} G distance terms" if terms else ""), flush=True)
        return value

    print(f"{dataset.name}: training {training.height:,}, holdout {holdout.height:,}, "
          f"{args.generator} synthetic {synthetic.height:,} rows x {dims} modelled columns")
    baseline = timed("holdout_baseline (once per partition)",
                     lambda: sections.holdout_fidelity(dataset, training, holdout))
    timed("fidelity", lambda: sections._fidelity(dataset, training, holdout, synthetic, baseline, gates, 0))
    timed("utility", lambda: sections._utility(dataset, training, holdout, synthetic, gates, 0))
    timed("workload", lambda: sections._workload(dataset, answers, synthetic, gates))

    # privacy_risk, step by step as synth_assets.evaluation.privacy_risk.privacy_risk runs it
    encoder = build_encoder(dataset)
    weights = encoder.categorical_weights
    rng = np.random.default_rng(np.random.SeedSequence([0, 0x9A1D]))
    size = min(training.height, holdout.height)
    train_sample = training[np.sort(rng.choice(training.height, size=size, replace=False))]
    hold = holdout[np.sort(rng.choice(holdout.height, size=size, replace=False))] if holdout.height > size else holdout
    enc_train, enc_hold, enc_syn = timed("privacy: encode", lambda: [encoder.encode(f) for f in (train_sample, hold, synthetic)])
    timed("privacy: exact copies", lambda: (pr.exact_copy_share(enc_syn, enc_train), pr.exact_copy_share(enc_syn, enc_hold)))
    s, h = synthetic.height, size
    timed("privacy: DCR synthetic->training", lambda: pr._nearest_distance(enc_syn, enc_train, weights), s * h * dims)
    timed("privacy: DCR synthetic->holdout", lambda: pr._nearest_distance(enc_syn, enc_hold, weights), s * h * dims)
    half = h // 2
    timed("privacy: membership (+200 bootstraps)",
          lambda: pr._membership(enc_train, enc_hold, enc_syn, weights, rng, 200),
          2 * half * (half + s) * dims)
    people = min(size, pr.ATTACK_TARGETS)
    targets, controls = train_sample.head(people), hold.tail(people)
    timed("privacy: attribute inference",
          lambda: [attacks.attribute_inference(dataset, encoder, targets, controls, synthetic, c)
                   for c in dataset.spec.evaluation.sensitive_columns])
    timed("privacy: linkability", lambda: attacks.linkability(dataset, encoder, targets, controls, synthetic, seed=0))
    timed("privacy: singling out", lambda: attacks.singling_out(encoder, train_sample, hold, synthetic, seed=0))
    total = sum(p["wall_s"] for p in parts.values())
    print(f"total {total:.1f} s wall")
    result = {"dataset": dataset.name, "generator": args.generator, "training": training.height,
              "holdout": holdout.height, "synthetic": synthetic.height, "columns": dims, "parts": parts,
              "total_wall_s": round(total, 2)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

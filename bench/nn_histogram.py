"""Benchmark the PE vote: exact nearest candidate (numba kernel) against the original design's method.

Data shaped like the wide table: 9 categorical columns (5-20 levels, weighted) and 59 numeric columns in
[0, 1] multiplied by their weights; real records and candidates are drawn independently.

Both methods run IN THE SAME RUN (the box may be shared: compare within one run, not across runs). For
large sizes the reference (chunked scipy cdist on 2 threads) is timed on a random subsample of the real
rows and extrapolated linearly in the number of rows (its cost is exactly proportional to it); the output
says so. The two methods' answers are compared on that subsample.

Usage:
    python bench/nn_histogram.py                 # 100k real x 50k candidates
    python bench/nn_histogram.py --quick         # 20k x 10k
    python bench/nn_histogram.py --real N --candidates M [--ref-rows R] [--repeat K] [--seed S]

Prints human-readable lines, then as the LAST line a JSON object (speedup_vs_reference, gterms_per_s,
peak_rss_mb, sizes and seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from synth_assets.pe import nn  # noqa: E402  (sets numba's CPU features before numba is imported)
from synth_assets.privacy.accounting import calibrate_sigma  # noqa: E402

N_CAT = 9
N_NUM = 59
REF_TERM_BUDGET = 3e10  # terms the reference is timed on at most (about 20-50 s) unless --ref-rows


def make_data(n_real: int, n_cand: int, seed: int):
    rng = np.random.default_rng(seed)
    levels = rng.integers(5, 21, size=N_CAT)
    cat_w = rng.uniform(0.5, 2.0, size=N_CAT).astype(np.float32)
    num_w = rng.uniform(0.5, 2.0, size=N_NUM).astype(np.float32)

    def rows(n):
        num = rng.random((n, N_NUM), dtype=np.float32) * num_w
        cat = np.empty((n, N_CAT), dtype=np.int32)
        for j, lv in enumerate(levels):
            p = rng.dirichlet(np.ones(lv))  # skewed level frequencies, like real categories
            cat[:, j] = rng.choice(lv, size=n, p=p)
        return num, cat

    real_num, real_cat = rows(n_real)
    cand_num, cand_cat = rows(n_cand)
    return real_num, real_cat, cand_num, cand_cat, cat_w, levels


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def timed(fn):
    c, t = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="20k real x 10k candidates")
    ap.add_argument("--real", type=int, default=None, help="number of real records (default 100000)")
    ap.add_argument("--candidates", type=int, default=None, help="number of candidates (default 50000)")
    ap.add_argument("--ref-rows", type=int, default=None,
                    help="real rows the reference is timed on (default: all if small, else a subsample)")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs of the numba kernel (best is kept)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    n_real = args.real if args.real is not None else (20_000 if args.quick else 100_000)
    n_cand = args.candidates if args.candidates is not None else (10_000 if args.quick else 50_000)
    if n_real < 1 or n_cand < 1 or args.repeat < 1:
        ap.error("--real, --candidates and --repeat must be >= 1")
    dims = N_CAT + N_NUM
    terms = n_real * n_cand * dims
    load_before = os.getloadavg()
    rss_start = peak_rss_mb()  # interpreter + numpy/scipy/numba imports

    print(f"data: {n_real:,} real x {n_cand:,} candidates, {N_CAT} categorical + {N_NUM} numeric columns "
          f"= {terms / 1e9:.1f} G terms")
    (real_num, real_cat, cand_num, cand_cat, cat_w, levels), t_data, _ = timed(
        lambda: make_data(n_real, n_cand, args.seed))
    print(f"  built in {t_data:.1f} s; category levels {levels.tolist()}")

    _, t_warm, _ = timed(nn.warm_up)
    info = nn.kernel_info()
    print(f"warm-up (compile or load numba cache): {t_warm:.2f} s; kernel: {info}")

    runs = []
    for _ in range(args.repeat):
        (idx, dist), wall, cpu = timed(
            lambda: nn.nearest_candidates(real_num, real_cat, cand_num, cand_cat, cat_w,
                                          return_distance=True))
        runs.append((wall, cpu))
        print(f"numba kernel: {wall:.2f} s wall, {cpu:.2f} s CPU -> {terms / wall / 1e9:.2f} G terms/s "
              f"({terms / cpu / 1e9:.2f} G terms per CPU-second)")
    t_nn, cpu_nn = min(runs)
    rss_kernel = peak_rss_mb()

    sigma = calibrate_sigma(1.0, 1e-6, 1)
    rng = np.random.default_rng(args.seed + 1)
    (hist, noisy), t_hist, _ = timed(lambda: (
        (h := nn.vote_histogram(idx, n_cand)),
        h + rng.normal(0.0, sigma, size=n_cand),
    ))
    assert int(hist.sum()) == n_real
    print(f"vote histogram + Gaussian noise (sigma {sigma:.3f}): {t_hist * 1e3:.1f} ms; "
          f"{int((hist > 0).sum()):,} candidates got votes, max {int(hist.max())}")

    ref_rows = args.ref_rows if args.ref_rows is not None else int(
        min(n_real, max(1000, REF_TERM_BUDGET // (n_cand * dims))))
    ref_rows = max(1, min(n_real, ref_rows))
    extrapolated = ref_rows < n_real
    sub = np.sort(rng.choice(n_real, size=ref_rows, replace=False)) if extrapolated else np.arange(n_real)
    (ref_idx, ref_dist), t_ref_meas, cpu_ref = timed(lambda: nn.reference_nearest_cdist(
        real_num[sub], real_cat[sub], cand_num, cand_cat, cat_w, return_distance=True))
    scale = n_real / ref_rows
    t_ref = t_ref_meas * scale
    ref_rate = ref_rows * n_cand * dims / t_ref_meas / 1e9
    if extrapolated:
        print(f"reference (chunked scipy cdist, 2 threads): timed on a random subsample of {ref_rows:,} of "
              f"{n_real:,} real rows: {t_ref_meas:.2f} s wall ({cpu_ref:.2f} s CPU) -> EXTRAPOLATED linearly "
              f"to {t_ref:.1f} s for all rows ({ref_rate:.2f} G terms/s)")
    else:
        print(f"reference (chunked scipy cdist, 2 threads): {t_ref:.2f} s wall ({cpu_ref:.2f} s CPU), "
              f"{ref_rate:.2f} G terms/s")
    rss_total = peak_rss_mb()

    # agreement on the subsample: indices equal, or (float32 vs float64 rounding) an exact near-tie
    same = ref_idx == idx[sub]
    n_diff = int((~same).sum())
    near_ties = 0
    if n_diff:
        rows = sub[~same]
        d_k = ((np.abs(real_num[rows].astype(np.float64) - cand_num[idx[rows]]).sum(1))
               + (cat_w * (real_cat[rows] != cand_cat[idx[rows]])).sum(1))
        near_ties = int((np.abs(d_k - ref_dist[~same]) <= 1e-5 * np.maximum(1.0, ref_dist[~same])).sum())
    agree_ok = near_ties == n_diff
    print(f"agreement on {ref_rows:,} rows: {ref_rows - n_diff:,} identical indices, {n_diff} differ"
          + (f" ({near_ties} of them are float rounding near-ties: equal distance within 1e-5)"
             if n_diff else "")
          + ("" if agree_ok else "  ** DISAGREEMENT **"))

    speedup = t_ref / t_nn
    cpu_ref_full = cpu_ref * scale
    speedup_cpu = cpu_ref_full / cpu_nn
    print(f"speedup vs reference: {speedup:.1f}x wall-clock (numba {t_nn:.2f} s vs reference "
          f"{'~' if extrapolated else ''}{t_ref:.1f} s), {speedup_cpu:.1f}x in CPU-seconds (robust to other "
          f"load on the box: numba {cpu_nn:.2f} vs {'~' if extrapolated else ''}{cpu_ref_full:.1f} CPU-s)")
    print(f"memory: peak RSS {rss_start:.0f} MB after imports, {rss_kernel:.0f} MB after the kernel, "
          f"{rss_total:.0f} MB after the reference; load average {load_before[0]:.2f} -> "
          f"{os.getloadavg()[0]:.2f} (other processes on the box)")

    result = {
        "n_real": n_real,
        "n_candidates": n_cand,
        "n_categorical": N_CAT,
        "n_numeric": N_NUM,
        "gterms": terms / 1e9,
        "warmup_seconds": round(t_warm, 3),
        "numba_seconds": round(t_nn, 3),
        "numba_cpu_seconds": round(cpu_nn, 3),
        "numba_runs_seconds": [round(w, 3) for w, _ in runs],
        "gterms_per_s": round(terms / t_nn / 1e9, 3),
        "gterms_per_cpu_s": round(terms / cpu_nn / 1e9, 3),
        "histogram_seconds": round(t_hist, 4),
        "reference_rows": ref_rows,
        "reference_extrapolated": extrapolated,
        "reference_seconds_measured": round(t_ref_meas, 3),
        "reference_seconds": round(t_ref, 3),
        "reference_gterms_per_s": round(ref_rate, 3),
        "speedup_vs_reference": round(speedup, 2),
        "speedup_vs_reference_cpu_seconds": round(speedup_cpu, 2),
        "reference_cpu_seconds": round(cpu_ref_full, 3),
        "agreement_identical": round(1 - n_diff / ref_rows, 6),
        "agreement_ok": agree_ok,
        "peak_rss_mb": round(rss_total, 1),
        "peak_rss_mb_after_kernel": round(rss_kernel, 1),
        "peak_rss_mb_after_imports": round(rss_start, 1),
        "threads": info.get("threads"),
        "threading_layer": info.get("threading_layer"),
        "wide_vectors_512bit": info.get("prefer_256_bit") is False,
        "loadavg_before": round(load_before[0], 2),
        "loadavg_after": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

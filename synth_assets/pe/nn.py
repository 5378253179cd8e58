"""Exact nearest-candidate search for the Private Evolution vote, and the vote histogram.

Distance between a private record ``a`` and a candidate ``b`` (mixed encoding of the wide table)::

    d(a, b) = sum_j wc_j [a_cat_j != b_cat_j]  +  sum_k |a_num_k - b_num_k|

Numeric columns arrive already normalised AND multiplied by their weights (float32); categorical columns
arrive as int32 codes with float32 weights ``wc``. Every private record votes for its nearest candidate;
ties go to the LOWEST candidate index, so that runs are reproducible.

Implementation (see docs notes "nn-kernel"): a numba kernel, blocked and cache-tiled.

* Candidates are stored transposed (dims x M) so that SIMD lanes run across candidates and no per-pair
  horizontal sum is needed.
* A tile of 8 queries shares every candidate load; numeric dimensions are consumed four at a time, so
  each accumulator load/store carries 4 terms. Accumulators for a strip of 512 candidates x 8 queries
  (16 KB) stay in L1; candidates are swept in chunks of ``chunk`` (default 4096, ~1 MB: L2) for all the
  queries of a block; query blocks run in parallel (``prange``, dynamic scheduling).
* After each strip the row minimum is only looked for when some distance beats the current best
  (a vectorised count), then the FIRST index holding the minimum is taken: with strips scanned in
  increasing candidate order and a strict ``<`` against the running best, the lowest index wins ties.
* fastmath is on EXCEPT re-association and no-infinities (flags nnan, nsz, arcp, contract, afn; inputs
  are checked to be finite, the running best starts at +inf): every distance is accumulated in float32
  in a fixed order (categorical columns in order, then numeric columns in order), so exact duplicates
  give exactly equal distances (deterministic tie-break) and :func:`brute_force_nearest`, which adds the
  same terms in the same order, reproduces the distances bit for bit. Re-association would let LLVM
  regroup the four terms added per step, which changed distances in the last bit in experiments.
* Memory: the kernel allocates only its outputs, a transposed copy of the candidates and ~20 KB per
  query block; there is never an N x M matrix.
* 512-bit vectors: LLVM prefers 256-bit vectors on these Xeons; allowing 512-bit ones gave 1.3-1.5x.
  On import this module sets numba's CPU features to the host's plus ``-prefer-256-bit`` when the host
  has AVX-512, NUMBA_CPU_FEATURES is not set and numba's CPU target has not compiled anything yet. This
  is process-wide for numba code compiled afterwards; set ``SYNTH_ASSETS_NN_512BIT=0`` to opt out.
  :func:`kernel_info` reports what the kernel actually got.

:func:`brute_force_nearest` (pure numpy, for tests on small sizes) and :func:`reference_nearest_cdist`
(the original design's method: chunked ``scipy.spatial.distance.cdist`` on 2 threads) give the same
answers and serve as references.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def _prefer_512bit_vectors() -> None:
    """Let LLVM use 512-bit vectors for numba code (see module docstring); best effort, never raises."""
    if os.environ.get("SYNTH_ASSETS_NN_512BIT", "1").strip().lower() in {"0", "false", "no", "off"}:
        return
    if os.environ.get("NUMBA_CPU_FEATURES"):
        return
    try:
        from numba.core import codegen, config

        if config.CPU_FEATURES is not None:
            return
        features = codegen.get_host_cpu_features()
        if "+avx512f" in features.split(","):
            config.CPU_FEATURES = features + ",-prefer-256-bit"
    except Exception:  # pragma: no cover - an optimisation only
        return


_prefer_512bit_vectors()

import numba  # noqa: E402  (after the CPU-feature set-up above)

__all__ = [
    "brute_force_nearest",
    "kernel_info",
    "nearest_candidates",
    "reference_nearest_cdist",
    "vote_histogram",
    "warm_up",
]

_TILE = 8  # queries sharing each candidate load (the kernel body is written out for exactly 8)
_STRIP = 512  # candidates per accumulator strip: 8 x 512 float32 = 16 KB, stays in L1
_QBLOCK = 128  # queries per parallel work item (at most)
# fastmath without "reassoc" (keeps the float32 summation order fixed) and without "ninf" (the running
# best starts at +inf); see the module docstring.
_FASTMATH = {"nnan", "nsz", "arcp", "contract", "afn"}


# ----------------------------------------------------------------------------------------------- kernel


@numba.njit(fastmath=_FASTMATH, cache=True, nogil=True, inline="always")
def _strip_distances(qnum, qcat, cnumT, ccatT, wc, r0, r1, r2, r3, r4, r5, r6, r7, s0, L, acc):
    """acc[i, j] = d(query r_i, candidate s0 + j) for i < 8, j < L."""
    zero = np.float32(0.0)
    dc = ccatT.shape[0]
    dn = cnumT.shape[0]
    dn4 = dn - dn % 4
    # accumulators <- 0
    for j in range(L):
        acc[0, j] = zero; acc[1, j] = zero; acc[2, j] = zero; acc[3, j] = zero
        acc[4, j] = zero; acc[5, j] = zero; acc[6, j] = zero; acc[7, j] = zero
    # categorical columns: += wc_c where the codes differ
    for c in range(dc):
        w = wc[c]
        y0 = qcat[r0, c]; y1 = qcat[r1, c]; y2 = qcat[r2, c]; y3 = qcat[r3, c]
        y4 = qcat[r4, c]; y5 = qcat[r5, c]; y6 = qcat[r6, c]; y7 = qcat[r7, c]
        crow = ccatT[c, s0:s0 + L]
        for j in range(L):
            v = crow[j]
            acc[0, j] += w if v != y0 else zero
            acc[1, j] += w if v != y1 else zero
            acc[2, j] += w if v != y2 else zero
            acc[3, j] += w if v != y3 else zero
            acc[4, j] += w if v != y4 else zero
            acc[5, j] += w if v != y5 else zero
            acc[6, j] += w if v != y6 else zero
            acc[7, j] += w if v != y7 else zero
    # numeric columns, four at a time: += |q - c| (added one by one, left to right)
    for k in range(0, dn4, 4):
        x00 = qnum[r0, k + 0]; x10 = qnum[r1, k + 0]; x20 = qnum[r2, k + 0]; x30 = qnum[r3, k + 0]
        x40 = qnum[r4, k + 0]; x50 = qnum[r5, k + 0]; x60 = qnum[r6, k + 0]; x70 = qnum[r7, k + 0]
        x01 = qnum[r0, k + 1]; x11 = qnum[r1, k + 1]; x21 = qnum[r2, k + 1]; x31 = qnum[r3, k + 1]
        x41 = qnum[r4, k + 1]; x51 = qnum[r5, k + 1]; x61 = qnum[r6, k + 1]; x71 = qnum[r7, k + 1]
        x02 = qnum[r0, k + 2]; x12 = qnum[r1, k + 2]; x22 = qnum[r2, k + 2]; x32 = qnum[r3, k + 2]
        x42 = qnum[r4, k + 2]; x52 = qnum[r5, k + 2]; x62 = qnum[r6, k + 2]; x72 = qnum[r7, k + 2]
        x03 = qnum[r0, k + 3]; x13 = qnum[r1, k + 3]; x23 = qnum[r2, k + 3]; x33 = qnum[r3, k + 3]
        x43 = qnum[r4, k + 3]; x53 = qnum[r5, k + 3]; x63 = qnum[r6, k + 3]; x73 = qnum[r7, k + 3]
        row0 = cnumT[k + 0, s0:s0 + L]; row1 = cnumT[k + 1, s0:s0 + L]
        row2 = cnumT[k + 2, s0:s0 + L]; row3 = cnumT[k + 3, s0:s0 + L]
        for j in range(L):
            v0 = row0[j]; v1 = row1[j]; v2 = row2[j]; v3 = row3[j]
            acc[0, j] = (acc[0, j] + abs(x00 - v0) + abs(x01 - v1)
                         + abs(x02 - v2) + abs(x03 - v3))
            acc[1, j] = (acc[1, j] + abs(x10 - v0) + abs(x11 - v1)
                         + abs(x12 - v2) + abs(x13 - v3))
            acc[2, j] = (acc[2, j] + abs(x20 - v0) + abs(x21 - v1)
                         + abs(x22 - v2) + abs(x23 - v3))
            acc[3, j] = (acc[3, j] + abs(x30 - v0) + abs(x31 - v1)
                         + abs(x32 - v2) + abs(x33 - v3))
            acc[4, j] = (acc[4, j] + abs(x40 - v0) + abs(x41 - v1)
                         + abs(x42 - v2) + abs(x43 - v3))
            acc[5, j] = (acc[5, j] + abs(x50 - v0) + abs(x51 - v1)
                         + abs(x52 - v2) + abs(x53 - v3))
            acc[6, j] = (acc[6, j] + abs(x60 - v0) + abs(x61 - v1)
                         + abs(x62 - v2) + abs(x63 - v3))
            acc[7, j] = (acc[7, j] + abs(x70 - v0) + abs(x71 - v1)
                         + abs(x72 - v2) + abs(x73 - v3))
    for k in range(dn4, dn):
        x00 = qnum[r0, k]; x10 = qnum[r1, k]; x20 = qnum[r2, k]; x30 = qnum[r3, k]
        x40 = qnum[r4, k]; x50 = qnum[r5, k]; x60 = qnum[r6, k]; x70 = qnum[r7, k]
        row0 = cnumT[k, s0:s0 + L]
        for j in range(L):
            v0 = row0[j]
            acc[0, j] += abs(x00 - v0)
            acc[1, j] += abs(x10 - v0)
            acc[2, j] += abs(x20 - v0)
            acc[3, j] += abs(x30 - v0)
            acc[4, j] += abs(x40 - v0)
            acc[5, j] += abs(x50 - v0)
            acc[6, j] += abs(x60 - v0)
            acc[7, j] += abs(x70 - v0)


@numba.njit(parallel=True, fastmath=_FASTMATH, cache=True, nogil=True)
def _nearest_kernel(qnum, qcat, cnumT, ccatT, wc, m, chunk, qblock, out_idx, out_dist):
    n = qnum.shape[0]
    nblocks = (n + qblock - 1) // qblock
    for b in numba.prange(nblocks):
        q0 = b * qblock
        q1 = min(n, q0 + qblock)
        nq = q1 - q0
        best_d = np.full(nq, np.inf, dtype=np.float32)
        best_i = np.zeros(nq, dtype=np.int64)
        acc = np.empty((_TILE, _STRIP), dtype=np.float32)
        for c0 in range(0, m, chunk):  # candidate chunk: stays in L2 while all tiles of the block sweep it
            c1 = min(m, c0 + chunk)
            for t0 in range(0, nq, _TILE):
                nt = min(_TILE, nq - t0)
                # a short last tile repeats its last query; the extra rows are computed and ignored
                last = q0 + t0 + nt - 1
                r0 = q0 + t0
                r1 = min(r0 + 1, last)
                r2 = min(r0 + 2, last)
                r3 = min(r0 + 3, last)
                r4 = min(r0 + 4, last)
                r5 = min(r0 + 5, last)
                r6 = min(r0 + 6, last)
                r7 = min(r0 + 7, last)
                for s0 in range(c0, c1, _STRIP):
                    L = min(_STRIP, c1 - s0)
                    _strip_distances(qnum, qcat, cnumT, ccatT, wc, r0, r1, r2, r3, r4, r5, r6, r7, s0, L, acc)
                    for i in range(nt):
                        bd = best_d[t0 + i]
                        better = 0
                        for j in range(L):  # vectorised: does anything beat the running best?
                            better += acc[i, j] < bd
                        if better == 0:
                            continue
                        mv = bd
                        for j in range(L):
                            x = acc[i, j]
                            mv = x if x < mv else mv
                        for j in range(L):  # first (lowest) index holding the minimum
                            if acc[i, j] == mv:
                                best_d[t0 + i] = mv
                                best_i[t0 + i] = s0 + j
                                break
        for t in range(nq):
            out_idx[q0 + t] = best_i[t]
            out_dist[q0 + t] = best_d[t]


# ------------------------------------------------------------------------------------------- validation


def _as_2d(x, name: str, kind: str, n_rows: int | None):
    """Validate one input block; returns a C-contiguous, writeable float32 (kind 'num') or int32 array."""
    if x is None:
        if n_rows is None:
            raise ValueError(f"{name} is None and the number of rows cannot be inferred")
        return np.zeros((n_rows, 0), dtype=np.float32 if kind == "num" else np.int32)
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows x columns), got shape {arr.shape}")
    if kind == "num":
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
                or arr.dtype == np.bool_):
            raise TypeError(f"{name} must hold real numbers (converted to float32), got dtype {arr.dtype}")
        with np.errstate(over="ignore", invalid="ignore"):  # overflow -> inf, reported just below
            out = np.ascontiguousarray(arr, dtype=np.float32)
        if out.size and not np.isfinite(out).all():
            raise ValueError(f"{name} contains NaN or infinite values (or values too large for float32)")
    else:
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise TypeError(
                f"{name} must hold integer category codes (converted to int32), got dtype {arr.dtype}"
            )
        if arr.size and arr.dtype != np.bool_ and not np.can_cast(arr.dtype, np.int32):
            info = np.iinfo(np.int32)
            if arr.min() < info.min or arr.max() > info.max:
                raise ValueError(
                    f"{name} has category codes outside the int32 range [{info.min}, {info.max}]"
                )
        out = np.ascontiguousarray(arr, dtype=np.int32)
    if not out.flags.writeable:  # numba types read-only arrays separately (a second compilation)
        out = out.copy()
    return out


def _validate(real_num, real_cat, cand_num, cand_cat, cat_weights):
    """Check shapes and dtypes; returns C-contiguous (qnum f32, qcat i32, cnum f32, ccat i32, wc f32)."""
    n = next((np.shape(a)[0] for a in (real_num, real_cat) if a is not None and np.ndim(a) == 2), None)
    m = next((np.shape(a)[0] for a in (cand_num, cand_cat) if a is not None and np.ndim(a) == 2), None)
    qnum = _as_2d(real_num, "real_num", "num", n)
    qcat = _as_2d(real_cat, "real_cat", "cat", n)
    cnum = _as_2d(cand_num, "cand_num", "num", m)
    ccat = _as_2d(cand_cat, "cand_cat", "cat", m)
    if qnum.shape[0] != qcat.shape[0]:
        raise ValueError(f"real_num has {qnum.shape[0]} rows but real_cat has {qcat.shape[0]}")
    if cnum.shape[0] != ccat.shape[0]:
        raise ValueError(f"cand_num has {cnum.shape[0]} rows but cand_cat has {ccat.shape[0]}")
    if qnum.shape[1] != cnum.shape[1]:
        raise ValueError(f"real_num has {qnum.shape[1]} numeric columns but cand_num has {cnum.shape[1]}")
    if qcat.shape[1] != ccat.shape[1]:
        raise ValueError(f"real_cat has {qcat.shape[1]} categorical columns but cand_cat has {ccat.shape[1]}")
    if cnum.shape[0] == 0:
        raise ValueError("there must be at least one candidate (cand_num / cand_cat have 0 rows)")
    if cat_weights is None:
        if qcat.shape[1]:
            raise ValueError("cat_weights is required when there are categorical columns")
        cat_weights = np.zeros(0, dtype=np.float32)
    wc = np.asarray(cat_weights)
    if wc.ndim != 1 or wc.shape[0] != qcat.shape[1]:
        raise ValueError(
            f"cat_weights must be a 1-D array with one weight per categorical column ({qcat.shape[1]}), "
            f"got shape {wc.shape}"
        )
    if not (np.issubdtype(wc.dtype, np.floating) or np.issubdtype(wc.dtype, np.integer)):
        raise TypeError(f"cat_weights must hold real numbers, got dtype {wc.dtype}")
    wc = np.array(wc, dtype=np.float32, order="C", copy=True)
    if not np.isfinite(wc).all() or (wc < 0).any():
        raise ValueError("cat_weights must be finite and >= 0")
    return qnum, qcat, cnum, ccat, wc


# ------------------------------------------------------------------------------------------------ API


def nearest_candidates(real_num, real_cat, cand_num, cand_cat, cat_weights, *, chunk=4096,
                       return_distance=False):
    """Index of the nearest candidate of every private record (exact; ties -> lowest candidate index).

    Parameters
    ----------
    real_num, cand_num : (N, Dn) and (M, Dn) numeric columns, already normalised and weighted; converted
        to float32. ``None`` or Dn = 0 for no numeric columns.
    real_cat, cand_cat : (N, Dc) and (M, Dc) integer category codes (int32 range); ``None`` or Dc = 0
        for no categorical columns.
    cat_weights : (Dc,) non-negative weights of the categorical columns (float32).
    chunk : candidates swept per block (L2 blocking), >= 1.
    return_distance : also return the float32 distance to the chosen candidate.

    Returns
    -------
    int64 array of length N (and a float32 array of length N if ``return_distance``).
    With no columns at all every distance is 0 and every record votes for candidate 0.
    """
    chunk = int(chunk)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    qnum, qcat, cnum, ccat, wc = _validate(real_num, real_cat, cand_num, cand_cat, cat_weights)
    n, m = qnum.shape[0], cnum.shape[0]
    out_idx = np.zeros(n, dtype=np.int64)
    out_dist = np.zeros(n, dtype=np.float32)
    if n:
        cnumT = np.ascontiguousarray(cnum.T)
        ccatT = np.ascontiguousarray(ccat.T)
        threads = numba.get_num_threads()
        # enough work items for dynamic scheduling to balance threads, multiples of the tile size
        per_block = -(-n // (4 * threads))
        qblock = int(min(_QBLOCK, max(_TILE, -(-per_block // _TILE) * _TILE)))
        old = numba.set_parallel_chunksize(1)
        try:
            _nearest_kernel(qnum, qcat, cnumT, ccatT, wc, m, chunk, qblock, out_idx, out_dist)
        finally:
            numba.set_parallel_chunksize(old)
    if return_distance:
        return out_idx, out_dist
    return out_idx


def vote_histogram(nearest, n_candidates):
    """Votes per candidate: int64 counts of length ``n_candidates`` (sums to len(nearest))."""
    if isinstance(n_candidates, bool) or not isinstance(n_candidates, (int, np.integer)) or n_candidates < 1:
        raise ValueError(f"n_candidates must be an integer >= 1, got {n_candidates!r}")
    idx = np.asarray(nearest)
    if idx.ndim != 1:
        raise ValueError(f"nearest must be a 1-D array of candidate indices, got shape {idx.shape}")
    if idx.size == 0:
        return np.zeros(int(n_candidates), dtype=np.int64)
    if not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"nearest must hold integer candidate indices, got dtype {idx.dtype}")
    if idx.min() < 0 or idx.max() >= n_candidates:
        raise ValueError(f"nearest has indices outside [0, {int(n_candidates)})")
    return np.bincount(idx.astype(np.int64, copy=False), minlength=int(n_candidates)).astype(np.int64)


def warm_up() -> None:
    """Compile (or load from numba's cache) the kernel, on tiny arrays of exactly the dtypes/layouts used."""
    rng = np.random.default_rng(0)
    nearest_candidates(
        rng.random((10, 3), dtype=np.float32),
        rng.integers(0, 3, (10, 2), dtype=np.int32),
        rng.random((20, 3), dtype=np.float32),
        rng.integers(0, 3, (20, 2), dtype=np.int32),
        np.ones(2, dtype=np.float32),
    )


def kernel_info() -> dict:
    """What the kernel runs with: numba threads, threading layer, and whether 512-bit vectors are allowed."""
    info = {"numba": numba.__version__, "threads": numba.get_num_threads()}
    try:
        info["threading_layer"] = numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        info["threading_layer"] = None
    try:
        from numba.core.registry import cpu_target

        features = cpu_target.target_context.codegen()._tm_features
        info["avx512f"] = "+avx512f" in features.split(",")
        info["prefer_256_bit"] = "-prefer-256-bit" not in features.split(",")
    except Exception:  # pragma: no cover - numba internals
        info["avx512f"] = None
        info["prefer_256_bit"] = None
    return info


# ------------------------------------------------------------------------------------------ references


def _sequential_distances(qnum, qcat, cnum, ccat, wc):
    """float32 distances added in the kernel's order (categorical columns, then numeric columns)."""
    d = np.zeros((qnum.shape[0], cnum.shape[0]), dtype=np.float32)
    zero = np.float32(0.0)
    for c in range(qcat.shape[1]):
        d += np.where(qcat[:, c, None] != ccat[None, :, c], wc[c], zero)
    for k in range(qnum.shape[1]):
        d += np.abs(qnum[:, k, None] - cnum[None, :, k])
    return d


def brute_force_nearest(real_num, real_cat, cand_num, cand_cat, cat_weights, *, return_distance=False,
                        block=1024):
    """Pure-numpy reference (small sizes): full distance rows for ``block`` records at a time, argmin.

    Adds the same float32 terms in the same order as the kernel, so indices AND distances match
    :func:`nearest_candidates` exactly; ``np.argmin`` returns the lowest index on ties.
    """
    qnum, qcat, cnum, ccat, wc = _validate(real_num, real_cat, cand_num, cand_cat, cat_weights)
    n = qnum.shape[0]
    idx = np.zeros(n, dtype=np.int64)
    dist = np.zeros(n, dtype=np.float32)
    for s in range(0, n, block):
        d = _sequential_distances(qnum[s:s + block], qcat[s:s + block], cnum, ccat, wc)
        idx[s:s + block] = d.argmin(axis=1)
        dist[s:s + block] = d[np.arange(d.shape[0]), idx[s:s + block]]
    return (idx, dist) if return_distance else idx


def reference_nearest_cdist(real_num, real_cat, cand_num, cand_cat, cat_weights, *, chunk=256, threads=2,
                            return_distance=False):
    """The original design's method: chunks of ``chunk`` real rows, each by ``scipy.spatial.distance.cdist``
    ('cityblock' on the numeric columns + weighted 'hamming' on the categorical ones), run by a
    ThreadPoolExecutor with ``threads`` threads; argmin (lowest index on ties).

    Distances are computed in float64 (returned as float64), so on continuous data an index may differ
    from the float32 kernel's where two candidates are within float32 rounding of each other.
    """
    from scipy.spatial.distance import cdist

    qnum, qcat, cnum, ccat, wc = _validate(real_num, real_cat, cand_num, cand_cat, cat_weights)
    n, m = qnum.shape[0], cnum.shape[0]
    w64 = wc.astype(np.float64)
    wsum = float(w64.sum())

    def one(s):
        if qnum.shape[1]:
            d = cdist(qnum[s:s + chunk], cnum, "cityblock")
        else:
            d = np.zeros((min(chunk, n - s), m), dtype=np.float64)
        if qcat.shape[1] and wsum > 0:
            # scipy's weighted hamming is the weighted MEAN of mismatches: scale back by sum(w)
            h = cdist(qcat[s:s + chunk], ccat, "hamming", w=w64)
            h *= wsum
            d += h
            del h
        i = d.argmin(axis=1)
        return i, d[np.arange(d.shape[0]), i]

    idx = np.zeros(n, dtype=np.int64)
    dist = np.zeros(n, dtype=np.float64)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for s, (i, dd) in zip(range(0, n, chunk), pool.map(one, range(0, n, chunk))):
            idx[s:s + chunk] = i
            dist[s:s + chunk] = dd
    return (idx, dist) if return_distance else idx

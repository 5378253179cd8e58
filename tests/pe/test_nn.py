"""Tests for synth_assets.pe.nn: the exact nearest-candidate kernel against numpy and cdist references.

No timing here: see bench/nn_histogram.py.
"""

import numba
import numpy as np
import pytest

from synth_assets.pe.nn import (
    brute_force_nearest,
    kernel_info,
    nearest_candidates,
    reference_nearest_cdist,
    vote_histogram,
    warm_up,
)


def make(n, m, dn, dc, seed=0, levels=None):
    """Continuous random data: weighted numerics in [0, w], category codes, float32 weights."""
    rng = np.random.default_rng(seed)
    wn = rng.uniform(0.5, 2.0, dn).astype(np.float32)
    levels = levels if levels is not None else rng.integers(2, 21, dc)
    real_num = rng.random((n, dn), dtype=np.float32) * wn
    cand_num = rng.random((m, dn), dtype=np.float32) * wn
    real_cat = np.zeros((n, dc), np.int32)
    cand_cat = np.zeros((m, dc), np.int32)
    for j, lv in enumerate(levels):
        real_cat[:, j] = rng.integers(0, lv, n)
        cand_cat[:, j] = rng.integers(0, lv, m)
    wc = rng.uniform(0.5, 2.0, dc).astype(np.float32)
    return real_num, real_cat, cand_num, cand_cat, wc


def make_dyadic(n, m, dn, dc, seed=0):
    """Coarse dyadic values (exact in float32 AND float64 sums, many exact ties) with sum(wc) = 2**k."""
    rng = np.random.default_rng(seed)
    wn = rng.choice(np.array([0.5, 1.0, 2.0], dtype=np.float32), dn)
    real_num = (rng.integers(0, 5, (n, dn)) / 4).astype(np.float32) * wn
    cand_num = (rng.integers(0, 5, (m, dn)) / 4).astype(np.float32) * wn
    real_cat = rng.integers(0, 3, (n, dc)).astype(np.int32)
    cand_cat = rng.integers(0, 3, (m, dc)).astype(np.int32)
    base = np.array([0.5, 1.5, 1.0, 1.0, 0.25, 0.75, 2.0, 1.0], dtype=np.float32)  # partial sums 2, 4, 8
    wc = np.resize(base, dc) if dc else np.zeros(0, np.float32)
    if dc not in (0, 2, 4, 8):
        wc[-1] += np.float32(2.0 ** np.ceil(np.log2(wc.sum())) - wc.sum())  # make the sum a power of 2
    return real_num, real_cat, cand_num, cand_cat, wc


def exact_nearest_float64(real_num, real_cat, cand_num, cand_cat, wc):
    """Lowest index among the exact minimisers (float64; exact for dyadic data)."""
    d = np.abs(real_num[:, None, :].astype(np.float64) - cand_num[None, :, :]).sum(-1)
    d += ((real_cat[:, None, :] != cand_cat[None, :, :]) * wc.astype(np.float64)).sum(-1)
    return d.argmin(axis=1), d


def assert_same_as_brute_force(args, **kw):
    idx, dist = nearest_candidates(*args, return_distance=True, **kw)
    bidx, bdist = brute_force_nearest(*args, return_distance=True)
    assert idx.dtype == np.int64 and dist.dtype == np.float32
    assert idx.shape == dist.shape == (np.asarray(args[0] if args[0] is not None else args[1]).shape[0],)
    np.testing.assert_array_equal(idx, bidx)
    np.testing.assert_array_equal(dist, bdist)  # same float32 terms in the same order: bit-identical
    return idx, dist


@pytest.fixture(scope="module", autouse=True)
def _compiled():
    warm_up()


@pytest.mark.parametrize(
    ("n", "m", "dn", "dc"),
    [
        (1, 1, 3, 2),
        (8, 512, 4, 1),
        (13, 53, 5, 3),  # N not a multiple of the 8-query tile
        (129, 1000, 59, 9),  # wide-table shape
        (257, 4097, 7, 2),  # M = chunk + 1, N = 2 * 128 + 1
        (300, 5000, 59, 9),
        (40, 9000, 1, 1),  # M spans several chunks, not a multiple of chunk or strip
        (17, 700, 6, 0),
        (17, 700, 0, 4),
    ],
)
def test_matches_brute_force_random(n, m, dn, dc):
    assert_same_as_brute_force(make(n, m, dn, dc, seed=n * 7 + m))


@pytest.mark.parametrize("chunk", [1, 7, 100, 511, 512, 513, 1000, 4096, 100_000])
def test_chunk_sizes(chunk):
    args = make(61, 2345, 11, 3, seed=chunk)
    assert_same_as_brute_force(args, chunk=chunk)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("n", "m", "dn", "dc"), [(200, 3000, 6, 3), (77, 5000, 59, 9), (50, 600, 0, 5)])
def test_dyadic_ties_lowest_index(seed, n, m, dn, dc):
    args = make_dyadic(n, m, dn, dc, seed=seed)
    idx = assert_same_as_brute_force(args)[0]
    exact_idx, d = exact_nearest_float64(*args)
    np.testing.assert_array_equal(idx, exact_idx)
    # ties actually happen in this data
    dmin = d.min(axis=1, keepdims=True)
    assert ((d == dmin).sum(axis=1) > 1).any()


def test_duplicates_across_strip_and_chunk_boundaries():
    rng = np.random.default_rng(42)
    m, dn, dc = 9000, 5, 3
    cand_num = rng.random((m, dn), dtype=np.float32)
    cand_cat = rng.integers(0, 4, (m, dc)).astype(np.int32)
    wc = np.array([1.0, 0.5, 2.0], dtype=np.float32)
    # one target row duplicated at indices spanning strip (512) and chunk (4096) boundaries
    copies = [5, 511, 512, 4095, 4096, 8191, 8999]
    for j in copies:
        cand_num[j] = cand_num[5]
        cand_cat[j] = cand_cat[5]
    # queries: exact copies (distance 0) and perturbed copies (same distance to every duplicate)
    real_num = np.repeat(cand_num[5:6], 20, axis=0)
    real_num[10:] += rng.uniform(-0.01, 0.01, (10, dn)).astype(np.float32)
    real_cat = np.repeat(cand_cat[5:6], 20, axis=0)
    for chunk in (4096, 512, 100, 1):
        idx = assert_same_as_brute_force((real_num, real_cat, cand_num, cand_cat, wc), chunk=chunk)[0]
        assert (idx == 5).all()
    # reversed candidate order: the duplicates now sit at m-1-j, the lowest at m-1-8999 = 0
    order = np.arange(m)[::-1]
    idx = nearest_candidates(real_num, real_cat, cand_num[order], cand_cat[order], wc)
    assert (idx == m - 1 - max(copies)).all()


def test_all_candidates_identical_and_zero_columns():
    args = make(30, 1500, 4, 2, seed=3)
    real_num, real_cat, cand_num, cand_cat, wc = args
    same_num = np.repeat(cand_num[:1], 1500, axis=0)
    same_cat = np.repeat(cand_cat[:1], 1500, axis=0)
    assert (nearest_candidates(real_num, real_cat, same_num, same_cat, wc) == 0).all()
    # no columns at all: every distance is 0, every vote goes to candidate 0
    idx, dist = nearest_candidates(np.zeros((30, 0)), np.zeros((30, 0), np.int32), np.zeros((1500, 0)),
                                   np.zeros((1500, 0), np.int32), np.zeros(0), return_distance=True)
    assert (idx == 0).all() and (dist == 0).all()


def test_no_categorical_or_no_numeric_columns():
    real_num, real_cat, cand_num, cand_cat, wc = make(50, 700, 6, 3, seed=9)
    # numeric only: None or an (N, 0) array for the categorical side, weights None or empty
    a = nearest_candidates(real_num, None, cand_num, None, None)
    b = nearest_candidates(real_num, np.zeros((50, 0), np.int64), cand_num, np.zeros((700, 0), np.int64),
                           np.zeros(0))
    c = brute_force_nearest(real_num, None, cand_num, None, None)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    # categorical only
    a = nearest_candidates(None, real_cat, None, cand_cat, wc)
    b = brute_force_nearest(np.zeros((50, 0)), real_cat, np.zeros((700, 0)), cand_cat, wc)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, exact_nearest_float64(np.zeros((50, 0)), real_cat, np.zeros((700, 0)),
                                                           cand_cat, wc)[0])


def test_dtype_and_layout_conversion():
    args = make(45, 1300, 8, 4, seed=11)
    expected = nearest_candidates(*args)
    real_num, real_cat, cand_num, cand_cat, wc = args
    variants = [
        (real_num.astype(np.float64), real_cat.astype(np.int64), cand_num.astype(np.float64),
         cand_cat.astype(np.int16), wc.astype(np.float64)),
        (np.asfortranarray(real_num), np.asfortranarray(real_cat), np.asfortranarray(cand_num),
         np.asfortranarray(cand_cat), list(wc)),
        (np.repeat(real_num, 2, axis=1)[:, ::2], real_cat.astype(np.uint8), cand_num.tolist(),
         cand_cat.tolist(), wc),
    ]
    ro = [np.array(a) for a in args]
    for a in ro:
        a.flags.writeable = False
    variants.append(tuple(ro))
    for v in variants:
        np.testing.assert_array_equal(nearest_candidates(*v), expected)
    np.testing.assert_array_equal(reference_nearest_cdist(*variants[0]), reference_nearest_cdist(*args))
    # inputs are not modified
    np.testing.assert_array_equal(real_num, make(45, 1300, 8, 4, seed=11)[0])


def test_empty_queries():
    _, _, cand_num, cand_cat, wc = make(1, 100, 3, 2)
    idx, dist = nearest_candidates(np.zeros((0, 3)), np.zeros((0, 2), np.int32), cand_num, cand_cat, wc,
                                   return_distance=True)
    assert idx.shape == (0,) and idx.dtype == np.int64 and dist.shape == (0,)


@pytest.mark.parametrize(
    ("change", "exc", "match"),
    [
        (lambda a: {**a, "real_num": a["real_num"][:, :3]}, ValueError, "numeric columns"),
        (lambda a: {**a, "cand_cat": a["cand_cat"][:, :1]}, ValueError, "categorical columns"),
        (lambda a: {**a, "real_cat": a["real_cat"][:5]}, ValueError, "rows"),
        (lambda a: {**a, "cand_num": a["cand_num"][:0], "cand_cat": a["cand_cat"][:0]}, ValueError,
         "at least one candidate"),
        (lambda a: {**a, "real_num": a["real_num"][0]}, ValueError, "2-D"),
        (lambda a: {**a, "real_cat": a["real_cat"].astype(np.float64)}, TypeError, "integer category codes"),
        (lambda a: {**a, "real_num": a["real_num"].astype(str)}, TypeError, "real numbers"),
        (lambda a: {**a, "cand_cat": a["cand_cat"].astype(np.int64) + 2**40}, ValueError, "int32 range"),
        (lambda a: {**a, "real_num": np.where(a["real_num"] > 0.5, np.nan, a["real_num"])}, ValueError,
         "NaN"),
        (lambda a: {**a, "cand_num": a["cand_num"].astype(np.float64) * 1e300}, ValueError, "float32"),
        (lambda a: {**a, "cat_weights": a["cat_weights"][:1]}, ValueError, "one weight per categorical"),
        (lambda a: {**a, "cat_weights": -a["cat_weights"]}, ValueError, ">= 0"),
        (lambda a: {**a, "cat_weights": None}, ValueError, "cat_weights is required"),
    ],
)
def test_validation(change, exc, match):
    names = ("real_num", "real_cat", "cand_num", "cand_cat", "cat_weights")
    args = dict(zip(names, make(10, 20, 4, 2, seed=1)))
    bad = change(args)
    with pytest.raises(exc, match=match):
        nearest_candidates(*(bad[k] for k in names))
    with pytest.raises(exc, match=match):
        reference_nearest_cdist(*(bad[k] for k in names))


def test_bad_chunk():
    with pytest.raises(ValueError, match="chunk"):
        nearest_candidates(*make(5, 5, 2, 1), chunk=0)


def test_histogram():
    args = make(1003, 2500, 10, 3, seed=5)
    idx = nearest_candidates(*args)
    h = vote_histogram(idx, 2500)
    assert h.dtype == np.int64 and h.shape == (2500,)
    assert h.sum() == 1003
    np.testing.assert_array_equal(h, np.bincount(idx, minlength=2500))
    assert vote_histogram(np.zeros(0, np.int64), 3).tolist() == [0, 0, 0]
    assert vote_histogram(np.array([2, 2, 0], np.int32), 4).tolist() == [1, 0, 2, 0]
    with pytest.raises(ValueError, match="outside"):
        vote_histogram(np.array([0, 4]), 4)
    with pytest.raises(ValueError, match="outside"):
        vote_histogram(np.array([-1]), 4)
    with pytest.raises(ValueError, match="n_candidates"):
        vote_histogram(idx, 0)
    with pytest.raises(ValueError, match="1-D"):
        vote_histogram(idx.reshape(-1, 1), 2500)
    with pytest.raises(TypeError, match="integer"):
        vote_histogram(idx.astype(float), 2500)


@pytest.mark.parametrize("seed", range(3))
def test_cdist_reference_agrees_exactly_on_dyadic_data(seed):
    args = make_dyadic(300, 2000, 12, 5, seed=seed)
    ref_idx, ref_dist = reference_nearest_cdist(*args, chunk=64, return_distance=True)
    idx, dist = nearest_candidates(*args, return_distance=True)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist.astype(np.float64), ref_dist)
    np.testing.assert_array_equal(idx, brute_force_nearest(*args))


def test_cdist_reference_agrees_on_continuous_data():
    args = make(400, 3000, 59, 9, seed=21)
    ref_idx, ref_dist = reference_nearest_cdist(*args, return_distance=True)
    idx, dist = nearest_candidates(*args, return_distance=True)
    # float32 kernel vs float64 cdist: indices equal except (rare) near-ties within float32 rounding
    same = idx == ref_idx
    assert same.mean() >= 0.99
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-5)
    _, d64 = exact_nearest_float64(*args)
    rows = np.flatnonzero(~same)
    np.testing.assert_allclose(d64[rows, idx[rows]], d64[rows, ref_idx[rows]], rtol=1e-5)


def test_deterministic_across_thread_counts():
    args = make_dyadic(333, 3000, 9, 4, seed=8)
    first = nearest_candidates(*args)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = nearest_candidates(*args)
    finally:
        numba.set_num_threads(old)
    np.testing.assert_array_equal(first, single)
    np.testing.assert_array_equal(first, nearest_candidates(*args))


def test_kernel_info():
    info = kernel_info()
    assert info["threads"] >= 1
    assert {"numba", "threading_layer", "avx512f", "prefer_256_bit"} <= set(info)

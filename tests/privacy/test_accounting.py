"""Tests for synth_assets.privacy.accounting: analytic Gaussian / GDP accounting of the PE vote histograms."""

import math
import warnings

import numpy as np
import pytest

from synth_assets.privacy.accounting import (
    UnsafePrivacySetting,
    calibrate_sigma,
    check_delta,
    compose_mu,
    compute_epsilon,
    default_delta,
    delta_for_epsilon,
    epsilon_for_mu,
    gdp_mu,
    mu_for_epsilon,
)

# Reference table (sensitivity 1, delta = 1e-5): sigma for epsilon x T, to 3 decimals.
TABLE_T = (1, 2, 5, 10, 20)
TABLE = {
    0.5: (7.032, 9.945, 15.724, 22.237, 31.447),
    1: (3.731, 5.276, 8.342, 11.797, 16.684),
    2: (1.994, 2.820, 4.458, 6.305, 8.917),
    4: (1.081, 1.529, 2.418, 3.419, 4.835),
    8: (0.600, 0.849, 1.342, 1.898, 2.684),
}
TABLE_CASES = [(eps, T, sig) for eps, row in TABLE.items() for T, sig in zip(TABLE_T, row)]


@pytest.mark.parametrize(("epsilon", "T", "expected"), TABLE_CASES)
def test_reference_table_delta_1e5(epsilon, T, expected):
    assert round(calibrate_sigma(epsilon, 1e-5, T), 3) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("epsilon", "T", "expected"),
    [(1, 1, 4.225), (1, 10, 13.360), (4, 1, 1.194)],
)
def test_reference_values_delta_1e6(epsilon, T, expected):
    assert round(calibrate_sigma(epsilon, 1e-6, T), 3) == pytest.approx(expected, abs=1e-9)


def test_forward_check_dpsda_issue_6():
    # sigma = 2*sqrt(2), T = 5 histograms, delta = 1e-5 -> epsilon 3.341 (microsoft/DPSDA issue 6)
    assert round(compute_epsilon(2 * math.sqrt(2), 1e-5, 5), 3) == pytest.approx(3.341, abs=1e-9)


@pytest.mark.parametrize("epsilon", [0.1, 0.5, 1, 2, 4, 8, 50])
@pytest.mark.parametrize("T", [2, 3, 5, 10, 20, 100])
def test_sigma_scales_with_sqrt_T(epsilon, T):
    assert calibrate_sigma(epsilon, 1e-5, T) == pytest.approx(
        math.sqrt(T) * calibrate_sigma(epsilon, 1e-5, 1), rel=1e-12
    )


@pytest.mark.parametrize("epsilon", [1e-3, 0.01, 0.1, 0.5, 1, 2, 4, 8, 16, 50, 100, 1000])
@pytest.mark.parametrize("delta", [0.1, 1e-3, 1e-5, 1e-8, 1e-12, 1e-30])
@pytest.mark.parametrize("T", [1, 3, 10])
def test_round_trip(epsilon, delta, T):
    sigma = calibrate_sigma(epsilon, delta, T)
    eps_back = compute_epsilon(sigma, delta, T)
    assert eps_back == pytest.approx(epsilon, rel=1e-9)
    # calibrate_sigma is on the safe side of the target: the mechanism meets (epsilon, delta), up to the
    # floating-point accuracy of evaluating delta(eps; mu) (about 1e-10 relative in extreme corners)
    assert delta_for_epsilon(epsilon, gdp_mu(sigma, T)) <= delta * (1 + 1e-9)


@pytest.mark.parametrize("sigma", [0.05, 0.3, 1.0, 3.7, 20.0, 500.0])
@pytest.mark.parametrize("T", [1, 5])
def test_delta_curve_inverts_compute_epsilon(sigma, T):
    delta = 1e-6
    eps = compute_epsilon(sigma, delta, T)
    if eps > 0:
        assert delta_for_epsilon(eps, gdp_mu(sigma, T)) == pytest.approx(delta, rel=1e-8)


def test_monotonicity():
    eps_grid = [0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64]
    sig = [calibrate_sigma(e, 1e-5) for e in eps_grid]
    assert all(a > b for a, b in zip(sig, sig[1:])), "sigma must decrease as epsilon grows"
    sig_T = [calibrate_sigma(1.0, 1e-5, T) for T in range(1, 30)]
    assert all(a < b for a, b in zip(sig_T, sig_T[1:])), "sigma must grow with T"
    sig_d = [calibrate_sigma(1.0, d) for d in (1e-2, 1e-4, 1e-6, 1e-8, 1e-10)]
    assert all(a < b for a, b in zip(sig_d, sig_d[1:])), "sigma must grow as delta shrinks"
    eps_s = [compute_epsilon(s, 1e-5) for s in (0.2, 0.5, 1, 2, 5, 10, 50)]
    assert all(a > b for a, b in zip(eps_s, eps_s[1:])), "epsilon must decrease as sigma grows"
    eps_T = [compute_epsilon(5.0, 1e-5, T) for T in (1, 2, 5, 10, 50)]
    assert all(a < b for a, b in zip(eps_T, eps_T[1:])), "epsilon must grow with T"
    deltas = [delta_for_epsilon(e, 1.0) for e in (0, 0.5, 1, 2, 4, 8)]
    assert all(a > b for a, b in zip(deltas, deltas[1:])), "delta(eps; mu) decreases in eps"
    deltas_mu = [delta_for_epsilon(1.0, m) for m in (0.1, 0.5, 1, 2, 5)]
    assert all(a < b for a, b in zip(deltas_mu, deltas_mu[1:])), "delta(eps; mu) increases in mu"


def test_classical_bound_comparison():
    delta = 1e-5
    classical = math.sqrt(2 * math.log(1.25 / delta)) / 1.0
    assert round(classical, 3) == pytest.approx(4.845, abs=1e-9)
    analytic = calibrate_sigma(1.0, delta)
    assert classical / analytic == pytest.approx(1.30, abs=0.005)  # 30% more noise than needed
    for eps in (0.1, 0.25, 0.5, 0.75, 1.0):  # the classical bound is only valid for eps <= 1
        assert calibrate_sigma(eps, delta) < math.sqrt(2 * math.log(1.25 / delta)) / eps


def test_no_nan_at_large_epsilon_or_tiny_sigma():
    for eps in (20, 50, 100, 1e3, 1e5, 1e8):
        sigma = calibrate_sigma(eps, 1e-5)
        assert math.isfinite(sigma) and sigma > 0
        assert compute_epsilon(sigma, 1e-5) == pytest.approx(eps, rel=1e-9)
    assert round(compute_epsilon(calibrate_sigma(50, 1e-5), 1e-5), 6) == 50
    for sigma in (1e-2, 1e-4, 1e-8, 1e-50, 1e-150, 1e-200, 1e-300):
        eps = compute_epsilon(sigma, 1e-5)
        assert not math.isnan(eps) and eps > 0
    assert compute_epsilon(1e-300, 1e-5) == math.inf
    for eps in (0, 1, 50, 500, 1e4, 1e300, math.inf):
        for mu in (1e-6, 0.5, 3, 40, 1e3):
            d = delta_for_epsilon(eps, mu)
            assert not math.isnan(d) and 0.0 <= d <= 1.0


def test_epsilon_zero_when_delta_already_met():
    # delta(0; mu) = 2 Phi(mu/2) - 1 <= delta: no privacy loss beyond delta at all
    mu = 1e-3
    assert delta_for_epsilon(0.0, mu) < 1e-3
    assert epsilon_for_mu(mu, 1e-3) == 0.0
    assert compute_epsilon(1000.0, 1e-3) == 0.0
    assert epsilon_for_mu(0.0, 1e-5) == 0.0
    assert epsilon_for_mu(math.inf, 1e-5) == math.inf


def test_gdp_helpers_and_composition():
    assert gdp_mu(2.0, 4) == pytest.approx(1.0)
    assert compose_mu([3.0, 4.0]) == pytest.approx(5.0)
    assert compose_mu([]) == 0.0
    assert compose_mu([1.0, math.inf]) == math.inf
    # T histograms at sigma = T single-histogram releases at sigma, composed
    sigma, T, delta = 3.0, 7, 1e-6
    composed = compose_mu([gdp_mu(sigma, 1)] * T)
    assert composed == pytest.approx(gdp_mu(sigma, T), rel=1e-12)
    assert epsilon_for_mu(composed, delta) == pytest.approx(compute_epsilon(sigma, delta, T), rel=1e-12)
    # an epsilon grid of releases on one dataset spends their composition
    grid = [calibrate_sigma(e, 1e-5) for e in (0.5, 1, 2, 4)]
    total = epsilon_for_mu(compose_mu(gdp_mu(s) for s in grid), 1e-5)
    assert total > 4
    # mu-level calibration agrees with sigma-level
    assert mu_for_epsilon(1.0, 1e-5) == pytest.approx(1 / calibrate_sigma(1.0, 1e-5), rel=1e-12)
    assert delta_for_epsilon(1.0, mu_for_epsilon(1.0, 1e-5)) <= 1e-5


def test_numpy_scalars_accepted():
    assert calibrate_sigma(np.float64(1.0), np.float32(1e-5), np.int64(5)) == pytest.approx(
        calibrate_sigma(1.0, 1e-5, 5)
    )
    assert compute_epsilon(np.float32(2.0), 1e-5, np.int32(3)) == pytest.approx(compute_epsilon(2.0, 1e-5, 3))


@pytest.mark.parametrize("epsilon", [0, 0.0, -1, -1e-9, math.nan, math.inf, -math.inf])
def test_bad_epsilon(epsilon):
    with pytest.raises(ValueError, match="epsilon must be a finite number > 0"):
        calibrate_sigma(epsilon, 1e-5)


@pytest.mark.parametrize("epsilon", ["1", None, True])
def test_epsilon_wrong_type(epsilon):
    with pytest.raises(ValueError, match="epsilon"):
        calibrate_sigma(epsilon, 1e-5)


@pytest.mark.parametrize("delta", [0, 0.0, 1, 1.0, -1e-5, 1.5, math.nan, math.inf])
def test_bad_delta(delta):
    with pytest.raises(ValueError, match="delta must lie strictly between 0 and 1"):
        calibrate_sigma(1.0, delta)
    with pytest.raises(ValueError, match="delta must lie strictly between 0 and 1"):
        compute_epsilon(1.0, delta)
    with pytest.raises(ValueError, match="delta must lie strictly between 0 and 1"):
        epsilon_for_mu(1.0, delta)


@pytest.mark.parametrize("T", [0, -1, 1.5, 2.0, "3", None, True])
def test_bad_T(T):
    with pytest.raises(ValueError, match=r"T \(the number of histograms released\) must be an integer >= 1"):
        calibrate_sigma(1.0, 1e-5, T)
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        compute_epsilon(1.0, 1e-5, T)
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        gdp_mu(1.0, T)


@pytest.mark.parametrize("sigma", [0, 0.0, -1, -1e-300, math.nan, math.inf])
def test_bad_sigma(sigma):
    with pytest.raises(ValueError, match="sigma .* must be a finite number > 0"):
        compute_epsilon(sigma, 1e-5)
    with pytest.raises(ValueError, match="sigma"):
        gdp_mu(sigma, 1)


@pytest.mark.parametrize("mu", [-1.0, math.nan])
def test_bad_mu(mu):
    with pytest.raises(ValueError, match="mu"):
        epsilon_for_mu(mu, 1e-5)
    with pytest.raises(ValueError, match="mu"):
        delta_for_epsilon(1.0, mu)
    with pytest.raises(ValueError, match="mu"):
        compose_mu([1.0, mu])


def test_check_delta_refuses_delta_at_least_one_over_n_and_says_which_delta_would_do():
    with pytest.raises(UnsafePrivacySetting, match=r"1/n .* e\.g\. 1e-06 \(the smaller of"):
        check_delta(1e-3, 1000)  # delta == 1/n
    with pytest.raises(UnsafePrivacySetting, match="privacy.delta"):
        check_delta(0.01, 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_delta(1e-6, 1000)
        check_delta(9.99e-4, 1000)


@pytest.mark.parametrize("n", [0, -5, 2.5, None, True])
def test_check_delta_bad_n(n):
    with pytest.raises(ValueError, match="n .* must be an integer >= 1"):
        check_delta(1e-6, n)


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, 1e-6), (2, 1e-6), (1000, 1e-6), (48_842, 1e-6), (100_000, 8e-7), (1_000_000, 7e-8),
     (10**9, 4e-11)],
)
def test_default_delta(n, expected):
    assert default_delta(n) == expected


@pytest.mark.parametrize("n", [2, 3, 10, 999, 12_345, 48_842, 10**5, 314_159, 10**6, 7 * 10**7, 10**12])
def test_default_delta_properties(n):
    d = default_delta(n)
    formula = min(1e-6, 1 / (n * math.log(n)))
    assert 0 < d <= formula * (1 + 1e-9)  # rounded down
    assert d > formula / 10  # ... to one significant digit
    mantissa = d / 10 ** math.floor(math.log10(d))
    assert abs(mantissa - round(mantissa)) < 1e-9 and 1 <= round(mantissa) <= 9
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_delta(d, n)

"""Privacy accounting for Private Evolution: Gaussian noise on vote histograms.

Neighbouring relation
---------------------
Two private datasets are neighbours when one is obtained from the other by **adding or removing one
entity**, i.e. one row of the wide table (all of an entity's data lives in its one wide row). Each entity
casts exactly one vote per histogram (for its nearest candidate), so adding or removing it changes one
bin by 1: the **L2 sensitivity of every histogram is 1**. (With k votes per entity each vote must be
weighted 1/sqrt(k) to keep sensitivity 1.) Under *replace-one* neighbouring the sensitivity would be
sqrt(2) and every sigma below would have to be multiplied by sqrt(2); this module does not use that
relation.

Accounting
----------
Releasing T adaptively chosen histograms, each with i.i.d. N(0, sigma^2) noise on every bin, is exactly
mu-Gaussian differentially private (mu-GDP, Dong, Roth & Su 2019) with ``mu = sqrt(T) / sigma``. Several
releases of mu_1, ..., mu_k compose to ``mu = sqrt(sum mu_i^2)`` (:func:`compose_mu`). A mu-GDP
mechanism is (epsilon, delta)-DP exactly on the curve of the analytic Gaussian mechanism (Balle & Wang
2018)::

    delta(epsilon; mu) = Phi(-epsilon/mu + mu/2) - exp(epsilon) * Phi(-epsilon/mu - mu/2)

which is decreasing in epsilon and increasing in mu. :func:`compute_epsilon` solves it for epsilon,
:func:`calibrate_sigma` returns the smallest sigma that meets an (epsilon, delta) target, so that
``calibrate_sigma(epsilon, delta, T) == sqrt(T) * calibrate_sigma(epsilon, delta, 1)``. T is the number
of histograms actually released (not the length of a schedule).

Numerics: the second term is evaluated as ``exp(epsilon + log Phi(...))`` with
:func:`scipy.special.log_ndtr` (``exp(epsilon) * Phi(...)`` is ``inf * 0 = NaN`` for large epsilon), and
the whole difference in log space; root finding uses :func:`scipy.optimize.brentq` on brackets that are
expanded until they contain a sign change. When ``delta(0; mu) <= delta`` the answer is epsilon = 0.

Choice of delta: delta must be well below 1/n (n = number of entities, :func:`check_delta` warns
otherwise); :func:`default_delta` gives ``min(1e-6, 1/(n ln n))`` rounded down to one significant digit.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

from scipy.optimize import brentq
from scipy.special import log_ndtr

__all__ = [
    "UnsafePrivacySetting",
    "calibrate_sigma",
    "check_delta",
    "compose_mu",
    "compute_epsilon",
    "default_delta",
    "delta_for_epsilon",
    "epsilon_for_mu",
    "gdp_mu",
    "mu_for_epsilon",
]


class UnsafePrivacySetting(ValueError):
    """A privacy setting that would void the guarantee (for example delta >= 1/n). Refused before any
    release, never merely warned about."""


# ------------------------------------------------------------------------------------------ validation


def _real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}")
    return float(value)


def _check_epsilon(epsilon) -> float:
    eps = _real(epsilon, "epsilon")
    if not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"epsilon must be a finite number > 0, got {epsilon!r}")
    return eps


def _check_epsilon_nonneg(epsilon) -> float:
    eps = _real(epsilon, "epsilon")
    if math.isnan(eps) or eps < 0:
        raise ValueError(f"epsilon must be a number >= 0, got {epsilon!r}")
    return eps


def _check_delta(delta) -> float:
    d = _real(delta, "delta")
    if not (0.0 < d < 1.0):  # also rejects NaN
        raise ValueError(f"delta must lie strictly between 0 and 1, got {delta!r}")
    return d


def _check_T(T) -> int:
    if isinstance(T, bool) or not isinstance(T, numbers.Integral):
        raise ValueError(
            f"T (the number of histograms released) must be an integer >= 1, got {T!r} "
            f"of type {type(T).__name__}"
        )
    if T < 1:
        raise ValueError(f"T (the number of histograms released) must be an integer >= 1, got {T!r}")
    return int(T)


def _check_sigma(sigma) -> float:
    s = _real(sigma, "sigma")
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"sigma (the noise standard deviation) must be a finite number > 0, got {sigma!r}")
    return s


def _check_mu(mu) -> float:
    m = _real(mu, "mu")
    if math.isnan(m) or m < 0:
        raise ValueError(f"mu (the GDP parameter) must be a number >= 0 (inf allowed), got {mu!r}")
    return m


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n (the number of entities) must be an integer >= 1, got {n!r}")
    return int(n)


# ------------------------------------------------------------------------------------------ GDP curve


def gdp_mu(sigma: float, T: int = 1) -> float:
    """mu of T adaptive Gaussian histograms of L2 sensitivity 1 with noise sigma each: sqrt(T)/sigma."""
    return math.sqrt(_check_T(T)) / _check_sigma(sigma)


def compose_mu(mus: Iterable[float]) -> float:
    """Compose GDP releases: mu = sqrt(sum mu_i^2) (0 for an empty ledger, inf if any mu_i is inf)."""
    values = [_check_mu(m) for m in mus]
    if not values:
        return 0.0
    return math.hypot(*values)


def _log_delta(eps: float, mu: float) -> float:
    """log delta(eps; mu) for mu > 0 finite, eps >= 0 finite; -inf when delta underflows to 0."""
    a = -eps / mu + mu / 2.0
    b = -eps / mu - mu / 2.0
    la = float(log_ndtr(a))
    lb = float(log_ndtr(b))
    x = eps + lb - la  # log(second term / first term), < 0 in exact arithmetic
    if not x < 0.0:  # rounding: the two terms are indistinguishable
        return -math.inf
    return la + math.log(-math.expm1(x))


def delta_for_epsilon(epsilon: float, mu: float) -> float:
    """delta(epsilon; mu) of a mu-GDP mechanism (Balle & Wang 2018), in [0, 1)."""
    eps = _check_epsilon_nonneg(epsilon)
    m = _check_mu(mu)
    if m == 0.0 or math.isinf(eps):
        return 0.0
    if math.isinf(m):
        return 1.0
    return math.exp(_log_delta(eps, m))


def epsilon_for_mu(mu: float, delta: float) -> float:
    """The smallest epsilon >= 0 such that a mu-GDP mechanism is (epsilon, delta)-DP.

    Returns 0.0 when delta(0; mu) <= delta and math.inf when mu is infinite or so large that epsilon
    overflows a float (sigma astronomically small).
    """
    m = _check_mu(mu)
    d = _check_delta(delta)
    if m == 0.0:
        return 0.0
    if math.isinf(m) or math.isinf(m * m):
        return math.inf
    if delta_for_epsilon(0.0, m) <= d:
        return 0.0
    log_d = math.log(d)

    def f(eps: float) -> float:
        # log delta(eps) - log delta_target; -inf (delta underflowed / terms indistinguishable) is
        # clamped to a finite value with the right sign so that brentq's interpolation stays finite.
        return max(_log_delta(eps, m), -1e6) - log_d

    # Upper bound: delta(eps) <= Phi(-eps/mu + mu/2) <= delta/2 at eps = mu^2/2 + mu*sqrt(2 ln(1/delta)).
    lo = 0.0
    hi = max(1.0, m * m / 2.0 + m * math.sqrt(2.0 * math.log(1.0 / d)))
    while f(hi) > 0.0:  # defensive expansion, normally never runs
        lo = hi
        hi *= 2.0
        if not math.isfinite(hi):
            return math.inf
    eps = float(brentq(f, lo, hi, xtol=1e-14, rtol=8.9e-16, maxiter=500))
    # Report the safe side of the root (brentq may return either end of its final interval).
    step = math.ulp(eps)
    while f(eps) > 0.0 and eps < hi:
        eps = min(hi, eps + step)
        step *= 2.0
    return eps


def mu_for_epsilon(epsilon: float, delta: float) -> float:
    """The largest mu such that a mu-GDP mechanism is (epsilon, delta)-DP (delta(epsilon; mu) <= delta)."""
    eps = _check_epsilon(epsilon)
    d = _check_delta(delta)

    def f(mu: float) -> float:
        return delta_for_epsilon(eps, mu) - d

    lo, hi = 0.0, 1.0
    while f(hi) <= 0.0:  # delta(eps; mu) increases to 1 as mu grows: expand until it exceeds delta
        lo = hi
        hi *= 2.0
        if not math.isfinite(hi):  # unreachable for finite eps, kept to never loop forever
            raise ValueError(f"cannot calibrate for epsilon={epsilon!r}, delta={delta!r}")
    mu = float(brentq(f, lo, hi, xtol=1e-15, rtol=8.9e-16, maxiter=500))
    # Make sure we are on the safe side of the target (brentq may return either end of its interval).
    step = math.ulp(mu)
    while mu > lo and f(mu) > 0.0:
        mu = max(lo, mu - step)
        step *= 2.0
    return mu


# ---------------------------------------------------------------------------------- sigma <-> epsilon


def compute_epsilon(sigma: float, delta: float, T: int = 1) -> float:
    """epsilon of T adaptive Gaussian histograms (L2 sensitivity 1, noise sigma each) at delta.

    Add/remove-one-entity neighbouring. Returns math.inf (never NaN) when sigma is so small that epsilon
    overflows a float.
    """
    s = _check_sigma(sigma)
    d = _check_delta(delta)
    t = _check_T(T)
    return epsilon_for_mu(math.sqrt(t) / s, d)


def calibrate_sigma(epsilon: float, delta: float, T: int = 1) -> float:
    """The minimum noise sigma per histogram so that T adaptive histograms are (epsilon, delta)-DP.

    L2 sensitivity 1 per histogram (add/remove-one-entity neighbouring, one vote per entity); exact
    analytic-Gaussian / GDP accounting, so the result is sqrt(T) * calibrate_sigma(epsilon, delta, 1).
    """
    eps = _check_epsilon(epsilon)
    d = _check_delta(delta)
    t = _check_T(T)
    return math.sqrt(t) / mu_for_epsilon(eps, d)


# ------------------------------------------------------------------------------------------ delta choice


def check_delta(delta: float, n: int) -> None:
    """Refuse (:class:`UnsafePrivacySetting`) delta >= 1/n: such a delta allows publishing a whole
    record with probability delta."""
    d = _check_delta(delta)
    size = _check_n(n)
    if d >= 1.0 / size:
        raise UnsafePrivacySetting(
            f"delta={d:g} is >= 1/n = {1.0 / size:g} for n={size} entities: a mechanism may then publish "
            f"an entire record with probability delta. Set privacy.delta in dataset.yaml well below 1/n, "
            f"e.g. {default_delta(size):g} (the smaller of 1e-6 and 1/(n ln n))."
        )


def default_delta(n: int) -> float:
    """A default delta for n entities: min(1e-6, 1/(n ln n)), rounded DOWN to one significant digit.

    Rounding down keeps delta at or below the formula (e.g. n=1,000,000 gives 1/(n ln n) = 7.24e-8 and
    returns 7e-08; n = 48,842 gives 1.9e-6 so the cap 1e-6 applies). For n = 1 (ln n = 0) the cap 1e-6
    is returned. The result is always < 1/n for n >= 2.
    """
    size = _check_n(n)
    value = 1e-6 if size < 2 else min(1e-6, 1.0 / (size * math.log(size)))
    # value / 10**exponent lies in [1, 10) up to rounding; the 1e-9 relative guard keeps a value that is
    # a one-digit number up to float rounding (1e-6 itself, say) from being rounded down to 9e-7.
    exponent = math.floor(math.log10(value))
    scaled = value / 10.0**exponent * (1.0 + 1e-9)
    if scaled < 1.0:
        exponent -= 1
        scaled *= 10.0
    elif scaled >= 10.0:
        exponent += 1
        scaled /= 10.0
    return float(f"{math.floor(scaled)}e{exponent}")

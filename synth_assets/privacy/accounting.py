"""Privacy accounting: Gaussian noise on histograms (Private Evolution, the references, MST/AIM
measurements) and exponential-mechanism selections (MST/AIM), and how releases compose.

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

Exponential-mechanism selections and mixed composition (zCDP)
-------------------------------------------------------------
Graphical-model generators (MST, AIM) also *select* marginals with the exponential mechanism (EM). An
epsilon-EM (probabilities proportional to ``exp(epsilon * q / (2 * sensitivity))``) is epsilon-DP and,
more usefully, epsilon-bounded-range, hence exactly ``rho = epsilon^2 / 8`` zero-concentrated DP (Cesar &
Rogers 2021); k such selections are ``k * epsilon^2 / 8``-zCDP. A mu-GDP Gaussian mechanism is exactly
``rho = mu^2 / 2``-zCDP (its Renyi divergence of every order alpha is ``alpha * mu^2 / 2``).

:func:`compose` is the one composition rule of the project:

* every release Gaussian: the exact GDP composition above, ``mu = sqrt(sum mu_i^2)`` and the
  analytic-Gaussian curve (the numbers are the same as without EM support);
* at least one EM release: zCDP, ``rho = sum mu_i^2 / 2 + sum k_j epsilon_j^2 / 8``, converted to
  (epsilon, delta) with the conversion of Canonne, Kamath & Steinke 2020 (Proposition 12, also
  Asoodeh et al. 2020; the one dp_accounting's RDP accountant uses), minimised over the Renyi order
  alpha > 1 in closed form (:func:`epsilon_for_rho`)::

      epsilon(rho, delta) = min_{alpha > 1}  alpha * rho + (ln(1/delta) - ln alpha) / (alpha - 1)
                                             + ln(1 - 1/alpha)

  (and 0 when delta >= sqrt(1 - exp(-rho)), the KL / total-variation bound). The optimal alpha solves
  ``rho * (alpha - 1)^2 = ln(1/delta) - ln(alpha)``. This is tighter than the classical
  ``rho + 2 sqrt(rho ln(1/delta))`` and, for Gaussian-only releases, looser than the exact GDP curve,
  which is why the Gaussian-only rule is kept. :func:`rho_for_epsilon` inverts it (the largest rho
  whose epsilon is at most the target), which is how an (epsilon, delta) target is calibrated to a rho.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass

from scipy.optimize import brentq
from scipy.special import log_ndtr

__all__ = [
    "UnsafePrivacySetting",
    "Composition",
    "calibrate_rho",
    "calibrate_sigma",
    "check_delta",
    "compose",
    "compose_mu",
    "compose_releases",
    "compute_epsilon",
    "default_delta",
    "delta_for_epsilon",
    "em_epsilon_for_rho",
    "em_rho",
    "epsilon_for_mu",
    "epsilon_for_rho",
    "gaussian_rho",
    "gdp_mu",
    "mu_for_epsilon",
    "rho_for_epsilon",
    "sigma_for_rho",
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


# ------------------------------------------------------------------------------------------ zCDP


def _check_rho(rho) -> float:
    r = _real(rho, "rho")
    if math.isnan(r) or r < 0:
        raise ValueError(f"rho (the zCDP parameter) must be a number >= 0 (inf allowed), got {rho!r}")
    return r


def gaussian_rho(sigma: float, histograms: int = 1) -> float:
    """rho of ``histograms`` Gaussian histograms of L2 sensitivity 1 with noise sigma each:
    ``histograms / (2 sigma^2)`` (= mu^2 / 2 with mu = sqrt(histograms) / sigma)."""
    return gdp_mu(sigma, histograms) ** 2 / 2.0


def em_rho(epsilon: float, selections: int = 1) -> float:
    """rho of ``selections`` exponential-mechanism selections of epsilon each: ``selections * epsilon^2 / 8``
    (an epsilon-EM is epsilon-bounded-range, hence epsilon^2/8-zCDP; Cesar & Rogers 2021)."""
    eps = _check_epsilon(epsilon)
    k = _check_T(selections)
    return k * eps * eps / 8.0


def em_epsilon_for_rho(rho: float, selections: int = 1) -> float:
    """The epsilon of each of ``selections`` EM selections that together spend exactly ``rho``:
    ``sqrt(8 rho / selections)``."""
    r = _check_rho(rho)
    k = _check_T(selections)
    return math.sqrt(8.0 * r / k)


def sigma_for_rho(rho: float, histograms: int = 1) -> float:
    """The noise of each of ``histograms`` Gaussian histograms (sensitivity 1) that together spend
    exactly ``rho``: ``sqrt(histograms / (2 rho))``."""
    r = _check_rho(rho)
    if not (r > 0 and math.isfinite(r)):
        raise ValueError(f"rho must be a finite number > 0 to calibrate a noise, got {rho!r}")
    return math.sqrt(_check_T(histograms) / (2.0 * r))


def _cks_epsilon(x: float, rho: float, log_inv_delta: float) -> float:
    """The CKS bound at Renyi order alpha = 1 + x (x > 0): alpha rho + (ln 1/delta - ln alpha)/(alpha - 1)
    + ln(1 - 1/alpha)."""
    return (1.0 + x) * rho + (log_inv_delta - math.log1p(x)) / x + math.log(x / (1.0 + x))


def epsilon_for_rho(rho: float, delta: float) -> float:
    """The smallest epsilon >= 0 such that a rho-zCDP mechanism is (epsilon, delta)-DP by the conversion of
    Canonne, Kamath & Steinke 2020 (Prop. 12), minimised over the Renyi order alpha > 1.

    Every alpha gives a valid bound, so the root finding below can only make the figure slightly larger
    than the exact minimum, never unsound. 0.0 for rho = 0 or when delta >= sqrt(1 - exp(-rho)) (the
    total-variation bound), math.inf for an infinite rho.
    """
    r = _check_rho(rho)
    d = _check_delta(delta)
    if r == 0.0:
        return 0.0
    if math.isinf(r):
        return math.inf
    if d * d + math.expm1(-r) > 0.0:  # TV(P, Q) <= sqrt(1 - exp(-KL)) <= delta: (0, delta)-DP
        return 0.0
    log_inv_delta = -math.log(d)

    # d/dalpha of the bound is rho - (ln 1/delta - ln alpha) / (alpha - 1)^2: its root, with x = alpha - 1,
    # solves rho x^2 + ln(1 + x) = ln(1/delta). Negative at x -> 0, positive at x = sqrt(ln(1/delta)/rho).
    def h(x: float) -> float:
        return r * x * x + math.log1p(x) - log_inv_delta

    hi = math.sqrt(log_inv_delta / r)
    lo = min(hi, 1e-300) / 2.0
    while h(lo) >= 0.0 and lo > 0.0:  # only for astronomically large rho
        lo /= 2.0
    if lo == 0.0 or not math.isfinite(hi * hi * r):
        return math.inf
    x = float(brentq(h, lo, hi, xtol=1e-300, rtol=8.9e-16, maxiter=500))
    return max(0.0, _cks_epsilon(x, r, log_inv_delta))


def rho_for_epsilon(epsilon: float, delta: float) -> float:
    """The largest rho such that a rho-zCDP mechanism is (epsilon, delta)-DP by :func:`epsilon_for_rho`."""
    eps = _check_epsilon(epsilon)
    d = _check_delta(delta)

    def f(rho: float) -> float:
        return epsilon_for_rho(rho, d) - eps

    lo, hi = 0.0, max(1.0, eps)
    while f(hi) <= 0.0:  # epsilon_for_rho grows without bound in rho
        lo = hi
        hi *= 2.0
        if not math.isfinite(hi):  # unreachable for finite epsilon
            raise ValueError(f"cannot calibrate rho for epsilon={epsilon!r}, delta={delta!r}")
    rho = float(brentq(f, lo, hi, xtol=1e-300, rtol=8.9e-16, maxiter=500))
    step = math.ulp(rho)
    while rho > lo and f(rho) > 0.0:  # the safe side of the target
        rho = max(lo, rho - step)
        step *= 2.0
    return rho


def calibrate_rho(epsilon: float, delta: float) -> float:
    """The zCDP budget rho of a run whose releases include exponential-mechanism selections, so that they
    compose (by :func:`compose`, i.e. zCDP and the CKS conversion) to exactly (epsilon, delta)."""
    return rho_for_epsilon(epsilon, delta)


# ------------------------------------------------------------------------------------------ composition


@dataclass(frozen=True)
class Composition:
    """Releases composed by the project's rule (module docstring).

    ``rule`` is ``"gdp"`` when every release is Gaussian (exact GDP composition, ``mu`` is what counts),
    ``"zcdp"`` when at least one is an exponential-mechanism selection (``rho`` is what counts). ``mu`` is
    always the GDP composition of the Gaussian releases alone; ``rho`` always the zCDP composition of
    all releases.
    """

    rule: str
    mu: float
    rho: float
    releases: int = 0

    def epsilon(self, delta: float) -> float:
        """The composed releases' epsilon at ``delta``."""
        if self.rule == "gdp":
            return epsilon_for_mu(self.mu, delta)
        return epsilon_for_rho(self.rho, delta)

    @property
    def description(self) -> str:
        if self.rule == "gdp":
            return "GDP composition"
        return "zCDP composition, CKS conversion"


def compose(gaussian_mus: Iterable[float] = (), em_rhos: Iterable[float] = ()) -> Composition:
    """Compose Gaussian releases (their GDP mu each) and exponential-mechanism releases (their zCDP rho
    each) by the project's rule: exact GDP when there is no EM release, zCDP otherwise."""
    mus = [_check_mu(m) for m in gaussian_mus]
    rhos = [_check_rho(r) for r in em_rhos]
    mu = compose_mu(mus)
    rho = math.fsum([m * m / 2.0 for m in mus] + rhos)
    return Composition("zcdp" if rhos else "gdp", mu, rho, len(mus) + len(rhos))


def compose_releases(releases: Iterable) -> Composition:
    """Compose planned or recorded releases (anything with ``mechanism``, ``mu`` and ``rho``: a
    ``PlannedRelease`` or a ``LedgerRelease``) by :func:`compose`."""
    releases = list(releases)
    gaussian = [r for r in releases if r.mechanism in (None, "gaussian")]
    return compose([r.mu for r in gaussian], [r.rho for r in releases if r.mechanism not in (None, "gaussian")])


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

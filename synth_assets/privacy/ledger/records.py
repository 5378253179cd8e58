"""What a release is, and when two releases are the same one.

What a release is
-----------------
Every materialization of a DP asset from private data is a *release* and releases compose (an epsilon
grid of 0.5, 1, 2, 4 on one dataset spends the composition of all four, and each partition's PE run and
its independent-marginals reference are two releases).

A release is one of two mechanisms (``mechanism``; add/remove-one-entity neighbouring,
:mod:`synth_assets.privacy.accounting`):

* ``"gaussian"`` (the default): ``histograms`` histograms of L2 sensitivity 1 with noise ``sigma``
  each, exactly mu-GDP with ``mu = sqrt(histograms) / sigma`` (and ``rho = mu^2 / 2``-zCDP);
* ``"exponential"``: ``selections`` exponential-mechanism selections of ``selection_epsilon`` each
  (MST's and AIM's choice of marginals), ``rho = selections * selection_epsilon^2 / 8``-zCDP.

Only these parameters (and delta) are stored; mu, rho and every total are computed from the stored rows
when asked, never kept as counters. Totals compose by
:func:`synth_assets.privacy.accounting.compose`: GDP when every release is Gaussian, zCDP otherwise.

Identity: re-running is free, re-sampling is not
------------------------------------------------
A release's identity is a digest of the dataset name and fingerprint, the mechanism kind, its parameters
(epsilon target, delta, sigma, histograms, T, for a selection its mechanism, epsilon and count, and a
free ``parameters`` mapping for everything else that
determines the output: the PE config, the candidate API, the entity fraction, ...), a digest of the
private input (``data_digest``, computed by the caller from the private table) and the seed. Re-running
with the same seed on unchanged data recomputes exactly the same noisy output: publishing it again reveals
nothing new, so it is recorded once (``insert ... on conflict do nothing`` on the identity) and the repeat
is counted. Anything that changes the output (another seed, other data, another sigma) is a new release
and is charged. This rule is only sound when the release is a deterministic function of what enters the
identity: a non-deterministic input (an LLM candidate API at temperature > 0, say) must enter
``parameters`` (e.g. a digest of the candidate pool) or each run is wrongly treated as free.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from synth_assets.privacy.accounting import em_rho, epsilon_for_mu, epsilon_for_rho, gaussian_rho

if TYPE_CHECKING:  # for annotations only: a release needs a dataset's name and fingerprint, not its loader
    from synth_assets.datasets.loading import Dataset

# Bump when the identity payload changes: identities of another version never match, so every release
# would be charged again.
_IDENTITY_VERSION = 1
_MAX_SEED = 2**63 - 1

GAUSSIAN = "gaussian"
EXPONENTIAL = "exponential"
MECHANISMS = (GAUSSIAN, EXPONENTIAL)


def _canonical(value: Any) -> Any:
    """A JSON-stable form: floats to 12 significant digits (round-off must not change an identity)."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return format(value, ".12g")
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if hasattr(value, "model_dump"):  # pydantic models (a PEConfig)
        return _canonical(value.model_dump())
    if hasattr(value, "item"):  # numpy scalars
        return _canonical(value.item())
    return str(value)


def _positive_finite(value: Any, name: str) -> float:
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def _check_delta(value: Any) -> float:
    delta = float(value)
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie strictly between 0 and 1, got {value!r}")
    return delta


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class LedgerRelease:
    """One DP release from a dataset's private data, as the ledger records it.

    ``epsilon`` and ``delta`` are the target of the run/partition the release belongs to; the release's
    own privacy follows from ``sigma`` and ``histograms`` (Gaussian: ``mu = sqrt(histograms) / sigma``) or
    from ``selection_epsilon`` and ``selections`` (exponential mechanism, ``mechanism="exponential"``;
    ``sigma`` and ``histograms`` are then None). ``run_id`` and ``partition_key`` say where it was
    materialized and are not part of the identity.
    """

    dataset: str
    fingerprint: str
    kind: str
    epsilon: float
    delta: float
    sigma: float | None
    histograms: int | None
    T: int | None
    seed: int
    run_id: str | None = None
    partition_key: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict, hash=False)
    data_digest: str | None = None
    mechanism: str = GAUSSIAN
    selection_epsilon: float | None = None
    selections: int | None = None

    def __post_init__(self) -> None:
        if not self.dataset or not self.fingerprint or not self.kind:
            raise ValueError("a release needs a dataset name, a fingerprint and a kind")
        object.__setattr__(self, "epsilon", _positive_finite(self.epsilon, "epsilon"))
        object.__setattr__(self, "delta", _check_delta(self.delta))
        if self.mechanism == GAUSSIAN:
            if self.selection_epsilon is not None or self.selections is not None:
                raise ValueError("a Gaussian release has no selection_epsilon or selections")
            if self.sigma is None:
                raise ValueError("sigma must be a finite number > 0, got None")
            object.__setattr__(self, "sigma", _positive_finite(self.sigma, "sigma"))
            if self.histograms is None:
                raise ValueError("histograms must be an integer >= 1, got None")
            object.__setattr__(self, "histograms", _count(self.histograms, "histograms"))
        elif self.mechanism == EXPONENTIAL:
            if self.sigma is not None or self.histograms is not None:
                raise ValueError("an exponential-mechanism release has no sigma or histograms")
            if self.selection_epsilon is None or self.selections is None:
                raise ValueError("an exponential-mechanism release needs selection_epsilon and selections")
            object.__setattr__(
                self, "selection_epsilon", _positive_finite(self.selection_epsilon, "selection_epsilon")
            )
            object.__setattr__(self, "selections", _count(self.selections, "selections"))
        else:
            raise ValueError(f"mechanism must be one of {MECHANISMS}, got {self.mechanism!r}")
        if self.T is not None:
            if isinstance(self.T, bool) or int(self.T) != self.T or self.T < 1:
                raise ValueError(f"T must be an integer >= 1 or None, got {self.T!r}")
            object.__setattr__(self, "T", int(self.T))
        if isinstance(self.seed, bool) or int(self.seed) != self.seed or not 0 <= self.seed <= _MAX_SEED:
            raise ValueError(f"seed must be an integer in [0, 2^63), got {self.seed!r}")
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "parameters", _canonical(dict(self.parameters)))

    @property
    def is_gaussian(self) -> bool:
        return self.mechanism == GAUSSIAN

    @property
    def mu(self) -> float | None:
        """GDP mu of a Gaussian release; None for an exponential-mechanism release (see :attr:`rho`)."""
        return math.sqrt(self.histograms) / self.sigma if self.is_gaussian else None

    @property
    def rho(self) -> float:
        """zCDP rho: ``mu^2 / 2`` for a Gaussian release, ``selections * selection_epsilon^2 / 8`` for an
        exponential-mechanism release."""
        if self.is_gaussian:
            return gaussian_rho(self.sigma, self.histograms)
        return em_rho(self.selection_epsilon, self.selections)

    @property
    def release_epsilon(self) -> float:
        """This release's own epsilon at its delta."""
        return own_epsilon(self.mechanism, self.mu, self.rho, self.selection_epsilon, self.selections,
                           self.delta)

    @property
    def identity(self) -> str:
        """Digest of everything that determines the release's output (not of where it was run)."""
        payload = {
            "v": _IDENTITY_VERSION,
            "dataset": self.dataset,
            "fingerprint": self.fingerprint,
            "kind": self.kind,
            "epsilon": _canonical(self.epsilon),
            "delta": _canonical(self.delta),
            "sigma": _canonical(self.sigma),
            "histograms": self.histograms,
            "T": self.T,
            "seed": self.seed,
            "parameters": self.parameters,
            "data_digest": self.data_digest,
        }
        if not self.is_gaussian:  # Gaussian identities are unchanged, so recorded releases still match
            payload.update(
                mechanism=self.mechanism,
                selection_epsilon=_canonical(self.selection_epsilon),
                selections=self.selections,
            )
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    @classmethod
    def for_dataset(cls, dataset: Dataset, **fields: Any) -> LedgerRelease:
        """A release of ``dataset``: its name and fingerprint filled in, every other field as given."""
        return cls(dataset=dataset.name, fingerprint=dataset.fingerprint, **fields)


def own_epsilon(mechanism: str | None, mu: float | None, rho: float, selection_epsilon: float | None,
                selections: int | None, delta: float) -> float:
    """A release's own epsilon at ``delta``: the analytic-Gaussian curve for a Gaussian release; for
    exponential-mechanism selections the smaller of their pure-DP sum ``selections * selection_epsilon``
    and their zCDP figure (both are valid (epsilon, delta) guarantees)."""
    if mechanism in (None, GAUSSIAN):
        return epsilon_for_mu(mu, delta)
    return min(selections * selection_epsilon, epsilon_for_rho(rho, delta))

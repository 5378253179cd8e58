"""Privacy risk of a synthetic table, measured against a holdout the generator never saw, and audited
against the bound its (epsilon, delta) guarantee implies.

Every metric compares training rows (the generator's only input) with holdout rows of the same number,
drawn with a seed: a metric computed without a holdout cannot tell a leak from a table whose rows are
simply common. Distances are those of Private Evolution's vote (:mod:`synth_assets.pe.encoding`:
numbers normalised by the spec's public bounds, a category mismatch costing the column's weight), found
exactly by the project's nearest-neighbour kernel.

- **Exact copies**: the share of synthetic rows identical, on every modelled column, to a training row,
  beside the same share against the holdout.
- **DCR**: the share of synthetic rows closer to their nearest training row than to their nearest holdout
  row (ties count half); 0.5 when the generator learnt nothing about individuals. One-sided binomial test.
  Read as a test telling a training row from a holdout row, its share is bounded under DP
  (:func:`dp_pair_accuracy_bound`): a significant excess within that bound is amber (the table is
  measurably closer to its training rows, as epsilon allows), beyond it red.
- **Membership inference** (no-box, calibrated): a target's score is d(target, reference) -
  d(target, synthetic), where the reference is a part of the holdout used as no target; members are
  training rows, non-members the other holdout rows. AUC with a bootstrap interval, TPR at 1% and 10% FPR.
- **Anonymeter's attacks** (:mod:`synth_assets.evaluation.attacks`), training targets against holdout
  controls: attribute inference on the spec's sensitive columns and linkability, on at most
  ``ATTACK_TARGETS`` of each; singling out (univariate and multivariate predicates made from the synthetic
  table), on every compared row, as many of each, since a predicate's success depends on the number of
  people it is tried on and more targets give a copied row more chance of being among them.
- **Audit**: any test telling whether one entity was in the input of an (epsilon, delta)-DP mechanism has
  TPR <= min(e^eps FPR + delta, 1 - e^-eps (1 - delta - FPR)) at every FPR (Kairouz, Oh & Viswanath 2015),
  so its AUC is at most the area under that curve (e^eps / (1 + e^eps) for delta = 0). An attack above it,
  beyond its sampling error, means the mechanism or its accounting is broken: the release fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from scipy import stats

from synth_assets.datasets.loading import Dataset
from synth_assets.evaluation.attacks import attribute_inference, linkability, singling_out
from synth_assets.pe.encoding import EncodedTable, Encoder, build_encoder
from synth_assets.pe.nn import nearest_candidates

GREEN, AMBER, RED, NOT_AVAILABLE = "green", "amber", "red", "not available"
ATTACK_TARGETS = 1000
"""Training targets and holdout controls of attribute inference and linkability, at most."""


def dp_tpr_bound(fpr: np.ndarray | float, epsilon: float, delta: float) -> np.ndarray:
    """The largest TPR any membership test can reach at ``fpr`` against an (epsilon, delta)-DP mechanism."""
    f = np.asarray(fpr, dtype=np.float64)
    e = math.exp(epsilon) if epsilon < 700 else math.inf
    upper = np.minimum(e * f + delta, 1.0 - (1.0 - delta - f) / e)
    return np.clip(upper, 0.0, 1.0)


def dp_auc_bound(epsilon: float, delta: float) -> float:
    """The largest AUC any membership test can reach against an (epsilon, delta)-DP mechanism: the area
    under :func:`dp_tpr_bound` (piecewise linear, integrated exactly on its breakpoints)."""
    e = math.exp(min(epsilon, 700.0))
    knee = (1.0 - delta) / (1.0 + e)  # where the two lines meet
    points = np.unique(np.clip([0.0, (1.0 - delta) / e, knee, 1.0 - delta, 1.0], 0.0, 1.0))
    return float(np.trapezoid(dp_tpr_bound(points, epsilon, delta), points))


def dp_pair_accuracy_bound(epsilon: float, delta: float) -> float:
    """The largest probability that any test tells, of two entities one of which was in the input of an
    (epsilon, delta)-DP mechanism (neighbours: one entity added or removed), which one it was. Swapping
    them is two such steps, so the test faces (2 epsilon, (1 + e^epsilon) delta)-DP (group privacy), and
    its accuracy is at most (TPR + 1 - FPR) / 2 at the knee of :func:`dp_tpr_bound`."""
    pair_epsilon = 2.0 * min(epsilon, 350.0)
    pair_delta = min((1.0 + math.exp(min(epsilon, 350.0))) * delta, 1.0)
    e = math.exp(pair_epsilon)
    knee = (1.0 - pair_delta) / (1.0 + e)
    return float(min(1.0, (float(dp_tpr_bound(knee, pair_epsilon, pair_delta)) + 1.0 - knee) / 2.0))


def dcr_verdict(share: float, p_value: float, decided: int, epsilon: float | None,
                delta: float | None) -> dict:
    """The DCR's verdict: red when its share is beyond what the guarantee allows (its lower 99.9% bound
    above :func:`dp_pair_accuracy_bound`), or, for a table without a guarantee, clearly above 0.5;
    amber for a significant excess within the bound; else green. With ``dp_ceiling`` when there is one."""
    clear = p_value < 0.001 and share > 0.52
    excess = clear or (p_value < 0.01 and share > 0.51)
    if epsilon is None:
        return {"verdict": RED if clear else AMBER if excess else GREEN}
    ceiling = dp_pair_accuracy_bound(epsilon, delta or 0.0)
    low = share - 3.09 * math.sqrt(max(share * (1 - share), 1e-12) / max(decided, 1))
    return {"verdict": RED if low > ceiling else AMBER if excess else GREEN, "dp_ceiling": ceiling}


def _nearest_distance(queries: EncodedTable, rows: EncodedTable, weights: np.ndarray) -> np.ndarray:
    _, distance = nearest_candidates(queries.numeric, queries.categorical, rows.numeric, rows.categorical,
                                     weights, return_distance=True)
    return distance.astype(np.float64)


def _row_keys(encoded: EncodedTable) -> np.ndarray:
    """One bytes key per row (exact equality of every encoded column)."""
    both = np.hstack([encoded.numeric.astype(np.float64), encoded.categorical.astype(np.float64)])
    both = np.ascontiguousarray(both)
    return both.view(np.dtype((np.void, both.dtype.itemsize * both.shape[1]))).ravel()


def exact_copy_share(synthetic: EncodedTable, rows: EncodedTable) -> float:
    """Share of synthetic rows equal on every modelled column to at least one of ``rows``."""
    if synthetic.numeric.shape[0] == 0:
        return math.nan
    return float(np.isin(_row_keys(synthetic), _row_keys(rows)).mean())


def dcr_share(to_training: np.ndarray, to_holdout: np.ndarray) -> float:
    """P[closer to a training row than to a holdout row], ties counting half."""
    if to_training.size == 0:
        return math.nan
    return float(np.mean(to_training < to_holdout) + 0.5 * np.mean(to_training == to_holdout))


def roc_auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """AUC of scores where larger means member (Mann-Whitney, ties counting half)."""
    scores = np.concatenate([member_scores, nonmember_scores])
    ranks = stats.rankdata(scores)
    m, n = member_scores.size, nonmember_scores.size
    return float((ranks[:m].sum() - m * (m + 1) / 2) / (m * n))


def tpr_at_fpr(member_scores: np.ndarray, nonmember_scores: np.ndarray, fpr: float) -> float:
    """TPR of the threshold that flags at most ``fpr`` of the non-members."""
    threshold = np.quantile(nonmember_scores, 1.0 - fpr, method="higher")
    return float(np.mean(member_scores > threshold))


def roc_curve(member_scores: np.ndarray, nonmember_scores: np.ndarray, points: int = 101) -> dict:
    fprs = np.linspace(0.0, 1.0, points)
    return {"fpr": fprs.tolist(), "tpr": [tpr_at_fpr(member_scores, nonmember_scores, f) if f < 1 else 1.0
                                          for f in fprs]}


@dataclass
class PrivacyRisk:
    """The privacy section of an evaluation: every figure, its verdict and what it was computed on."""

    exact_copies: dict
    dcr: dict
    membership: dict
    audit: dict
    notes: list[str] = field(default_factory=list)
    attacks: dict = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        verdicts = [self.exact_copies["verdict"], self.dcr["verdict"], self.membership["verdict"],
                    self.audit["verdict"]]
        verdicts += [a["verdict"] for a in self.attacks.get("attribute_inference", [])]
        verdicts += [self.attacks[a]["verdict"] for a in ("linkability", "singling_out") if a in self.attacks]
        for level in (RED, AMBER, GREEN):
            if level in verdicts:
                return level
        return NOT_AVAILABLE

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "exact_copies": self.exact_copies, "dcr": self.dcr,
                "membership_inference": self.membership, "dp_audit": self.audit, "attacks": self.attacks,
                "notes": self.notes}


def not_available(reason: str) -> PrivacyRisk:
    missing = {"verdict": NOT_AVAILABLE, "reason": reason}
    return PrivacyRisk(dict(missing), dict(missing), dict(missing), dict(missing), [reason])


def privacy_risk(
    dataset: Dataset,
    training: pl.DataFrame,
    holdout: pl.DataFrame,
    synthetic: pl.DataFrame,
    *,
    epsilon: float | None,
    delta: float | None,
    seed: int = 0,
    bootstrap: int = 200,
    encoder: Encoder | None = None,
) -> PrivacyRisk:
    """Every privacy-risk metric of ``synthetic`` (see the module docstring). ``epsilon`` None: the
    table claims no DP guarantee, and the audit is not available."""
    if holdout.height < 20:
        return not_available(f"the holdout has {holdout.height} rows (at least 20 are needed): set "
                             f"privacy.holdout_fraction in {dataset.directory / 'dataset.yaml'}")
    if synthetic.height == 0 or training.height == 0:
        return not_available("the synthetic or the training table is empty")
    encoder = encoder or build_encoder(dataset)
    weights = encoder.categorical_weights
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x9A1D]))
    notes = []

    # training rows of the holdout's number, so that 'closer to training' is a fair coin without a leak
    size = min(training.height, holdout.height)
    train_sample = training[np.sort(rng.choice(training.height, size=size, replace=False))]
    hold = holdout[np.sort(rng.choice(holdout.height, size=size, replace=False))] if holdout.height > size else holdout
    if size < training.height:
        notes.append(f"training rows compared: a seeded sample of {size} of {training.height}, as many as the "
                     f"holdout rows")
    enc_train, enc_hold, enc_syn = (encoder.encode(f) for f in (train_sample, hold, synthetic))

    copies_train = exact_copy_share(enc_syn, enc_train)
    copies_hold = exact_copy_share(enc_syn, enc_hold)
    exact = {"training_share": copies_train, "holdout_share": copies_hold,
             "excess": copies_train - copies_hold, "rows": synthetic.height}
    standard_error = math.sqrt(max(copies_hold * (1 - copies_hold), 1e-12) / synthetic.height)
    exact["verdict"] = (RED if exact["excess"] > max(0.01, 4 * standard_error)
                        else AMBER if exact["excess"] > max(0.002, 2 * standard_error) else GREEN)

    to_train = _nearest_distance(enc_syn, enc_train, weights)
    to_hold = _nearest_distance(enc_syn, enc_hold, weights)
    share = dcr_share(to_train, to_hold)
    decided = to_train != to_hold
    wins = int(np.sum(to_train < to_hold))
    p_value = float(stats.binomtest(wins, int(decided.sum()), 0.5, alternative="greater").pvalue) \
        if decided.any() else 1.0
    dcr = {"share_closer_to_training": share, "p_value": p_value, "rows": synthetic.height,
           "ties": float(np.mean(~decided)),
           "histogram": _dcr_histogram(to_train, to_hold)}
    dcr.update(dcr_verdict(share, p_value, int(decided.sum()), epsilon, delta))

    membership = _membership(enc_train, enc_hold, enc_syn, weights, rng, bootstrap)
    audit = _audit(membership, epsilon, delta)
    if membership["verdict"] != RED:
        membership["verdict"] = RED if audit["verdict"] == RED else membership["verdict"]
    people = min(size, ATTACK_TARGETS)
    targets, controls = train_sample.head(people), hold.tail(people)
    attacks = {
        "attribute_inference": [attribute_inference(dataset, encoder, targets, controls, synthetic, column)
                                for column in dataset.spec.evaluation.sensitive_columns],
        "linkability": linkability(dataset, encoder, targets, controls, synthetic, seed=seed),
        "singling_out": singling_out(encoder, train_sample, hold, synthetic, seed=seed),
        "method": "Anonymeter's attacks (Giomi et al. 2023): training targets against holdout controls",
    }
    return PrivacyRisk(exact, dcr, membership, audit, notes, attacks)


def _dcr_histogram(to_training: np.ndarray, to_holdout: np.ndarray, bins: int = 20) -> dict:
    top = float(np.quantile(np.concatenate([to_training, to_holdout]), 0.99)) or 1.0
    edges = np.linspace(0.0, top, bins + 1)
    return {"edges": edges.tolist(),
            "training": np.histogram(np.minimum(to_training, top), edges)[0].tolist(),
            "holdout": np.histogram(np.minimum(to_holdout, top), edges)[0].tolist()}


def _membership(enc_train, enc_hold, enc_syn, weights, rng, bootstrap) -> dict:
    """Members: the compared training rows; non-members: half of the holdout; reference: the other half."""
    half = enc_hold.numeric.shape[0] // 2
    order = rng.permutation(enc_hold.numeric.shape[0])
    nonmembers, reference = _rows(enc_hold, order[:half]), _rows(enc_hold, order[half:])
    members = _rows(enc_train, rng.choice(enc_train.numeric.shape[0], size=half, replace=False))

    def score(targets: EncodedTable) -> np.ndarray:
        return _nearest_distance(targets, reference, weights) - _nearest_distance(targets, enc_syn, weights)

    member_scores, nonmember_scores = score(members), score(nonmembers)
    auc = roc_auc(member_scores, nonmember_scores)
    draws = []
    for _ in range(bootstrap):
        a = rng.choice(member_scores, member_scores.size)
        b = rng.choice(nonmember_scores, nonmember_scores.size)
        draws.append(roc_auc(a, b))
    low, high = (float(v) for v in np.quantile(draws, [0.025, 0.975])) if draws else (math.nan, math.nan)
    result = {
        "auc": auc, "auc_ci95": [low, high], "targets": int(2 * half),
        "tpr_at_1pct_fpr": tpr_at_fpr(member_scores, nonmember_scores, 0.01),
        "tpr_at_10pct_fpr": tpr_at_fpr(member_scores, nonmember_scores, 0.10),
        "roc": roc_curve(member_scores, nonmember_scores),
        "attack": "no-box, calibrated: d(target, holdout reference) - d(target, synthetic)",
    }
    result["verdict"] = RED if low > 0.6 else AMBER if low > 0.53 else GREEN
    return result


def _rows(encoded: EncodedTable, index: np.ndarray) -> EncodedTable:
    return EncodedTable(
        numeric=np.ascontiguousarray(encoded.numeric[index]),
        categorical=np.ascontiguousarray(encoded.categorical[index]),
        categorical_weights=encoded.categorical_weights,
        numeric_columns=encoded.numeric_columns,
        categorical_columns=encoded.categorical_columns,
    )


def _audit(membership: dict, epsilon: float | None, delta: float | None) -> dict:
    if epsilon is None:
        return {"verdict": NOT_AVAILABLE, "reason": "the table claims no (epsilon, delta) guarantee"}
    delta = delta or 0.0
    bound = dp_auc_bound(epsilon, delta)
    low = membership["auc_ci95"][0]
    tpr_bounds = {"tpr_at_1pct_fpr": float(dp_tpr_bound(0.01, epsilon, delta)),
                  "tpr_at_10pct_fpr": float(dp_tpr_bound(0.10, epsilon, delta))}
    exceeded = low > bound
    return {
        "epsilon": epsilon, "delta": delta, "auc_bound": bound, "tpr_bounds": tpr_bounds,
        "bound": "TPR <= min(e^eps FPR + delta, 1 - e^-eps (1 - delta - FPR)) (Kairouz, Oh & Viswanath 2015)",
        "verdict": RED if exceeded else GREEN,
        "finding": (f"the membership attack's AUC ({membership['auc']:.3f}, 95% interval from {low:.3f}) is "
                    f"above what ({epsilon:g}, {delta:g})-DP allows ({bound:.3f}): the mechanism or its "
                    f"accounting is broken; do not release this table") if exceeded else
                   f"the attack stays within the DP bound (AUC {membership['auc']:.3f} <= {bound:.3f})",
    }

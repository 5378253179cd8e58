"""Privacy risk against a holdout: hand-computed metrics, the DP bound, leaky controls flagged red and a
DP release not, and the audit tripped by a mechanism that publishes its input."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from synth_assets import evaluate, split_holdout
from synth_assets.datasets.loading import load_dataset
from synth_assets.datasets.spec import NumericColumn
from synth_assets.evaluation.attacks import risk as attack_risk
from synth_assets.evaluation.privacy_risk import (
    AMBER,
    GREEN,
    RED,
    dcr_share,
    dcr_verdict,
    dp_auc_bound,
    dp_pair_accuracy_bound,
    dp_tpr_bound,
    exact_copy_share,
    privacy_risk,
    roc_auc,
    tpr_at_fpr,
)
from synth_assets.generators.independent import IndependentMarginals
from synth_assets.pe.encoding import build_encoder
from synth_assets.privacy.releases import synthesize
from synth_assets.tables.build import build_real_tables

DELTA = 1e-6


# ------------------------------------------------------------------------------------- the bound


@pytest.mark.parametrize(("epsilon", "expected"), [(0.5, 0.6225), (1.0, 0.7311), (2.0, 0.8808), (4.0, 0.9820)])
def test_the_auc_bound_of_pure_dp_is_e_eps_over_one_plus_e_eps(epsilon, expected):
    assert dp_auc_bound(epsilon, 0.0) == pytest.approx(math.exp(epsilon) / (1 + math.exp(epsilon)), abs=1e-9)
    assert dp_auc_bound(epsilon, 0.0) == pytest.approx(expected, abs=1e-4)


def test_delta_loosens_the_bound_and_the_tpr_bound_has_its_two_lines():
    assert dp_auc_bound(1.0, 1e-3) > dp_auc_bound(1.0, 1e-6) > dp_auc_bound(1.0, 0.0)
    assert dp_auc_bound(50.0, 0.0) == pytest.approx(1.0, abs=1e-9)
    assert float(dp_tpr_bound(0.0, 1.0, 1e-3)) == pytest.approx(1e-3)
    assert float(dp_tpr_bound(0.01, 1.0, 0.0)) == pytest.approx(math.e * 0.01)
    assert float(dp_tpr_bound(0.9, 1.0, 0.0)) == pytest.approx(1 - 0.1 / math.e)
    # a grid integral of the curve agrees with the exact one
    grid = np.linspace(0, 1, 200_001)
    assert np.trapezoid(dp_tpr_bound(grid, 1.3, 1e-2), grid) == pytest.approx(dp_auc_bound(1.3, 1e-2), abs=1e-6)


# ------------------------------------------------------------------------------- hand computations


def test_anonymeter_risk_counts_only_the_success_beyond_the_controls():
    assert attack_risk(0.6, 0.2) == pytest.approx(0.5)
    assert attack_risk(0.1, 0.2) == 0.0
    assert math.isnan(attack_risk(0.5, 1.0))


def test_metrics_match_hand_computations():
    assert dcr_share(np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 1.0, 5.0])) == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert roc_auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert roc_auc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0
    assert roc_auc(np.array([1.0, 3.0]), np.array([1.0, 2.0])) == pytest.approx((0.5 + 0 + 1 + 1) / 4)
    members, nonmembers = np.arange(100, 200, dtype=float), np.arange(0, 100, dtype=float)
    assert tpr_at_fpr(members, nonmembers, 0.01) == 1.0
    assert tpr_at_fpr(nonmembers, members, 0.10) == 0.0


def test_exact_copies_compare_every_modelled_column(tiny, wide):
    encoder = build_encoder(tiny)
    rows = wide.head(10)
    changed = rows.with_columns(pl.when(pl.int_range(10) < 3).then(pl.lit("zz-unknown-never")).otherwise(
        pl.lit(None)).alias("__ignored"))  # a column the encoder does not read changes nothing
    assert exact_copy_share(encoder.encode(changed), encoder.encode(rows)) == 1.0
    numeric = next(c.wide_name for c in tiny.spec.modelled_columns if isinstance(c, NumericColumn))
    moved = rows.with_columns((pl.col(numeric) + pl.when(pl.int_range(10) < 4).then(1).otherwise(0)).alias(numeric))
    share = exact_copy_share(encoder.encode(moved), encoder.encode(rows))
    assert share == pytest.approx(0.6, abs=0.1)  # 4 rows moved (a moved row may equal another row)


# ------------------------------------------------------------------------------- controls


@pytest.fixture(scope="module")
def halves(tiny, wide):
    spec = tiny.spec.model_copy(update={"privacy": tiny.spec.privacy.model_copy(update={"holdout_fraction": 0.5})})
    dataset = dataclasses.replace(tiny, spec=spec)
    training, holdout = split_holdout(dataset, wide)
    return dataset, training, holdout


@pytest.fixture(scope="module")
def players():
    """The embedded dataset split by its spec (holdout 0.2): 68 columns, few duplicate rows."""
    dataset = load_dataset()
    training, holdout = split_holdout(dataset, build_real_tables(dataset).wide)
    return dataset, training, holdout


def test_the_split_is_deterministic_disjoint_and_close_to_the_fraction(halves, wide):
    dataset, training, holdout = halves
    key = dataset.spec.entity.key
    assert training.height + holdout.height == wide.height
    assert set(training[key]).isdisjoint(set(holdout[key]))
    assert abs(holdout.height / wide.height - 0.5) < 0.1
    again_training, again_holdout = split_holdout(dataset, wide.reverse())
    assert again_training.equals(training) and again_holdout.equals(holdout)  # same rows, same order


def test_the_split_is_the_same_in_a_fresh_interpreter_and_moves_with_the_seed(halves, wide, tmp_path):
    """A hash salted per process or per library version would move entities between training and
    holdout from one run to the next, and with them the ledger's data digest."""
    dataset, _, holdout = halves
    key = dataset.spec.entity.key
    wide.select(key).write_parquet(tmp_path / "keys.parquet")
    code = ("import dataclasses, sys, polars as pl; from synth_assets.datasets.loading import load_dataset; "
            "from synth_assets.evaluation.holdout import split_holdout; d = load_dataset(sys.argv[1]); "
            "p = d.spec.privacy.model_copy(update={'holdout_fraction': 0.5}); "
            "d = dataclasses.replace(d, spec=d.spec.model_copy(update={'privacy': p})); "
            "print(','.join(split_holdout(d, pl.read_parquet(sys.argv[2]))[1][d.spec.entity.key].to_list()))")
    printed = subprocess.run([sys.executable, "-c", code, str(dataset.directory), str(tmp_path / "keys.parquet")],
                             capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": "123"}).stdout.strip()
    assert printed.split(",") == holdout[key].to_list()
    privacy = dataset.spec.privacy.model_copy(update={"holdout_seed": 1})
    reseeded = dataclasses.replace(dataset, spec=dataset.spec.model_copy(update={"privacy": privacy}))
    moved = split_holdout(reseeded, wide)[1]
    assert 0.3 < len(set(moved[key]) & set(holdout[key])) / holdout.height < 0.7  # independent halves


def test_a_copy_of_the_training_rows_is_red_everywhere_and_trips_the_dp_audit(players):
    dataset, training, holdout = players
    risk = privacy_risk(dataset, training, holdout, training, epsilon=1.0, delta=DELTA)
    assert risk.verdict == RED
    risk = risk.to_dict()
    # a quarter of the copies meet the training rows compared (as many as the holdout's), none the holdout
    assert risk["exact_copies"]["verdict"] == RED
    assert risk["exact_copies"]["training_share"] > 0.2 > 0.01 > risk["exact_copies"]["holdout_share"]
    # a quarter of the rows are at distance 0 from the training rows compared: far from chance, yet within
    # what a swap of one entity allows at epsilon 1; the copies, the attack and the audit say it
    assert risk["dcr"]["p_value"] < 1e-10 and risk["dcr"]["share_closer_to_training"] > 0.6
    assert risk["dcr"]["verdict"] == AMBER and risk["dcr"]["share_closer_to_training"] < risk["dcr"]["dp_ceiling"]
    assert risk["membership_inference"]["auc"] > 0.85
    assert risk["dp_audit"]["verdict"] == RED and "broken" in risk["dp_audit"]["finding"]
    (salary,) = risk["attacks"]["attribute_inference"]  # the spec's sensitive column
    assert salary["column"] == "salary_mean" and salary["verdict"] == RED
    assert salary["success_targets"] > salary["success_controls"]
    assert risk["attacks"]["linkability"]["verdict"] == RED


def test_training_rows_with_small_noise_are_red_too(players):
    dataset, training, holdout = players
    rng = np.random.default_rng(0)
    jitter = []
    for column in dataset.spec.modelled_columns:
        if isinstance(column, NumericColumn):
            width = (column.max - column.min) * 0.001
            noise = pl.Series(rng.uniform(-width, width, training.height))
            jittered = (training[column.wide_name].cast(pl.Float64) + noise).clip(column.min, column.max)
            if column.type == "integer":
                jittered = jittered.round().cast(pl.Int64)
            jitter.append(jittered.alias(column.wide_name))
    noisy = training.with_columns(jitter)
    risk = privacy_risk(dataset, training, holdout, noisy, epsilon=1.0, delta=DELTA).to_dict()
    assert risk["dcr"]["verdict"] != GREEN
    assert risk["membership_inference"]["verdict"] == RED
    assert risk["dp_audit"]["verdict"] == RED


def test_a_dp_release_from_training_only_is_not_flagged(players):
    dataset, training, holdout = players
    synthetic = synthesize(dataset, IndependentMarginals(), 1.0, training, delta=DELTA, ledger=None).population
    risk = privacy_risk(dataset, training, holdout, synthetic, epsilon=1.0, delta=DELTA).to_dict()
    attacks = [*risk["attacks"]["attribute_inference"], risk["attacks"]["linkability"]]
    assert attacks and all(a["verdict"] != RED for a in attacks)
    assert risk["dp_audit"]["verdict"] == GREEN
    assert risk["membership_inference"]["auc_ci95"][0] < dp_auc_bound(1.0, DELTA)
    assert abs(risk["membership_inference"]["auc"] - 0.5) < 0.03
    assert risk["exact_copies"]["verdict"] != RED and risk["dcr"]["verdict"] != RED


def test_without_a_holdout_every_privacy_metric_says_not_available(halves, tmp_path):
    dataset, training, _ = halves
    report = evaluate(dataset, training, training.head(0), training, epsilon=1.0, delta=DELTA)
    risk = report.privacy.to_dict()
    assert {risk[k]["verdict"] for k in ("exact_copies", "dcr", "membership_inference", "dp_audit")} == {"not available"}
    assert "holdout_fraction" in risk["notes"][0]
    assert report.fidelity["verdict"] == "not available"
    page = report.to_html(tmp_path / "report.html").read_text()
    assert "not available" in page and "<table>" in page


def test_the_dcr_is_judged_against_what_the_guarantee_allows() -> None:
    # no test tells a training row from a holdout row better than the swap's group-privacy bound allows
    assert dp_pair_accuracy_bound(1.0, 0.0) == pytest.approx(math.exp(2) / (1 + math.exp(2)))
    assert dp_pair_accuracy_bound(1e-9, 0.0) == pytest.approx(0.5)
    assert 0.5 < dp_pair_accuracy_bound(0.1, 1e-6) < dp_pair_accuracy_bound(0.5, 1e-6) < dp_pair_accuracy_bound(1, 1e-6)
    assert dp_pair_accuracy_bound(0.1, 1e-6) > dp_pair_accuracy_bound(0.1, 0.0)
    # 2,000 decided rows at a share of 0.57: a clear excess, which (1, 1e-6)-DP allows; beyond epsilon
    # 0.05's ceiling of 0.525 by more than its sampling error
    assert dcr_verdict(0.57, 1e-9, 2000, 1.0, 1e-6) == {"verdict": AMBER, "dp_ceiling": pytest.approx(0.8808, abs=1e-3)}
    assert dcr_verdict(0.57, 1e-9, 2000, 0.05, 1e-6)["verdict"] == RED
    assert dcr_verdict(0.95, 1e-30, 2000, 1.0, 1e-6)["verdict"] == RED  # a copy is beyond any epsilon 1
    assert dcr_verdict(0.57, 1e-9, 2000, None, None) == {"verdict": RED}  # no guarantee to lean on
    assert dcr_verdict(0.505, 0.3, 2000, 1.0, 1e-6)["verdict"] == GREEN


def test_a_large_table_is_evaluated_on_a_seeded_sample_and_says_so(halves, monkeypatch) -> None:
    import synth_assets.evaluation.report as report_module

    dataset, training, holdout = halves
    cap = max(50, holdout.height // 2)
    monkeypatch.setattr(report_module, "EVALUATION_ROWS", cap)
    first = report_module.evaluation_rows(training, seed=3)
    assert first.height == cap and first.equals(report_module.evaluation_rows(training, seed=3))
    keys = dataset.spec.entity.key
    assert first[keys].is_in(training[keys]).all() and first[keys].is_sorted() == training[keys].is_sorted()
    assert report_module.evaluation_rows(training.head(cap - 1)).height == cap - 1  # small tables whole

    report = report_module.evaluate(dataset, training, holdout, training, epsilon=None).to_dict()
    assert report["rows"]["training"] == training.height and report["rows"]["training_evaluated"] == cap
    assert report["rows"]["synthetic_evaluated"] == cap and report["rows"]["holdout_evaluated"] == cap
    assert report["privacy"]["dcr"]["rows"] == cap  # the privacy figures are of the sample

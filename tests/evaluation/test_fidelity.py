"""Fidelity metrics against hand computations on small frames, and the detection classifier's two ends."""

from __future__ import annotations

import math

import polars as pl
import pytest
from scipy import stats

from synth_assets.datasets.spec import CategoricalColumn, NumericColumn
from synth_assets.evaluation.fidelity import column_fidelity, detection_auc, pair_fidelity


def _columns(tiny):
    numeric = [c for c in tiny.spec.modelled_columns if isinstance(c, NumericColumn)]
    categorical = [c for c in tiny.spec.modelled_columns if isinstance(c, CategoricalColumn)]
    return numeric, categorical


def test_column_metrics_match_hand_computations(tiny, wide):
    numeric, categorical = _columns(tiny)
    real = wide.head(200)
    other = wide.tail(150)
    table = {r["column"]: r for r in column_fidelity(tiny, real, other).iter_rows(named=True)}
    n = numeric[0].wide_name
    x, y = real[n].drop_nulls().cast(pl.Float64).to_numpy(), other[n].drop_nulls().cast(pl.Float64).to_numpy()
    assert table[n]["metric"] == "ks"
    assert table[n]["value"] == pytest.approx(stats.ks_2samp(x, y).statistic)
    c = categorical[0].wide_name
    p = real[c].drop_nulls().to_list()
    q = other[c].drop_nulls().to_list()
    categories = set(p) | set(q)
    hand = 0.5 * sum(abs(p.count(k) / len(p) - q.count(k) / len(q)) for k in categories)
    assert table[c]["metric"] == "tvd" and table[c]["value"] == pytest.approx(hand)
    assert table[c]["null_share_gap"] == pytest.approx(abs(real[c].null_count() / 200 - other[c].null_count() / 150))
    same = column_fidelity(tiny, real, real)
    assert same["value"].drop_nans().max() == 0 and same["null_share_gap"].max() == 0


def test_pair_metrics_match_hand_computations(tiny, wide):
    numeric, _ = _columns(tiny)
    a, b = numeric[0].wide_name, numeric[1].wide_name
    real, other = wide.head(250), wide.tail(250)
    pairs = pair_fidelity(tiny, real, other)
    row = pairs.filter(pl.col("pair") == f"{a} x {b}").row(0, named=True)

    def pearson(frame):
        both = frame.select(a, b).drop_nulls().cast(pl.Float64)
        return stats.pearsonr(both[a].to_numpy(), both[b].to_numpy())[0]

    assert row["pearson_delta"] == pytest.approx(abs(pearson(real) - pearson(other)))
    assert (pair_fidelity(tiny, real, real)["pearson_delta"].drop_nans() == 0).all()
    assert pairs.filter(pl.col("kind") == "categorical").height > 0


def test_detection_is_chance_on_two_real_samples_and_certain_on_a_shifted_column(tiny, wide):
    first, second = wide.head(200), wide.tail(200)
    assert abs(detection_auc(tiny, first, second) - 0.5) < 0.12
    numeric = [c for c in tiny.spec.modelled_columns if isinstance(c, NumericColumn)]
    shifted = second.with_columns(pl.lit(numeric[0].max).cast(second[numeric[0].wide_name].dtype).alias(numeric[0].wide_name))
    assert detection_auc(tiny, first, shifted) > 0.9
    assert math.isnan(detection_auc(tiny, first.head(10), second.head(10)))

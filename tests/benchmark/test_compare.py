"""Each query type is scored with its documented metric, checked against values computed by hand."""

import math

import polars as pl
import pytest

from synth_assets.benchmark.compare import compare, pass_rate, score_query, scores_markdown
from synth_assets.datasets.loading import DatasetError
from synth_assets.datasets.spec import AggregateQuery, CoverageQuery, DistributionQuery, RankingQuery


def _aggregate(**kw):
    return AggregateQuery(type="aggregate", name="q", sql="select 1", **kw)


def test_aggregate_relative_error_with_floor_and_missing_groups() -> None:
    query = _aggregate(keys=["g"], max_relative_error=0.2, floor=10.0)
    real = pl.DataFrame({"g": ["a", "b", "c"], "x": [100.0, 5.0, 50.0], "y": [1.0, 2.0, 3.0]})
    synthetic = pl.DataFrame({"g": ["a", "b", "z"], "x": [110.0, 7.0, 1.0], "y": [9.0, 9.0, 9.0]})
    score = score_query(query, real, synthetic)
    # x: a 10/100, b 2/max(5,10), c absent counts as 0 -> 50/50; mean = (0.1 + 0.2 + 1.0) / 3
    assert score.metrics["x"] == pytest.approx((0.1 + 0.2 + 1.0) / 3)
    # y: a 8/10, b 7/10, c 3/10 with floor 10
    assert score.metrics["y"] == pytest.approx((0.8 + 0.7 + 0.3) / 3)
    assert score.suppressed_groups == 1 and score.fabricated_groups == 1
    assert not score.passed


def test_aggregate_without_keys_and_the_half_of_metrics_rule() -> None:
    query = _aggregate(max_relative_error=0.1)
    real = pl.DataFrame({"mean": [10.0], "p99": [100.0]})
    good_half = pl.DataFrame({"mean": [10.5], "p99": [200.0]})
    score = score_query(query, real, good_half)
    assert score.metrics == pytest.approx({"mean": 0.05, "p99": 1.0})
    assert score.passed  # one of two metrics meets its threshold: at least half
    worse = score_query(query, real, pl.DataFrame({"mean": [12.0], "p99": [200.0]}))
    assert not worse.passed


def test_aggregate_nulls_count_as_errors_not_as_perfect() -> None:
    query = _aggregate()
    real = pl.DataFrame({"avg_era": [3.5]})
    score = score_query(query, real, pl.DataFrame({"avg_era": [None]}, schema={"avg_era": pl.Float64}))
    assert score.metrics["avg_era"] == pytest.approx(1.0)
    both_null = score_query(
        query,
        pl.DataFrame({"v": [None]}, schema={"v": pl.Float64}),
        pl.DataFrame({"v": [None]}, schema={"v": pl.Float64}),
    )
    assert both_null.metrics["v"] == 0.0


def test_aggregate_with_several_rows_but_no_keys_is_an_error() -> None:
    score = score_query(_aggregate(), pl.DataFrame({"v": [1.0, 2.0]}), pl.DataFrame({"v": [1.0, 2.0]}))
    assert not score.passed and "list its group columns in 'keys'" in score.error


def test_text_value_column_must_be_declared_a_key() -> None:
    with pytest.raises(DatasetError, match="value column 'league' is String, not numeric"):
        score_query(
            _aggregate(keys=["g"]),
            pl.DataFrame({"g": ["a"], "league": ["AL"]}),
            pl.DataFrame({"g": ["a"], "league": ["AL"]}),
        )


def test_distribution_total_variation_distance() -> None:
    query = DistributionQuery(type="distribution", name="d", sql="-", keys=["pos"], max_tvd=0.1)
    real = pl.DataFrame({"pos": ["P", "C", "SS"], "n": [50, 30, 20]})
    synthetic = pl.DataFrame({"pos": ["P", "C", "1B"], "n": [6, 3, 1]})
    score = score_query(query, real, synthetic)
    # p = (.5, .3, .2, 0), q = (.6, .3, 0, .1): TVD = 0.5 * (.1 + 0 + .2 + .1) = 0.2
    assert score.metrics["n"] == pytest.approx(0.2)
    assert not score.passed
    assert math.isnan(score_query(query, real, synthetic.clear()).metrics["n"])


def test_distribution_null_group_is_its_own_group() -> None:
    query = DistributionQuery(type="distribution", name="d", sql="-", keys=["hof"])
    real = pl.DataFrame({"hof": [None, "Y"], "n": [9, 1]})
    synthetic = pl.DataFrame({"hof": ["Y", None], "n": [1, 9]})
    assert score_query(query, real, synthetic).metrics["n"] == pytest.approx(0.0)


def test_ranking_spearman_with_missing_items_ranked_last() -> None:
    query = RankingQuery(type="ranking", name="r", sql="-", keys=["team"], min_spearman=0.5)
    real = pl.DataFrame({"team": ["a", "b", "c", "d"], "wins": [40, 30, 20, 10]})
    same_order = pl.DataFrame({"team": ["a", "b", "c", "d"], "wins": [4, 3, 2, 1]})
    assert score_query(query, real, same_order).metrics["wins"] == pytest.approx(1.0)
    reversed_order = pl.DataFrame({"team": ["a", "b", "c", "d"], "wins": [1, 2, 3, 4]})
    assert score_query(query, real, reversed_order).metrics["wins"] == pytest.approx(-1.0)
    # d missing in synthetic: synthetic ranks a>b>c>d(last) -> identical order
    missing = pl.DataFrame({"team": ["a", "b", "c"], "wins": [9, 8, 7]})
    assert score_query(query, real, missing).metrics["wins"] == pytest.approx(1.0)
    # swap of the top two among four: rho = 1 - 6*(1+1)/(4*15) = 0.8
    swap = pl.DataFrame({"team": ["a", "b", "c", "d"], "wins": [3, 4, 2, 1]})
    assert score_query(query, real, swap).metrics["wins"] == pytest.approx(0.8)


def test_coverage_jaccard() -> None:
    query = CoverageQuery(type="coverage", name="c", sql="-", keys=["country"], min_jaccard=0.5)
    real = pl.DataFrame({"country": ["USA", "DOM", "VEN", "CUB"]})
    synthetic = pl.DataFrame({"country": ["USA", "DOM", "JPN"]})
    score = score_query(query, real, synthetic)
    assert score.metrics["jaccard"] == pytest.approx(2 / 5)
    assert not score.passed
    assert score_query(query, real.clear(), synthetic.clear()).metrics["jaccard"] == 1.0


def test_compare_fails_queries_without_a_synthetic_answer_and_reports_pass_rate() -> None:
    queries = [
        _aggregate(),
        CoverageQuery(type="coverage", name="c", sql="-", keys=["k"]),
    ]
    real = {"q": pl.DataFrame({"v": [1.0]}), "c": pl.DataFrame({"k": ["x"]})}
    scores = compare(queries, real, {"q": pl.DataFrame({"v": [1.0]})})
    assert [s.passed for s in scores] == [True, False]
    assert "no synthetic answer" in scores[1].error
    assert pass_rate(scores) == 0.5
    table = scores_markdown(scores)
    assert "| q | aggregate | yes | v=0.000 (<= 0.1) |" in table
    assert "| c | coverage | error |" in table
    assert scores[1].to_dict()["metrics"] == {}

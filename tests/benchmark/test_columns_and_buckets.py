"""Per-column thresholds, floors and ignored columns, pass_when, errors by real group size and the
workload summary, checked against values computed by hand."""

import json
import re
from pathlib import Path

import polars as pl
import pytest
from pydantic import TypeAdapter

from synth_assets.benchmark.compare import (
    NOT_BUCKETED,
    compare,
    metric_pass_rate,
    score_query,
    scores_markdown,
    size_bucket,
)
from synth_assets.benchmark.summary import workload_summary
from synth_assets.datasets.loading import DatasetError, load_query
from synth_assets.datasets.spec import (
    AggregateQuery,
    CoverageQuery,
    DistributionQuery,
    Query,
    RankingQuery,
)

DOCS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "dataset-spec.md"


def _aggregate(**kw) -> AggregateQuery:
    return AggregateQuery(type="aggregate", name=kw.pop("name", "q"), sql="select 1", **kw)


def _distribution(**kw) -> DistributionQuery:
    return DistributionQuery(type="distribution", name=kw.pop("name", "d"), sql="-", **kw)


# ------------------------------------------------------------------------------ per-column settings


def test_a_column_threshold_replaces_the_query_threshold_for_that_column() -> None:
    real = pl.DataFrame({"x": [100.0], "y": [10.0]})
    synthetic = pl.DataFrame({"x": [130.0], "y": [10.5]})  # x: 0.3, y: 0.05
    plain = score_query(_aggregate(max_relative_error=0.1, pass_when="all"), real, synthetic)
    assert plain.thresholds == {"x": 0.1, "y": 0.1}
    assert not plain.passed and metric_pass_rate([plain]) == 0.5

    query = _aggregate(max_relative_error=0.1, pass_when="all", columns={"x": {"threshold": 0.5}})
    score = score_query(query, real, synthetic)
    assert score.metrics == pytest.approx({"x": 0.3, "y": 0.05})
    assert score.thresholds == {"x": 0.5, "y": 0.1} and score.threshold == 0.1
    assert score.meets("x") and score.passed and metric_pass_rate([score]) == 1.0
    assert "x=0.300 (<= 0.5), y=0.050 (<= 0.1); all must meet" in scores_markdown([score])
    # a stricter column threshold makes y fail where the query's own would let it pass
    strict = score_query(
        _aggregate(max_relative_error=0.5, columns={"y": {"threshold": 0.01}}), real, synthetic
    )
    assert strict.meets("x") and not strict.meets("y")


def test_column_thresholds_of_distribution_and_ranking_queries() -> None:
    real = pl.DataFrame({"g": ["a", "b"], "n": [50, 50], "m": [10, 90]})
    synthetic = pl.DataFrame({"g": ["a", "b"], "n": [70, 30], "m": [10, 90]})  # n: TVD 0.2, m: 0
    query = _distribution(keys=["g"], max_tvd=0.1, pass_when="all", columns={"n": {"threshold": 0.25}})
    assert score_query(query, real, synthetic).passed
    assert not score_query(_distribution(keys=["g"], max_tvd=0.1, pass_when="all"), real, synthetic).passed

    ranking = RankingQuery(
        type="ranking", name="r", sql="-", keys=["g"], min_spearman=0.9, columns={"v": {"threshold": -1.0}}
    )
    reversed_order = score_query(
        ranking,
        pl.DataFrame({"g": ["a", "b", "c"], "v": [3, 2, 1]}),
        pl.DataFrame({"g": ["a", "b", "c"], "v": [1, 2, 3]}),
    )
    assert reversed_order.metrics["v"] == pytest.approx(-1.0) and reversed_order.passed


def test_a_column_floor_replaces_the_query_floor() -> None:
    real = pl.DataFrame({"share": [0.02], "other": [0.02]})
    synthetic = pl.DataFrame({"share": [0.03], "other": [0.03]})
    score = score_query(_aggregate(floor=0.01, columns={"share": {"floor": 0.1}}), real, synthetic)
    # share: 0.01 / max(0.02, 0.1); other: 0.01 / max(0.02, 0.01)
    assert score.metrics == pytest.approx({"share": 0.1, "other": 0.5})


def test_an_ignored_count_no_longer_carries_the_query() -> None:
    """The reported case: a count(*) column meets its threshold while the value of interest is off by
    260%, and under "half of its metrics" the query passed."""
    real = pl.DataFrame({"g": ["a", "b"], "players": [100.0, 200.0], "mean_salary": [1000.0, 2000.0]})
    synthetic = pl.DataFrame({"g": ["a", "b"], "players": [101.0, 199.0], "mean_salary": [3600.0, 7200.0]})
    carried = score_query(_aggregate(keys=["g"], max_relative_error=0.2), real, synthetic)
    assert carried.metrics["mean_salary"] == pytest.approx(2.6) and carried.passed

    query = _aggregate(keys=["g"], max_relative_error=0.2, columns={"players": {"ignore": True}})
    score = score_query(query, real, synthetic)
    assert list(score.metrics) == ["mean_salary"] and score.ignored == ["players"]
    assert not score.passed and metric_pass_rate([score]) == 0.0
    assert "not scored: players" in scores_markdown([score])

    everything_ignored = _aggregate(
        keys=["g"], columns={c: {"ignore": True} for c in ("players", "mean_salary")}
    )
    failed = score_query(everything_ignored, real, synthetic)
    assert not failed.passed and "every value column is ignored" in failed.error


def test_a_column_the_query_does_not_output_is_refused_by_name() -> None:
    query = _aggregate(name="salaries", keys=["g"], columns={"mean_pay": {"threshold": 0.3}})
    real = pl.DataFrame({"g": ["a"], "players": [1.0], "mean_salary": [2.0]})
    with pytest.raises(DatasetError) as raised:
        score_query(query, real, real)
    message = str(raised.value)
    assert "'salaries'" in message and "'mean_pay'" in message
    assert "['players', 'mean_salary']" in message
    # known only from the real answer: refused even when there is no synthetic answer
    with pytest.raises(DatasetError, match="'mean_pay'"):
        score_query(query, real, None)
    with pytest.raises(DatasetError, match="group_size 'entities' is not one of its value columns"):
        score_query(_aggregate(name="s", keys=["g"], group_size="entities"), real, real)


def _write(tmp_path: Path, query: dict) -> Path:
    path = tmp_path / "q.json"
    path.write_text(json.dumps({"name": "q", "sql": "select 1", "keys": ["g"], **query}))
    return path


@pytest.mark.parametrize("query_type", ["distribution", "ranking"])
def test_a_floor_outside_an_aggregate_query_is_refused_by_the_spec(tmp_path: Path, query_type: str) -> None:
    path = _write(tmp_path, {"type": query_type, "columns": {"n": {"floor": 5}}})
    with pytest.raises(DatasetError, match=f"floor applies to aggregate queries only.*a {query_type} query"):
        load_query(path)
    assert (
        load_query(_write(tmp_path, {"type": "aggregate", "columns": {"n": {"floor": 5}}})).columns["n"].floor
        == 5
    )


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"type": "distribution", "columns": {"n": {"threshold": 1.5}}}, "columns.n.threshold"),
        ({"type": "aggregate", "columns": {"n": {"threshold": 0}}}, "columns.n.threshold"),
        ({"type": "ranking", "columns": {"n": {"threshold": -2}}}, "columns.n.threshold"),
        ({"type": "aggregate", "columns": {"n": {"ignore": True, "threshold": 0.2}}}, "not both"),
        ({"type": "aggregate", "columns": {"g": {"ignore": True}}}, r"columns \['g'\] are keys"),
        ({"type": "aggregate", "columns": {"n": {"weight": 2}}}, "columns.n.weight: unknown field"),
        ({"type": "aggregate", "group_size": "g"}, "group_size 'g' is a key"),
        ({"type": "aggregate", "pass_when": "most"}, "pass_when"),
        ({"type": "coverage", "columns": {"n": {}}}, "a coverage query has one metric"),
        ({"type": "coverage", "group_size": "n"}, "leave group_size out"),
    ],
)
def test_column_settings_are_validated(tmp_path: Path, query: dict, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        load_query(_write(tmp_path, query))


def test_pass_when_all_against_half() -> None:
    real = pl.DataFrame({"a": [10.0], "b": [10.0], "c": [10.0]})
    two_of_three = pl.DataFrame({"a": [10.0], "b": [10.5], "c": [20.0]})  # 0, 0.05, 1.0
    assert score_query(_aggregate(), real, two_of_three).passed
    assert score_query(_aggregate(pass_when="half"), real, two_of_three).passed
    assert not score_query(_aggregate(pass_when="all"), real, two_of_three).passed
    one_of_three = pl.DataFrame({"a": [10.0], "b": [20.0], "c": [20.0]})
    assert not score_query(_aggregate(), real, one_of_three).passed
    all_three = pl.DataFrame({"a": [10.0], "b": [10.5], "c": [10.9]})
    assert score_query(_aggregate(pass_when="all"), real, all_three).passed


# ------------------------------------------------------------------------------ errors by group size


def test_bucket_boundaries() -> None:
    assert [size_bucket(n) for n in (0, 1, 9, 10, 99, 100, 999, 1000, 9999, 10000, 1e9)] == [
        "1-9",
        "1-9",
        "1-9",
        "10-99",
        "10-99",
        "100-999",
        "100-999",
        "1k-9.9k",
        "1k-9.9k",
        ">=10k",
        ">=10k",
    ]


def _bucket(score, label: str) -> dict:
    return next(b for b in score.buckets if b["bucket"] == label)


def _distribution_case():
    """Real group sizes 4, 6, 40, 400, 4000, 10000 (f suppressed), synthetic twice the scale plus a
    fabricated group z. Rescaled to the real total 14450 the synthetic values are a 6, b 40, c 300,
    d 4000, e 10094, z 10: relative errors a 0.5, f 1 (s = 0), b 0, c 0.25, d 0, e 0.0094."""
    query = _distribution(keys=["g"])
    real = pl.DataFrame({"g": ["a", "f", "b", "c", "d", "e"], "n": [4, 6, 40, 400, 4000, 10000]})
    synthetic = pl.DataFrame({"g": ["a", "b", "c", "d", "e", "z"], "n": [12, 80, 600, 8000, 20188, 20]})
    return score_query(query, real, synthetic)


def test_distribution_errors_by_group_size_after_rescaling() -> None:
    score = _distribution_case()
    assert score.group_size == "n" and score.buckets_note is None  # the first value column by default
    assert score.suppressed_groups == 1 and score.fabricated_groups == 1
    assert [b["bucket"] for b in score.buckets] == ["1-9", "10-99", "100-999", "1k-9.9k", ">=10k"]
    small = _bucket(score, "1-9")
    assert small["groups"] == 2 and small["suppressed"] == 1
    assert small["mean_error"] == pytest.approx(0.75) and small["median_error"] == pytest.approx(0.75)
    assert _bucket(score, "10-99")["mean_error"] == pytest.approx(0.0)
    assert _bucket(score, "100-999")["mean_error"] == pytest.approx(0.25)
    assert _bucket(score, "1k-9.9k")["mean_error"] == pytest.approx(0.0)
    assert _bucket(score, ">=10k")["mean_error"] == pytest.approx(0.0094)
    assert sorted(score.group_errors) == sorted(
        [
            ("1-9", pytest.approx(0.5), False),
            ("1-9", 1.0, True),
            ("10-99", pytest.approx(0.0), False),
            ("100-999", pytest.approx(0.25), False),
            ("1k-9.9k", pytest.approx(0.0), False),
            (">=10k", pytest.approx(0.0094), False),
        ],
        key=lambda e: (e[0], e[2]),
    )


def test_aggregate_errors_by_a_declared_group_size_over_the_scored_columns() -> None:
    query = _aggregate(
        keys=["g"], floor=0.01, group_size="n", columns={"n": {"ignore": True}, "mean": {"floor": 100.0}}
    )
    real = pl.DataFrame(
        {"g": ["a", "b", "c"], "n": [3.0, 30.0, 300.0], "share": [0.5, 0.2, 0.1], "mean": [10.0, 20.0, 5.0]}
    )
    synthetic = pl.DataFrame(
        {"g": ["a", "b", "z"], "n": [100.0, 30.0, 1.0], "share": [0.4, 0.2, 0.3], "mean": [60.0, 20.0, 1.0]}
    )
    score = score_query(query, real, synthetic)
    # a: share 0.1/0.5 = 0.2, mean 50/max(10, 100) = 0.5 -> 0.35 (the ignored n, off 33-fold, is no part);
    # b: 0; c (suppressed, s = 0): share 0.1/0.1 = 1, mean 5/100 = 0.05 -> 0.525
    assert score.buckets == [
        {
            "bucket": "1-9",
            "groups": 1,
            "suppressed": 0,
            "mean_error": pytest.approx(0.35),
            "median_error": pytest.approx(0.35),
        },
        {"bucket": "10-99", "groups": 1, "suppressed": 0, "mean_error": 0.0, "median_error": 0.0},
        {
            "bucket": "100-999",
            "groups": 1,
            "suppressed": 1,
            "mean_error": pytest.approx(0.525),
            "median_error": pytest.approx(0.525),
        },
    ]


def test_ranking_errors_have_no_floor_and_queries_without_a_group_size_say_so() -> None:
    real = pl.DataFrame({"g": ["a", "b", "c"], "n": [5, 20, 0], "rate": [0.5, 0.1, 0.0]})
    synthetic = pl.DataFrame({"g": ["a", "b", "c"], "n": [5, 20, 0], "rate": [0.4, 0.1, 0.0]})
    query = RankingQuery(
        type="ranking", name="r", sql="-", keys=["g"], group_size="n", columns={"n": {"ignore": True}}
    )
    score = score_query(query, real, synthetic)
    # a: 0.1 / 0.5 = 0.2 (a floor of 1 would give 0.1); c: real 0 and synthetic 0 -> 0; size 0 counts in 1-9
    assert score.buckets[0] == {
        "bucket": "1-9",
        "groups": 2,
        "suppressed": 0,
        "mean_error": pytest.approx(0.1),
        "median_error": pytest.approx(0.1),
    }
    unbucketed = score_query(RankingQuery(type="ranking", name="r", sql="-", keys=["g"]), real, synthetic)
    assert (
        unbucketed.buckets == []
        and unbucketed.buckets_note == NOT_BUCKETED == "not bucketed: declare group_size"
    )
    assert score_query(_aggregate(keys=["g"]), real, synthetic).buckets_note == NOT_BUCKETED


def test_keyless_aggregate_is_one_group() -> None:
    query = _aggregate(group_size="people", columns={"people": {"threshold": 0.5}})
    score = score_query(
        query,
        pl.DataFrame({"people": [2000.0], "mean": [10.0]}),
        pl.DataFrame({"people": [2500.0], "mean": [11.0]}),
    )
    # people: 0.25, mean: 0.1 -> 0.175, in the bucket of 2000 people
    assert score.buckets == [
        {
            "bucket": "1k-9.9k",
            "groups": 1,
            "suppressed": 0,
            "mean_error": pytest.approx(0.175),
            "median_error": pytest.approx(0.175),
        }
    ]
    assert score.passed and score.thresholds == {"people": 0.5, "mean": 0.1}


# --------------------------------------------------------------------------------- workload summary


def test_workload_summary_totals() -> None:
    distribution = (
        _distribution_case()
    )  # 6 real groups, 1 suppressed, 1 fabricated; TVD 0.5 * 212 / 14450: passes
    queries = [
        _aggregate(name="agg", keys=["g"], columns={"n": {"ignore": True}}, group_size="n"),
        CoverageQuery(type="coverage", name="cov", sql="-", keys=["g"]),
        RankingQuery(type="ranking", name="rank", sql="-", keys=["g"]),
        _aggregate(name="lost"),
    ]
    real = {
        "agg": pl.DataFrame({"g": ["a", "b"], "n": [5.0, 50.0], "v": [10.0, 10.0]}),
        "cov": pl.DataFrame({"g": ["a", "b", "c"]}),
        "rank": pl.DataFrame({"g": ["a", "b", "c"], "v": [3, 2, 1]}),
        "lost": pl.DataFrame({"v": [1.0]}),
    }
    synthetic = {
        "agg": pl.DataFrame({"g": ["a"], "n": [5.0], "v": [12.0]}),  # a 0.2, b suppressed 1.0: fails
        "cov": pl.DataFrame({"g": ["a", "b", "x", "y"]}),  # 2 / 5: fails; 1 suppressed, 2 fabricated
        "rank": pl.DataFrame({"g": ["a", "b", "c"], "v": [3, 2, 1]}),  # rho 1: passes, not bucketed
    }
    scores = [distribution, *compare(queries, real, synthetic)]
    summary = workload_summary(scores)
    json.dumps(summary, allow_nan=False)  # JSON-ready
    assert summary["queries"] == 5
    assert summary["pass_rate"] == pytest.approx(2 / 5)
    # metrics: distribution n (met), agg v (not), cov jaccard (not), rank v (met), lost (one failed)
    assert summary["metric_pass_rate"] == pytest.approx(2 / 5)
    assert summary["by_type"]["aggregate"] == {
        "queries": 2,
        "passed": 0,
        "pass_rate": 0.0,
        "metrics": 2,
        "metrics_met": 0,
        "metric_pass_rate": 0.0,
    }
    assert summary["by_type"]["distribution"]["pass_rate"] == 1.0
    assert summary["by_type"]["coverage"]["metrics"] == 1 and summary["by_type"]["ranking"]["passed"] == 1
    assert summary["suppressed_groups"] == 1 + 1 + 1
    assert summary["fabricated_groups"] == 1 + 2
    assert [b["bucket"] for b in summary["buckets"]] == ["1-9", "10-99", "100-999", "1k-9.9k", ">=10k"]
    small, tens = summary["buckets"][0], summary["buckets"][1]
    # 1-9: the distribution's a (0.5) and f (1.0, suppressed) and the aggregate's a (0.2)
    assert small["groups"] == 3 and small["suppressed"] == 1
    assert small["mean_error"] == pytest.approx(1.7 / 3) and small["median_error"] == pytest.approx(0.5)
    # 10-99: the distribution's b (0) and the aggregate's suppressed b (1.0)
    assert tens["groups"] == 2 and tens["suppressed"] == 1 and tens["mean_error"] == pytest.approx(0.5)
    assert summary["not_bucketed"] == ["cov", "rank", "lost"]
    empty = workload_summary([])
    assert empty["pass_rate"] is None and empty["buckets"][0] == {
        "bucket": "1-9",
        "groups": 0,
        "suppressed": 0,
        "mean_error": None,
        "median_error": None,
    }


def test_to_dict_carries_thresholds_and_buckets_but_not_every_group() -> None:
    record = _distribution_case().to_dict()
    assert record["thresholds"] == {"n": 0.1} and record["group_size"] == "n"
    assert len(record["buckets"]) == 5 and "group_errors" not in record
    json.dumps(record, allow_nan=False)


def test_the_documented_example_is_a_valid_query() -> None:
    text = (
        DOCS_PAGE.read_text()
        .split("### Per-column settings", 1)[1]
        .split("## A small complete example", 1)[0]
    )
    blocks = re.findall(r"```json\n(.*?)\n```", text, re.DOTALL)
    assert blocks
    for block in blocks:
        query = TypeAdapter(Query).validate_python(json.loads(block))
        assert query.group_size and query.columns

"""The workload-aware encoding: usage counts from the SQL, weights, normalisation, the null rule."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import polars as pl
import pytest

from synth_assets.datasets.loading import Dataset, load_dataset
from synth_assets.datasets.spec import AggregateQuery, CategoricalColumn, NumericColumn
from synth_assets.pe.encoding import (
    EncodedTable,
    build_encoder,
    column_query_names,
    column_usage,
    distance,
)
from synth_assets.pe.generators import OfflineGenerator

# Read off the five queries of the documented 'devices' example (docs/dataset-spec.md):
#   mean_minutes_by_region  profile, usage    region, minutes
#   models                  profile           model
#   busiest_years           profile, usage    purchase_year, sessions
#   beta_regions            profile, updates  region, channel
#   crash_tail              usage             crashes
TINY_USAGE = {
    "model": 1,
    "region": 2,
    "purchase_year": 1,
    "sessions": 1,
    "minutes": 1,
    "crashes": 1,
    "channel": 1,
    "version": 0,
}


@pytest.fixture(scope="module")
def lahman() -> Dataset:
    return load_dataset()


@pytest.fixture(scope="module")
def tiny(tiny_dataset_dir) -> Dataset:
    return load_dataset(tiny_dataset_dir)


def tiny_row(**overrides) -> dict:
    row = {
        "model": "alpha",
        "region": "north",
        "purchase_year": 2015,
        "sessions": 10,
        "minutes": 500.0,
        "crashes": 1,
        "channel": "stable",
        "version": 3,
    }
    row.update(overrides)
    return row


def tiny_frame(*rows: dict) -> pl.DataFrame:
    schema = {
        "model": pl.Utf8,
        "region": pl.Utf8,
        "purchase_year": pl.Int64,
        "sessions": pl.Int64,
        "minutes": pl.Float64,
        "crashes": pl.Int64,
        "channel": pl.Utf8,
        "version": pl.Int64,
    }
    return pl.DataFrame(list(rows), schema=schema)


# ------------------------------------------------------------------------------------------- usage


def test_tiny_usage_matches_the_sql(tiny):
    assert column_usage(tiny) == TINY_USAGE
    names = column_query_names(tiny)
    assert sorted(names["region"]) == ["beta_regions", "mean_minutes_by_region"]
    assert names["version"] == []


def test_lahman_usage_on_queries_read_by_hand(lahman):
    usage = column_usage(lahman)
    assert set(usage) == {c.wide_name for c in lahman.spec.modelled_columns}
    names = column_query_names(lahman)
    # debut_era: read from profile by these six queries (and only these).
    assert sorted(names["debut_era"]) == [
        "college_region_by_era",
        "debut_era_by_handedness",
        "eras_by_strikeout_rate",
        "franchise_era_cells",
        "hall_of_fame_position_era_cells",
        "players_and_home_runs_by_era",
    ]
    assert sorted(names["home_runs"]) == [
        "batting_career_summary",
        "franchises_by_home_runs",
        "players_and_home_runs_by_era",
        "power_and_pay",
    ]
    assert names["bats"] == ["debut_era_by_handedness"]
    # Mentioned by no query at all.
    for unused in ("throws", "post_home_runs", "gold_gloves", "colleges", "runs"):
        assert usage[unused] == 0


def test_usage_is_consistent_with_a_plain_text_search(lahman):
    """A column no query's SQL even contains as a word is unused; a used one appears in each query."""
    import re

    names = column_query_names(lahman)
    sql = {q.name: q.sql.lower() for q in lahman.queries}
    for column in lahman.spec.modelled_columns:
        word = re.compile(rf"\b{column.column}\b")
        for query in names[column.wide_name]:
            assert word.search(sql[query]) and re.search(rf"\b{column.table}\b", sql[query])
        if not any(word.search(text) for text in sql.values()):
            assert names[column.wide_name] == []


def test_usage_needs_both_the_table_and_the_column(tiny):
    queries = [
        # mentions 'minutes' but reads only profile: not a use of usage.minutes
        AggregateQuery(name="wrong_table", type="aggregate", sql="select avg(minutes) as m from profile"),
        AggregateQuery(name="right_table", type="aggregate", sql="select avg(u.minutes) as m from usage u"),
        # reads updates without mentioning version: no use of updates.version
        AggregateQuery(name="count_updates", type="aggregate", sql="select count(*) as n from updates"),
    ]
    dataset = dataclasses.replace(tiny, queries=queries)
    usage = column_usage(dataset)
    assert usage["minutes"] == 1
    assert column_query_names(dataset)["minutes"] == ["right_table"]
    assert usage["version"] == 0 and usage["channel"] == 0


# ----------------------------------------------------------------------------------------- weights


def test_tiny_weights_by_hand(tiny):
    encoder = build_encoder(tiny)
    # 1 + usage = 2, 3, 2, 2, 2, 2, 2, 1 (sum 16) over 8 columns: weight = (1 + usage) / 2.
    expected = {name: (1 + used) / 2 for name, used in TINY_USAGE.items()}
    assert dict(encoder.weights) == pytest.approx(expected)
    assert encoder.categorical_columns == ("model", "region", "channel")
    assert encoder.numeric_columns == ("purchase_year", "sessions", "minutes", "crashes", "version")
    assert encoder.categorical_weights.dtype == np.float32
    assert encoder.numeric_weights.dtype == np.float32
    np.testing.assert_allclose(encoder.categorical_weights, [1.0, 1.5, 1.0])
    np.testing.assert_allclose(encoder.numeric_weights, [1.0, 1.0, 1.0, 1.0, 0.5])


def test_lahman_weights_sum_to_the_number_of_columns_and_follow_usage(lahman):
    encoder = build_encoder(lahman)
    usage = column_usage(lahman)
    d = len(lahman.spec.modelled_columns)
    assert sum(encoder.weights.values()) == pytest.approx(d)
    unit = d / sum(1 + u for u in usage.values())  # the weight of a column no query uses
    assert encoder.weights["throws"] == pytest.approx(unit)
    assert encoder.weights["bats"] == pytest.approx(2 * unit)
    assert encoder.weights["debut_era"] == pytest.approx(7 * unit)
    order = [c.wide_name for c in lahman.spec.modelled_columns]
    assert [n for n in order if n in encoder.numeric_columns] == list(encoder.numeric_columns)
    assert [n for n in order if n in encoder.categorical_columns] == list(encoder.categorical_columns)


def test_describe_is_json_and_complete(lahman):
    encoder = build_encoder(lahman)
    entries = encoder.describe()
    json.dumps(entries)
    assert [e["column"] for e in entries] == [c.wide_name for c in lahman.spec.modelled_columns]
    by_name = {e["column"]: e for e in entries}
    assert by_name["bats"]["kind"] == "categorical" and by_name["bats"]["queries"] == 1
    assert by_name["home_runs"]["kind"] == "numeric" and by_name["home_runs"]["scale"] == "log"
    assert sum(e["weight"] for e in entries) == pytest.approx(len(entries))


# ------------------------------------------------------------------------------------ normalisation


def test_linear_normalisation_with_public_bounds(tiny):
    encoder = build_encoder(tiny)
    frame = tiny_frame(
        tiny_row(purchase_year=2015, minutes=25_000.0, version=20),
        tiny_row(purchase_year=1990, minutes=0.0, version=1),  # 1990 is below min 2000: clipped
        tiny_row(purchase_year=2040, minutes=100_000.0, version=6),  # above max 2030: clipped
    )
    encoded = encoder.encode(frame)
    col = {name: k for k, name in enumerate(encoder.numeric_columns)}
    # purchase_year in [2000, 2030], weight 1
    np.testing.assert_allclose(encoded.numeric[:, col["purchase_year"]], [0.5, 0.0, 1.0])
    # minutes in [0, 100000], weight 1
    np.testing.assert_allclose(encoded.numeric[:, col["minutes"]], [0.25, 0.0, 1.0])
    # version in [1, 20], weight 0.5: (20-1)/19 = 1, 0, (6-1)/19 = 5/19
    np.testing.assert_allclose(encoded.numeric[:, col["version"]], [0.5, 0.0, 0.5 * 5 / 19], rtol=1e-6)


def test_log_normalisation(lahman):
    encoder = build_encoder(lahman)
    columns = {c.wide_name: c for c in lahman.spec.modelled_columns}
    assert columns["home_runs"].scale == "log" and columns["batting_seasons"].scale == "log"
    frame = OfflineGenerator(lahman).random(3, seed=0).with_columns(
        pl.Series("home_runs", [100, 0, 1000], dtype=pl.Int64),
        pl.Series("batting_seasons", [8, 1, 35], dtype=pl.Int64),
    )
    encoded = encoder.encode(frame)
    col = {name: k for k, name in enumerate(encoder.numeric_columns)}
    w_hr = encoder.weights["home_runs"]
    w_bs = encoder.weights["batting_seasons"]
    # home_runs in [0, 1000]: ln(101) / ln(1001) = 4.6151205 / 6.9087548 = 0.668010
    np.testing.assert_allclose(
        encoded.numeric[:, col["home_runs"]], [0.668010 * w_hr, 0.0, w_hr], rtol=1e-5
    )
    # batting_seasons in [1, 35]: ln(1 + 7) / ln(1 + 34) = 2.0794415 / 3.5553481 = 0.584877
    np.testing.assert_allclose(
        encoded.numeric[:, col["batting_seasons"]], [0.584877 * w_bs, 0.0, w_bs], rtol=1e-5
    )


# ------------------------------------------------------------------------------------------ null rule


def test_null_rule_distances(tiny):
    encoder = build_encoder(tiny)
    frame = tiny_frame(
        tiny_row(sessions=None, channel=None),
        tiny_row(sessions=None, channel=None),
        tiny_row(sessions=250, channel=None),  # 250 / 1000 = 0.25
        tiny_row(sessions=0, channel="beta"),
        tiny_row(sessions=1000, channel="stable"),
    )
    encoded = encoder.encode(frame)
    w_sessions = encoder.weights["sessions"]  # 1.0
    w_channel = encoder.weights["channel"]  # 1.0
    assert distance(encoded, 0, encoded, 1) == 0.0  # null vs null
    assert distance(encoded, 0, encoded, 2) == pytest.approx(w_sessions * (1 + 0.25))
    assert distance(encoded, 0, encoded, 3) == pytest.approx(w_sessions * 1 + w_channel)
    assert distance(encoded, 0, encoded, 4) == pytest.approx(w_sessions * 2 + w_channel)
    # null vs any value lies in [w, 2w], value vs value in [0, w]
    assert distance(encoded, 3, encoded, 4) == pytest.approx(w_sessions + w_channel)
    # a null categorical is its own code
    c = encoder.categorical_columns.index("channel")
    assert encoded.categorical[0, c] == 2  # len([stable, beta])
    assert list(encoded.categorical[3:, c]) == [1, 0]


def test_distance_matches_a_direct_computation_from_values(tiny):
    """The reference distance, recomputed from the raw values and the spec, on random candidates."""
    encoder = build_encoder(tiny)
    frame = OfflineGenerator(tiny).random(60, seed=3)
    encoded = encoder.encode(frame)
    columns = {c.wide_name: c for c in tiny.spec.modelled_columns}
    rows = frame.to_dicts()

    def unit(column: NumericColumn, value):
        if value is None:
            return -1.0
        x = min(max(value, column.min), column.max)
        if column.scale == "log":
            return math.log1p(x - column.min) / math.log1p(column.max - column.min)
        return (x - column.min) / (column.max - column.min)

    for i in range(0, 60, 7):
        for j in range(0, 60, 5):
            expected = 0.0
            for name, column in columns.items():
                w = encoder.weights[name]
                a, b = rows[i][name], rows[j][name]
                if isinstance(column, CategoricalColumn):
                    expected += w * (a != b)
                else:
                    expected += w * abs(unit(column, a) - unit(column, b))
            assert distance(encoded, i, encoded, j) == pytest.approx(expected, rel=1e-5, abs=1e-5)


# ---------------------------------------------------------------------------------------- errors


def test_unknown_category_is_a_clear_error(tiny):
    encoder = build_encoder(tiny)
    with pytest.raises(ValueError, match=r"'model'.*'delta'"):
        encoder.encode(tiny_frame(tiny_row(), tiny_row(model="delta")))


def test_missing_column_is_a_clear_error(tiny):
    encoder = build_encoder(tiny)
    with pytest.raises(ValueError, match="version"):
        encoder.encode(tiny_frame(tiny_row()).drop("version"))


# ----------------------------------------------------------------------------------- array layout


def test_encoded_arrays_layout(lahman):
    encoder = build_encoder(lahman)
    frame = OfflineGenerator(lahman).random(500, seed=1)
    encoded = encoder.encode(frame.with_columns(pl.lit("x").alias("player_id")))  # key is ignored
    assert isinstance(encoded, EncodedTable)
    assert len(encoded) == 500 and encoded.rows == 500
    assert encoded.numeric.dtype == np.float32 and encoded.categorical.dtype == np.int32
    assert encoded.numeric.flags["C_CONTIGUOUS"] and encoded.categorical.flags["C_CONTIGUOUS"]
    assert encoded.numeric.shape == (500, len(encoder.numeric_columns))
    assert encoded.categorical.shape == (500, len(encoder.categorical_columns))
    # categorical codes: 0 .. K-1 for a category, K for null
    for k, name in enumerate(encoder.categorical_columns):
        size = len(encoder.codes[name])
        values = frame.get_column(name)
        codes = encoded.categorical[:, k]
        assert np.all((codes >= 0) & (codes <= size))
        np.testing.assert_array_equal(codes == size, values.is_null().to_numpy())
    # weighted numerics: within [-w, w]
    w = encoder.numeric_weights
    assert np.all(encoded.numeric >= -w - 1e-6) and np.all(encoded.numeric <= w + 1e-6)
    nulls = frame.select(encoder.numeric_columns).to_numpy(allow_copy=True)
    null_mask = np.array([[v is None or (isinstance(v, float) and math.isnan(v)) for v in row] for row in nulls])
    np.testing.assert_allclose(encoded.numeric[null_mask], np.broadcast_to(-w, null_mask.shape)[null_mask])


def test_encoding_is_not_fitted_on_data(tiny):
    """A row's code does not depend on the other rows of the frame."""
    encoder = build_encoder(tiny)
    frame = OfflineGenerator(tiny).random(40, seed=5)
    whole = encoder.encode(frame)
    for i in (0, 13, 39):
        alone = encoder.encode(frame[i : i + 1])
        np.testing.assert_array_equal(alone.numeric[0], whole.numeric[i])
        np.testing.assert_array_equal(alone.categorical[0], whole.categorical[i])
    again = build_encoder(tiny)
    np.testing.assert_array_equal(again.encode(frame).numeric, whole.numeric)

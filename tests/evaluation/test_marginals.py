"""Marginal fidelity: public bins, 1-way and 2-way TVDs, and drawing values back into a bin."""

from __future__ import annotations

import dataclasses
from itertools import combinations

import numpy as np
import polars as pl
import pytest

from synth_assets.datasets.loading import Dataset
from synth_assets.datasets.sources import read_source
from synth_assets.datasets.spec import DatasetSpec, NumericColumn
from synth_assets.evaluation.marginals import (
    NUMERIC_BINS,
    BinnedTable,
    bin_table,
    column_bins,
    column_subsets,
    marginal_tvds,
    mean_tvd,
    sample_in_bins,
    values_from_bins,
)
from synth_assets.tables.build import build_reporting_table, build_wide_table


def with_columns(dataset: Dataset, columns: list[dict]) -> Dataset:
    """The tiny dataset with a hand-made wide table (the entity key first, then ``columns``)."""
    raw = dataset.spec.model_dump(by_alias=True)
    raw["wide_table"]["columns"] = [{"from": "profile.device_id", "role": "identifier"}, *columns]
    return dataclasses.replace(dataset, spec=DatasetSpec.model_validate(raw))


COLOUR = {"from": "profile.colour", "role": "categorical", "categories": ["red", "green", "blue"]}
FLAG = {"from": "usage.flag", "role": "categorical", "categories": ["yes", "no"], "nullable": True}
AGE = {"from": "profile.age", "role": "numeric", "type": "integer", "min": 0, "max": 100}
AMOUNT = {
    "from": "usage.amount", "role": "numeric", "type": "float", "min": 0, "max": 1023, "scale": "log", "nullable": True
}
SCORE = {"from": "profile.score", "role": "numeric", "type": "float", "min": -1, "max": 1, "nullable": True}


@pytest.fixture(scope="module")
def mixed(tiny) -> Dataset:
    return with_columns(tiny, [COLOUR, FLAG, AGE, AMOUNT, SCORE])


@pytest.fixture(scope="module")
def two(tiny) -> Dataset:
    return with_columns(tiny, [COLOUR, FLAG])


# ------------------------------------------------------------------------------------------ bin_table


def test_bin_table_on_a_hand_made_frame(mixed):
    frame = pl.DataFrame(
        {
            "device_id": list("abcdefg"),
            "colour": ["red", "green", "blue", "red", "blue", "green", "red"],
            "flag": ["yes", "no", None, "yes", None, "no", "yes"],
            "age": [0, 5, 10, 55, 99, 100, 9],
            # log1p(x) / log(1024) * 10 = log2(x + 1): 2 -> 1.58, 10 -> 3.46, 1000 -> 9.97, max -> 10;
            # 0 is the point mass of a log-scale amount: its own bin, 10
            "amount": [0.0, 2.0, 10.0, 1000.0, 1023.0, None, 300.0],
            # (x + 1) / 2 * 10: -1 -> 0, -0.05 -> 4.75, 0.05 -> 5.25, 1 -> 10 (last bin), outside -> clipped
            "score": [-1.0, -0.05, 0.05, 1.0, None, 5.0, -3.0],
        }
    )
    binned = bin_table(mixed, frame)
    assert binned.columns == ["colour", "flag", "age", "amount", "score"]
    np.testing.assert_array_equal(binned.sizes, [3, 3, 10, 12, 11])
    assert binned.codes.dtype == np.int32 and binned.codes.shape == (7, 5)
    np.testing.assert_array_equal(binned.codes[:, 0], [0, 1, 2, 0, 2, 1, 0])
    np.testing.assert_array_equal(binned.codes[:, 1], [0, 1, 2, 0, 2, 1, 0])  # null is the last bin
    np.testing.assert_array_equal(binned.codes[:, 2], [0, 0, 1, 5, 9, 9, 0])  # the max lands in bin 9
    np.testing.assert_array_equal(binned.codes[:, 3], [10, 1, 3, 9, 9, 11, 8])  # log2(301) = 8.23
    np.testing.assert_array_equal(binned.codes[:, 4], [0, 4, 5, 9, 10, 9, 0])


def test_column_bins_counts_the_null_bin(mixed):
    sizes = {c.wide_name: column_bins(c) for c in mixed.spec.modelled_columns}
    assert sizes == {
        "colour": 3, "flag": 3, "age": NUMERIC_BINS, "amount": NUMERIC_BINS + 2, "score": NUMERIC_BINS + 1
    }  # amount: 10 intervals, the point mass 0, null


def test_a_column_may_have_more_interval_bins(tiny):
    spec = {**numeric("float", 0, 100), "bins": 20}
    col = column(spec)
    assert column_bins(col) == 20
    np.testing.assert_array_equal(bins_of(tiny, spec, np.array([0.0, 4.9, 5.0, 99.0, 100.0])), [0, 0, 1, 19, 19])
    values = sample_in_bins(col, np.repeat(np.arange(20), 50), np.random.default_rng(0))
    np.testing.assert_array_equal(bins_of(tiny, spec, values), np.repeat(np.arange(20), 50))


def test_point_masses_have_bins_of_their_own_and_are_drawn_exactly(tiny):
    spec = numeric("integer", 0, 52, point_masses=[0, 52])
    col = column(spec)
    assert column_bins(col) == NUMERIC_BINS + 2
    np.testing.assert_array_equal(bins_of(tiny, spec, np.array([0, 1, 26, 51, 52])), [10, 0, 5, 9, 11])
    rng = np.random.default_rng(0)
    drawn = values_from_bins(col, np.array([10] * 50 + [11] * 50 + [0] * 500 + [9] * 500), rng).to_numpy()
    assert (drawn[:50] == 0).all() and (drawn[50:100] == 52).all()
    # an interval bin never gives a point mass: values drawn for bin b fall in bin b again
    assert not np.isin(drawn[100:], [0, 52]).any()
    np.testing.assert_array_equal(bins_of(tiny, spec, drawn[100:]), [0] * 500 + [9] * 500)
    # the default: 0 for a log-scale count whose bounds include it, none otherwise
    assert column(numeric("integer", 0, 10, "log", point_masses=())).special_values == []
    default = {k: v for k, v in numeric("integer", 0, 10, "log").items() if k != "point_masses"}
    assert column(default).special_values == [0.0]
    assert column({**default, "scale": "linear"}).special_values == []
    with pytest.raises(ValueError, match="outside"):
        column(numeric("integer", 0, 10, point_masses=[11]))


def test_unknown_category_is_an_error(two):
    frame = pl.DataFrame({"device_id": ["a", "b"], "colour": ["red", "purple"], "flag": ["yes", None]})
    with pytest.raises(ValueError, match=r"'colour' holds values outside its categories: \['purple'\]"):
        bin_table(two, frame)


# ------------------------------------------------------------------------------------------- TVDs


REAL = {"colour": ["red", "red", "green", "blue"], "flag": ["yes", "no", "yes", None]}
SYNTHETIC = {"colour": ["red", "red", "green", "green"], "flag": ["yes", "yes", "no", None]}


def frame(data: dict, repeat: int = 1) -> pl.DataFrame:
    data = {k: v * repeat for k, v in data.items()}
    n = len(data["colour"])
    return pl.DataFrame({"device_id": [f"e{i}" for i in range(n)], **data})


def test_one_way_tvds_by_hand(two):
    real, synthetic = bin_table(two, frame(REAL)), bin_table(two, frame(SYNTHETIC))
    # colour: real (1/2, 1/4, 1/4), synthetic (1/2, 1/2, 0) -> (0 + 1/4 + 1/4) / 2
    # flag: real and synthetic both (yes 1/2, no 1/4, null 1/4) -> 0
    np.testing.assert_allclose(marginal_tvds(real, synthetic, 1), [0.25, 0.0])


def test_two_way_tvd_by_hand(two):
    real, synthetic = bin_table(two, frame(REAL)), bin_table(two, frame(SYNTHETIC))
    # real: (red,yes) (red,no) (green,yes) (blue,null), 1/4 each
    # synthetic: (red,yes) 1/2, (green,no) 1/4, (green,null) 1/4
    # |diff|: 1/4 + 1/4 + 1/4 + 1/4 + 1/4 + 1/4 = 3/2 -> TVD 3/4 (the flag marginals agree, the pairs do not)
    np.testing.assert_allclose(marginal_tvds(real, synthetic, 2), [0.75])


def test_tvds_compare_distributions_not_counts(two):
    real = bin_table(two, frame(REAL))
    np.testing.assert_allclose(marginal_tvds(real, bin_table(two, frame(SYNTHETIC, repeat=5)), 1), [0.25, 0.0])
    np.testing.assert_allclose(marginal_tvds(real, bin_table(two, frame(SYNTHETIC, repeat=5)), 2), [0.75])
    np.testing.assert_allclose(marginal_tvds(real, bin_table(two, frame(REAL, repeat=3)), 2), [0.0])


def test_disjoint_tables_have_tvd_one(two):
    real = bin_table(two, frame({"colour": ["red"] * 3, "flag": ["yes"] * 3}))
    synthetic = bin_table(two, frame({"colour": ["blue"] * 2, "flag": [None] * 2}))
    np.testing.assert_allclose(marginal_tvds(real, synthetic, 1), [1.0, 1.0])
    np.testing.assert_allclose(marginal_tvds(real, synthetic, 2), [1.0])


def test_pairs_come_in_column_order(mixed):
    data = pl.DataFrame(
        {"device_id": ["a"], "colour": ["red"], "flag": [None], "age": [1], "amount": [1.0], "score": [0.0]}
    )
    binned = bin_table(mixed, data)
    assert marginal_tvds(binned, binned, 1).shape == (5,)
    assert marginal_tvds(binned, binned, 2).shape == (10,)  # 5 choose 2


def test_one_two_or_three_way(two):
    binned = bin_table(two, frame(REAL))
    with pytest.raises(ValueError, match="ways must be 1, 2 or 3"):
        marginal_tvds(binned, binned, 4)


def test_three_way_marginals_are_a_seeded_sample_of_triples_and_see_what_pairs_miss():
    assert column_subsets(5, 3) == list(combinations(range(5), 3))
    sample = column_subsets(40, 3, sample=200)
    assert len(sample) == 200 == len(set(sample)) and sample == sorted(sample)
    assert sample == column_subsets(40, 3, sample=200)
    # x3 = x1 xor x2 on uniform bits: every pair is independent, the triple is not
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, size=(4000, 2))
    parity = np.column_stack([bits, bits[:, 0] ^ bits[:, 1]])
    independent = np.column_stack([bits, rng.integers(0, 2, size=4000)])
    sizes = np.array([2, 2, 2])
    real = BinnedTable(columns=["a", "b", "c"], codes=parity, sizes=sizes)
    synthetic = BinnedTable(columns=["a", "b", "c"], codes=independent, sizes=sizes)
    assert marginal_tvds(real, synthetic, 2).max() < 0.05
    assert marginal_tvds(real, synthetic, 3)[0] > 0.4


def test_identical_tables_give_zero(tiny):
    sources = {name: read_source(tiny, name) for name in tiny.spec.sources}
    reporting = {t: build_reporting_table(tiny, t, sources) for t in tiny.spec.reporting_tables}
    wide = build_wide_table(tiny, reporting)[0]
    assert mean_tvd(tiny, wide, wide) == {"tvd_1way": 0.0, "tvd_2way": 0.0}
    shuffled = wide.sample(fraction=1.0, shuffle=True, seed=3)
    assert mean_tvd(tiny, wide, shuffled) == {"tvd_1way": 0.0, "tvd_2way": 0.0}
    half = mean_tvd(tiny, wide, wide.head(200))
    assert 0 < half["tvd_1way"] < half["tvd_2way"] < 1


# ------------------------------------------------------------------------------------ sample_in_bins


def numeric(type_: str, lo: float, hi: float, scale: str = "linear", point_masses=()) -> dict:
    """A numeric column; without point masses unless given, so that only interval bins are tested."""
    return {"from": "profile.x", "role": "numeric", "type": type_, "min": lo, "max": hi, "scale": scale,
            "point_masses": list(point_masses)}


def bins_of(tiny: Dataset, spec: dict, values: np.ndarray) -> np.ndarray:
    """bin_table on a one-column wide table."""
    dataset = with_columns(tiny, [spec])
    dtype = pl.Int64 if spec["type"] == "integer" else pl.Float64
    data = pl.DataFrame({"device_id": [str(i) for i in range(values.size)], "x": pl.Series(values).cast(dtype)})
    return bin_table(dataset, data).codes[:, 0]


def column(spec: dict) -> NumericColumn:
    return NumericColumn.model_validate(spec)


ROUND_TRIP = [
    numeric("float", 0, 1),
    numeric("float", -1, 1),
    numeric("float", 0, 100_000, "log"),
    numeric("float", 5, 6, "log"),
    numeric("integer", 0, 100),
    numeric("integer", 2000, 2030),
    numeric("integer", 1, 20),
    numeric("integer", 0, 1000, "log"),
    numeric("integer", 0, 100_000, "log"),
    numeric("integer", 1, 10_000, "log"),
    numeric("integer", -50, 50),
]


@pytest.mark.parametrize("spec", ROUND_TRIP, ids=lambda s: f"{s['type']}-{s['scale']}-{s['min']}-{s['max']}")
def test_values_drawn_for_a_bin_fall_in_that_bin(tiny, spec):
    col = column(spec)
    rng = np.random.default_rng(0)
    bins = np.repeat(np.arange(NUMERIC_BINS), 300)
    values = sample_in_bins(col, bins, rng)
    assert values.shape == bins.shape
    assert values.min() >= col.min and values.max() <= col.max
    if col.type == "integer":
        assert (values == np.round(values)).all()
    np.testing.assert_array_equal(bins_of(tiny, spec, values), bins)


def test_integers_are_uniform_over_all_the_integers_of_the_bin(tiny):
    col = column(numeric("integer", 2000, 2030))  # bins of width 3; the max 2030 belongs to bin 9
    rng = np.random.default_rng(1)
    values = sample_in_bins(col, np.zeros(30_000, dtype=int), rng)
    assert set(np.unique(values)) == {2000, 2001, 2002}
    np.testing.assert_allclose(np.bincount(values.astype(int) - 2000) / values.size, 1 / 3, atol=0.015)
    last = sample_in_bins(col, np.full(1000, 9), rng)
    assert set(np.unique(last)) == {2027, 2028, 2029, 2030}


def test_floats_are_uniform_within_the_bin_on_the_columns_scale():
    rng = np.random.default_rng(2)
    linear = sample_in_bins(column(numeric("float", 0, 10)), np.full(20_000, 3), rng)
    assert linear.min() >= 3 and linear.max() < 4
    assert linear.mean() == pytest.approx(3.5, abs=0.02)
    log = sample_in_bins(column(numeric("float", 0, 1023, "log")), np.full(20_000, 5), rng)
    # uniform in log2(1 + x) over [5, 6): x + 1 in [32, 64), uniform in the exponent
    assert log.min() >= 31 and log.max() < 63
    assert np.log2(log + 1).mean() == pytest.approx(5.5, abs=0.02)


def test_a_bin_without_an_integer_gives_the_integer_nearest_to_it(tiny):
    # [0, 5] linear: bins of width 0.5; bins 1, 3, 5, 7 ([0.5, 1), [1.5, 2), ...) hold no integer
    spec = numeric("integer", 0, 5)
    col = column(spec)
    rng = np.random.default_rng(3)
    for b, nearest in [(1, 1), (3, 2), (5, 3), (7, 4)]:
        values = sample_in_bins(col, np.full(50, b), rng)
        assert set(values) == {nearest}  # rint of the bin's midpoint (0.75, 1.75, ...)
        assert abs(int(bins_of(tiny, spec, values)[0]) - b) == 1  # it lands in a neighbouring bin
    # bins that do hold an integer still round-trip
    for b, integer in [(0, 0), (2, 1), (4, 2), (6, 3), (8, 4), (9, 5)]:
        values = sample_in_bins(col, np.full(50, b), rng)
        assert set(values) == {integer}
        assert set(bins_of(tiny, spec, values)) == {b}


def test_a_log_bin_without_an_integer_stays_in_bounds(tiny):
    # [0, 3] on the log scale: log1p(x) / log(4) * 10 puts 0 in bin 0, 1 in bin 5, 2 in bin 7, 3 in bin 9
    spec = numeric("integer", 0, 3, "log")
    col = column(spec)
    values = sample_in_bins(col, np.repeat(np.arange(NUMERIC_BINS), 20), np.random.default_rng(4))
    assert set(np.unique(values)) <= {0, 1, 2, 3}
    np.testing.assert_array_equal(bins_of(tiny, spec, np.array([0, 1, 2, 3])), [0, 5, 7, 9])


def test_bins_beyond_the_last_are_the_last():
    col = column(numeric("float", 0, 10))
    values = sample_in_bins(col, np.full(100, 12), np.random.default_rng(5))
    assert values.min() >= 9 and values.max() <= 10


@pytest.mark.parametrize("lo, hi", [(1, 32), (0, 1023)])
def test_integers_on_a_log_bin_edge_land_back_in_their_bin(tiny, lo, hi):
    spec = numeric("integer", lo, hi, "log")
    # the bins that bin_table gives at least one integer of the domain
    holding = np.unique(bins_of(tiny, spec, np.arange(lo, hi + 1)))
    bins = np.repeat(holding, 300)
    values = sample_in_bins(column(spec), bins, np.random.default_rng(0))
    np.testing.assert_array_equal(bins_of(tiny, spec, values), bins)


def test_integer_bin_labels_name_the_integers_each_bin_holds():
    """A label such as '0-0.995' or '501-1e+03' said nothing a reader could use; each integer label
    now names the first and last integer its bin holds, and the binning agrees."""
    import numpy as np

    from synth_assets.datasets.loading import load_dataset
    from synth_assets.datasets.spec import NumericColumn
    from synth_assets.evaluation.marginals import bin_labels, interval_bins, numeric_bins

    checked = 0
    for column in load_dataset().spec.modelled_columns:
        if not (isinstance(column, NumericColumn) and column.type == "integer"):
            continue
        for code, label in enumerate(bin_labels(column)[: interval_bins(column)]):
            assert "e+" not in label, label
            if label == "(no integer)":
                continue
            ends = [int(v.replace(",", "")) for v in label.split("-")]
            assert list(numeric_bins(column, np.array(ends, dtype=float))) == [code] * len(ends), (column.wide_name, label)
            checked += 1
    assert checked > 100

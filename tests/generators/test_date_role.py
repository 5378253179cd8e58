"""Every generator on a table with date and timestamp columns: real dates out, within the public bounds,
distributed like the private ones at a large epsilon, nulls only where the spec allows them and in the
private share, and the workload over the dates scored."""

from __future__ import annotations

import importlib.util
from datetime import date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats

from synth_assets.benchmark.compare import compare
from synth_assets.benchmark.workload import run_workload
from synth_assets.datasets.loading import Dataset, load_dataset
from synth_assets.evaluation.fidelity import column_fidelity
from synth_assets.evaluation.marginals import bin_labels
from synth_assets.generators.graphical import AIM, MST, AIMSettings, MSTSettings
from synth_assets.generators.independent import IndependentMarginals
from synth_assets.generators.private_evolution import PrivateEvolution
from synth_assets.pe.evolution import PEConfig
from synth_assets.tables.build import build_real_tables
from synth_assets.tables.decompose import decompose


def _helper():
    path = Path(__file__).parents[1] / "datasets" / "dated_dataset.py"
    spec = importlib.util.spec_from_file_location("dated_dataset", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EPSILON = 50.0
DELTA = 1e-6
GENERATORS = {
    "independent_marginals": lambda: IndependentMarginals(),
    "mst": lambda: MST(MSTSettings(seed=1)),
    "aim": lambda: AIM(AIMSettings(seed=1)),
    "private_evolution": lambda: PrivateEvolution(PEConfig(seed=1)),
}


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> tuple[Dataset, pl.DataFrame, dict]:
    directory = _helper().write_dated_dataset(tmp_path_factory.mktemp("dated") / "members", members=1000)
    dataset = load_dataset(directory)
    real = build_real_tables(dataset)
    return dataset, real.wide, real.reporting


@pytest.fixture(scope="module", params=list(GENERATORS))
def synthetic(request, members) -> tuple[str, pl.DataFrame]:
    dataset, wide, _ = members
    generator = GENERATORS[request.param]()
    plan = generator.plan(dataset, EPSILON, DELTA)
    return request.param, generator.sample(dataset, generator.fit(dataset, wide, plan), rows=wide.height)


def _days(series: pl.Series) -> np.ndarray:
    return series.drop_nulls().cast(pl.Int32).to_numpy() if series.dtype == pl.Date else \
        series.drop_nulls().dt.epoch("s").to_numpy()


def test_dates_come_out_as_dates_within_the_public_bounds(members, synthetic) -> None:
    dataset, wide, _ = members
    name, population = synthetic
    assert population.schema == wide.schema, name
    assert population.schema["joined"] == pl.Date and population.schema["last_visit"] == pl.Datetime("us")
    assert date(2000, 1, 1) <= population["joined"].min() and population["joined"].max() <= date(2024, 12, 31)
    assert date(1930, 1, 1) <= population["born"].min() and population["born"].max() <= date(2009, 12, 31)
    visits = population["last_visit"].drop_nulls()
    assert datetime(2023, 1, 1) <= visits.min() and visits.max() <= datetime(2024, 12, 31, 23, 59, 59)


def test_dates_are_distributed_like_the_private_ones(members, synthetic) -> None:
    dataset, wide, _ = members
    name, population = synthetic
    for column in ("joined", "born", "last_visit"):
        ks = stats.ks_2samp(_days(wide[column]), _days(population[column])).statistic
        assert ks < 0.1, (name, column, ks)
    # the recent-heavy shape of 'joined' is kept, not flattened to uniform over the bounds
    late = (population["joined"] >= date(2015, 1, 1)).mean()
    assert abs(late - (wide["joined"] >= date(2015, 1, 1)).mean()) < 0.06, name
    scores = column_fidelity(dataset, wide, population).filter(pl.col("column") == "joined")
    assert scores["metric"][0] == "ks" and scores["value"][0] < 0.1


def test_null_shares_follow_the_private_ones_and_non_nullable_columns_have_none(members, synthetic) -> None:
    dataset, wide, _ = members
    name, population = synthetic
    for column in dataset.spec.modelled_columns:
        share = population[column.wide_name].null_count() / population.height
        if not column.nullable:
            assert share == 0, (name, column.wide_name)
        else:
            real_share = wide[column.wide_name].null_count() / wide.height
            assert real_share > 0.05
            assert abs(share - real_share) < 0.05, (name, column.wide_name, share, real_share)


def test_the_workload_over_dates_scores(members, synthetic) -> None:
    dataset, wide, reporting = members
    name, population = synthetic
    tables = decompose(dataset, population)
    scores = {s.name: s for s in compare(dataset.queries, run_workload(dataset.queries, reporting),
                                         run_workload(dataset.queries, tables))}
    assert all(s.error is None for s in scores.values()), name
    assert scores["joined_by_year"].metrics["members"] < 0.1, name
    assert scores["joined_since_2020"].passed, name


def test_marginal_bins_of_a_date_are_labelled_by_dates(members) -> None:
    dataset, _, _ = members
    columns = {c.wide_name: c for c in dataset.spec.modelled_columns}
    joined = bin_labels(columns["joined"])
    assert len(joined) == 25 and joined[0] == "2000-01-01 to 2000-12-31"
    assert joined[-1] == "2024-01-01 to 2024-12-31"
    born = bin_labels(columns["born"])
    assert born[-1] == "null" and born[0].startswith("1930-01-01 to ")
    assert bin_labels(columns["last_visit"])[0].startswith("2023-01-01 to 2023-03-15 ")

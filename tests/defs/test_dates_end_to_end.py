"""A dataset with a date and a timestamp column, through the whole graph: the real half, its checks, one
epsilon of Private Evolution and the reference (every generator is tested with dates in
tests/generators/test_date_role.py), the scores and the evaluation."""

import importlib.util
from pathlib import Path

import polars as pl
import pytest

from synth_assets.datasets.loading import load_dataset
from synth_assets.pipeline import run_pipeline
from synth_assets.resources import PrivateEvolutionResource


def _write_dated_dataset(directory: Path) -> Path:
    path = Path(__file__).parents[1] / "datasets" / "dated_dataset.py"
    spec = importlib.util.spec_from_file_location("dated_dataset", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    directory = module.write_dated_dataset(directory, members=600)
    spec = directory / "dataset.yaml"  # a holdout, for the evaluation's attacks and audit
    spec.write_text(spec.read_text().replace("holdout_fraction: 0\n", "holdout_fraction: 0.25\n", 1))
    return directory


@pytest.mark.slow
def test_dates_go_through_the_graph_as_dates(tmp_path: Path, epsilon_instance) -> None:
    dataset = load_dataset(_write_dated_dataset(tmp_path / "members"))
    database = tmp_path / "w.duckdb"
    instance = epsilon_instance(dataset)
    generators = ["private_evolution", "independent_marginals"]
    run = run_pipeline(dataset, [4.0], instance=instance, database=str(database), generators=generators,
                       pe=PrivateEvolutionResource(pool_size=300, selected=100, reference_points=3000))
    (summary,) = run.summaries
    assert {row["generator"] for row in summary["leaderboard"]} == set(generators)
    failed_checks = [e for r in instance.get_runs() for e in instance.get_records_for_run(r.run_id).records
                     if e.event_log_entry.dagster_event is not None
                     and e.event_log_entry.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
                     and not e.event_log_entry.dagster_event.event_specific_data.passed]
    assert not failed_checks  # the domain and schema checks accept dates as dates
    import duckdb

    with duckdb.connect(str(database), read_only=True) as connection:
        for table in ("synthetic.selected_population", "reference.independent_marginals"):
            frame = connection.sql(f"select joined, born, last_visit from {table}").pl()
            assert frame.schema["joined"] == pl.Date and frame.schema["born"] == pl.Date, table
            assert frame.schema["last_visit"].base_type() == pl.Datetime, table
            joined = frame["joined"].drop_nulls()
            assert joined.len() == frame.height  # not nullable: never null
            assert str(joined.min()) >= "2000-01-01" and str(joined.max()) <= "2024-12-31", table
    assert all(row["dp_audit"] == "green" for row in summary["evaluation"])

"""The synthetic half materializes per epsilon partition, records every release, and resumes from
checkpoints without recomputing finished rounds."""

from pathlib import Path

import dagster as dg
import duckdb
import pytest

import synth_assets.pe.evolution as evolution
from synth_assets.datasets.loading import load_dataset
from synth_assets.defs.graph import build_assets, build_resources
from synth_assets.defs.synthetic.assets import add_epsilon_partitions, build_synthetic_assets
from synth_assets.privacy.accounting import calibrate_sigma
from synth_assets.resources import PrivateEvolutionResource
from synth_assets.sql import fetch_polars

SMALL = {"pool_size": 150, "selected": 50, "reference_points": 3000}


def _setup(dataset_dir: Path, database: Path, tmp_path: Path, **pe_settings):
    """The graph over ``database``, a copy of the warehouse with the real half (``real_half_database``),
    the synthetic half to select (without the evaluation stage, tested in tests/defs/evaluation/), and an
    instance with the grid's partitions."""
    dataset = load_dataset(dataset_dir)
    pe = PrivateEvolutionResource(**{**SMALL, **pe_settings}, checkpoint_dir=str(tmp_path / "ck"))
    resources = build_resources(dataset, database=str(database), pe=pe)
    assets = build_assets(dataset)
    synthetic = [k for a in build_synthetic_assets(dataset) for k in a.keys]
    instance = dg.DagsterInstance.ephemeral()
    add_epsilon_partitions(instance, dataset, dataset.spec.privacy.epsilon_grid)
    return dataset, assets, resources, synthetic, instance


def _meta(result, key: str) -> dict:
    event = next(
        e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == key
    )
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_one_partition_materializes_with_release_metadata(
    tiny_dataset_dir: Path, real_half_database: Path, tmp_path: Path
) -> None:
    dataset, assets, resources, synthetic, instance = _setup(
        tiny_dataset_dir, real_half_database, tmp_path, prior_share=0.0
    )
    result = dg.materialize(assets, resources=resources, selection=synthetic, partition_key="1", instance=instance)
    assert result.success
    histogram = _meta(result, "synthetic/dp_histogram")
    assert histogram["epsilon"] == 1.0 and histogram["delta"] == 1e-6
    # no prior: the whole budget goes to the T vote histograms
    assert histogram["sigma"] == pytest.approx(calibrate_sigma(1.0, 1e-6, 1), abs=1e-4)
    assert histogram["epsilon_composed"] == pytest.approx(1.0, abs=1e-6)
    assert histogram["T"] == 1 and histogram["seed"] == 0 and histogram["candidates"] == 150
    assert 0 <= histogram["share_of_candidates_above_threshold"] <= 1
    assert histogram["H"] == pytest.approx(0.5 * histogram["sigma"], abs=1e-3)
    scores = _meta(result, "synthetic/benchmark_scores")
    assert {"pass_rate", "tvd_1way", "tvd_2way", "reference_tvd_2way", "queries"} <= set(scores)
    assert "| mean_minutes_by_region | aggregate |" in scores["queries"]

    with duckdb.connect(str(real_half_database), read_only=True) as connection:
        population = fetch_polars(connection, "select * from synthetic.selected_population")
        summary = fetch_polars(connection, "select * from synthetic.benchmark_scores__summary")
        tables = {r[0] for r in connection.execute(
            "select table_name from information_schema.tables where table_schema = 'synthetic'").fetchall()}
    assert set(population["__partition_key"]) == {"1"}
    assert population["device_id"].str.starts_with("syn_").all()
    assert set(summary["generator"]) == {"private_evolution", "independent_marginals"}
    assert {"decomposed_tables__profile", "decomposed_tables__usage", "decomposed_tables__updates"} <= tables


def test_partitions_are_independent_and_prior_is_a_release(
    tiny_dataset_dir: Path, real_half_database: Path, tmp_path: Path
) -> None:
    dataset, assets, resources, synthetic, instance = _setup(tiny_dataset_dir, real_half_database, tmp_path)
    first = dg.materialize(assets, resources=resources, selection=synthetic, partition_key="1", instance=instance)
    second = dg.materialize(assets, resources=resources, selection=synthetic, partition_key="4", instance=instance)
    assert first.success and second.success
    prior = _meta(first, "synthetic/dp_prior")
    histogram = _meta(first, "synthetic/dp_histogram")
    assert prior["histograms"] > 0 and prior["sigma"] > histogram["sigma"] > 0
    assert histogram["epsilon_composed"] == pytest.approx(1.0, abs=1e-6)
    assert _meta(second, "synthetic/dp_histogram")["sigma"] < histogram["sigma"]
    with duckdb.connect(str(real_half_database), read_only=True) as connection:
        counts = dict(connection.execute(
            "select __partition_key, count(*) from synthetic.dp_histogram__votes group by 1").fetchall())
    assert counts == {"1": 150, "4": 150}


def test_rerun_resumes_every_stage_from_checkpoints(
    tiny_dataset_dir: Path, real_half_database: Path, tmp_path: Path
) -> None:
    dataset, assets, resources, synthetic, instance = _setup(
        tiny_dataset_dir, real_half_database, tmp_path, iterations=2
    )
    first = dg.materialize(assets, resources=resources, selection=synthetic, partition_key="1", instance=instance)
    again = dg.materialize(assets, resources=resources, selection=synthetic, partition_key="1", instance=instance)
    assert _meta(first, "synthetic/dp_histogram")["rounds_resumed_from_checkpoint"] == 0
    assert _meta(again, "synthetic/dp_histogram")["rounds_resumed_from_checkpoint"] == 2
    assert _meta(again, "synthetic/dp_prior")["resumed_from_checkpoint"] is True
    before = first.output_for_node("synthetic__selected_population")
    after = again.output_for_node("synthetic__selected_population")
    assert before.equals(after)


def test_a_run_that_dies_mid_histogram_finishes_on_resume_without_redoing_rounds(
    tiny_dataset_dir: Path, real_half_database: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset, assets, resources, synthetic, instance = _setup(
        tiny_dataset_dir, real_half_database, tmp_path, iterations=3
    )
    real_histogram = evolution.dp_nn_histogram
    calls = []

    def dies_in_round_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("machine lost during round 2")
        return real_histogram(*args, **kwargs)

    monkeypatch.setattr(evolution, "dp_nn_histogram", dies_in_round_two)
    failed = dg.materialize(
        assets, resources=resources, selection=synthetic, partition_key="1", instance=instance, raise_on_error=False
    )
    assert not failed.success
    assert len(calls) == 2
    resumed = dg.materialize(assets, resources=resources, selection=synthetic, partition_key="1", instance=instance)
    assert resumed.success
    assert len(calls) == 4  # rounds 2 and 3 only: round 1 came from its checkpoint
    assert _meta(resumed, "synthetic/dp_histogram")["rounds_resumed_from_checkpoint"] == 1

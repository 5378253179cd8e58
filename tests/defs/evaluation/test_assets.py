"""The evaluation stage on the graph: the generators read the training entities only, and every
synthetic table of a partition is evaluated against the holdout, with an HTML report per generator."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import polars as pl

from synth_assets.datasets.loading import load_dataset
from synth_assets.defs.evaluation.assets import PRIVACY_RISK_KEY
from synth_assets.defs.graph import build_assets, build_resources
from synth_assets.defs.real.assets import HOLDOUT_KEY, TRAINING_KEY, build_real_assets
from synth_assets.evaluation.holdout import split_holdout
from synth_assets.privacy.ledger import PrivacyLedger
from synth_assets.privacy.releases import data_fingerprint
from synth_assets.resources import PrivateEvolutionResource
from synth_assets.tables.build import build_real_tables

SMALL = {"pool_size": 150, "selected": 50, "reference_points": 3000}


def test_generators_see_training_only_and_each_table_is_evaluated_against_the_holdout(
    tiny_dataset_dir, tmp_path, epsilon_instance
):
    dataset = load_dataset(tiny_dataset_dir)
    instance = epsilon_instance(dataset)
    database = tmp_path / "w.duckdb"
    resources = build_resources(dataset, database=str(database), pe=PrivateEvolutionResource(**SMALL))
    assets = build_assets(dataset)
    real = [k for a in build_real_assets(dataset) for k in a.keys]
    assert TRAINING_KEY in real and HOLDOUT_KEY in real
    real_run = dg.materialize(assets, resources=resources, selection=real)
    training = real_run.output_for_node("training_and_holdout", "training")
    holdout = real_run.output_for_node("training_and_holdout", "holdout")
    expected_training, expected_holdout = split_holdout(dataset, build_real_tables(dataset).wide)
    assert training.equals(expected_training) and holdout.equals(expected_holdout)
    assert holdout.height > 0.1 * (training.height + holdout.height)

    synthetic = [k for a in assets for k in a.keys if k not in real]
    result = dg.materialize(assets, resources=resources, selection=synthetic, partition_key="1", instance=instance)
    assert result.success
    # every release was made from the training rows: the ledger's data digest is theirs
    digests = set(PrivacyLedger(database).releases()["data_digest"])
    assert digests == {data_fingerprint(training)}
    # the synthetic table stands for every entity: its rows are scaled up by the holdout fraction
    population = result.output_for_node("synthetic__selected_population")
    n = training.height + holdout.height
    assert abs(population.height - n) < 0.15 * n

    evaluation: pl.DataFrame = result.output_for_node("evaluation__privacy_risk")
    assert set(evaluation["generator"]) == set(dataset.spec.synthesis.generators)
    assert set(evaluation["dp_audit"]) == {"green"}
    assert (evaluation["mia_auc_low"] < evaluation["dp_auc_bound"]).all()
    for path in evaluation["report"]:
        page = Path(path).read_text()
        assert "Membership inference" in page and "Audit against the DP bound" in page
    materialization = result.asset_materializations_for_node("evaluation__privacy_risk")[0]
    assert "mia" in materialization.metadata["evaluation"].value.lower()
    assert PRIVACY_RISK_KEY == materialization.asset_key
    for section in ("fidelity", "utility", "workload", "privacy"):
        assert set(evaluation[f"{section}_verdict"]) <= {"green", "amber", "red", "not available"}
    assert set(evaluation["workload_verdict"]) != {"not available"}  # the real answers reached the evaluation
    stored = [json.loads(text) for text in evaluation["report_json"]]
    assert {r["generator"] for r in stored} == set(evaluation["generator"])

    # the comparison page covers every release in the warehouse, this partition's and another's
    other = dg.materialize(assets, resources=resources, selection=synthetic, partition_key="4", instance=instance)
    (comparison,) = other.asset_materializations_for_node("evaluation__comparison")
    assert comparison.metadata["releases"].value == 2 * len(dataset.spec.synthesis.generators)
    assert comparison.metadata["epsilons"].value == [1.0, 4.0]
    page = Path(comparison.metadata["page"].value).read_text()
    assert page.count('alt="ROC at epsilon') == 2 and "every release compared" in page
    assert "recommendations" in comparison.metadata

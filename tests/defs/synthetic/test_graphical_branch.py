"""A graphical model's branch of the graph: charged with the partition, materialized, on the leaderboard;
and a run may choose its branches."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl

from synth_assets.datasets.loading import load_dataset
from synth_assets.defs.graph import build_assets, build_resources
from synth_assets.defs.real.assets import build_real_assets
from synth_assets.defs.synthetic.assets import RELEASE_PLAN_KEY, SCORES_KEY, branch_keys
from synth_assets.privacy.ledger import PrivacyLedger
from synth_assets.resources import PrivateEvolutionResource

SMALL = {"pool_size": 150, "selected": 50, "reference_points": 3000}


def test_the_default_branches_include_mst_and_a_run_charges_only_the_branches_it_materializes(
    tiny_with_default_generators: Path, tmp_path: Path, epsilon_instance
):
    dataset = load_dataset(tiny_with_default_generators)
    assert dataset.spec.synthesis.generators == ["private_evolution", "mst", "independent_marginals"]
    database = tmp_path / "w.duckdb"
    resources = build_resources(
        dataset, database=str(database), pe=PrivateEvolutionResource(**SMALL, checkpoint_dir=str(tmp_path / "ck"))
    )
    assets = build_assets(dataset)
    real = [k for a in build_real_assets(dataset) for k in a.keys]
    assert dg.materialize(assets, resources=resources, selection=real).success
    branches = branch_keys(dataset)
    assert [k.to_user_string() for k in branches["mst"]] == ["mst/population", "mst/decomposed_tables"]

    # MST and the reference only: PE is neither charged nor run
    selection = [RELEASE_PLAN_KEY, *branches["mst"], *branches["independent_marginals"], SCORES_KEY]
    result = dg.materialize(
        assets, resources=resources, selection=selection, partition_key="1", instance=epsilon_instance(dataset)
    )
    assert result.success
    releases = PrivacyLedger(database).releases()
    kinds = sorted(releases["kind"])
    assert kinds == ["independent_marginals", "mst_one_way", "mst_selection", "mst_two_way"], kinds
    board = result.output_for_node("synthetic__benchmark_scores")["summary"]
    assert set(board["generator"]) == {"mst", "independent_marginals"}
    mst = board.filter(pl.col("generator") == "mst").row(0, named=True)
    population = result.output_for_node("mst__population")
    assert population.height == mst["rows"] > 300
    assert population.columns == [c.wide_name for c in dataset.spec.wide_table.columns]
    assert 0 <= mst["tvd_3way"] <= 1 and 0 <= mst["metric_pass_rate"] <= 1

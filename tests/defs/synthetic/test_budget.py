"""Every DP release is recorded in the ledger; a materialization over the budget is refused before it
touches private data; the same release twice is charged once."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import yaml

from synth_assets.datasets.loading import load_dataset
from synth_assets.defs.graph import build_assets, build_resources
from synth_assets.defs.real.assets import build_real_assets
from synth_assets.defs.synthetic.assets import build_synthetic_assets
from synth_assets.privacy.ledger import PrivacyLedger
from synth_assets.resources import PrivateEvolutionResource

# the marginal prior keeps every release Gaussian, so that the figures below are the exact GDP composition
# (a partition with MST's selections composes in zCDP: tests/privacy/test_composition.py)
SMALL = {"pool_size": 150, "selected": 50, "reference_points": 3000, "prior": "marginals"}


def test_grid_releases_are_recorded_and_the_budget_is_enforced(
    tiny_copy: Path, tmp_path: Path, epsilon_instance, failure_text
) -> None:
    spec_path = tiny_copy / "dataset.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["privacy"]["budget_epsilon"] = 2.5
    spec_path.write_text(yaml.safe_dump(spec))
    dataset = load_dataset(tiny_copy)
    database = tmp_path / "w.duckdb"
    checkpoints = tmp_path / "ck"
    resources = build_resources(
        dataset, database=str(database),
        pe=PrivateEvolutionResource(**SMALL, checkpoint_dir=str(checkpoints)),
    )
    assets = build_assets(dataset)
    real = [k for a in build_real_assets(dataset) for k in a.keys]
    synthetic = [k for a in build_synthetic_assets(dataset) for k in a.keys]  # evaluation: not needed here
    assert dg.materialize(assets, resources=resources, selection=real).success
    instance = epsilon_instance(dataset)

    assert dg.materialize(assets, resources=resources, selection=synthetic, partition_key="1", instance=instance).success
    ledger = PrivacyLedger(database)
    releases = ledger.releases("devices")
    assert sorted(releases["kind"]) == ["independent_marginals", "marginal_prior", "nn_histogram"]
    assert set(releases["partition_key"]) == {"1"}
    assert {"sigma", "delta", "seed", "histograms", "T", "run_id", "recorded_at"} <= set(releases.columns)
    spent = ledger.spent("devices", 1e-6)
    assert 1.0 < spent.epsilon_gdp < spent.epsilon_sum

    # the same partition again, same seed and data: the same releases, not charged twice
    assert dg.materialize(assets, resources=resources, selection=synthetic, partition_key="1", instance=instance).success
    again = ledger.spent("devices", 1e-6)
    assert again.releases == 3 and again.repeats >= 3
    assert again.epsilon_gdp == spent.epsilon_gdp

    # epsilon 4 would exceed 2.5: refused before the mechanism runs, nothing recorded or checkpointed
    before = {p.name for p in (checkpoints / "devices").iterdir()}
    refused = dg.materialize(
        assets, resources=resources, selection=synthetic, partition_key="4", raise_on_error=False,
        instance=instance,
    )
    assert not refused.success
    message = failure_text(refused)
    assert "BudgetExceeded" in message and "would be exceeded" in message
    assert "spent:   epsilon 1.4" in message and "remaining: epsilon 1.0" in message
    assert ledger.spent("devices", 1e-6).releases == 3
    assert {p.name for p in (checkpoints / "devices").iterdir()} == before
    materialized = {e.asset_key.to_user_string() for e in refused.get_asset_materialization_events()}
    assert not materialized & {"synthetic/dp_prior", "synthetic/dp_histogram", "reference/independent_marginals"}

    env = {**os.environ, "SYNTH_ASSETS_WAREHOUSE": str(tmp_path)}
    database.rename(tmp_path / "devices.duckdb")  # where the CLI looks: $SYNTH_ASSETS_WAREHOUSE/<name>.duckdb
    shown = subprocess.run(
        [sys.executable, "-m", "synth_assets.cli", "ledger", "--dataset", str(tiny_copy), "--json"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    (totals,) = document["totals"]
    assert totals["releases"] == 3 and totals["budget"] == 2.5
    assert abs(totals["epsilon_gdp"] - spent.epsilon_gdp) < 1e-9
    assert len(document["releases"]) == 3

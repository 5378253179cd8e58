"""The graph charges a partition's releases together, before any mechanism runs, and the SDK makes the
same releases: the defects the one home for releases fixed, shown on the asset graph."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import yaml

from synth_assets.datasets.loading import load_dataset
from synth_assets.defs.evaluation.assets import build_evaluation_assets
from synth_assets.defs.graph import build_assets, build_resources
from synth_assets.defs.real.assets import build_real_assets
from synth_assets.defs.synthetic.assets import add_epsilon_partitions, build_synthetic_assets
from synth_assets.evaluation.holdout import split_holdout
from synth_assets.generators.private_evolution import PrivateEvolution
from synth_assets.privacy.ledger import PrivacyLedger
from synth_assets.privacy.releases import synthesize
from synth_assets.resources import PrivateEvolutionResource
from synth_assets.sql import fetch_polars
from synth_assets.tables.build import build_real_tables

SMALL = {"pool_size": 150, "selected": 50, "reference_points": 3000}


def _edit_spec(directory: Path, edit) -> None:
    path = directory / "dataset.yaml"
    spec = yaml.safe_load(path.read_text())
    edit(spec)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


def _graph(directory: Path, tmp_path: Path, evaluation: bool = False, real_half: Path | None = None):
    """The graph of the dataset in ``directory`` with its real half materialized (``real_half``: a
    warehouse that holds it already), and the selection of a partition: the synthetic half, and the
    evaluation stage only if ``evaluation``."""
    dataset = load_dataset(directory)
    database = real_half or tmp_path / "w.duckdb"
    pe = PrivateEvolutionResource(**SMALL, checkpoint_dir=str(tmp_path / "ck"))
    resources = build_resources(dataset, database=str(database), pe=pe)
    assets = build_assets(dataset)
    real = [k for a in build_real_assets(dataset) for k in a.keys]
    stages = [*build_synthetic_assets(dataset), *(build_evaluation_assets(dataset) if evaluation else [])]
    synthetic = [k for a in stages for k in a.keys]
    if real_half is None:
        assert dg.materialize(assets, resources=resources, selection=real).success
    return dataset, assets, resources, synthetic, database


def _run(assets, resources, synthetic, partition):
    instance = dg.DagsterInstance.ephemeral()
    add_epsilon_partitions(instance, load_dataset(resources["dataset"].directory), [float(partition)])
    return dg.materialize(
        assets, resources=resources, selection=synthetic, partition_key=partition, raise_on_error=False,
        instance=instance,
    )


def _partitions(database: Path, table: str) -> set[str]:
    with duckdb.connect(str(database), read_only=True) as connection:
        exists = connection.execute(
            "select count(*) from information_schema.tables where table_schema || '.' || table_name = ?",
            [table],
        ).fetchall()[0][0]
        if not exists:
            return set()
        return {row[0] for row in connection.execute(f"select distinct __partition_key from {table}").fetchall()}


def test_a_partition_refused_for_budget_releases_nothing_not_even_its_reference(tiny_copy, tmp_path, failure_text):
    """Defect 1. At budget 1.2, PE at epsilon 1 or its reference alone would fit, both do not."""
    _edit_spec(tiny_copy, lambda spec: spec["privacy"].update(budget_epsilon=1.2))
    dataset, assets, resources, synthetic, database = _graph(tiny_copy, tmp_path)
    refused = _run(assets, resources, synthetic, "1")
    assert not refused.success
    assert "BudgetExceeded" in failure_text(refused)
    assert PrivacyLedger(database).releases().height == 0
    for table in ("reference.independent_marginals", "synthetic.dp_prior", "synthetic.dp_histogram__votes"):
        assert _partitions(database, table) == set(), table
    done = {e.asset_key.to_user_string() for e in refused.get_asset_materialization_events()}
    assert done == set()


def test_a_paid_partition_resumes_and_reruns_when_little_budget_remains(tiny_copy, tmp_path, failure_text):
    """Defect 2: a crash after the histogram left the partition unfinishable once the budget was tight."""
    _edit_spec(tiny_copy, lambda spec: spec["privacy"].update(budget_epsilon=10.0))
    dataset, assets, resources, synthetic, database = _graph(tiny_copy, tmp_path)
    assert _run(assets, resources, synthetic, "1").success
    ledger = PrivacyLedger(database)
    spent = ledger.spent(dataset.name, 1e-6).epsilon_gdp
    _edit_spec(tiny_copy, lambda spec: spec["privacy"].update(budget_epsilon=round(spent + 0.01, 4)))
    dataset, assets, resources, synthetic, database = _graph(tiny_copy, tmp_path)
    again = _run(assets, resources, synthetic, "1")
    assert again.success, failure_text(again)
    assert ledger.releases().height == 5 and ledger.spent(dataset.name, 1e-6).epsilon_gdp == spent  # MST prior: 3
    # what remains is not enough for another epsilon: refused, as before
    assert not _run(assets, resources, synthetic, "4").success


def test_user_columns_named_like_internal_ones_survive_the_synthetic_half(tiny_copy, tmp_path, failure_text):
    """Defect 3: dp_histogram appended its DP weights as a column 'weight', overwriting the user's; a
    column 'partition_key' collided with the warehouse's partition column."""

    def rename(spec):
        for column in spec["wide_table"]["columns"]:
            if column["from"] == "usage.minutes":
                column["name"] = "weight"
            if column["from"] == "usage.crashes":
                column["name"] = "partition_key"

    _edit_spec(tiny_copy, rename)
    # the evaluation stage too: the user's columns go through every stage that reads a synthetic table
    dataset, assets, resources, synthetic, database = _graph(tiny_copy, tmp_path, evaluation=True)
    result = _run(assets, resources, synthetic, "1")
    assert result.success, failure_text(result)
    population = result.output_for_node("synthetic__selected_population")
    assert {"weight", "partition_key"} <= set(population.columns)
    assert population["partition_key"].drop_nulls().n_unique() > 3  # the user's crash counts
    weights = population["weight"].drop_nulls()
    assert weights.min() >= 0 and weights.n_unique() > 50  # the user's minutes, not 0/1-ish DP weights
    histogram = result.output_for_node("synthetic__dp_histogram")
    assert set(histogram) == {"candidates", "votes"}
    assert "weight" in histogram["candidates"].columns and histogram["votes"].columns == ["noisy_votes", "weight"]


def test_an_empty_population_is_refused_in_the_graph_with_nothing_charged(tiny_copy, tmp_path, failure_text):
    """Defect 6."""
    csv = tiny_copy / "data" / "devices.csv"
    csv.write_bytes(csv.read_bytes().splitlines(keepends=True)[0])  # the header only
    dataset, assets, resources, synthetic, database = _graph(tiny_copy, tmp_path)
    refused = _run(assets, resources, synthetic, "1")
    assert not refused.success
    assert "UnsafePrivacySetting" in failure_text(refused) and "is empty" in failure_text(refused)
    assert PrivacyLedger(database).releases().height == 0


def test_the_sdk_and_the_graph_make_the_same_releases_and_the_same_population(
    tiny_dataset_dir, real_half_database, tmp_path
):
    dataset, assets, resources, synthetic, database = _graph(
        tiny_dataset_dir, tmp_path, real_half=real_half_database
    )
    result = _run(assets, resources, synthetic, "1")
    assert result.success
    ledger = PrivacyLedger(database)
    recorded = ledger.releases()
    with duckdb.connect(str(database), read_only=True) as connection:
        graph_population = fetch_polars(
            connection, "select * exclude (__partition_key) from synthetic.selected_population "
            "where __partition_key = '1'",
        )

    wide = build_real_tables(dataset).wide  # built in memory, not read from the warehouse
    training, _holdout = split_holdout(dataset, wide)  # the graph's generators see the training rows only
    sdk = synthesize(
        dataset, PrivateEvolution(PrivateEvolutionResource(**SMALL).config()), 1.0, training, ledger=ledger,
        rows=graph_population.height,  # the graph scales its rows up to every entity, holdout included
    )
    pe_recorded = recorded.filter(pl.col("kind") != "independent_marginals")
    assert sorted(r.identity for r in sdk.releases) == sorted(pe_recorded["identity"])
    assert sdk.budget.new == ()  # the graph paid for them: not charged again
    assert ledger.releases().height == recorded.height
    assert sdk.population.equals(graph_population.cast(sdk.population.schema))


def test_a_run_over_budget_is_refused_before_the_real_half_is_rebuilt(tiny_copy, tmp_path):
    _edit_spec(tiny_copy, lambda spec: spec["privacy"].update(budget_epsilon=1.2))
    env = {"SYNTH_ASSETS_WAREHOUSE": str(tmp_path / "wh"), "PATH": "/usr/bin:/bin"}
    refused = subprocess.run([sys.executable, "-m", "synth_assets.cli", "run", "--dataset", str(tiny_copy),
                              "--epsilon", "1"], capture_output=True, text=True, env=env, timeout=300)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "would be exceeded" in refused.stderr and "before the private data was read" in refused.stderr
    warehouse = tmp_path / "wh" / "devices.duckdb"
    if warehouse.exists():  # nothing of the real half was written
        with duckdb.connect(str(warehouse), read_only=True) as connection:
            schemas = {row[0] for row in connection.sql("select distinct schema_name from duckdb_tables()").fetchall()}
        assert not schemas & {"raw", "reporting", "real"}
        assert PrivacyLedger(warehouse).releases().height == 0


def test_unsafe_runs_are_refused_by_the_command(tiny_copy, tmp_path):
    """Defect 4 from the command line: a vanishing noise is refused before the data is read (exit 2);
    delta >= 1/n is refused before the first release."""
    env_run = [sys.executable, "-m", "synth_assets.cli", "run", "--dataset", str(tiny_copy)]
    env = {"SYNTH_ASSETS_WAREHOUSE": str(tmp_path / "wh"), "PATH": "/usr/bin:/bin"}
    huge = subprocess.run([*env_run, "--epsilon", "1e9"], capture_output=True, text=True, env=env, timeout=300)
    assert huge.returncode == 2
    assert "almost no noise" in huge.stderr and "Traceback" not in huge.stderr
    _edit_spec(tiny_copy, lambda spec: spec["privacy"].update(delta=0.5))
    weak = subprocess.run([*env_run, "--epsilon", "1"], capture_output=True, text=True, env=env, timeout=300)
    assert weak.returncode != 0
    assert "delta=0.5 is >= 1/n" in weak.stderr and "privacy.delta" in weak.stderr
    ledger = tmp_path / "wh" / "devices.duckdb"
    assert PrivacyLedger(ledger).releases().height == 0

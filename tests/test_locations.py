"""Several datasets in one deployment: datasets.yaml lists them, synth_assets.locations exposes one
Definitions per dataset, and workspace.yaml loads each as its own code location."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import duckdb
import pytest
import yaml

import synth_assets.defs.synthetic.assets as synthetic_assets
from synth_assets import locations
from synth_assets.datasets.loading import DatasetError, load_dataset
from synth_assets.defs.graph import build_definitions
from synth_assets.defs.real.assets import build_real_assets
from synth_assets.defs.synthetic.assets import add_epsilon_partitions
from synth_assets.defs.synthetic.jobs import EPSILON_GRID_JOB, REAL_TABLES_JOB

REPO = Path(__file__).resolve().parents[1]
WORKSPACE = REPO / "workspace.yaml"


def _keys(definitions: dg.Definitions) -> set[str]:
    return {key.to_user_string() for key in definitions.resolve_asset_graph().get_all_asset_keys()}


def _deployment(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Write a deployment file and make it the configured one."""
    path = tmp_path / "deploy" / "datasets.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    monkeypatch.setenv(locations.DATASETS_ENV_VAR, str(path))
    return path


def test_shipped_file_lists_the_builtin_datasets() -> None:
    assert locations.deployment_file() == REPO / "datasets.yaml"
    listed = locations.listed_datasets()
    assert list(listed) == ["lahman", "fertility"]
    assert listed["lahman"] == REPO / "synth_assets" / "datasets" / "builtin" / "lahman"


def test_each_listed_dataset_is_its_own_definitions() -> None:
    lahman, fertility = locations.lahman, locations.fertility
    assert isinstance(lahman, dg.Definitions) and isinstance(fertility, dg.Definitions)
    assert locations.lahman is lahman  # built once
    assert {"lahman", "fertility"} <= set(dir(locations))
    lahman_keys, fertility_keys = _keys(lahman), _keys(fertility)
    assert {"lahman/raw/salaries", "lahman/reporting/batting_career", "lahman/real/players"} <= lahman_keys
    assert "lahman/reporting/salary" in lahman_keys
    assert "fertility/reporting/mothers" in fertility_keys
    databases, partition_sets = [], []
    for definitions in (lahman, fertility):
        job = definitions.resolve_job_def(EPSILON_GRID_JOB)
        assert job.partitions_def is not None
        assert len(list(definitions.schedules)) == 1 and len(list(definitions.sensors)) == 2
        partition_sets.append(job.partitions_def.name)
        databases.append(Path(definitions.resources["duckdb"].database).name)
    assert databases == ["lahman.duckdb", "fertility.duckdb"]  # a warehouse and a ledger each
    assert partition_sets == ["lahman_epsilon", "fertility_epsilon"]  # and epsilons of its own


def test_dagster_loads_every_workspace_location_through_its_attribute() -> None:
    """As a code server does: the module and attribute of each workspace.yaml entry, via Dagster's loader."""
    from dagster._core.definitions.reconstruct import load_def_in_module
    from dagster._core.workspace.load import location_origins_from_yaml_paths

    origins = location_origins_from_yaml_paths([str(WORKSPACE)])
    assert [origin.location_name for origin in origins] == list(locations.listed_datasets())
    for origin in origins:
        target = origin.loadable_target_origin
        loaded = load_def_in_module(target.module_name, target.attribute, target.working_directory)
        assert loaded is getattr(locations, origin.location_name)


def test_workspace_lists_exactly_the_shipped_datasets() -> None:
    """workspace.yaml cannot drift from datasets.yaml: one location per dataset, same name, same order."""
    expected = [
        {"python_module": {"module_name": "synth_assets.locations", "attribute": name, "location_name": name}}
        for name in locations.listed_datasets(REPO / "datasets.yaml")
    ]
    workspace = yaml.safe_load(WORKSPACE.read_text())
    assert workspace == {"load_from": expected}, (
        "workspace.yaml must load one location per dataset of datasets.yaml, in its order:\n"
        + yaml.safe_dump({"load_from": expected}, sort_keys=False)
    )


def test_unknown_attribute_names_the_listed_datasets() -> None:
    with pytest.raises(AttributeError, match=r"no dataset 'baseball'.*lists lahman, fertility"):
        locations.baseball  # noqa: B018
    assert not hasattr(locations, "__wrapped__")


def test_private_probes_never_read_the_deployment_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nowhere.yaml"
    monkeypatch.setenv(locations.DATASETS_ENV_VAR, str(missing))
    assert not hasattr(locations, "__path__")
    with pytest.raises(
        DatasetError, match=rf"{re.escape(str(missing))}: deployment file not found.*SYNTH_ASSETS_DATASETS"
    ):
        locations.lahman  # noqa: B018


def test_a_dataset_of_your_own_relative_to_the_file(
    tiny_dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    relative = os.path.relpath(tiny_dataset_dir, deploy)
    _deployment(tmp_path, f"datasets:\n  devices: {relative}\n", monkeypatch)
    monkeypatch.chdir(REPO / "docs")  # relative to the file, not to where the process runs
    devices = locations.devices
    assert {"devices/raw/firmware", "devices/reporting/updates", "devices/real/devices_wide"} <= _keys(devices)
    assert devices.resolve_job_def(EPSILON_GRID_JOB) is not None
    with pytest.raises(AttributeError, match="lists devices"):
        locations.lahman  # noqa: B018 (not in this deployment)


def test_building_reads_no_private_data(
    tiny_dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spec, SQL and queries suffice: a copy without its data files builds the whole graph."""
    copy = tmp_path / "devices"
    shutil.copytree(tiny_dataset_dir, copy, ignore=shutil.ignore_patterns("data"))
    assert not (copy / "data").exists()
    path = _deployment(tmp_path, f"datasets:\n  devices: {copy}\n", monkeypatch)
    devices = locations.build_location("devices", path)
    assert "devices/synthetic/selected_population" in _keys(devices)
    devices.resolve_all_job_defs()
    assert not (copy / "data").exists()


def test_a_directory_that_does_not_load_names_the_file_and_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _deployment(tmp_path, "datasets:\n  devices: ../no_such_dataset\n", monkeypatch)
    with pytest.raises(DatasetError) as error:
        locations.devices  # noqa: B018
    message = str(error.value)
    assert message.startswith(f"{path}: dataset 'devices'")
    assert str(tmp_path / "no_such_dataset") in message and "dataset directory not found" in message


def test_an_unknown_key_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _deployment(tmp_path, "datasets:\n  lahman: /x\nlocations:\n  lahman: /x\n", monkeypatch)
    with pytest.raises(
        DatasetError, match=rf"(?s)^{re.escape(str(path))}: 1 problem.*locations: unknown key"
    ):
        locations.lahman  # noqa: B018


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("datasets:\n  lahman: {directory: /x}\n", r"datasets\.lahman: expected a directory"),
        ("datasets: {}\n", r"datasets: .*at least 1 item"),
        ("lahman: /x\n", r"datasets: required key is missing"),
        ("datasets:\n  my data: /x\n", r"'my data' cannot name a code location"),
        ("datasets:\n  listed_datasets: /x\n", r"'listed_datasets' is taken by synth_assets.locations"),
        ("datasets:\n  lahman: /x\n  lahman: /y\n", r"not valid YAML.*'lahman' is given twice"),
    ],
)
def test_a_malformed_file_names_itself_and_the_problem(
    text: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _deployment(tmp_path, text, monkeypatch)
    with pytest.raises(DatasetError, match=rf"(?s)^{re.escape(str(path))}: .*{expected}"):
        locations.listed_datasets()


def test_a_name_other_than_the_datasets_own_is_refused(
    tiny_dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _deployment(tmp_path, f"datasets:\n  gadgets: {tiny_dataset_dir}\n", monkeypatch)
    with pytest.raises(DatasetError) as error:
        locations.gadgets  # noqa: B018
    message = str(error.value)
    assert message.startswith(f"{path}: dataset 'gadgets' is listed with {tiny_dataset_dir}")
    assert "holds the dataset 'devices'" in message and "privacy ledger are devices.duckdb" in message
    assert f"List it as `devices: {tiny_dataset_dir}`" in message


def test_asset_keys_are_unique_across_the_locations() -> None:
    """A Dagster instance allows one definition and keeps one history per key: each location's keys
    start with its dataset's name."""
    lahman, fertility = _keys(locations.lahman), _keys(locations.fertility)
    assert not lahman & fertility
    assert all(key.startswith("lahman/") for key in lahman)
    assert all(key.startswith("fertility/") for key in fertility)
    assert "lahman/synthetic/dp_prior" in lahman and "fertility/synthetic/dp_prior" in fertility
    checks = {key.to_user_string() for key in locations.lahman.resolve_asset_graph().asset_check_keys}
    assert checks and all(check.startswith("lahman/") for check in checks)


def test_a_location_is_the_single_dataset_graph_under_its_name() -> None:
    """The same assets, dependencies, checks (with their inputs), job, schedule, sensor, resources and
    executor as the single-dataset Definitions, every key under the dataset's name."""
    location = locations.lahman
    base = build_definitions(load_dataset(locations.listed_datasets()["lahman"]))

    def prefixed(key: dg.AssetKey) -> dg.AssetKey:
        return key.with_prefix("lahman")

    base_graph, graph = base.resolve_asset_graph(), location.resolve_asset_graph()
    assert {prefixed(k) for k in base_graph.get_all_asset_keys()} == set(graph.get_all_asset_keys())
    for key in base_graph.get_all_asset_keys():
        node, base_node = graph.get(prefixed(key)), base_graph.get(key)
        assert set(node.parent_keys) == {prefixed(k) for k in base_node.parent_keys}, key
        assert (node.group_name, node.partitions_def) == (base_node.group_name, base_node.partitions_def)

    def checks(definitions: dg.Definitions, rename) -> dict:
        return {
            key.replace_asset_key(rename(key.asset_key)): (
                {rename(k) for k in c.keys_by_input_name.values()},
                {rename(d.asset_key) for spec in c.check_specs for d in spec.additional_deps},
                [(spec.blocking, spec.partitions_def) for spec in c.check_specs],
            )
            for c in definitions.asset_checks
            for key in c.check_keys
        }

    assert checks(location, lambda k: k) == checks(base, prefixed)
    assert any(deps for _, deps, _ in checks(location, lambda k: k).values())  # additional_deps kept
    job, base_job = location.resolve_job_def(EPSILON_GRID_JOB), base.resolve_job_def(EPSILON_GRID_JOB)
    assert job.asset_layer.selected_asset_keys == {
        prefixed(k) for k in base_job.asset_layer.selected_asset_keys
    }
    stages = {k.path[1] for k in job.asset_layer.selected_asset_keys}
    assert {"synthetic", "reference", "evaluation"} <= stages and not stages & {"raw", "reporting", "real"}
    assert [s.name for s in location.schedules] == [s.name for s in base.schedules]
    assert [s.name for s in location.sensors] == [s.name for s in base.sensors]
    assert set(location.resources) == set(base.resources) and location.executor is base.executor


def test_the_real_half_materializes_through_a_location_into_its_warehouse(
    tiny_dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prefixed keys, unchanged tables: the warehouse names a table by the last two parts of its key.
    Then the epsilon grid, failed at its release plan, is resumed by the sensor with prefixed keys."""
    warehouse = tmp_path / "warehouse"
    monkeypatch.setenv("SYNTH_ASSETS_WAREHOUSE", str(warehouse))
    path = _deployment(tmp_path, f"datasets:\n  devices: {tiny_dataset_dir}\n", monkeypatch)
    devices = locations.build_location("devices", path)
    database = warehouse / "devices.duckdb"
    assert devices.resources["duckdb"].database == str(database)
    dataset = load_dataset(tiny_dataset_dir)
    real = {k for a in build_real_assets(dataset) for k in a.keys}
    instance = dg.DagsterInstance.ephemeral()
    add_epsilon_partitions(instance, dataset, dataset.spec.privacy.epsilon_grid)

    result = devices.resolve_job_def(REAL_TABLES_JOB).execute_in_process(instance=instance)
    assert result.success
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert materialized == {k.with_prefix("devices") for k in real}
    evaluations = result.get_asset_check_evaluations()
    assert evaluations and all(e.passed for e in evaluations)
    assert all(e.asset_key.path[0] == "devices" for e in evaluations)
    with duckdb.connect(str(database), read_only=True) as connection:
        tables = set(connection.execute("select table_schema, table_name from information_schema.tables").fetchall())
    for key in real:
        schema, table = key.path
        assert (schema, table) in tables or (schema, f"{table}__members") in tables, key
    assert {"real", "raw", "reporting"} <= {schema for schema, _ in tables}
    assert "devices" not in {schema for schema, _ in tables}

    # The epsilon grid reads the real half by its prefixed keys; it fails at the release plan here.
    def lost(*args, **kwargs):
        raise RuntimeError("disk lost")

    monkeypatch.setattr(synthetic_assets, "charge_partition", lost)
    job = devices.resolve_job_def(EPSILON_GRID_JOB)
    failed = job.execute_in_process(partition_key="1", instance=instance, raise_on_error=False)
    assert not failed.success
    assert "disk lost" in str(failed.failure_data_for_node("synthetic__release_plan").error)
    sensor = devices.get_sensor_def("resume_failed_epsilon_runs")
    context = dg.build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_event=failed.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=failed.dagster_run,
    ).for_run_failure()
    request = sensor(context)
    assert isinstance(request, dg.RunRequest) and request.partition_key == "1"
    assert set(request.asset_selection) == job.asset_layer.selected_asset_keys  # nothing was materialized
    job.get_subset(asset_selection=set(request.asset_selection))  # a request the job can run


def test_a_release_plan_in_a_location_charges_only_the_branches_its_run_selects(
    tiny_dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _deployment(tmp_path, f"datasets:\n  devices: {tiny_dataset_dir}\n", monkeypatch)
    dataset = load_dataset(tiny_dataset_dir)
    reference_branch = {
        dg.AssetKey(["synthetic", "release_plan"]),
        dg.AssetKey(["reference", "independent_marginals"]),
        dg.AssetKey(["reference", "decomposed_tables"]),
    }
    for definitions, selection in [
        (build_definitions(dataset), reference_branch),
        (locations.build_location("devices", path), {k.with_prefix("devices") for k in reference_branch}),
    ]:
        job = definitions.resolve_job_def(EPSILON_GRID_JOB)
        assert selection <= job.asset_layer.selected_asset_keys
        context = SimpleNamespace(run=SimpleNamespace(asset_selection=selection), job_def=job)
        assert synthetic_assets.generators_in_run(context, dataset) == ["independent_marginals"]


def test_a_command_on_a_deployed_dataset_runs_its_locations_jobs_under_its_keys(
    tiny_dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``synth-assets run`` materializes for a listed dataset is what its code location shows: the
    same jobs, partitions and prefixed keys; for a dataset the deployment does not list, unprefixed keys."""
    from synth_assets.pipeline import run_pipeline

    dataset = load_dataset(tiny_dataset_dir)
    assert locations.deployed_prefix(dataset) is None  # the shipped datasets.yaml does not list it
    _deployment(tmp_path, f"datasets:\n  devices: {tiny_dataset_dir}\n", monkeypatch)
    assert locations.deployed_prefix(dataset) == "devices"
    instance = dg.DagsterInstance.ephemeral()
    run = run_pipeline(dataset, [3.0], instance=instance, database=str(tmp_path / "w.duckdb"),
                       generators=["independent_marginals"], evaluation=False)
    assert [s["epsilon"] for s in run.summaries] == [3.0]
    assert sorted(instance.get_dynamic_partitions("devices_epsilon")) == ["1", "3", "4"]
    runs = sorted((r.job_name, r.tags.get("dagster/partition", "")) for r in instance.get_runs())
    assert runs == [("epsilon_grid", "3"), ("real_tables", "")]
    reference = dg.AssetKey(["devices", "reference", "independent_marginals"])
    assert instance.get_materialized_partitions(reference) == {"3"}
    assert instance.get_latest_materialization_event(dg.AssetKey(["devices", "real", "training"]))
    assert not instance.get_latest_materialization_event(dg.AssetKey(["real", "training"]))

"""The epsilon-grid job, its schedule, and the sensor that resumes a failed partition where it stopped."""

from datetime import datetime
from pathlib import Path

import dagster as dg
import pytest

import synth_assets.pe.evolution as evolution
from synth_assets.datasets.loading import load_dataset
from synth_assets.defs.evaluation.assets import build_evaluation_assets
from synth_assets.defs.graph import build_definitions
from synth_assets.defs.synthetic.assets import REFUSED_TAG, add_epsilon_partitions, epsilon_partitions
from synth_assets.defs.synthetic.jobs import RESUME_ATTEMPT_TAG, grid_job_assets
from synth_assets.resources import PrivateEvolutionResource

SMALL = {"pool_size": 150, "selected": 50, "reference_points": 3000}


@pytest.fixture
def definitions(tiny_dataset_dir: Path, tmp_path: Path) -> dg.Definitions:
    dataset = load_dataset(tiny_dataset_dir)
    pe = PrivateEvolutionResource(**SMALL, iterations=2, checkpoint_dir=str(tmp_path / "ck"))
    return build_definitions(dataset, database=str(tmp_path / "w.duckdb"), pe=pe)


@pytest.fixture
def grid(definitions: dg.Definitions, real_half_database: Path, tiny, epsilon_instance):
    """The definitions over a warehouse that holds the real half (``real_half_database`` is
    ``tmp_path / "w.duckdb"``), and an instance for the runs, with the grid's partitions."""
    assert definitions.resources["duckdb"].database == str(real_half_database)
    return definitions, epsilon_instance(tiny)


def _resume_sensor(defs, instance, failed):
    """What the resume sensor answers to the failure of run ``failed``."""
    sensor = defs.get_sensor_def("resume_failed_epsilon_runs")
    context = dg.build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_event=failed.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=failed.dagster_run,
    ).for_run_failure()
    return sensor(context)


def test_the_sensor_plans_what_the_grid_job_runs_with_every_generator_configured(
    tiny_with_default_generators: Path, tmp_path: Path
) -> None:
    """A scheduled run has no asset selection: the sensor takes the job's own assets as the plan, and
    the job runs every generator the dataset lists (mst included), not the real half."""
    dataset = load_dataset(tiny_with_default_generators)
    defs = build_definitions(dataset, database=str(tmp_path / "w.duckdb"))
    job = defs.resolve_job_def("epsilon_grid")
    synthetic = [a for a in defs.resolve_asset_graph().assets_defs if a.keys]
    planned = grid_job_assets(dataset, synthetic)
    assert planned == set(job.asset_layer.selected_asset_keys)
    assert {"mst/population", "reference/independent_marginals", "synthetic/dp_histogram",
            "evaluation/privacy_risk"} <= {key.to_user_string() for key in planned}
    real = {k for k in defs.resolve_job_def("real_tables").asset_layer.selected_asset_keys}
    assert real and not real & planned


def test_schedule_fans_out_over_the_grid_and_makes_its_epsilons_partitions(definitions, tiny) -> None:
    defs = definitions  # the schedule reads the grid of the spec: no materialized data needed
    schedule = defs.get_schedule_def("weekly_epsilon_grid")
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=datetime(2026, 11, 23, 4),
            repository_def=defs.get_repository_def(),
        )
        requests = list(schedule.evaluate_tick(context).run_requests)
        partitions = instance.get_dynamic_partitions(epsilon_partitions(tiny).name)
    assert [r.partition_key for r in requests] == ["1", "4"]  # the tiny dataset's grid
    assert len({r.run_key for r in requests}) == 2
    assert sorted(partitions) == ["1", "4"]


def test_the_grid_sensor_adds_the_missing_epsilons_of_the_grid_and_nothing_else(definitions, tiny) -> None:
    sensor = definitions.get_sensor_def("epsilon_grid_partitions")
    name = epsilon_partitions(tiny).name
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(name, ["3"])  # an off-grid epsilon a user ran
        result = sensor(dg.build_sensor_context(instance=instance))
        (request,) = result.dynamic_partitions_requests
        assert request.partitions_def_name == name and sorted(request.partition_keys) == ["1", "4"]
        instance.add_dynamic_partitions(name, list(request.partition_keys))
        assert isinstance(sensor(dg.build_sensor_context(instance=instance)), dg.SkipReason)
        assert sorted(instance.get_dynamic_partitions(name)) == ["1", "3", "4"]


def test_a_step_that_fails_once_is_resumed_by_the_sensor_without_redoing_finished_work(
    grid, tiny_dataset_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    defs, instance = grid
    job = defs.resolve_job_def("epsilon_grid")
    real_histogram = evolution.dp_nn_histogram
    calls = []

    def fails_once_in_round_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("worker lost in round 2")
        return real_histogram(*args, **kwargs)

    monkeypatch.setattr(evolution, "dp_nn_histogram", fails_once_in_round_two)
    failed = job.execute_in_process(partition_key="1", instance=instance, raise_on_error=False)
    assert not failed.success and len(calls) == 2

    request = _resume_sensor(defs, instance, failed)
    assert isinstance(request, dg.RunRequest)
    assert request.partition_key == "1"
    missing = {k.to_user_string() for k in request.asset_selection}
    assert {"synthetic/dp_histogram", "synthetic/selected_population", "synthetic/benchmark_scores"} <= missing
    assert "synthetic/dp_prior" not in missing and "synthetic/candidate_pool" not in missing
    assert request.tags[RESUME_ATTEMPT_TAG] == "1"

    evaluation = {k for a in build_evaluation_assets(load_dataset(tiny_dataset_dir)) for k in a.keys}
    resumed = job.execute_in_process(
        partition_key=request.partition_key,
        # what the sensor asked for, but the evaluation stage (tests/defs/evaluation/): not needed here
        asset_selection=[k for k in request.asset_selection if k not in evaluation],
        instance=instance,
        tags=request.tags,
    )
    assert resumed.success
    assert len(calls) == 3  # only round 2 again: round 1 came from its checkpoint
    histogram = next(
        e for e in resumed.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "synthetic/dp_histogram"
    )
    assert histogram.materialization.metadata["rounds_resumed_from_checkpoint"].value == 1


def test_sensor_leaves_retries_to_the_daemon_when_it_will_retry(
    grid, tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    defs, _ = grid
    job = defs.resolve_job_def("epsilon_grid")
    monkeypatch.setattr(evolution, "dp_nn_histogram", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with dg.instance_for_test(overrides={"run_retries": {"enabled": True, "max_retries": 2}}) as instance:
        add_epsilon_partitions(instance, tiny, tiny.spec.privacy.epsilon_grid)
        failed = job.execute_in_process(partition_key="4", instance=instance, raise_on_error=False)
        assert isinstance(_resume_sensor(defs, instance, failed), dg.SkipReason)


def test_a_refusal_is_one_readable_failure_that_neither_the_daemon_nor_the_sensor_retries(
    tiny_copy: Path, real_half_database: Path, tmp_path: Path
) -> None:
    spec = tiny_copy / "dataset.yaml"
    spec.write_text(spec.read_text().replace("privacy:\n", "privacy:\n  budget_epsilon: 0.5\n", 1))
    dataset = load_dataset(tiny_copy)
    assert dataset.spec.privacy.budget_epsilon == 0.5
    defs = build_definitions(dataset, database=str(real_half_database), pe=PrivateEvolutionResource(**SMALL))
    job = defs.resolve_job_def("epsilon_grid")
    with dg.instance_for_test(overrides={"run_retries": {"enabled": True, "max_retries": 2}}) as instance:
        add_epsilon_partitions(instance, dataset, [1.0])
        refused = job.execute_in_process(partition_key="1", instance=instance, raise_on_error=False)
        (failure,) = [e for e in refused.all_events if e.is_step_failure]
        assert failure.step_key == "synthetic__release_plan"
        data = failure.event_specific_data
        assert data.user_failure_data.description.startswith("Refused before any release: ")
        assert "would be exceeded" in data.user_failure_data.description
        assert data.user_failure_data.metadata["refusal"].value == "BudgetExceeded"
        assert data.error.cause is None  # no chained traceback of the ledger's internals to read through
        tags = instance.get_run_by_id(refused.run_id).tags
        assert tags[REFUSED_TAG] == "BudgetExceeded" and tags["dagster/will_retry"] == "false"
        assert "refused" in _resume_sensor(defs, instance, refused).skip_message

        # a partition key that is not how synth_assets writes an epsilon is refused the same way
        instance.add_dynamic_partitions(epsilon_partitions(dataset).name, ["1.0"])
        odd = job.execute_in_process(partition_key="1.0", instance=instance, raise_on_error=False)
        (failure,) = [e for e in odd.all_events if e.is_step_failure]
        assert "partition '1'" in failure.event_specific_data.user_failure_data.description
        assert instance.get_run_by_id(odd.run_id).tags[REFUSED_TAG] == "NotAnEpsilon"

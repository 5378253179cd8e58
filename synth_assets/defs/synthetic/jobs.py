"""The jobs (the real half; the epsilon grid), the grid's schedule, the sensor that keeps the grid's
epsilons as partitions, and the sensor that resumes failed partitions."""

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)

from synth_assets.datasets.loading import Dataset
from synth_assets.defs.real.assets import RAW_GROUP, REAL_GROUP, REPORTING_GROUP
from synth_assets.defs.synthetic.assets import (
    REFERENCE_GROUP,
    REFUSED_TAG,
    SCORES_GROUP,
    SYNTHETIC_GROUP,
    add_epsilon_partitions,
    branch_group,
    epsilon_key,
    epsilon_partitions,
)
from synth_assets.defs.synthetic.checks import failed_blocking_checks

REAL_TABLES_JOB = "real_tables"
EPSILON_GRID_JOB = "epsilon_grid"
RESUMED_FROM_TAG = "synth_assets/resumed_from"
RESUME_ATTEMPT_TAG = "synth_assets/resume_attempt"
MAX_RESUMES = 3


def grid_groups(dataset: Dataset) -> tuple[str, ...]:
    """The asset groups of the epsilon-grid job: Private Evolution's stages, every other generator's
    branch the dataset lists, the scores and the evaluation."""
    branches = (branch_group(name) for name in dataset.spec.synthesis.generators)
    return tuple(dict.fromkeys((SYNTHETIC_GROUP, REFERENCE_GROUP, *branches, SCORES_GROUP)))


def grid_job_assets(dataset: Dataset, assets: list[dg.AssetsDefinition]) -> set[dg.AssetKey]:
    """The keys the epsilon-grid job materializes: what a run of it without a selection planned."""
    groups = set(grid_groups(dataset))
    return {key for a in assets for key in a.keys if a.group_names_by_key.get(key) in groups}


def build_real_tables_job() -> UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        REAL_TABLES_JOB,
        selection=dg.AssetSelection.groups(RAW_GROUP, REPORTING_GROUP, REAL_GROUP),
        description=(
            "The real half: the private sources, the reporting tables, the wide table split into training "
            "and holdout, and the workload's real answers. No DP release; every epsilon reads it."
        ),
    )


def build_epsilon_grid_job(dataset: Dataset) -> UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        EPSILON_GRID_JOB,
        selection=dg.AssetSelection.groups(*grid_groups(dataset)),
        description=(
            "One run per epsilon partition: every generator the dataset lists "
            f"({', '.join(dataset.spec.synthesis.generators)}), their scores and their evaluation. "
            "Every partition is a DP release: the grid spends the composition of all of them."
        ),
    )


def _grid_keys(dataset: Dataset) -> list[str]:
    return [epsilon_key(e) for e in dataset.spec.privacy.epsilon_grid]


def build_epsilon_grid_schedule(
    dataset: Dataset, job: UnresolvedAssetJobDefinition
) -> dg.ScheduleDefinition:
    keys = _grid_keys(dataset)

    @dg.schedule(
        name="weekly_epsilon_grid",
        job=job,
        cron_schedule="0 4 * * 1",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=f"Every Monday 04:00: one run per epsilon of the grid ({', '.join(keys)}).",
    )
    def weekly_epsilon_grid(context: dg.ScheduleEvaluationContext):
        add_epsilon_partitions(context.instance, dataset, dataset.spec.privacy.epsilon_grid)
        tick = context.scheduled_execution_time.strftime("%Y-%m-%d")
        for key in keys:
            yield dg.RunRequest(run_key=f"{tick}-eps-{key}", partition_key=key)

    return weekly_epsilon_grid


def build_grid_partitions_sensor(dataset: Dataset) -> dg.SensorDefinition:
    keys = _grid_keys(dataset)
    partitions = epsilon_partitions(dataset)

    @dg.sensor(
        name="epsilon_grid_partitions",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Keeps every epsilon of the dataset's grid ({', '.join(keys)}) a partition, so that the grid "
            "shows in the Partitions view and its schedule and backfills find it. Other epsilons are added "
            "by the runs that use them."
        ),
    )
    def epsilon_grid_partitions(context: dg.SensorEvaluationContext):
        missing = [key for key in keys if not context.instance.has_dynamic_partition(partitions.name, key)]
        if not missing:
            return dg.SkipReason(f"every epsilon of the grid ({', '.join(keys)}) is a partition")
        return dg.SensorResult(dynamic_partitions_requests=[partitions.build_add_request(missing)])

    return epsilon_grid_partitions


def planned_but_not_materialized(
    instance: dg.DagsterInstance, run: dg.DagsterRun, job_assets: set[dg.AssetKey]
) -> list[dg.AssetKey]:
    """Assets a run was asked to materialize that it did not."""
    planned = set(run.asset_selection or job_assets)
    records = instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION, limit=10_000
    ).records
    done = {r.event_log_entry.dagster_event.asset_key for r in records}
    return sorted(planned - done, key=lambda k: k.to_user_string())


def _daemon_will_retry(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """Whether the daemon retries the run: its ``dagster/will_retry`` tag, set when the run failed
    (the run is read again: the sensor's copy may predate the tags added while it ran)."""
    tags = (instance.get_run_by_id(run.run_id) or run).tags
    if "dagster/will_retry" in tags:
        return tags["dagster/will_retry"] == "true"
    if not instance.run_retries_enabled:
        return False
    attempt = int(tags.get("dagster/retry_number", "0"))
    maximum = int(tags.get("dagster/max_retries", instance.run_retries_max_retries))
    return attempt < maximum


def _refused(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """The refusal that stopped a run (the budget, an unsafe setting), if one did."""
    return (instance.get_run_by_id(run.run_id) or run).tags.get(REFUSED_TAG)


def build_resume_sensor(
    job: UnresolvedAssetJobDefinition, job_assets: set[dg.AssetKey]
) -> dg.SensorDefinition:
    @dg.run_failure_sensor(
        name="resume_failed_epsilon_runs",
        monitored_jobs=[job],
        request_job=job,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "When a run of the epsilon grid fails and the daemon will not retry it, requests the same "
            "partition for the assets it planned but did not materialize. Completed stages are reused "
            f"(checkpoints), and a partition is resumed at most {MAX_RESUMES} times."
        ),
    )
    def resume_failed_epsilon_runs(context: dg.RunFailureSensorContext):
        run = context.dagster_run
        if _daemon_will_retry(context.instance, run):
            return dg.SkipReason(f"run {run.run_id} will be retried by the daemon")
        blocked = failed_blocking_checks(context.instance, run.run_id)
        if blocked:
            return dg.SkipReason(f"run {run.run_id} stopped at failed blocking checks {blocked}: fix the data")
        refusal = _refused(context.instance, run)
        if refusal:
            return dg.SkipReason(f"run {run.run_id} was refused before any release ({refusal}): fix the cause")
        attempt = int(run.tags.get(RESUME_ATTEMPT_TAG, "0"))
        if attempt >= MAX_RESUMES:
            return dg.SkipReason(f"partition {run.tags.get('dagster/partition')} resumed {attempt} times")
        missing = planned_but_not_materialized(context.instance, run, job_assets)
        if not missing:
            return dg.SkipReason(f"run {run.run_id} materialized every planned asset")
        return dg.RunRequest(
            run_key=f"resume-{run.run_id}",
            partition_key=run.tags.get("dagster/partition"),
            asset_selection=missing,
            tags={RESUMED_FROM_TAG: run.run_id, RESUME_ATTEMPT_TAG: str(attempt + 1)},
        )

    return resume_failed_epsilon_runs

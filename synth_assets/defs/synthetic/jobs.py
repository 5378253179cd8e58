"""The epsilon-grid job, its schedule, and the sensor that resumes failed partitions."""

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)

from synth_assets.datasets.loading import Dataset
from synth_assets.defs.synthetic.assets import (
    REFERENCE_GROUP,
    SCORES_GROUP,
    SYNTHETIC_GROUP,
    epsilon_partitions,
)
from synth_assets.defs.synthetic.checks import failed_blocking_checks

EPSILON_GRID_JOB = "epsilon_grid"
RESUMED_FROM_TAG = "synth_assets/resumed_from"
RESUME_ATTEMPT_TAG = "synth_assets/resume_attempt"
MAX_RESUMES = 3


GRID_GROUPS = (SYNTHETIC_GROUP, REFERENCE_GROUP, SCORES_GROUP)


def grid_job_assets(assets: list[dg.AssetsDefinition]) -> set[dg.AssetKey]:
    """The keys the epsilon-grid job materializes: what a run of it without a selection planned."""
    return {key for a in assets for key in a.keys if a.group_names_by_key.get(key) in GRID_GROUPS}


def build_epsilon_grid_job() -> UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        EPSILON_GRID_JOB,
        selection=dg.AssetSelection.groups(*GRID_GROUPS),
        description=(
            "One Private Evolution run per epsilon of the dataset's grid, with its reference and scores. "
            "Every partition is a DP release: the grid spends the composition of all of them."
        ),
    )


def build_epsilon_grid_schedule(
    dataset: Dataset, job: UnresolvedAssetJobDefinition
) -> dg.ScheduleDefinition:
    keys = epsilon_partitions(dataset).get_partition_keys()

    @dg.schedule(
        name="weekly_epsilon_grid",
        job=job,
        cron_schedule="0 4 * * 1",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=f"Every Monday 04:00: one run per epsilon of the grid ({', '.join(keys)}).",
    )
    def weekly_epsilon_grid(context: dg.ScheduleEvaluationContext):
        tick = context.scheduled_execution_time.strftime("%Y-%m-%d")
        for key in keys:
            yield dg.RunRequest(run_key=f"{tick}-eps-{key}", partition_key=key)

    return weekly_epsilon_grid


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
    if run.tags.get("dagster/will_retry") == "true":
        return True
    if not instance.run_retries_enabled:
        return False
    attempt = int(run.tags.get("dagster/retry_number", "0"))
    maximum = int(run.tags.get("dagster/max_retries", instance.run_retries_max_retries))
    return attempt < maximum


REFUSALS = ("BudgetExceeded", "UnsafePrivacySetting")
"""Failures that happen before any release and that a retry would only repeat."""


def _refused(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """The refusal that stopped a run (the budget, an unsafe setting), if one did."""
    records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    for record in records:
        error = record.event_log_entry.dagster_event.event_specific_data.error
        while error is not None:
            if error.cls_name in REFUSALS:
                return error.cls_name
            error = error.cause
    return None


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

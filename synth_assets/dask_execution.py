"""The asset graph's jobs on a Dask cluster, through dagster-dask's executor (the ``dask`` extra).

:func:`synth_assets.defs.graph.build_definitions` runs every step of a run in one process (the
in-process executor). Here the same definitions get ``dagster_dask.dask_executor`` instead, pointed at
an existing scheduler: every step is a Dask task, executed inside a worker process, which rebuilds the
job from code (the dataset directory, never the private data) and reads its inputs from the warehouse
through the IO manager. Nothing but the run's description travels to the workers; the workers read and
write the private tables themselves, so the cluster must be the deployment's own, inside the perimeter
where the private data may be read.

What it needs:

* A persistent Dagster instance (``DAGSTER_HOME`` with a dagster.yaml, or ``dg.instance_for_test()`` with
  a directory): the workers record their steps' events in it.
* Workers that can import this package (same version) and reach the warehouse and the checkpoints at the
  same paths as the run, and the same environment (SYNTH_ASSETS_WAREHOUSE, the LLM endpoint, ...).
* The warehouse is one DuckDB file, which one process writes at a time: give the cluster ONE worker with
  ONE thread (``dask worker ADDRESS --nworkers 1 --nthreads 1``), so steps run one after the other.
  Steps that run in parallel on several workers need the warehouse elsewhere (Parquet on shared or
  object storage); that IO manager is not built yet.

In a deployment (``dagster dev`` / the daemon launch the run, its steps go to the cluster)::

    SYNTH_ASSETS_DASK_SCHEDULER=tcp://scheduler:8786 dagster dev -m synth_assets.dask_execution -a defs

From Python, :func:`execute_on_dask` runs a job of a dataset directory on a scheduler.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import dagster as dg

from synth_assets.datasets.loading import Dataset, configured_dataset_dir, load_dataset
from synth_assets.defs.graph import build_definitions
from synth_assets.resources import PrivateEvolutionResource

__all__ = [
    "DASK_SCHEDULER_ENV",
    "build_dask_definitions",
    "dask_executor_for",
    "dask_job",
    "execute_on_dask",
    "reconstructable_dask_job",
    "with_dask_executor",
]

DASK_SCHEDULER_ENV = "SYNTH_ASSETS_DASK_SCHEDULER"


class _StepArgs:
    """The arguments of one step's Dask task, held in a plain object. dask's ``client.submit`` walks
    tuple arguments looking for futures; Dagster's run (a tuple) holds, for a run of a dynamic partition,
    a ``@record`` that refuses iteration, so upstream's executor fails every partitioned run."""

    def __init__(self, *args):
        self.args = args


def _run_step_on_worker(dependencies, step: _StepArgs):
    from dagster_dask.executor import query_on_dask_worker

    return query_on_dask_worker(dependencies, *step.args)


def _dask_executor_class():
    from dagster._core.errors import raise_execution_interrupts
    from dagster._core.events import DagsterEvent
    from dagster._core.execution.context.system import PlanOrchestrationContext
    from dagster._core.execution.plan.plan import ExecutionPlan
    from dagster._utils import iterate_with_context
    from dagster_dask.executor import DaskExecutor, get_dask_resource_requirements
    from distributed import Client, as_completed

    class ExistingClusterDaskExecutor(DaskExecutor):
        """dagster-dask's executor on an existing scheduler, with two fixes: the step's arguments are
        wrapped (see :class:`_StepArgs`), and a task's key holds the run id, so that two runs of one job
        on the same cluster (two epsilon partitions) do not share task keys (dagster-io/dagster#21418).
        Everything a step does on the worker is upstream's ``query_on_dask_worker``."""

        def execute(self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan):
            if not plan_context.instance.is_persistent:
                raise ValueError("Dask execution requires a persistent DagsterInstance")
            run = plan_context.dagster_run
            futures, by_step = [], {}
            with Client(self.cluster_configuration["address"]) as client:
                for level in execution_plan.get_steps_to_execute_by_level():
                    for step in level:
                        dependencies = [
                            by_step[key] for step_input in step.step_inputs for key in step_input.dependency_keys
                        ]
                        args = _StepArgs(
                            plan_context.reconstructable_job,
                            run,
                            plan_context.run_config,
                            [step.key],
                            plan_context.instance.get_ref(),
                            execution_plan.known_state,
                        )
                        future = client.submit(
                            _run_step_on_worker,
                            dependencies,
                            args,
                            key=f"{plan_context.job_name}.{step.key}.{run.run_id}",
                            resources=get_dask_resource_requirements(step.tags),
                            pure=False,
                        )
                        futures.append(future)
                        by_step[step.key] = future
                results = as_completed(futures, with_results=True)
                for _future, events in iterate_with_context(raise_execution_interrupts, results):
                    for event in events:
                        if not isinstance(event, DagsterEvent):
                            raise TypeError(f"a Dask step returned {type(event).__name__}, not a DagsterEvent")
                        yield event

    return ExistingClusterDaskExecutor


def dask_executor_for(scheduler_address: str) -> dg.ExecutorDefinition:
    """dagster-dask's executor (with the fixes of ``ExistingClusterDaskExecutor``), connected to the
    scheduler at ``scheduler_address`` (tcp://host:port)."""
    from dagster import multiple_process_executor_requirements

    if not scheduler_address:
        raise ValueError("a Dask scheduler address is required (e.g. tcp://scheduler:8786)")
    executor_class = _dask_executor_class()

    @dg.executor(
        name="dask_existing_cluster",
        requirements=multiple_process_executor_requirements(),
        config_schema={"cluster": {"existing": {"address": dg.StringSource}}},
    )
    def dask_existing_cluster(init_context):
        ((kind, configuration),) = init_context.executor_config["cluster"].items()
        return executor_class(kind, configuration)

    return dask_existing_cluster.configured(
        {"cluster": {"existing": {"address": scheduler_address}}}, name="dask_existing_cluster"
    )


def with_dask_executor(defs: dg.Definitions, scheduler_address: str) -> dg.Definitions:
    """The same definitions (assets, checks, jobs, schedules, sensors, resources), with every job
    executed on the Dask scheduler at ``scheduler_address``."""
    return dg.Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        jobs=defs.jobs,
        schedules=defs.schedules,
        sensors=defs.sensors,
        resources=defs.resources,
        loggers=defs.loggers,
        executor=dask_executor_for(scheduler_address),
    )


def build_dask_definitions(
    dataset: Dataset | None = None, *, scheduler_address: str | None = None, **resource_options
) -> dg.Definitions:
    """:func:`build_definitions` with the Dask executor; the address defaults to
    $SYNTH_ASSETS_DASK_SCHEDULER."""
    address = scheduler_address or os.environ.get(DASK_SCHEDULER_ENV, "").strip()
    if not address:
        raise ValueError(
            f"no Dask scheduler: pass scheduler_address or set {DASK_SCHEDULER_ENV} (e.g. tcp://scheduler:8786)"
        )
    return with_dask_executor(build_definitions(dataset, **resource_options), address)


def dask_job(
    job_name: str,
    dataset_dir: str,
    scheduler_address: str,
    database: str | None = None,
    pe: Mapping[str, object] | None = None,
    entity_fraction: float = 1.0,
) -> dg.JobDefinition:
    """The job ``job_name`` (``real_tables`` or ``epsilon_grid``) of the dataset at ``dataset_dir``, on
    Dask. Every argument is plain data, so that a worker can rebuild the job from them
    (:func:`reconstructable_dask_job`); ``pe`` holds PrivateEvolutionResource's settings."""
    defs = build_dask_definitions(
        load_dataset(dataset_dir),
        scheduler_address=scheduler_address,
        database=database,
        pe=PrivateEvolutionResource(**dict(pe)) if pe else None,
        entity_fraction=entity_fraction,
    )
    return defs.resolve_job_def(job_name)


def reconstructable_dask_job(
    job_name: str,
    dataset_dir: str | Path,
    scheduler_address: str,
    *,
    database: str | Path | None = None,
    pe: Mapping[str, object] | None = None,
    entity_fraction: float = 1.0,
):
    """:func:`dask_job` as a ReconstructableJob: what the Dask executor sends to its workers, which call
    :func:`dask_job` again with the same (JSON) arguments."""
    return dg.build_reconstructable_job(
        __name__,
        dask_job.__name__,
        reconstructable_kwargs={
            "job_name": job_name,
            "dataset_dir": str(Path(dataset_dir).resolve()),
            "scheduler_address": scheduler_address,
            "database": str(database) if database else None,
            "pe": dict(pe) if pe else None,
            "entity_fraction": float(entity_fraction),
        },
    )


def execute_on_dask(
    job_name: str,
    dataset_dir: str | Path,
    scheduler_address: str,
    instance: dg.DagsterInstance,
    *,
    partition_key: str | None = None,
    asset_selection: Sequence[dg.AssetKey] | None = None,
    database: str | Path | None = None,
    pe: Mapping[str, object] | None = None,
    entity_fraction: float = 1.0,
    tags: Mapping[str, str] | None = None,
    raise_on_error: bool = False,
) -> dg.JobExecutionResult:
    """Run a job of a dataset directory with its steps on the Dask scheduler; ``instance`` must be
    persistent. ``partition_key``: the epsilon of an ``epsilon_grid`` run (already a partition)."""
    job = reconstructable_dask_job(
        job_name, dataset_dir, scheduler_address, database=database, pe=pe, entity_fraction=entity_fraction
    )
    run_tags = dict(tags or {})
    if partition_key is not None:
        run_tags["dagster/partition"] = partition_key
    return dg.execute_job(
        job, instance, tags=run_tags, asset_selection=list(asset_selection) if asset_selection else None,
        raise_on_error=raise_on_error,
    )


def __getattr__(name: str):
    """``defs``: the configured dataset's definitions on $SYNTH_ASSETS_DASK_SCHEDULER (built on first
    use, so that importing this module needs no scheduler)."""
    if name == "defs":
        return build_dask_definitions(load_dataset(configured_dataset_dir()))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

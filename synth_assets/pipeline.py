"""Materialize the whole graph in-process: the real half once, then the synthetic half per epsilon.

This is what ``synth-assets run`` does; it returns one summary per epsilon (the JSON of ``--json``).
The runs are those of the named jobs ``real_tables`` and ``epsilon_grid``, of the dataset's code location
when the deployment lists it (see :func:`synth_assets.locations.definitions_for`), so that the UI of the
same instance shows them, their partitions and their materializations.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg
import duckdb
import polars as pl

from synth_assets.datasets.loading import Dataset, DatasetError
from synth_assets.datasets.spec import SPEC_FILENAME
from synth_assets.defs.evaluation.assets import COMPARISON_KEY, PRIVACY_RISK_KEY
from synth_assets.defs.real.assets import wide_key
from synth_assets.defs.synthetic.assets import (
    DP_HISTOGRAM_KEY,
    DP_PRIOR_KEY,
    POPULATION_KEY,
    RELEASE_PLAN_KEY,
    SCORES_KEY,
    add_epsilon_partitions,
    branch_keys,
    epsilon_key,
    generators_of_run,
)
from synth_assets.defs.synthetic.jobs import EPSILON_GRID_JOB, REAL_TABLES_JOB
from synth_assets.io_managers import read_frame, read_frames
from synth_assets.locations import definitions_for
from synth_assets.privacy.ledger import PrivacyLedger
from synth_assets.privacy.releases import check_settings, precheck_budget
from synth_assets.resources import PrivateEvolutionResource


class PipelineError(RuntimeError):
    """A step failed; the message names the step and the cause."""


def console_logs(verbose: bool) -> dict:
    """Run config for Dagster's console log: every event with --verbose, else only what is critical
    (a failure is reported once, by the command, with the step and the cause)."""
    return {"loggers": {"console": {"config": {"log_level": "DEBUG" if verbose else "CRITICAL"}}}}


def raise_on_failure(result: dg.ExecuteInProcessResult) -> None:
    if result.success:
        return
    failure = next(e for e in result.all_events if e.is_step_failure)
    data = failure.event_specific_data
    if data.user_failure_data is not None and data.user_failure_data.description:
        message = data.user_failure_data.description  # a dg.Failure: its description says it all
    else:
        message = (data.error.cause or data.error).message.strip()
    raise PipelineError(f"step {failure.step_key} failed: {message}")


def run_job(
    definitions: dg.Definitions,
    job_name: str,
    instance: dg.DagsterInstance,
    *,
    selection: Sequence[dg.AssetKey] | None = None,
    partition_key: str | None = None,
    verbose: bool = False,
) -> dg.ExecuteInProcessResult:
    """Execute a named job of ``definitions`` in this process, as a run of that job on ``instance``
    (what the UI shows), with the failure of a step raised as a :class:`PipelineError`.

    Unlike ``JobDefinition.execute_in_process``, the run keeps no step's output in memory (the result
    has events, not values: read the tables from the warehouse), as a run launched from the UI does: with
    a million entities the outputs it would keep come to gigabytes."""
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.execution.execute_in_process import core_execute_in_process, merge_run_tags

    job = definitions.resolve_job_def(job_name)
    assets = frozenset(selection or [])
    config = console_logs(verbose)
    subset = job.as_ephemeral_job(resource_defs={}, input_values={}, asset_selection=list(assets))
    result = core_execute_in_process(
        job=InMemoryJob(job_def=subset), run_config=config, instance=instance, raise_on_error=False,
        output_capturing_enabled=False,
        run_tags=merge_run_tags(job_def=job, partition_key=partition_key, tags=None, asset_selection=list(assets),
                                instance=instance, run_config=config),  # checks the partition key too
        asset_selection=assets,
    )
    raise_on_failure(result)
    return result


def _metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict:
    """The metadata of ``key``'s materialization, under a code location's prefix or not."""
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key.path[-2:] == key.path)
    return {k: v.value for k, v in event.materialization.metadata.items()}


@dataclass
class PipelineRun:
    dataset: Dataset
    summaries: list[dict]
    real_seconds: float
    comparison: dict | None  # None: the run skipped the evaluation


def run_pipeline(
    dataset: Dataset,
    epsilons: Sequence[float],
    *,
    instance: dg.DagsterInstance | None = None,
    entity_fraction: float = 1.0,
    pe: PrivateEvolutionResource | None = None,
    database: str | None = None,
    generators: Sequence[str] | None = None,
    verbose: bool = False,
    evaluation: bool = True,
) -> PipelineRun:
    """Materialize the real half, then every requested epsilon partition of the synthetic half: the
    branches of ``generators`` (default: every generator the dataset lists), their scores and, unless
    ``evaluation`` is False, their evaluation against the holdout and the page comparing every release."""
    definitions, prefix = definitions_for(dataset, entity_fraction=entity_fraction, pe=pe, database=database)
    resources = definitions.resources
    branches = branch_keys(dataset)
    chosen = list(generators) if generators else list(branches)
    unknown = [name for name in chosen if name not in branches]
    if unknown:
        raise DatasetError(
            f"{dataset.directory / SPEC_FILENAME}: generators {unknown} are not in synthesis.generators "
            f"({', '.join(branches)}): add them there, or choose among those"
        )
    settings, llm = resources["pe"], resources["llm"]
    planned = []
    for epsilon in epsilons:  # what can be refused without the data is refused before it is read
        plans = check_settings(
            dataset, list(generators_of_run(dataset, settings, llm, chosen).values()),
            epsilon=epsilon, delta=settings.delta, allow_negligible_noise=settings.allow_negligible_noise,
        )
        planned.append((epsilon, epsilon_key(epsilon), plans))
    precheck_budget(dataset, planned, delta=settings.delta,
                    ledger=PrivacyLedger(resources["duckdb"].database))
    instance = instance or dg.DagsterInstance.ephemeral()
    add_epsilon_partitions(instance, dataset, [*dataset.spec.privacy.epsilon_grid, *epsilons])
    synthetic_keys = [RELEASE_PLAN_KEY, *(key for name in chosen for key in branches[name]), SCORES_KEY,
                      *([PRIVACY_RISK_KEY] if evaluation else [])]
    if prefix:
        synthetic_keys = [key.with_prefix(prefix) for key in synthetic_keys]

    started = time.perf_counter()
    result = run_job(definitions, REAL_TABLES_JOB, instance, verbose=verbose)
    real_seconds = time.perf_counter() - started
    n_real = _metadata(result, wide_key(dataset))["entities"]

    summaries = []
    for epsilon in epsilons:
        started = time.perf_counter()
        result = run_job(definitions, EPSILON_GRID_JOB, instance, selection=synthetic_keys,
                         partition_key=epsilon_key(epsilon), verbose=verbose)
        seconds = time.perf_counter() - started
        partition = epsilon_key(epsilon)
        with duckdb.connect(str(resources["duckdb"].database), read_only=True) as connection:
            scores = read_frames(connection, *SCORES_KEY.path, partition)
            risk = read_frame(connection, *PRIVACY_RISK_KEY.path, partition) if evaluation else None
        summary = _summary(dataset, epsilon, n_real, seconds, scores, result)
        if evaluation:
            summary["evaluation"] = [
                {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
                for row in risk.drop("report_json").iter_rows(named=True)
            ]
        summaries.append(summary)
    if not evaluation:
        return PipelineRun(dataset=dataset, summaries=summaries, real_seconds=real_seconds, comparison=None)
    comparison_key = COMPARISON_KEY.with_prefix(prefix) if prefix else COMPARISON_KEY
    result = run_job(definitions, EPSILON_GRID_JOB, instance, selection=[comparison_key], verbose=verbose)
    comparison = _metadata(result, COMPARISON_KEY)
    return PipelineRun(dataset=dataset, summaries=summaries, real_seconds=real_seconds,
                       comparison={"page": comparison["page"], "recommendations": comparison["recommendations"]})


def _number(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _summary(
    dataset: Dataset,
    epsilon: float,
    n_real: int,
    seconds: float,
    scores: dict[str, pl.DataFrame],
    result: dg.ExecuteInProcessResult,
) -> dict:
    plan = _metadata(result, RELEASE_PLAN_KEY)
    board = scores["summary"]
    summary = {
        "dataset": dataset.name,
        "epsilon": epsilon,
        "delta": plan["delta"],
        "n_real": n_real,
        "leaderboard": [
            {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
            for row in board.iter_rows(named=True)
        ],
        "privacy": {
            "partition_epsilon_gdp": plan["partition_epsilon_gdp"],
            "partition_epsilon_sum": plan["partition_epsilon_sum"],
            "new_releases": plan["new_releases"],
            "charged_now_epsilon_gdp": plan["charged_now_epsilon_gdp"],
            "dataset_spent_epsilon_gdp": plan["ledger_spent_epsilon_gdp"],
            "dataset_spent_epsilon_sum": plan["ledger_spent_epsilon_sum"],
            "dataset_budget_epsilon": plan["ledger_budget_epsilon"],
            "dataset_remaining_epsilon": plan["ledger_remaining_epsilon"],
        },
        "seconds": round(seconds, 2),
    }
    by_generator = {row["generator"]: row for row in board.iter_rows(named=True)}
    if "private_evolution" in by_generator:
        summary.update(_pe_summary(result, scores, by_generator["private_evolution"]))
    if "independent_marginals" in by_generator:
        reference = by_generator["independent_marginals"]
        summary["baseline"] = {
            "method": "independent_marginals",
            **{k: round(reference[k], 4) for k in ("pass_rate", "metric_pass_rate", "tvd_1way", "tvd_2way", "tvd_3way")},
        }
    return summary


def _pe_summary(result: dg.ExecuteInProcessResult, scores: dict[str, pl.DataFrame], row: dict) -> dict:
    histogram = _metadata(result, DP_HISTOGRAM_KEY)
    prior = _metadata(result, DP_PRIOR_KEY)
    population = _metadata(result, POPULATION_KEY)
    queries = []
    pe_rows = scores["queries"].filter(pl.col("generator") == "private_evolution")
    for name in dict.fromkeys(pe_rows["query"].to_list()):
        rows = pe_rows.filter(pl.col("query") == name)
        first = rows.row(0, named=True)
        queries.append(
            {
                "name": name,
                "type": first["type"],
                "passed": first["passed"],
                "metrics": {r["metric"]: _number(r["value"]) for r in rows.iter_rows(named=True) if r["metric"]},
                "threshold": first["threshold"],
                "direction": first["direction"],
                **({"error": first["error"]} if first["error"] else {}),
            }
        )
    return {
        "epsilon_composed": histogram["epsilon_composed"],
        "sigma": histogram["sigma"],
        "prior_sigma": prior.get("sigma"),
        "T": histogram["T"],
        "H": histogram["H"],
        "seed": histogram["seed"],
        "candidates": histogram["candidates"],
        "n_synthetic": population["rows"],
        "pass_rate": round(row["pass_rate"], 4),
        "metric_pass_rate": round(row["metric_pass_rate"], 4),
        "tvd_1way": round(row["tvd_1way"], 4),
        "tvd_2way": round(row["tvd_2way"], 4),
        "tvd_3way": round(row["tvd_3way"], 4),
        "queries": queries,
        "releases": histogram["releases"] if prior.get("histograms", 0) == 0
        else [prior["release"], *histogram["releases"]],
    }

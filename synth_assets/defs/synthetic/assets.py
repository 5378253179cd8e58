"""The synthetic half, partitioned by epsilon: the release plan, one branch per generator of the
dataset (``synthesis.generators``), and the scores of all of them.

- Private Evolution's branch shows its stages: DP prior, candidate pool, DP histogram, selected
  population, decomposed tables (group ``synthetic``).
- Every other generator is a branch of two assets: its population (fit and sample) and its decomposed
  tables (group named after it; the independent-marginals reference keeps the key
  ``reference/independent_marginals``).

Each partition is one (epsilon, delta)-DP run of each generator. ``release_plan`` plans the releases of
every generator the run materializes, refuses unsafe settings and charges the ledger for all of them at
once, before any mechanism runs (synth_assets.privacy.releases). The assets that read private data first
check that their releases are recorded; every other synthetic asset is post-processing.
``benchmark_scores`` scores every generator of the partition with the same code, as a leaderboard: it
compares with the real data, for the data owner, and is not a DP release.
"""

import math
import time
from typing import NoReturn

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from synth_assets.benchmark.compare import scores_markdown
from synth_assets.datasets.loading import Dataset
from synth_assets.defs.real.assets import BENCHMARK_ANSWERS_KEY, TRAINING_KEY, wide_key
from synth_assets.evaluation.leaderboard import leaderboard, leaderboard_markdown, score_generator
from synth_assets.evaluation.plots import (
    epsilon_curve_png,
    marginals_png,
    markdown_image,
)
from synth_assets.evaluation.report import evaluation_rows
from synth_assets.generators.base import Generator, entity_rows
from synth_assets.generators.private_evolution import PEModel, PrivateEvolution, generation_metadata
from synth_assets.generators.registry import REFERENCE, make_generator
from synth_assets.io_managers import PARTITION_COLUMN, read_frame
from synth_assets.pe.encoding import build_encoder
from synth_assets.pe.evolution import CheckpointStore, Release
from synth_assets.pe.generators import validate_candidates
from synth_assets.pe.llm.resource import LLMResource
from synth_assets.pe.marginal_prior import MarginalPrior
from synth_assets.pe.priors import Prior, prior_from_frame
from synth_assets.privacy.accounting import UnsafePrivacySetting
from synth_assets.privacy.ledger import BudgetExceeded, PrivacyLedger
from synth_assets.privacy.releases import (
    PartitionPlan,
    charge_partition,
    plan_partition,
    require_charged,
)
from synth_assets.resources import PrivateEvolutionResource
from synth_assets.tables.decompose import decompose

SYNTHETIC_GROUP = "synthetic"
REFERENCE_GROUP = "reference"
SCORES_GROUP = "scores"

RELEASE_PLAN_KEY = dg.AssetKey(["synthetic", "release_plan"])
DP_PRIOR_KEY = dg.AssetKey(["synthetic", "dp_prior"])
CANDIDATE_POOL_KEY = dg.AssetKey(["synthetic", "candidate_pool"])
DP_HISTOGRAM_KEY = dg.AssetKey(["synthetic", "dp_histogram"])
POPULATION_KEY = dg.AssetKey(["synthetic", "selected_population"])
DECOMPOSED_KEY = dg.AssetKey(["synthetic", "decomposed_tables"])
REFERENCE_KEY = dg.AssetKey(["reference", "independent_marginals"])
SCORES_KEY = dg.AssetKey(["synthetic", "benchmark_scores"])

CANDIDATES = "candidates"
PLOTTED_ROWS = 200_000
"""Rows of each table the marginals picture of the scores is drawn from, at most (a seeded sample)."""
VOTES = "votes"


def epsilon_key(epsilon: float) -> str:
    return f"{epsilon:g}"


def epsilon_partitions(dataset: Dataset) -> dg.DynamicPartitionsDefinition:
    """One partition per epsilon, kept by the Dagster instance: the dataset's grid (added by the
    ``epsilon_grid_partitions`` sensor and by every run of the CLI) and any other epsilon a user runs,
    from the CLI or with "Add partition" in the UI. Each dataset has its own set."""
    return dg.DynamicPartitionsDefinition(name=f"{dataset.name.replace('-', '_')}_epsilon")


def add_epsilon_partitions(instance: dg.DagsterInstance, dataset: Dataset, epsilons) -> list[str]:
    """Make each epsilon a partition of ``dataset`` on ``instance``; the keys that were new."""
    name = epsilon_partitions(dataset).name
    existing = set(instance.get_dynamic_partitions(name))
    new = [key for key in dict.fromkeys(epsilon_key(e) for e in epsilons) if key not in existing]
    if new:
        instance.add_dynamic_partitions(name, new)
    return new


class NotAnEpsilon(ValueError):
    """A partition key that is not an epsilon as synth_assets writes it."""


def epsilon_of_partition(key: str) -> float:
    """The epsilon a partition key stands for: a positive finite number written as ``epsilon_key``
    writes it ('0.5', '1', '4'), so that one epsilon is one partition and one ledger entry."""
    try:
        value = float(key)
    except ValueError:
        raise NotAnEpsilon(f"partition {key!r} is not an epsilon: name a partition by a positive number") from None
    if not (math.isfinite(value) and value > 0):
        raise NotAnEpsilon(f"partition {key!r} is not a positive finite epsilon: delete it and add one that is")
    if epsilon_key(value) != key:
        raise NotAnEpsilon(
            f"partition {key!r} stands for epsilon {value:g}, which is the partition {epsilon_key(value)!r}: "
            f"delete {key!r} and run {epsilon_key(value)!r}, so that one epsilon is charged once"
        )
    return value


def _epsilon(context: dg.AssetExecutionContext) -> float:
    return epsilon_of_partition(context.partition_key)


REFUSED_TAG = "synth_assets/refused"
"""Run tag: the refusal (budget, unsafe setting, not an epsilon) that stopped a run before any release."""


def refuse(context: dg.AssetExecutionContext, refusal: Exception) -> NoReturn:
    """Stop the run with one readable failure: the reason, without a traceback to read through, and a
    run that neither the daemon nor the resume sensor retries, since a retry would only repeat it."""
    context.instance.add_run_tags(
        context.run.run_id,
        {REFUSED_TAG: type(refusal).__name__, "dagster/retry_on_asset_or_op_failure": "false"},
    )
    raise dg.Failure(
        description=f"Refused before any release: {refusal}",
        metadata={"refusal": type(refusal).__name__, "partition": context.partition_key},
        allow_retries=False,
    ) from None


def _prior_or_none(frame: pl.DataFrame) -> Prior | None:
    return prior_from_frame(frame)


def _release_metadata(release: Release) -> dict:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in release.to_dict().items()}


def _other_partitions_summary(duckdb: DuckDBResource, partition: str) -> pl.DataFrame:
    """Summaries of the other epsilons already in the warehouse, for the quality-by-epsilon plot."""
    columns = {"epsilon": pl.Float64, "generator": pl.Utf8, "pass_rate": pl.Float64,
               "tvd_1way": pl.Float64, "tvd_2way": pl.Float64}
    with duckdb.get_connection() as connection:
        try:
            frame = read_frame(connection, "synthetic", "benchmark_scores__summary")
        except FileNotFoundError:
            return pl.DataFrame(schema=columns)
    return (
        frame.filter(pl.col(PARTITION_COLUMN) != partition)
        .with_columns(pl.col(PARTITION_COLUMN).cast(pl.Float64).alias("epsilon"))
        .select(list(columns))
    )


def population_key(generator: str) -> dg.AssetKey:
    """The synthetic wide table of a generator's branch."""
    if generator == PrivateEvolution.name:
        return POPULATION_KEY
    if generator == REFERENCE:
        return REFERENCE_KEY
    return dg.AssetKey([generator, "population"])


def decomposed_key(generator: str) -> dg.AssetKey:
    if generator == PrivateEvolution.name:
        return DECOMPOSED_KEY
    return dg.AssetKey([branch_group(generator), "decomposed_tables"])


def branch_group(generator: str) -> str:
    return {PrivateEvolution.name: SYNTHETIC_GROUP, REFERENCE: REFERENCE_GROUP}.get(generator, generator)


def mechanism_keys(generator: str) -> set[dg.AssetKey]:
    """The assets of a branch that read private data (and run its mechanisms)."""
    if generator == PrivateEvolution.name:
        return {DP_PRIOR_KEY, DP_HISTOGRAM_KEY}
    return {population_key(generator)}


def branch_keys(dataset: Dataset) -> dict[str, list[dg.AssetKey]]:
    """Every generator's branch, by name (what ``synth-assets run --generator`` materializes)."""
    pe_keys = [DP_PRIOR_KEY, CANDIDATE_POOL_KEY, DP_HISTOGRAM_KEY, POPULATION_KEY, DECOMPOSED_KEY]
    return {
        name: pe_keys if name == PrivateEvolution.name else [population_key(name), decomposed_key(name)]
        for name in dataset.spec.synthesis.generators
    }


def generators_of_run(
    dataset: Dataset, pe: PrivateEvolutionResource, llm: LLMResource, names: list[str] | None = None
) -> dict[str, Generator]:
    """The generators of a partition, all with the run's seed: Private Evolution (its candidates from
    the LLM when one is configured) and the others the dataset lists."""
    config = pe.config()
    return {
        name: make_generator(name, seed=config.seed, pe=config, candidates=llm.candidate_api)
        for name in (names if names is not None else dataset.spec.synthesis.generators)
    }


def generators_in_run(context: dg.AssetExecutionContext, dataset: Dataset) -> list[str]:
    """The dataset's generators whose mechanisms this run materializes (all of them when the run
    selects none, e.g. the release plan alone)."""
    configured = dataset.spec.synthesis.generators
    # keys without a location's dataset prefix (synth_assets.locations), as mechanism_keys names them
    selection = {dg.AssetKey(key.path[-2:]) for key in
                 (context.run.asset_selection or context.job_def.asset_layer.selected_asset_keys)}
    chosen = [name for name in configured if mechanism_keys(name) & selection]
    return chosen or list(configured)


class _Partition:
    """What every DP asset of a partition needs: its plan, the ledger and the generators."""

    def __init__(
        self,
        context: dg.AssetExecutionContext,
        dataset: Dataset,
        pe: PrivateEvolutionResource,
        llm: LLMResource,
        duckdb: DuckDBResource,
        wide_table: pl.DataFrame,
        names: list[str],
    ):
        self.generators = generators_of_run(dataset, pe, llm, names)
        self.plan: PartitionPlan = plan_partition(
            dataset, list(self.generators.values()), wide_table,
            epsilon=_epsilon(context), delta=pe.delta, run_id=context.run.run_id,
            partition_key=context.partition_key, allow_negligible_noise=pe.allow_negligible_noise,
        )
        self.ledger = PrivacyLedger(duckdb.database)
        self.checkpoint_root = pe.checkpoints()

    def store(self, generator: str) -> CheckpointStore:
        return CheckpointStore(self.plan.checkpoints(self.checkpoint_root, generator))

    def charged(self, generator: str) -> None:
        require_charged(self.ledger, self.plan, generator)


def read_partition(duckdb: DuckDBResource, key: dg.AssetKey, partition: str) -> pl.DataFrame | None:
    """A branch's table for one partition, or None if that partition was not materialized."""
    schema, table = key.path[-2], key.path[-1]
    with duckdb.get_connection() as connection:
        try:
            frame = read_frame(connection, schema, table, partition)
        except FileNotFoundError:
            return None
    return frame if frame.height else None


def build_synthetic_assets(dataset: Dataset) -> list[dg.AssetsDefinition]:
    partitions = epsilon_partitions(dataset)
    wide = wide_key(dataset)
    kinds = {"duckdb", "polars", "numpy"}
    common = {"partitions_def": partitions, "kinds": kinds}
    private_evolution = PrivateEvolution.name
    encoder = build_encoder(dataset)

    @dg.asset(
        key=RELEASE_PLAN_KEY,
        ins={"wide_table": dg.AssetIn(key=TRAINING_KEY)},
        group_name=SYNTHETIC_GROUP,
        description=(
            "Every DP release of this partition (each generator the run materializes, the reference "
            "included), planned and charged to the privacy ledger together, before any mechanism runs. "
            "Unsafe settings and an exceeded budget are refused here, and then nothing is released."
        ),
        **common,
    )
    def release_plan(
        context: dg.AssetExecutionContext,
        pe: PrivateEvolutionResource,
        llm: LLMResource,
        duckdb: DuckDBResource,
        wide_table: pl.DataFrame,
    ) -> pl.DataFrame:
        try:
            partition = _Partition(context, dataset, pe, llm, duckdb, wide_table, generators_in_run(context, dataset))
        except (NotAnEpsilon, UnsafePrivacySetting) as refusal:
            refuse(context, refusal)
        for generator in partition.generators.values():
            generator.check_ready(dataset)
        recorded_before = {r.identity for r in partition.plan.releases if partition.ledger.is_recorded(r)}
        try:
            check = charge_partition(partition.plan, partition.ledger)
        except BudgetExceeded as refusal:
            refuse(context, refusal)
        context.log.info(check.explain())
        spent = partition.ledger.spent(dataset.name, check.delta)
        budget = dataset.spec.privacy.budget_epsilon
        frame = partition.plan.to_frame(recorded_before)
        context.add_output_metadata(
            {
                "epsilon": partition.plan.epsilon,
                "delta": partition.plan.delta,
                "releases": frame.height,
                "new_releases": frame.height - len(recorded_before),
                "partition_epsilon_gdp": round(partition.plan.spends, 6),
                "charged_now_epsilon_gdp": round(check.planned_epsilon, 6),
                "partition_epsilon_sum": round(float(frame["release_epsilon"].sum()), 6),
                "ledger_spent_epsilon_gdp": round(spent.epsilon_gdp, 6),
                "ledger_spent_epsilon_sum": round(spent.epsilon_sum, 6),
                "ledger_budget_epsilon": budget,
                "ledger_remaining_epsilon": None if budget is None else round(budget - spent.epsilon_gdp, 6),
            }
        )
        return frame

    @dg.asset(
        key=DP_PRIOR_KEY,
        ins={"wide_table": dg.AssetIn(key=TRAINING_KEY)},
        deps=[RELEASE_PLAN_KEY],
        group_name=SYNTHETIC_GROUP,
        description=(
            "DP releases of Private Evolution's prior: by default an MST graphical model (noisy 1-way "
            "marginals, a tree of pairs chosen by the exponential mechanism, the noisy pair marginals), "
            "stored as its arrays; with prior 'marginals', noisy 1-way marginals and the noisy share of "
            "entities present in each reporting table. Empty when prior_share is 0."
        ),
        **common,
    )
    def dp_prior(
        context: dg.AssetExecutionContext,
        pe: PrivateEvolutionResource,
        llm: LLMResource,
        duckdb: DuckDBResource,
        wide_table: pl.DataFrame,
    ) -> pl.DataFrame:
        partition = _Partition(context, dataset, pe, llm, duckdb, wide_table, [private_evolution])
        plan = partition.plan.generators[private_evolution]
        config = pe.config()
        if not partition.generators[private_evolution].has_prior(plan):
            context.add_output_metadata({"epsilon": plan.epsilon, "prior_share": 0.0, "histograms": 0})
            return MarginalPrior(columns={}, presence={}, sigma=1.0, seed=config.seed).to_frame()
        partition.charged(private_evolution)
        started = time.perf_counter()
        prior, release, resumed = partition.generators[private_evolution].release_prior(
            dataset, wide_table, plan, partition.store(private_evolution)
        )
        context.add_output_metadata(
            {
                "epsilon": plan.epsilon,
                "delta": plan.delta,
                "prior": config.prior,
                "prior_share": config.prior_share,
                "sigma": round(release.sigma, 4),
                "histograms": prior.histograms,
                "seed": config.seed,
                "resumed_from_checkpoint": resumed,
                "seconds": round(time.perf_counter() - started, 3),
                "release": dg.MetadataValue.json(_release_metadata(release)),
            }
        )
        return prior.to_frame()

    @dg.asset(
        key=CANDIDATE_POOL_KEY,
        ins={"prior": dg.AssetIn(key=DP_PRIOR_KEY)},
        group_name=SYNTHETIC_GROUP,
        description=(
            "The first candidate pool, from the candidate API's random API: drawn from public knowledge "
            "and the DP prior only. No private record is involved."
        ),
        **common,
    )
    def candidate_pool(
        context: dg.AssetExecutionContext,
        pe: PrivateEvolutionResource,
        llm: LLMResource,
        prior: pl.DataFrame,
    ) -> pl.DataFrame:
        generator = generators_of_run(dataset, pe, llm, [private_evolution])[private_evolution]
        started = time.perf_counter()
        pool, api = generator.first_pool(dataset, _prior_or_none(prior), log=context.log.info)
        violations = validate_candidates(dataset, pool)
        context.add_output_metadata(
            {
                "candidates": pool.height,
                "api": dg.MetadataValue.json(api.describe()),
                "invalid_values": sum(violations.values()),
                "seconds": round(time.perf_counter() - started, 3),
                **generation_metadata(api),
            }
        )
        return pool

    @dg.asset(
        key=DP_HISTOGRAM_KEY,
        ins={
            "wide_table": dg.AssetIn(key=TRAINING_KEY),
            "pool": dg.AssetIn(key=CANDIDATE_POOL_KEY),
            "prior": dg.AssetIn(key=DP_PRIOR_KEY),
        },
        group_name=SYNTHETIC_GROUP,
        description=(
            "DP releases 2..T+1: T rounds in which every private record votes for its nearest candidate "
            "under the workload-aware distance and Gaussian noise makes the vote histogram private. "
            "Two tables: the last round's candidates (`__candidates`) and, row for row, their noisy "
            "votes and weights h' = max(h~ - H, 0) (`__votes`). Each round is checkpointed: a re-run "
            "resumes after the last completed round."
        ),
        **common,
    )
    def dp_histogram(
        context: dg.AssetExecutionContext,
        pe: PrivateEvolutionResource,
        llm: LLMResource,
        duckdb: DuckDBResource,
        wide_table: pl.DataFrame,
        pool: pl.DataFrame,
        prior: pl.DataFrame,
    ) -> dict[str, pl.DataFrame]:
        partition = _Partition(context, dataset, pe, llm, duckdb, wide_table, [private_evolution])
        partition.charged(private_evolution)
        plan = partition.plan.generators[private_evolution]
        generator, config = partition.generators[private_evolution], pe.config()
        api = generator.candidate_api(dataset, _prior_or_none(prior), log=context.log.info)
        budget = generator.budget(dataset, plan.epsilon, plan.delta)
        started = time.perf_counter()
        rounds = generator.vote_rounds(
            dataset, wide_table, pool, api, plan, partition.store(private_evolution), log=context.log.info
        )
        weighted = int((rounds.weights > 0).sum())
        context.add_output_metadata(
            {
                "epsilon": plan.epsilon,
                "delta": plan.delta,
                "epsilon_composed": round(budget.composed_epsilon(), 6),
                "sigma": round(budget.sigma, 4),
                "T": config.iterations,
                "H": round(config.threshold_sigmas * budget.sigma, 4),
                "seed": config.seed,
                "candidates": rounds.candidates.height,
                "share_of_candidates_above_threshold": round(weighted / rounds.candidates.height, 4),
                "selection": config.selection,
                "rounds_resumed_from_checkpoint": rounds.resumed,
                "seconds": round(time.perf_counter() - started, 3),
                "releases": dg.MetadataValue.json([_release_metadata(r) for r in rounds.releases]),
                "distance_weights": dg.MetadataValue.json(generator.encoder(dataset).describe()),
                **generation_metadata(api),
            }
        )
        votes = pl.DataFrame({"noisy_votes": rounds.noisy_votes, "weight": rounds.weights})
        return {CANDIDATES: rounds.candidates, VOTES: votes}

    @dg.asset(
        key=POPULATION_KEY,
        ins={"histogram": dg.AssetIn(key=DP_HISTOGRAM_KEY), "prior": dg.AssetIn(key=DP_PRIOR_KEY)},
        group_name=SYNTHETIC_GROUP,
        description=(
            "The synthetic wide table: rows drawn in proportion to the DP weights (post-processing). "
            "This is the releasable dataset."
        ),
        **common,
    )
    def selected_population(
        context: dg.AssetExecutionContext,
        pe: PrivateEvolutionResource,
        llm: LLMResource,
        histogram: dict[str, pl.DataFrame],
        prior: pl.DataFrame,
    ) -> pl.DataFrame:
        generator = generators_of_run(dataset, pe, llm, [private_evolution])[private_evolution]
        votes = histogram[VOTES]
        model = PEModel(
            prior=_prior_or_none(prior),
            candidates=histogram[CANDIDATES],
            noisy_votes=votes["noisy_votes"].to_numpy(),
            weights=votes["weight"].to_numpy(),
            releases=[],
        )
        population = generator.sample(
            dataset, model, rows=pe.config().synthetic_rows or entity_rows(dataset, model.n_estimate)
        )
        context.add_output_metadata(
            {"epsilon": _epsilon(context), "rows": population.height, "output": pe.config().output}
        )
        return population

    @dg.asset(
        key=DECOMPOSED_KEY,
        ins={"population": dg.AssetIn(key=POPULATION_KEY)},
        group_name=SYNTHETIC_GROUP,
        description="The synthetic population split back into the reporting tables the workload reads.",
        **common,
    )
    def decomposed_tables(
        context: dg.AssetExecutionContext, population: pl.DataFrame
    ) -> dict[str, pl.DataFrame]:
        tables = decompose(dataset, population)
        context.add_output_metadata({f"{name}_rows": frame.height for name, frame in tables.items()})
        return tables

    def branch(name: str) -> list[dg.AssetsDefinition]:
        """A generator's branch: its population (the only step reading private data), its tables."""
        group = branch_group(name)

        @dg.asset(
            key=population_key(name),
            ins={"wide_table": dg.AssetIn(key=TRAINING_KEY)},
            deps=[RELEASE_PLAN_KEY],
            group_name=group,
            description=(
                f"The synthetic wide table of {name} at this epsilon: its DP releases (charged with the "
                "partition's release plan) and a sample of its model."
                + (" The reference a DP method must beat: every column drawn independently from its "
                   "noisy 1-way marginal." if name == REFERENCE else "")
            ),
            **common,
        )
        def population(
            context: dg.AssetExecutionContext,
            pe: PrivateEvolutionResource,
            llm: LLMResource,
            duckdb: DuckDBResource,
            wide_table: pl.DataFrame,
        ) -> pl.DataFrame:
            partition = _Partition(context, dataset, pe, llm, duckdb, wide_table, [name])
            partition.charged(name)
            generator, plan = partition.generators[name], partition.plan.generators[name]
            started = time.perf_counter()
            model = generator.fit(
                dataset, wide_table, plan,
                checkpoints=partition.plan.checkpoints(partition.checkpoint_root, name), log=context.log.info,
            )
            fitted = time.perf_counter()
            rows = generator.sample(dataset, model, rows=entity_rows(dataset, model.n_estimate))
            context.add_output_metadata(
                {
                    "generator": name,
                    "epsilon": plan.epsilon,
                    "delta": plan.delta,
                    "seed": plan.seed,
                    "releases": dg.MetadataValue.json(
                        [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in vars(r).items()}
                         for r in plan.releases]
                    ),
                    "measurements": sum(r.histograms or 0 for r in plan.releases),
                    "selections": sum(getattr(r, "selections", None) or 0 for r in plan.releases),
                    "rows": rows.height,
                    "fit_seconds": round(fitted - started, 3),
                    "sample_seconds": round(time.perf_counter() - fitted, 3),
                }
            )
            return rows

        @dg.asset(
            key=decomposed_key(name),
            ins={"population": dg.AssetIn(key=population_key(name))},
            group_name=group,
            description=f"The synthetic population of {name} split back into the reporting tables.",
            **common,
        )
        def tables(context: dg.AssetExecutionContext, population: pl.DataFrame) -> dict[str, pl.DataFrame]:
            decomposed = decompose(dataset, population)
            context.add_output_metadata({f"{t}_rows": frame.height for t, frame in decomposed.items()})
            return decomposed

        return [population, tables]

    configured = dataset.spec.synthesis.generators

    @dg.asset(
        key=SCORES_KEY,
        ins={"answers": dg.AssetIn(key=BENCHMARK_ANSWERS_KEY), "wide_table": dg.AssetIn(key=wide)},
        deps=[decomposed_key(name) for name in configured],
        group_name=SCORES_GROUP,
        description=(
            "The leaderboard of this epsilon: every generator that ran in the partition, scored by the "
            "same code on the workload (per query and per value metric) and on the mean total variation "
            "distance over 1-way, 2-way and sampled 3-way marginals. Computed against the real data: "
            "for the data owner, not a DP release."
        ),
        **common,
    )
    def benchmark_scores(
        context: dg.AssetExecutionContext,
        duckdb: DuckDBResource,
        answers: dict[str, pl.DataFrame],
        wide_table: pl.DataFrame,
    ) -> dict[str, pl.DataFrame]:
        epsilon = _epsilon(context)
        plotted = [c for c in sorted(encoder.weights, key=encoder.weights.get, reverse=True)][:4]
        # one generator's whole table in memory at a time; the picture of the marginals is drawn from a
        # seeded sample of each (every table when smaller)
        results, populations = [], {}
        for name in configured:
            rows = read_partition(duckdb, population_key(name), context.partition_key)
            if rows is None:
                continue
            results.append(score_generator(dataset, name, answers, wide_table, rows))
            populations[name] = evaluation_rows(rows, rows=PLOTTED_ROWS)
            del rows
        if not populations:
            raise ValueError(
                f"no generator has a population for epsilon {context.partition_key}: materialize a branch "
                f"({', '.join(configured)}) for this partition first"
            )
        board = leaderboard(results)
        by_name = {r.generator: r for r in results}
        marginals = marginals_png(dataset, {"real": evaluation_rows(wide_table, rows=PLOTTED_ROWS), **populations},
                                  plotted)
        curve = epsilon_curve_png(
            pl.concat(
                [_other_partitions_summary(duckdb, context.partition_key),
                 board.select("generator", "pass_rate", "tvd_1way", "tvd_2way").with_columns(
                     pl.lit(epsilon).alias("epsilon"))],
                how="diagonal_relaxed",
            )
        )
        metadata = {
            "epsilon": epsilon,
            "generators": list(populations),
            "leaderboard": dg.MetadataValue.md(leaderboard_markdown(board, epsilon)),
            "marginals": dg.MetadataValue.md(markdown_image(marginals, "real vs synthetic marginals")),
            "quality_by_epsilon": dg.MetadataValue.md(markdown_image(curve, "quality against epsilon")),
        }
        for row in board.iter_rows(named=True):
            prefix = "" if row["generator"] == private_evolution else f"{row['generator']}_"
            if row["generator"] == REFERENCE:
                prefix = "reference_"
            for metric in ("pass_rate", "metric_pass_rate", "tvd_1way", "tvd_2way", "tvd_3way"):
                metadata[f"{prefix}{metric}"] = round(row[metric], 4)
        for name, result in by_name.items():
            key = "queries" if name == private_evolution else f"{'reference' if name == REFERENCE else name}_queries"
            metadata[key] = dg.MetadataValue.md(scores_markdown(result.scores))
        context.add_output_metadata(metadata)
        queries = [row for result in results for row in result.query_rows()]
        return {"summary": board, "queries": pl.DataFrame(queries, infer_schema_length=None)}

    pe_branch = [dp_prior, candidate_pool, dp_histogram, selected_population, decomposed_tables]
    branches = [
        asset
        for name in configured
        for asset in (pe_branch if name == private_evolution else branch(name))
    ]
    return [release_plan, *branches, benchmark_scores]

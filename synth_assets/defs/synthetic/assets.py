"""The synthetic half, partitioned by epsilon: the release plan, Private Evolution's stages (DP prior,
candidate pool, DP histogram, selected population, decomposed tables), the independent-marginals
reference and the benchmark scores.

Each partition is one (epsilon, delta)-DP run of every generator. ``release_plan`` plans all their
releases, refuses unsafe settings and charges the ledger for all of them at once, before any mechanism
runs (synth_assets.privacy.releases). The assets that read private data, ``dp_prior``,
``dp_histogram`` and ``reference/independent_marginals``, first check that their releases are recorded;
every other synthetic asset is post-processing. ``benchmark_scores`` compares with the real data: it
is an evaluation for the data owner, not a DP release.
"""

import time

import dagster as dg
import numpy as np
import polars as pl
from dagster_duckdb import DuckDBResource

from synth_assets.benchmark.compare import compare, pass_rate, scores_markdown
from synth_assets.benchmark.workload import run_workload
from synth_assets.datasets.loading import Dataset
from synth_assets.defs.real.assets import BENCHMARK_ANSWERS_KEY, wide_key
from synth_assets.evaluation.marginals import mean_tvd
from synth_assets.evaluation.plots import (
    epsilon_curve_png,
    marginals_png,
    markdown_image,
)
from synth_assets.generators.independent import IndependentMarginals, IndependentSettings
from synth_assets.generators.private_evolution import PEModel, PrivateEvolution, generation_metadata
from synth_assets.io_managers import PARTITION_COLUMN, read_frame
from synth_assets.pe.encoding import build_encoder
from synth_assets.pe.evolution import CheckpointStore, Release
from synth_assets.pe.generators import validate_candidates
from synth_assets.pe.llm.resource import LLMResource
from synth_assets.pe.marginal_prior import MarginalPrior
from synth_assets.privacy.ledger import PrivacyLedger
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
VOTES = "votes"


def epsilon_key(epsilon: float) -> str:
    return f"{epsilon:g}"


def epsilon_partitions(dataset: Dataset) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition([epsilon_key(e) for e in dataset.spec.privacy.epsilon_grid])


def _epsilon(context: dg.AssetExecutionContext) -> float:
    return float(context.partition_key)


def _prior_or_none(frame: pl.DataFrame) -> MarginalPrior | None:
    return MarginalPrior.from_frame(frame) if frame.height else None


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


def generators_of_run(
    pe: PrivateEvolutionResource, llm: LLMResource
) -> tuple[PrivateEvolution, IndependentMarginals]:
    """The generators of a partition: Private Evolution (its candidates from the LLM when one is
    configured) and the independent-marginals reference, with the same seed."""
    config = pe.config()
    return (
        PrivateEvolution(config, candidates=llm.candidate_api),
        IndependentMarginals(IndependentSettings(seed=config.seed)),
    )


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
    ):
        self.pe_generator, self.reference = generators_of_run(pe, llm)
        self.plan: PartitionPlan = plan_partition(
            dataset, [self.pe_generator, self.reference], wide_table,
            epsilon=_epsilon(context), delta=pe.delta, run_id=context.run.run_id,
            partition_key=context.partition_key, allow_negligible_noise=pe.allow_negligible_noise,
        )
        self.ledger = PrivacyLedger(duckdb.database)
        self.checkpoint_root = pe.checkpoints()

    def store(self, generator: str) -> CheckpointStore:
        return CheckpointStore(self.plan.checkpoints(self.checkpoint_root, generator))

    def charged(self, generator: str) -> None:
        require_charged(self.ledger, self.plan, generator)


def build_synthetic_assets(dataset: Dataset) -> list[dg.AssetsDefinition]:
    partitions = epsilon_partitions(dataset)
    wide = wide_key(dataset)
    kinds = {"duckdb", "polars", "numpy"}
    common = {"partitions_def": partitions, "kinds": kinds}
    private_evolution = PrivateEvolution.name
    encoder = build_encoder(dataset)

    @dg.asset(
        key=RELEASE_PLAN_KEY,
        ins={"wide_table": dg.AssetIn(key=wide)},
        group_name=SYNTHETIC_GROUP,
        description=(
            "Every DP release of this partition (Private Evolution and the reference), planned and "
            "charged to the privacy ledger together, before any mechanism runs. Unsafe settings and "
            "an exceeded budget are refused here, and then nothing is released."
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
        partition = _Partition(context, dataset, pe, llm, duckdb, wide_table)
        for generator in (partition.pe_generator, partition.reference):
            generator.check_ready(dataset)
        recorded_before = {r.identity for r in partition.plan.releases if partition.ledger.is_recorded(r)}
        check = charge_partition(partition.plan, partition.ledger)
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
        ins={"wide_table": dg.AssetIn(key=wide)},
        deps=[RELEASE_PLAN_KEY],
        group_name=SYNTHETIC_GROUP,
        description=(
            "DP release 1 of Private Evolution: noisy 1-way marginals of every column over its public "
            "bins and the noisy share of entities present in each reporting table. Empty when "
            "prior_share is 0."
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
        partition = _Partition(context, dataset, pe, llm, duckdb, wide_table)
        plan = partition.plan.generators[private_evolution]
        config = pe.config()
        if plan.release("marginal_prior") is None:
            context.add_output_metadata({"epsilon": plan.epsilon, "prior_share": 0.0, "histograms": 0})
            return MarginalPrior(columns={}, presence={}, sigma=1.0, seed=config.seed).to_frame()
        partition.charged(private_evolution)
        started = time.perf_counter()
        prior, release, resumed = partition.pe_generator.release_prior(
            dataset, wide_table, plan, partition.store(private_evolution)
        )
        context.add_output_metadata(
            {
                "epsilon": plan.epsilon,
                "delta": plan.delta,
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
        generator, _ = generators_of_run(pe, llm)
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
            "wide_table": dg.AssetIn(key=wide),
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
        partition = _Partition(context, dataset, pe, llm, duckdb, wide_table)
        partition.charged(private_evolution)
        plan = partition.plan.generators[private_evolution]
        generator, config = partition.pe_generator, pe.config()
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
        generator, _ = generators_of_run(pe, llm)
        votes = histogram[VOTES]
        model = PEModel(
            prior=_prior_or_none(prior),
            candidates=histogram[CANDIDATES],
            noisy_votes=votes["noisy_votes"].to_numpy(),
            weights=votes["weight"].to_numpy(),
            releases=[],
        )
        population = generator.sample(dataset, model)
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

    @dg.asset(
        key=REFERENCE_KEY,
        ins={"wide_table": dg.AssetIn(key=wide)},
        deps=[RELEASE_PLAN_KEY],
        group_name=REFERENCE_GROUP,
        description=(
            "The reference a DP method must beat, at the same epsilon: every column sampled "
            "independently from its DP-noised 1-way marginal. A DP release of its own, charged with "
            "the partition's release plan."
        ),
        **common,
    )
    def independent_marginals_reference(
        context: dg.AssetExecutionContext,
        pe: PrivateEvolutionResource,
        llm: LLMResource,
        duckdb: DuckDBResource,
        wide_table: pl.DataFrame,
    ) -> pl.DataFrame:
        partition = _Partition(context, dataset, pe, llm, duckdb, wide_table)
        reference = partition.reference
        partition.charged(reference.name)
        plan = partition.plan.generators[reference.name]
        model = reference.fit(dataset, wide_table, plan, log=context.log.info)
        population = reference.sample(dataset, model)
        (release,) = plan.releases
        context.add_output_metadata(
            {
                "epsilon": plan.epsilon,
                "delta": plan.delta,
                "sigma": round(release.sigma, 4),
                "histograms": release.histograms,
                "seed": plan.seed,
                "rows": population.height,
            }
        )
        return population

    @dg.asset(
        key=SCORES_KEY,
        ins={
            "answers": dg.AssetIn(key=BENCHMARK_ANSWERS_KEY),
            "wide_table": dg.AssetIn(key=wide),
            "tables": dg.AssetIn(key=DECOMPOSED_KEY),
            "population": dg.AssetIn(key=POPULATION_KEY),
            "reference": dg.AssetIn(key=REFERENCE_KEY),
        },
        group_name=SCORES_GROUP,
        description=(
            "How well each generator answers the workload (per query, per metric) and its mean total "
            "variation distance over all 1-way and 2-way marginals, next to the reference. Computed "
            "against the real data: for the data owner, not a DP release."
        ),
        **common,
    )
    def benchmark_scores(
        context: dg.AssetExecutionContext,
        duckdb: DuckDBResource,
        answers: dict[str, pl.DataFrame],
        wide_table: pl.DataFrame,
        tables: dict[str, pl.DataFrame],
        population: pl.DataFrame,
        reference: pl.DataFrame,
    ) -> dict[str, pl.DataFrame]:
        epsilon = _epsilon(context)
        generators = {
            "private_evolution": (population, tables),
            "independent_marginals": (reference, decompose(dataset, reference)),
        }
        query_rows, summary_rows, markdown = [], [], {}
        for generator, (wide_rows, reporting) in generators.items():
            scores = compare(dataset.queries, answers, run_workload(dataset.queries, reporting))
            tvd = mean_tvd(dataset, wide_table, wide_rows)
            summary_rows.append({"generator": generator, "pass_rate": pass_rate(scores), **tvd,
                                 "rows": wide_rows.height})
            for score in scores:
                for metric, value in score.metrics.items() or {"": float("nan")}.items():
                    query_rows.append(
                        {
                            "generator": generator,
                            "query": score.name,
                            "type": score.type,
                            "passed": score.passed,
                            "metric": metric,
                            "value": None if np.isnan(value) else float(value),
                            "threshold": score.threshold,
                            "direction": score.direction,
                            "error": score.error,
                        }
                    )
            markdown[generator] = scores_markdown(scores)
        summary = pl.DataFrame(summary_rows)
        pe_row, reference_row = summary_rows
        plotted = [c for c in sorted(encoder.weights, key=encoder.weights.get, reverse=True)][:4]
        marginals = marginals_png(
            dataset,
            {"real": wide_table, "private_evolution": population, "independent_marginals": reference},
            plotted,
        )
        curve = epsilon_curve_png(
            pl.concat(
                [_other_partitions_summary(duckdb, context.partition_key),
                 summary.select("generator", "pass_rate", "tvd_1way", "tvd_2way").with_columns(
                     pl.lit(epsilon).alias("epsilon"))],
                how="diagonal_relaxed",
            )
        )
        context.add_output_metadata(
            {
                "epsilon": epsilon,
                "pass_rate": round(pe_row["pass_rate"], 4),
                "tvd_1way": round(pe_row["tvd_1way"], 4),
                "tvd_2way": round(pe_row["tvd_2way"], 4),
                "reference_pass_rate": round(reference_row["pass_rate"], 4),
                "reference_tvd_1way": round(reference_row["tvd_1way"], 4),
                "reference_tvd_2way": round(reference_row["tvd_2way"], 4),
                "queries": dg.MetadataValue.md(markdown["private_evolution"]),
                "marginals": dg.MetadataValue.md(markdown_image(marginals, "real vs synthetic marginals")),
                "quality_by_epsilon": dg.MetadataValue.md(markdown_image(curve, "quality against epsilon")),
                "reference_queries": dg.MetadataValue.md(markdown["independent_marginals"]),
            }
        )
        return {"summary": summary, "queries": pl.DataFrame(query_rows, infer_schema_length=None)}

    return [
        release_plan,
        dp_prior,
        candidate_pool,
        dp_histogram,
        selected_population,
        decomposed_tables,
        independent_marginals_reference,
        benchmark_scores,
    ]

"""The synthetic half, partitioned by epsilon: DP prior, candidate pool, DP histogram, selected
population, decomposed tables, the independent-marginals reference and the benchmark scores.

Each partition is one (epsilon, delta)-DP run of Private Evolution on the wide table. The assets that
read private data are ``dp_prior``, ``dp_histogram`` and ``reference/independent_marginals``; every other
synthetic asset is post-processing of their releases. ``benchmark_scores`` compares with the real data:
it is an evaluation for the data owner, not a DP release.
"""

import time

import dagster as dg
import numpy as np
import polars as pl
from dagster_duckdb import DuckDBResource

from synth_assets.baselines.independent import independent_marginals
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
from synth_assets.io_managers import read_frame
from synth_assets.pe.encoding import build_encoder
from synth_assets.pe.evolution import (
    CheckpointStore,
    Release,
    candidate_api,
    checkpoint_store,
    data_fingerprint,
    draw_population,
    initial_candidates,
    plan_budget,
    release_prior,
    run_rounds,
)
from synth_assets.pe.generators import validate_candidates
from synth_assets.pe.llm.resource import LLMResource
from synth_assets.pe.llm.wiring import generation_metadata
from synth_assets.pe.marginal_prior import MarginalPrior
from synth_assets.privacy.accounting import calibrate_sigma, check_delta
from synth_assets.privacy.ledger import LedgerRelease, PrivacyLedger, pe_run_releases
from synth_assets.resources import PrivateEvolutionResource
from synth_assets.tables.decompose import decompose
from synth_assets.warehouse import DEFAULT_DELTA

SYNTHETIC_GROUP = "synthetic"
REFERENCE_GROUP = "reference"
SCORES_GROUP = "scores"

DP_PRIOR_KEY = dg.AssetKey(["synthetic", "dp_prior"])
CANDIDATE_POOL_KEY = dg.AssetKey(["synthetic", "candidate_pool"])
DP_HISTOGRAM_KEY = dg.AssetKey(["synthetic", "dp_histogram"])
POPULATION_KEY = dg.AssetKey(["synthetic", "selected_population"])
DECOMPOSED_KEY = dg.AssetKey(["synthetic", "decomposed_tables"])
REFERENCE_KEY = dg.AssetKey(["reference", "independent_marginals"])
SCORES_KEY = dg.AssetKey(["synthetic", "benchmark_scores"])

NOISY_VOTES = "noisy_votes"
WEIGHT = "weight"


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
        frame.filter(pl.col("partition_key") != partition)
        .with_columns(pl.col("partition_key").cast(pl.Float64).alias("epsilon"))
        .select(list(columns))
    )


def _ledger_parameters(config) -> dict:
    return {"config": config.model_dump()}


def _charge(
    context: dg.AssetExecutionContext,
    duckdb: DuckDBResource,
    dataset: Dataset,
    releases: list[LedgerRelease],
    upcoming: list[LedgerRelease] = (),
) -> dict:
    """Check the dataset's budget and record the releases, BEFORE the mechanism runs.

    Raises BudgetExceeded (nothing recorded, nothing computed) when the budget would be exceeded.
    A release already recorded (same data, settings and seed) is not charged again.
    """
    ledger = PrivacyLedger(duckdb.database)
    budget_delta = dataset.spec.privacy.delta or DEFAULT_DELTA
    check = ledger.charge(
        releases, delta=budget_delta, budget_epsilon=dataset.spec.privacy.budget_epsilon,
        upcoming=list(upcoming),
    )
    spent = ledger.spent(dataset.name, budget_delta)
    context.log.info(check.explain())
    return {
        "ledger_new_releases": len(releases) - len(check.already_recorded),
        "ledger_spent_epsilon_gdp": round(spent.epsilon_gdp, 6),
        "ledger_spent_epsilon_sum": round(spent.epsilon_sum, 6),
        "ledger_budget_epsilon": dataset.spec.privacy.budget_epsilon,
    }


def build_synthetic_assets(dataset: Dataset) -> list[dg.AssetsDefinition]:
    partitions = epsilon_partitions(dataset)
    wide = wide_key(dataset)
    encoder = build_encoder(dataset)
    kinds = {"duckdb", "polars", "numpy"}
    common = {"partitions_def": partitions, "kinds": kinds}

    @dg.asset(
        key=DP_PRIOR_KEY,
        ins={"wide_table": dg.AssetIn(key=wide)},
        group_name=SYNTHETIC_GROUP,
        description=(
            "DP release 1 of each run: noisy 1-way marginals of every column over its public bins and "
            "the noisy share of entities present in each reporting table. Empty when prior_share is 0."
        ),
        **common,
    )
    def dp_prior(
        context: dg.AssetExecutionContext,
        pe: PrivateEvolutionResource,
        duckdb: DuckDBResource,
        wide_table: pl.DataFrame,
    ) -> pl.DataFrame:
        config, epsilon, delta = pe.config(), _epsilon(context), pe.delta_for(dataset)
        check_delta(delta, max(wide_table.height, 2))
        budget = plan_budget(dataset, epsilon, delta, config, with_prior=config.prior_share > 0)
        if config.prior_share == 0:
            context.add_output_metadata({"epsilon": epsilon, "prior_share": 0.0, "histograms": 0})
            return MarginalPrior(columns={}, presence={}, sigma=1.0, seed=config.seed).to_frame()
        data = data_fingerprint(wide_table)
        planned = pe_run_releases(
            dataset, budget, seed=config.seed, run_id=context.run.run_id,
            partition_key=context.partition_key, parameters=_ledger_parameters(config), data_digest=data,
        )
        ledger = _charge(context, duckdb, dataset, [planned["marginal_prior"]], [planned["nn_histogram"]])
        started = time.perf_counter()
        store = checkpoint_store(
            pe.checkpoints(), dataset, data, epsilon, delta, config, candidate_api(dataset, None)
        )
        prior, release, resumed = release_prior(dataset, wide_table, budget, config, store=store)
        context.add_output_metadata(
            {
                "epsilon": epsilon,
                "delta": delta,
                "prior_share": config.prior_share,
                "sigma": round(budget.prior_sigma, 4),
                "histograms": prior.histograms,
                "seed": config.seed,
                "resumed_from_checkpoint": resumed,
                "seconds": round(time.perf_counter() - started, 3),
                "release": dg.MetadataValue.json(_release_metadata(release)),
                **ledger,
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
        config = pe.config()
        api = candidate_api(dataset, _prior_or_none(prior), llm.settings(), log=context.log.info)
        started = time.perf_counter()
        pool = initial_candidates(api, config)
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
            "Holds the last round's candidates with their noisy votes and weights h' = max(h~ - H, 0). "
            "Each round is checkpointed: a re-run resumes after the last completed round."
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
    ) -> pl.DataFrame:
        config, epsilon, delta = pe.config(), _epsilon(context), pe.delta_for(dataset)
        prior_model = _prior_or_none(prior)
        api = candidate_api(dataset, prior_model, llm.settings(), log=context.log.info)
        budget = plan_budget(dataset, epsilon, delta, config, with_prior=prior_model is not None)
        data = data_fingerprint(wide_table)
        parameters = {**_ledger_parameters(config), "pool": data_fingerprint(pool)}
        planned = pe_run_releases(
            dataset, budget, seed=config.seed, run_id=context.run.run_id,
            partition_key=context.partition_key, parameters=parameters, data_digest=data,
        )
        ledger = _charge(context, duckdb, dataset, [planned["nn_histogram"]])
        store: CheckpointStore = checkpoint_store(pe.checkpoints(), dataset, data, epsilon, delta, config, api)
        started = time.perf_counter()
        rounds = run_rounds(wide_table, encoder, pool, api, budget, config, store=store, log=context.log.info)
        weighted = int((rounds.weights > 0).sum())
        context.add_output_metadata(
            {
                "epsilon": epsilon,
                "delta": delta,
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
                "distance_weights": dg.MetadataValue.json(encoder.describe()),
                **ledger,
                **generation_metadata(api),
            }
        )
        return rounds.candidates.with_columns(
            pl.Series(NOISY_VOTES, rounds.noisy_votes), pl.Series(WEIGHT, rounds.weights)
        )

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
        histogram: pl.DataFrame,
        prior: pl.DataFrame,
    ) -> pl.DataFrame:
        config = pe.config()
        prior_model = _prior_or_none(prior)
        api = candidate_api(dataset, prior_model)
        candidates = histogram.drop(NOISY_VOTES, WEIGHT)
        population = draw_population(
            dataset,
            candidates,
            histogram[NOISY_VOTES].to_numpy(),
            histogram[WEIGHT].to_numpy(),
            api,
            encoder,
            config,
            n_estimate=prior_model.n_estimate if prior_model else None,
        )
        context.add_output_metadata(
            {"epsilon": _epsilon(context), "rows": population.height, "output": config.output}
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
        group_name=REFERENCE_GROUP,
        description=(
            "The reference a DP method must beat, at the same epsilon: every column sampled "
            "independently from its DP-noised 1-way marginal. A DP release of its own."
        ),
        **common,
    )
    def independent_marginals_reference(
        context: dg.AssetExecutionContext,
        pe: PrivateEvolutionResource,
        duckdb: DuckDBResource,
        wide_table: pl.DataFrame,
    ) -> pl.DataFrame:
        epsilon, delta, seed = _epsilon(context), pe.delta_for(dataset), pe.config().seed
        histograms = len(dataset.spec.modelled_columns)
        release = LedgerRelease.for_dataset(
            dataset, kind="independent_marginals", epsilon=epsilon, delta=delta,
            sigma=calibrate_sigma(epsilon, delta, histograms), histograms=histograms, T=None, seed=seed,
            run_id=context.run.run_id, partition_key=context.partition_key,
            data_digest=data_fingerprint(wide_table),
        )
        ledger = _charge(context, duckdb, dataset, [release])
        result = independent_marginals(dataset, wide_table, epsilon=epsilon, delta=delta, seed=seed)
        context.add_output_metadata(
            {
                "epsilon": epsilon,
                "delta": delta,
                "sigma": round(result.sigma, 4),
                "histograms": result.histograms,
                "seed": seed,
                "rows": result.population.height,
                **ledger,
            }
        )
        return result.population

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
        dp_prior,
        candidate_pool,
        dp_histogram,
        selected_population,
        decomposed_tables,
        independent_marginals_reference,
        benchmark_scores,
    ]

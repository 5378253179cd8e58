"""The evaluation of every synthetic table of a partition against the holdout: fidelity beside the
holdout's own, privacy risk, and the audit of the membership attack against the DP bound. One HTML
report per generator is written beside the warehouse."""


import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from synth_assets.datasets.loading import Dataset
from synth_assets.defs.real.assets import HOLDOUT_KEY, TRAINING_KEY
from synth_assets.defs.synthetic.assets import (
    SCORES_GROUP,
    decomposed_key,
    epsilon_partitions,
    population_key,
    read_partition,
)
from synth_assets.evaluation.report import evaluate, holdout_fidelity
from synth_assets.privacy.releases import resolve_delta
from synth_assets.resources import PrivateEvolutionResource
from synth_assets.warehouse import warehouse_dir

PRIVACY_RISK_KEY = dg.AssetKey(["evaluation", "privacy_risk"])


def report_path(dataset: Dataset, partition: str, generator: str):
    return warehouse_dir() / "reports" / dataset.name / f"epsilon_{partition}" / f"{generator}.html"


def build_evaluation_assets(dataset: Dataset) -> list[dg.AssetsDefinition]:
    configured = dataset.spec.synthesis.generators

    @dg.asset(
        key=PRIVACY_RISK_KEY,
        ins={"training": dg.AssetIn(key=TRAINING_KEY), "holdout": dg.AssetIn(key=HOLDOUT_KEY)},
        deps=[decomposed_key(name) for name in configured],
        partitions_def=epsilon_partitions(dataset),
        group_name=SCORES_GROUP,
        kinds={"duckdb", "polars"},
        description=(
            "Every synthetic table of this epsilon against the holdout no generator saw: marginal TVD beside "
            "the holdout's own, exact copies, distance to closest record, a membership attack and its audit "
            "against the bound the (epsilon, delta) guarantee implies (red: the mechanism or its accounting "
            "is broken). For the data owner, not a DP release; an HTML report per generator."
        ),
    )
    def privacy_risk(
        context: dg.AssetExecutionContext,
        duckdb: DuckDBResource,
        pe: PrivateEvolutionResource,
        training: pl.DataFrame,
        holdout: pl.DataFrame,
    ) -> pl.DataFrame:
        epsilon = float(context.partition_key)
        delta = resolve_delta(dataset, pe.delta)
        rows = []
        baseline = holdout_fidelity(dataset, training, holdout)
        for name in configured:
            population = read_partition(duckdb, population_key(name), context.partition_key)
            if population is None:
                continue
            report = evaluate(dataset, training, holdout, population, epsilon=epsilon, delta=delta, baseline=baseline)
            path = report_path(dataset, context.partition_key, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            report.to_html(path)
            risk = report.privacy.to_dict()
            membership, audit = risk["membership_inference"], risk["dp_audit"]
            rows.append({
                "generator": name,
                "verdict": report.verdict,
                "privacy_verdict": risk["verdict"],
                "fidelity_verdict": report.fidelity["verdict"],
                "exact_copies_training": risk["exact_copies"].get("training_share"),
                "exact_copies_holdout": risk["exact_copies"].get("holdout_share"),
                "dcr_share_closer_to_training": risk["dcr"].get("share_closer_to_training"),
                "dcr_p_value": risk["dcr"].get("p_value"),
                "mia_auc": membership.get("auc"),
                "mia_auc_low": (membership.get("auc_ci95") or [None])[0],
                "mia_tpr_at_1pct_fpr": membership.get("tpr_at_1pct_fpr"),
                "dp_auc_bound": audit.get("auc_bound"),
                "dp_audit": audit["verdict"],
                "report": str(path),
            })
        if not rows:
            raise ValueError(f"no generator has a population for epsilon {context.partition_key}: materialize "
                             f"a branch ({', '.join(configured)}) for this partition first")
        frame = pl.DataFrame(rows, infer_schema_length=None)
        table = ["| generator | verdict | copies train / holdout | DCR | MIA AUC (low) | DP bound | audit |",
                 "|---|---|---|---|---|---|---|"]
        for r in rows:
            table.append(
                f"| {r['generator']} | {r['verdict']} | {_f(r['exact_copies_training'])} / "
                f"{_f(r['exact_copies_holdout'])} | {_f(r['dcr_share_closer_to_training'])} | "
                f"{_f(r['mia_auc'])} ({_f(r['mia_auc_low'])}) | {_f(r['dp_auc_bound'])} | {r['dp_audit']} |")
        context.add_output_metadata({
            "epsilon": epsilon, "delta": delta, "training_rows": training.height, "holdout_rows": holdout.height,
            "evaluation": dg.MetadataValue.md("\n".join(table)),
            **{f"{r['generator']}_report": dg.MetadataValue.path(r["report"]) for r in rows},
        })
        return frame

    return [privacy_risk]


def _f(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"

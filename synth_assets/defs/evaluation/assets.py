"""The evaluation of every synthetic table of a partition against the holdout: fidelity beside the
holdout's own, ML utility, the workload, privacy risk and the audit of the membership attack against the
DP bound, judged against the dataset's gates. One HTML report per generator and epsilon, and one page
comparing every release of the dataset, are written beside the warehouse."""


import json

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from synth_assets.datasets.loading import Dataset
from synth_assets.defs.real.assets import BENCHMARK_ANSWERS_KEY, HOLDOUT_KEY, TRAINING_KEY
from synth_assets.defs.synthetic.assets import (
    SCORES_GROUP,
    decomposed_key,
    epsilon_partitions,
    population_key,
    read_partition,
)
from synth_assets.evaluation.pages import comparison_page
from synth_assets.evaluation.recommendations import across_releases
import synth_assets.evaluation.report as report_module
from synth_assets.evaluation.report import evaluate, holdout_fidelity
from synth_assets.io_managers import read_frame
from synth_assets.privacy.releases import resolve_delta
from synth_assets.resources import PrivateEvolutionResource
from synth_assets.warehouse import warehouse_dir

PRIVACY_RISK_KEY = dg.AssetKey(["evaluation", "privacy_risk"])
COMPARISON_KEY = dg.AssetKey(["evaluation", "comparison"])


def report_path(dataset: Dataset, partition: str, generator: str):
    return warehouse_dir() / "reports" / dataset.name / f"epsilon_{partition}" / f"{generator}.html"


def comparison_path(dataset: Dataset):
    return warehouse_dir() / "reports" / dataset.name / "comparison.html"


def stored_reports(connection) -> list[dict]:
    """The report of every release evaluated so far (every partition of the evaluation asset)."""
    try:
        frame = read_frame(connection, *PRIVACY_RISK_KEY.path)
    except FileNotFoundError:
        return []
    if "report_json" not in frame.columns:
        return []
    return [json.loads(text) for text in frame["report_json"].drop_nulls()]


def write_comparison(dataset: Dataset, reports: list[dict]) -> tuple[object, list[str]]:
    advice = across_releases(reports)
    path = comparison_path(dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(comparison_page(dataset.name, reports, advice))
    return path, advice


def build_evaluation_assets(dataset: Dataset) -> list[dg.AssetsDefinition]:
    configured = dataset.spec.synthesis.generators

    @dg.asset(
        key=PRIVACY_RISK_KEY,
        ins={"training": dg.AssetIn(key=TRAINING_KEY), "holdout": dg.AssetIn(key=HOLDOUT_KEY),
             "answers": dg.AssetIn(key=BENCHMARK_ANSWERS_KEY)},
        deps=[decomposed_key(name) for name in configured],
        partitions_def=epsilon_partitions(dataset),
        group_name=SCORES_GROUP,
        kinds={"duckdb", "polars"},
        description=(
            "Every synthetic table of this epsilon against the holdout no generator saw: marginal TVD beside "
            "the holdout's own, ML utility, the workload, exact copies, distance to closest record, a "
            "membership attack and its audit against the bound the (epsilon, delta) guarantee implies (red: "
            "the mechanism or its accounting is broken), Anonymeter's attacks; verdicts against "
            "evaluation.gates with recommendations. For the data owner, not a DP release; an HTML report per "
            "generator."
        ),
    )
    def privacy_risk(
        context: dg.AssetExecutionContext,
        duckdb: DuckDBResource,
        pe: PrivateEvolutionResource,
        training: pl.DataFrame,
        holdout: pl.DataFrame,
        answers: dict[str, pl.DataFrame],
    ) -> pl.DataFrame:
        epsilon = float(context.partition_key)
        delta = resolve_delta(dataset, pe.delta)
        rows, largest = [], 0
        baseline = holdout_fidelity(dataset, training, holdout)
        for name in configured:
            population = read_partition(duckdb, population_key(name), context.partition_key)
            if population is None:
                continue
            largest = max(largest, population.height)
            report = evaluate(dataset, training, holdout, population, epsilon=epsilon, delta=delta,
                              answers=answers, generator=name, baseline=baseline)
            path = report_path(dataset, context.partition_key, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            report.to_html(path)
            risk = report.privacy.to_dict()
            membership, audit = risk["membership_inference"], risk["dp_audit"]
            rows.append({
                "generator": name,
                "verdict": report.verdict,
                **{f"{section}_verdict": verdict for section, verdict in report.verdicts.items()},
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
                "recommendations": "\n".join(report.recommendations),
                "report_json": json.dumps(report.to_dict()),
            })
        if not rows:
            raise ValueError(f"no generator has a population for epsilon {context.partition_key}: materialize "
                             f"a branch ({', '.join(configured)}) for this partition first")
        frame = pl.DataFrame(rows, infer_schema_length=None)
        table = ["| generator | verdict | fidelity | utility | workload | privacy | copies train / holdout | DCR "
                 "| MIA AUC (low) | DP bound | audit |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            table.append(
                f"| {r['generator']} | {r['verdict']} | {r['fidelity_verdict']} | {r['utility_verdict']} | "
                f"{r['workload_verdict']} | {r['privacy_verdict']} | {_f(r['exact_copies_training'])} / "
                f"{_f(r['exact_copies_holdout'])} | {_f(r['dcr_share_closer_to_training'])} | "
                f"{_f(r['mia_auc'])} ({_f(r['mia_auc_low'])}) | {_f(r['dp_auc_bound'])} | {r['dp_audit']} |")
        advice = [f"- {r['generator']}: {line}" for r in rows for line in r["recommendations"].splitlines()]
        context.add_output_metadata({
            "epsilon": epsilon, "delta": delta, "training_rows": training.height, "holdout_rows": holdout.height,
            "rows_compared_at_most": dg.MetadataValue.int(report_module.EVALUATION_ROWS),
            "sampled": max(training.height, holdout.height, largest) > report_module.EVALUATION_ROWS,
            "evaluation": dg.MetadataValue.md("\n".join(table)),
            "recommendations": dg.MetadataValue.md("\n".join(advice) or "none"),
            **{f"{r['generator']}_report": dg.MetadataValue.path(r["report"]) for r in rows},
        })
        return frame

    @dg.asset(
        key=COMPARISON_KEY,
        deps=[PRIVACY_RISK_KEY],
        group_name=SCORES_GROUP,
        kinds={"duckdb", "html"},
        automation_condition=dg.AutomationCondition.eager(),
        description=(
            "Every release of the dataset evaluated so far, side by side: verdicts per section, TVD, workload "
            "pass rate and the membership attack's AUC against epsilon (with the DP bound), ROC curves, TSTR "
            "bars, and which generator or epsilon would pass a failing section. One self-contained HTML page."
        ),
    )
    def comparison(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> dg.MaterializeResult:
        with duckdb.get_connection() as connection:
            reports = stored_reports(connection)
        if not reports:
            raise ValueError("no release has been evaluated yet: materialize evaluation/privacy_risk for an "
                             "epsilon first")
        path, advice = write_comparison(dataset, reports)
        return dg.MaterializeResult(metadata={
            "releases": len(reports),
            "epsilons": sorted({r["epsilon"] for r in reports}),
            "page": dg.MetadataValue.path(str(path)),
            "recommendations": dg.MetadataValue.md("\n".join(f"- {a}" for a in advice) or "none"),
        })

    return [privacy_risk, comparison]


def _f(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"

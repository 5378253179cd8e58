"""The ``synth-assets`` command: materialize the asset graph of a dataset from the shell."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from synth_assets.datasets.loading import (
    DatasetError,
    configured_dataset_dir,
    load_dataset,
)


def _instance():
    import dagster as dg

    home = os.environ.get("DAGSTER_HOME")
    if home:
        Path(home).mkdir(parents=True, exist_ok=True)
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def _command_real(args: argparse.Namespace) -> int:
    from synth_assets.defs.synthetic.assets import add_epsilon_partitions
    from synth_assets.defs.synthetic.jobs import REAL_TABLES_JOB
    from synth_assets.locations import definitions_for
    from synth_assets.pipeline import PipelineError, run_job

    dataset = load_dataset(args.dataset or configured_dataset_dir())
    definitions, _ = definitions_for(dataset, entity_fraction=args.entity_fraction)
    resources = definitions.resources
    instance = _instance()
    add_epsilon_partitions(instance, dataset, dataset.spec.privacy.epsilon_grid)  # the grid, ready to run
    started = time.perf_counter()
    try:
        result = run_job(definitions, REAL_TABLES_JOB, instance, verbose=args.verbose)
    except PipelineError as exc:
        print(f"synth-assets: {exc}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - started
    summary = {
        "dataset": dataset.name,
        "database": resources["duckdb"].database,
        "materialized": sorted(
            e.asset_key.to_user_string() for e in result.get_asset_materialization_events()
        ),
        "seconds": round(seconds, 2),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"dataset {dataset.name}: {len(summary['materialized'])} assets in {seconds:.1f} s")
        print(f"warehouse: {summary['database']}")
    return 0


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def _epsilon(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"epsilon must be a positive number, got {text}")
    return value


def _print_evaluation(summaries: list[dict], comparison: dict | None) -> None:
    rows = [(s["epsilon"], row) for s in summaries for row in s.get("evaluation", [])]
    if not rows:
        return
    print()
    header = (f"{'epsilon':>8} {'generator':<22} {'verdict':<8} {'fidelity':<8} {'utility':<8} {'workload':<8} "
              f"{'privacy':<8} {'copies':>7} {'dcr':>6} {'mia auc':>8} {'bound':>6} {'audit':<6}")
    print(header)
    print("-" * len(header))
    for epsilon, row in rows:
        print(f"{epsilon:>8g} {row['generator']:<22} {row['verdict']:<8} {row['fidelity_verdict']:<8} "
              f"{row['utility_verdict']:<8} {row['workload_verdict']:<8} {row['privacy_verdict']:<8} "
              f"{_share(row['exact_copies_training'])} {_share(row['dcr_share_closer_to_training'], 6)} "
              f"{_share(row['mia_auc'], 8)} {_share(row['dp_auc_bound'], 6)} {row['dp_audit']:<6}")
    print("verdicts against evaluation.gates in dataset.yaml, on the holdout no generator saw. copies: share of")
    print("synthetic rows identical to a training row; dcr: share closer to training than to holdout (0.5: no")
    print("leak); mia auc: a membership attack, audited against the bound (epsilon, delta)-DP allows.")
    print(f"one report per release: {Path(rows[0][1]['report']).parent.parent}")
    if comparison:
        print(f"every release compared: {comparison['page']}")
        for line in comparison["recommendations"].splitlines():
            print(f"  {line}")


def _share(value, width: int = 7) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:>{width}.3f}"


def _print_table(summaries: list[dict], real_seconds: float, comparison: dict | None = None) -> None:
    print(f"real half materialized in {real_seconds:.1f} s")
    header = (
        f"{'epsilon':>8} {'generator':<22} {'tvd1':>7} {'tvd2':>7} {'tvd3':>7} {'pass':>6} {'pass/m':>7} "
        f"{'rows':>8} {'seconds':>8}"
    )
    print(header)
    print("-" * len(header))
    for s in summaries:
        for i, row in enumerate(s["leaderboard"]):
            epsilon, seconds = (f"{s['epsilon']:g}", f"{s['seconds']:.1f}") if i == 0 else ("", "")
            print(
                f"{epsilon:>8} {row['generator']:<22} {row['tvd_1way']:>7.4f} "
                f"{row['tvd_2way']:>7.4f} {row['tvd_3way']:>7.4f} {row['pass_rate']:>6.2f} "
                f"{row['metric_pass_rate']:>7.2f} {row['rows']:>8} {seconds:>8}"
            )
    print("tvd1/2/3: mean TVD to the real table over all 1-, 2- and 200 sampled 3-way marginals (lower is")
    print("better); pass: share of workload queries that pass; pass/m: share of value metrics that pass;")
    print("independent_marginals: the reference, every column drawn from its DP 1-way marginal.")
    _print_evaluation(summaries, comparison)
    last = summaries[-1]["privacy"] if summaries else None
    if last:
        budget = last["dataset_budget_epsilon"]
        spent = ", ".join(f"{s['epsilon']:g}: {s['privacy']['partition_epsilon_gdp']:.3f}" for s in summaries)
        remaining = f" of its budget {budget:g}; remaining {last['dataset_remaining_epsilon']:.3f}" if budget else ""
        print(
            f"privacy: each partition spends its generators together (epsilon {spent}, composed); "
            f"dataset {summaries[-1]['dataset']} has spent epsilon {last['dataset_spent_epsilon_gdp']:.3f} "
            f"(simple sum {last['dataset_spent_epsilon_sum']:.3f})" + remaining
        )


def _command_run(args: argparse.Namespace) -> int:
    from synth_assets.pipeline import PipelineError, run_pipeline
    from synth_assets.resources import PrivateEvolutionResource

    dataset = load_dataset(args.dataset or configured_dataset_dir())
    epsilons = list(dict.fromkeys(args.epsilon or dataset.spec.privacy.epsilon_grid))
    try:
        run = run_pipeline(
            dataset,
            epsilons,
            instance=_instance(),
            entity_fraction=args.entity_fraction,
            pe=PrivateEvolutionResource(allow_negligible_noise=args.allow_negligible_noise),
            generators=args.generator,
            verbose=args.verbose,
            evaluation=not args.no_evaluation,
        )
    except PipelineError as exc:
        print(f"synth-assets: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(run.summaries, indent=2))
    else:
        _print_table(run.summaries, run.real_seconds, run.comparison)
    return 0


class _OneLineErrors(argparse.ArgumentParser):
    """Bad arguments give one line on stderr and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _command_ledger(args: argparse.Namespace) -> int:
    from synth_assets.privacy.ledger import (
        LedgerBusy,
        PrivacyLedger,
        format_ledger,
        ledger_view,
    )
    from synth_assets.warehouse import DEFAULT_DELTA, warehouse_path

    dataset = load_dataset(args.dataset or configured_dataset_dir())
    path = warehouse_path(dataset.name)
    if not path.is_file():
        print(f"synth-assets: no warehouse at {path}: nothing has been released from {dataset.name!r}")
        return 0
    ledger = PrivacyLedger(path)
    delta = dataset.spec.privacy.delta or DEFAULT_DELTA
    budgets = {dataset.name: dataset.spec.privacy.budget_epsilon}
    try:
        if args.json:
            document = {
                "totals": ledger_view(ledger, budgets=budgets, delta=delta, dataset=dataset.name).to_dicts(),
                "releases": ledger.releases(dataset.name).to_dicts(),
            }
            print(json.dumps(document, indent=2, default=str))
        else:
            print(format_ledger(ledger, budgets=budgets, delta=delta, dataset=dataset.name))
    except LedgerBusy as exc:
        print(f"synth-assets: {exc}", file=sys.stderr)
        return 1
    return 0


def _command_report(args: argparse.Namespace) -> int:
    import duckdb

    from synth_assets.defs.evaluation.assets import stored_reports
    from synth_assets.defs.real.assets import BENCHMARK_ANSWERS_KEY, HOLDOUT_KEY, TRAINING_KEY
    from synth_assets.defs.synthetic.assets import epsilon_key, population_key
    from synth_assets.evaluation.pages import comparison_page, release_page
    from synth_assets.evaluation.recommendations import across_releases
    from synth_assets.evaluation.report import evaluate
    from synth_assets.io_managers import read_frame, read_frames
    from synth_assets.privacy.releases import resolve_delta
    from synth_assets.warehouse import warehouse_path

    dataset = load_dataset(args.dataset or configured_dataset_dir())
    path = warehouse_path(dataset.name)
    hint = f"--epsilon {epsilon_key(args.epsilon)}" if args.epsilon else "--epsilon E"
    if not path.is_file():
        print(f"synth-assets: no warehouse at {path}: run 'synth-assets run {hint}' first", file=sys.stderr)
        return 2
    with duckdb.connect(str(path), read_only=True) as connection:
        reports = stored_reports(connection)
    if args.epsilon is None:
        if not reports:
            print(f"synth-assets: no release of {dataset.name} has been evaluated yet: run 'synth-assets run "
                  f"--epsilon E' first", file=sys.stderr)
            return 2
        advice = across_releases(reports)
        out = Path(args.out)
        out.write_text(comparison_page(dataset.name, reports, advice))
        print(f"{dataset.name}: {len(reports)} releases compared; page written to {out}")
        for line in advice:
            print(f"  - {line}")
        return 0
    generator = args.generator or dataset.spec.synthesis.generators[0]
    stored = [r for r in reports if r["epsilon"] == args.epsilon and r["generator"] == generator]
    if stored:
        report = stored[0]
    else:
        partition = epsilon_key(args.epsilon)
        key = population_key(generator)
        try:
            with duckdb.connect(str(path), read_only=True) as connection:
                training = read_frame(connection, *TRAINING_KEY.path)
                holdout = read_frame(connection, *HOLDOUT_KEY.path)
                answers = read_frames(connection, *BENCHMARK_ANSWERS_KEY.path)
                population = read_frame(connection, key.path[-2], key.path[-1], partition)
        except FileNotFoundError as exc:
            print(f"synth-assets: {exc} (run 'synth-assets run --epsilon {partition}')", file=sys.stderr)
            return 2
        if population.height == 0:
            print(f"synth-assets: {generator} has no synthetic table at epsilon {partition}: run "
                  f"'synth-assets run --epsilon {partition} --generator {generator}' first", file=sys.stderr)
            return 2
        report = evaluate(dataset, training, holdout, population, epsilon=args.epsilon,
                          delta=resolve_delta(dataset), answers=answers, generator=generator).to_dict()
    out = Path(args.out)
    out.write_text(release_page(report))
    verdicts = ", ".join(f"{section} {verdict}" for section, verdict in report["verdicts"].items())
    print(f"{dataset.name}, {generator}, epsilon {args.epsilon:g}: {report['verdict']} ({verdicts}); "
          f"report written to {out}")
    for line in report["recommendations"]:
        print(f"  - {line}")
    return 0


def _command_export(args: argparse.Namespace) -> int:
    from synth_assets.export import ReleaseNotFound, stored_release

    dataset = load_dataset(args.dataset or configured_dataset_dir())
    try:
        release = stored_release(dataset, args.epsilon, args.generator)
        manifest = release.export(args.out, fmt=args.format, overwrite=args.overwrite)
    except (ReleaseNotFound, FileExistsError) as exc:
        print(f"synth-assets: {exc}", file=sys.stderr)
        return 2
    written = json.loads(manifest.read_text())
    evaluation = release.evaluation
    print(f"{dataset.name}, {release.generator}, epsilon {release.partition}: {len(written['files'])} tables "
          f"written to {manifest.parent} ({args.format}), {len(release.releases)} ledger releases in "
          f"{manifest.name}" + (f"; evaluation {evaluation['verdict']}" if evaluation else "; not evaluated"))
    return 0


def _command_mlflow(args: argparse.Namespace) -> int:
    from synth_assets.export import ReleaseNotFound
    from synth_assets.mlflow_log import (
        MlflowUnavailable,
        TrackingError,
        default_experiment,
        log_release,
        resolved_tracking_uri,
    )

    dataset = load_dataset(args.dataset or configured_dataset_dir())
    generator = args.generator or dataset.spec.synthesis.generators[0]
    experiment = args.experiment or default_experiment(dataset)
    try:
        run_id = log_release(dataset, args.epsilon, generator, tracking_uri=args.tracking_uri,
                             experiment=experiment, include_data=args.include_data, fmt=args.format)
    except (ReleaseNotFound, MlflowUnavailable) as exc:
        print(f"synth-assets: {exc}", file=sys.stderr)
        return 2
    except TrackingError as exc:
        print(f"synth-assets: {exc}", file=sys.stderr)
        return 1
    print(f"{dataset.name}, {generator}, epsilon {args.epsilon:g}: logged as run {run_id} of experiment "
          f"{experiment!r} at {resolved_tracking_uri(args.tracking_uri)}")
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("synth_assets")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrors(prog="synth-assets", description=__doc__.replace("``", "'"))
    parser.add_argument("--version", action="version", version=f"synth-assets {_version()}")
    commands = parser.add_subparsers(dest="command", parser_class=_OneLineErrors)
    real = commands.add_parser(
        "real", help="materialize the real-data half: sources, reporting tables, wide table, answers"
    )
    real.add_argument("--dataset", help="dataset directory (default: the embedded Baseball Databank)")
    real.add_argument(
        "--entity-fraction",
        type=_fraction,
        default=1.0,
        help="use a deterministic slice of the entities, e.g. 0.05 (default 1: all)",
    )
    real.add_argument("--json", action="store_true", help="print a JSON summary")
    real.add_argument("--verbose", action="store_true", help="show Dagster's step-by-step log")
    real.set_defaults(handler=_command_real)

    run = commands.add_parser(
        "run", help="materialize the whole graph: real half, then the synthetic half per epsilon"
    )
    run.add_argument(
        "--epsilon",
        type=_epsilon,
        action="append",
        help="epsilon of a run; repeat for several (default: the dataset's epsilon grid)",
    )
    run.add_argument("--dataset", help="dataset directory (default: the embedded Baseball Databank)")
    run.add_argument("--entity-fraction", type=_fraction, default=1.0, help="deterministic slice of entities")
    run.add_argument("--json", action="store_true", help="print one JSON document, a list per epsilon")
    run.add_argument("--verbose", action="store_true", help="show Dagster's step-by-step log")
    run.add_argument(
        "--generator",
        action="append",
        help="run only this generator's branch (repeat for several; default: the dataset's "
        "synthesis.generators)",
    )
    run.add_argument(
        "--allow-negligible-noise",
        action="store_true",
        help="run even when epsilon is so large that the noise is below 0.1 per count (refused otherwise)",
    )
    run.add_argument(
        "--no-evaluation",
        action="store_true",
        help="skip the evaluation against the holdout (evaluation/privacy_risk: the privacy table, the HTML "
        "reports and the comparison page; about a minute per epsilon on the embedded dataset); the "
        "leaderboard and the privacy spend are printed as usual",
    )
    run.set_defaults(handler=_command_run)

    ledger = commands.add_parser(
        "ledger", help="the privacy budget ledger of a dataset: every DP release and the total spent"
    )
    ledger.add_argument("--dataset", help="dataset directory (default: the embedded Baseball Databank)")
    ledger.add_argument("--json", action="store_true", help="print the totals and releases as JSON")
    ledger.set_defaults(handler=_command_ledger)

    report = commands.add_parser(
        "report", help="the evaluation of one release (--epsilon, --generator), or a page comparing every "
        "evaluated release, as a self-contained HTML file"
    )
    report.add_argument("--epsilon", type=_epsilon,
                        help="the release to report on (default: a page comparing every evaluated release)")
    report.add_argument("--generator", help="the branch (default: the first of synthesis.generators)")
    report.add_argument("--dataset", help="dataset directory (default: the embedded Baseball Databank)")
    report.add_argument("--out", required=True, help="the HTML file to write")
    report.set_defaults(handler=_command_report)

    export = commands.add_parser(
        "export", help="write one release's synthetic wide and reporting tables, with a manifest, to hand over"
    )
    export.add_argument("--epsilon", type=_epsilon, required=True, help="the release's epsilon")
    export.add_argument("--generator", help="the branch (default: the first of synthesis.generators)")
    export.add_argument("--format", choices=("parquet", "csv", "jsonl"), default="parquet",
                        help="file format (default parquet)")
    export.add_argument("--out", required=True, help="an empty (or new) directory to write to")
    export.add_argument("--overwrite", action="store_true", help="replace files already in --out")
    export.add_argument("--dataset", help="dataset directory (default: the embedded Baseball Databank)")
    export.set_defaults(handler=_command_export)

    tracked = commands.add_parser(
        "mlflow", help="log one release to MLflow: its privacy parameters, leaderboard and evaluation "
        "figures, verdicts, report and manifest (needs the mlflow extra)"
    )
    tracked.add_argument("--epsilon", type=_epsilon, required=True, help="the release's epsilon")
    tracked.add_argument("--generator", help="the branch (default: the first of synthesis.generators)")
    tracked.add_argument("--tracking-uri",
                         help="where to log (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    tracked.add_argument("--experiment", help="the experiment (default: $MLFLOW_EXPERIMENT_NAME, else "
                         "synth_assets/<dataset>)")
    tracked.add_argument("--include-data", action="store_true",
                         help="also log the exported tables as artefacts (default: the manifest only)")
    tracked.add_argument("--format", choices=("parquet", "csv", "jsonl"), default="parquet",
                         help="file format of --include-data (default parquet)")
    tracked.add_argument("--dataset", help="dataset directory (default: the embedded Baseball Databank)")
    tracked.set_defaults(handler=_command_mlflow)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # no command: what there is to do, not an error
        parser.print_help()
        return 0
    from synth_assets.privacy.accounting import UnsafePrivacySetting
    from synth_assets.privacy.ledger import BudgetExceeded

    try:
        return args.handler(args)
    except (DatasetError, UnsafePrivacySetting) as exc:
        print(f"synth-assets: {exc}", file=sys.stderr)
        return 2
    except BudgetExceeded as exc:
        print(f"synth-assets: {exc} (refused before the private data was read; nothing was released)",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

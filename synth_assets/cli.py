"""The ``synth-assets`` command: materialize the asset graph of a dataset from the shell."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from synth_assets.datasets.loading import DatasetError, configured_dataset_dir, load_dataset


def _instance():
    import dagster as dg

    home = os.environ.get("DAGSTER_HOME")
    if home:
        Path(home).mkdir(parents=True, exist_ok=True)
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


def _quiet_logs(verbose: bool) -> dict:
    level = "DEBUG" if verbose else "WARNING"
    return {"loggers": {"console": {"config": {"log_level": level}}}}


def _command_real(args: argparse.Namespace) -> int:
    import dagster as dg

    from synth_assets.defs.graph import build_resources
    from synth_assets.defs.real.assets import build_real_assets

    dataset = load_dataset(args.dataset or configured_dataset_dir())
    assets = build_real_assets(dataset)
    resources = build_resources(dataset, entity_fraction=args.entity_fraction)
    started = time.perf_counter()
    result = dg.materialize(
        assets,
        resources=resources,
        instance=_instance(),
        raise_on_error=False,
        run_config=_quiet_logs(args.verbose),
    )
    seconds = time.perf_counter() - started
    if not result.success:
        failure = next(e for e in result.all_events if e.is_step_failure)
        error = failure.event_specific_data.error
        message = error.cause.message if error.cause else error.message
        print(f"synth-assets: step {failure.step_key} failed: {message.strip()}", file=sys.stderr)
        return 1
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synth-assets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except DatasetError as exc:
        print(f"synth-assets: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

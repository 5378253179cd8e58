"""Log a release to MLflow: one run per call, with the release's privacy parameters as params, its
leaderboard and evaluation figures as metrics, its verdicts as tags, and its HTML report and export
manifest (optionally the exported tables) as artefacts. Plain Python: MLflow is imported on first use, and
only if the ``mlflow`` extra is installed.

The evaluation report compares the synthetic table with the real training and holdout rows: it is for
the data owner, not a DP release, so the tracking server must be trusted as much as the warehouse."""

from __future__ import annotations

import math
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from synth_assets.datasets.loading import Dataset
from synth_assets.export import FORMATS, MANIFEST, NEIGHBOURING, StoredRelease, stored_release

INSTALL_HINT = "pip install 'synth_assets[mlflow]'"
RELEASE_TAG = "synth_assets.release"
REPORT_SECTIONS = ("rows", "fidelity", "utility", "workload", "privacy")
LEADERBOARD_METRICS = {
    "pass_rate": "leaderboard/workload_query_pass_rate",
    "metric_pass_rate": "leaderboard/workload_value_metric_pass_rate",
    "tvd_1way": "leaderboard/mean_tvd_1way_to_real",
    "tvd_2way": "leaderboard/mean_tvd_2way_to_real",
    "tvd_3way": "leaderboard/mean_tvd_3way_to_real",
}
RELEASE_PARAMS = ("mechanism", "sigma", "seed", "T", "histograms", "selections", "release_epsilon",
                  "identity")
_LIST_KEYS = ("name", "target", "column")
_BATCH = 100


class MlflowUnavailable(ImportError):
    """MLflow is not installed."""


class TrackingError(RuntimeError):
    """MLflow refused the run (a bad tracking URI, a store it cannot open, a rejected value)."""


def _mlflow():
    try:
        import mlflow
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise MlflowUnavailable(f"logging to MLflow needs the mlflow extra: {INSTALL_HINT}") from exc
    return mlflow, MlflowClient


def default_experiment(dataset: Dataset) -> str:
    """$MLFLOW_EXPERIMENT_NAME, else ``synth_assets/<dataset name>``."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or f"synth_assets/{dataset.name}"


def resolved_tracking_uri(tracking_uri: str | None = None) -> str:
    """``tracking_uri``, else MLflow's own choice ($MLFLOW_TRACKING_URI, else ``sqlite:///mlflow.db``)."""
    mlflow, _ = _mlflow()
    return tracking_uri or mlflow.get_tracking_uri()


def release_name(release: StoredRelease) -> str:
    """The value of the :data:`RELEASE_TAG` tag: every run of the same release carries it."""
    return f"{release.dataset.name}/{release.generator}/epsilon={release.partition}"


def _segment(key: object) -> str:
    return re.sub(r"[^\w.\- ]", "_", str(key))


def _numbers(value: object, path: str) -> Iterator[tuple[str, float]]:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            yield from _numbers(inner, f"{path}/{_segment(key)}")
    elif isinstance(value, list):
        if path.endswith("_ci95") and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
            yield from ((f"{path}_{end}", float(v)) for end, v in zip(("low", "high"), value))
            return
        for item in value:
            key = next((item[k] for k in _LIST_KEYS if isinstance(item, Mapping) and item.get(k)), None)
            if key is not None:
                rest = {k: v for k, v in item.items() if k not in _LIST_KEYS}
                yield from _numbers(rest, f"{path}/{_segment(key)}")
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        yield path, float(value)


def release_metrics(release: StoredRelease) -> dict[str, float]:
    """The leaderboard row (``leaderboard/...``) and every number of the evaluation report
    (``evaluation/<section>/...``, named by its path in the report; lists of scalars such as ROC
    curves and histograms are left to the report page)."""
    metrics = {}
    if release.scores:
        metrics.update({name: float(release.scores[column]) for column, name in LEADERBOARD_METRICS.items()
                        if release.scores.get(column) is not None})
    if release.report:
        for section in REPORT_SECTIONS:
            metrics.update(_numbers(release.report.get(section), f"evaluation/{section}"))
    return metrics


def release_params(release: StoredRelease) -> dict[str, str]:
    """The dataset, generator, privacy guarantee and, per ledger release (by kind), its noise and seed."""
    params = {
        "dataset": release.dataset.name,
        "dataset_fingerprint": release.dataset.fingerprint,
        "generator": release.generator,
        "epsilon": release.epsilon,
        "delta": release.delta,
        "neighbouring_relation": NEIGHBOURING,
        "ledger_releases": len(release.releases),
        "synthetic_rows": release.population.height,
    }
    seen: dict[str, int] = {}
    for record in release.releases:
        kind = _segment(record.get("kind") or "release")
        seen[kind] = seen.get(kind, 0) + 1
        prefix = f"release/{kind}" if seen[kind] == 1 else f"release/{kind}_{seen[kind]}"
        params.update({f"{prefix}/{key}": record[key] for key in RELEASE_PARAMS
                       if record.get(key) is not None})
    return {key: str(value) for key, value in params.items()}


def release_tags(release: StoredRelease) -> dict[str, str]:
    """The release's name, the overall verdict, one per section and the DP audit's; the recommendations
    become the run's description."""
    tags = {RELEASE_TAG: release_name(release)}
    report = release.report
    if report is None:
        return {**tags, "verdict": "not evaluated"}
    tags["verdict"] = report["verdict"]
    tags.update({f"verdict.{section}": verdict for section, verdict in report["verdicts"].items()})
    audit = (report.get("privacy") or {}).get("dp_audit") or {}
    if audit.get("verdict"):
        tags["verdict.dp_audit"] = audit["verdict"]
    if report.get("recommendations"):
        tags["mlflow.note.content"] = "\n".join(f"- {line}" for line in report["recommendations"])
    return tags


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _experiment_id(client, name: str, tracking_uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:///") and ":memory:" not in tracking_uri:
        # MLflow would put a database store's artefacts in ./mlruns of whatever directory it runs from.
        location = (Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent / "mlruns").as_uri()
    return client.create_experiment(name, artifact_location=location)


def log_release(
    dataset: Dataset,
    epsilon: float,
    generator: str | None = None,
    *,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    database: str | Path | None = None,
    include_data: bool = False,
    fmt: str = "parquet",
    run_name: str | None = None,
) -> str:
    """Log the release of ``generator`` (default: the first of ``synthesis.generators``) at ``epsilon``,
    as the warehouse (``database``, default the dataset's) holds it, as a new MLflow run; returns its id.

    ``tracking_uri``: default $MLFLOW_TRACKING_URI, else MLflow's ``sqlite:///mlflow.db``; a new experiment
    on a local SQLite store keeps its artefacts in ``mlruns`` beside the database file. ``experiment``:
    default :func:`default_experiment`. Artefacts: ``manifest.json`` (as ``synth-assets export`` writes it),
    ``report/<generator>.html`` (if evaluated) and, with ``include_data``, the exported tables in ``fmt``
    under ``data/``. Logging the same release again makes a new run; every run of it carries the tag
    :data:`RELEASE_TAG`."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    _, MlflowClient = _mlflow()
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.exceptions import MlflowException

    release = stored_release(dataset, epsilon, generator, database=database)
    uri = resolved_tracking_uri(tracking_uri)
    name = experiment or default_experiment(dataset)
    params, metrics, tags = release_params(release), release_metrics(release), release_tags(release)
    try:
        client = MlflowClient(uri)
        run = client.create_run(_experiment_id(client, name, uri),
                                run_name=run_name or release_name(release).replace("/", "-"))
    except MlflowException as exc:
        raise TrackingError(f"MLflow at {uri}: {exc.message}") from exc
    run_id = run.info.run_id
    status = "FAILED"
    try:
        now = int(time.time() * 1000)
        for chunk in _chunks([Param(k, v) for k, v in params.items()], _BATCH):
            client.log_batch(run_id, params=chunk)
        for chunk in _chunks([RunTag(k, v) for k, v in tags.items()], _BATCH):
            client.log_batch(run_id, tags=chunk)
        for chunk in _chunks([Metric(k, v, now, 0) for k, v in metrics.items()], 10 * _BATCH):
            client.log_batch(run_id, metrics=chunk)
        with tempfile.TemporaryDirectory(prefix="synth_assets_mlflow_") as scratch:
            exported = Path(scratch) / "export"
            manifest = release.export(exported, fmt=fmt)
            client.log_artifact(run_id, str(manifest))
            if release.report_page is not None:
                if release.report_page.is_file():
                    client.log_artifact(run_id, str(release.report_page), artifact_path="report")
                else:
                    client.set_tag(run_id, "report_page", f"not found at {release.report_page}")
            if include_data:
                for path in sorted(exported.iterdir()):
                    if path.name != MANIFEST:
                        client.log_artifact(run_id, str(path), artifact_path="data")
        status = "FINISHED"
    except MlflowException as exc:
        raise TrackingError(f"MLflow at {uri}, run {run_id}: {exc.message}") from exc
    finally:
        client.set_terminated(run_id, status)
    return run_id

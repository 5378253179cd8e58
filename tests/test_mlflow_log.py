"""Logging a release to MLflow, read back from a local store: params, metrics equal to the stored report,
verdict tags, and the report page, manifest and tables as artefacts."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import mlflow
import pytest
from mlflow.tracking import MlflowClient

from synth_assets.cli import main
from synth_assets.datasets.loading import load_dataset
from synth_assets.export import (
    EVALUATION_TABLE,
    MANIFEST,
    PARTITION_COLUMN,
    RELEASE_PLAN_TABLE,
    SCORES_TABLE,
    population_table,
    stored_release,
)
from synth_assets.generators.registry import GENERATOR_NAMES, REFERENCE
from synth_assets.mlflow_log import INSTALL_HINT, RELEASE_TAG, MlflowUnavailable, log_release
from synth_assets.privacy.ledger import PrivacyLedger

RELEASE = f"devices/{REFERENCE}/epsilon=1"


@pytest.fixture(scope="module")
def warehouse(tiny_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse holding one evaluated release of the tiny dataset: the reference at epsilon 1, made
    from half of its entities."""
    from synth_assets.pipeline import run_pipeline

    directory = tmp_path_factory.mktemp("warehouse")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SYNTH_ASSETS_WAREHOUSE", str(directory))
        patch.delenv("DAGSTER_HOME", raising=False)
        run_pipeline(load_dataset(tiny_dataset_dir), [1.0], entity_fraction=0.5, generators=[REFERENCE])
    return directory


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A local SQLite tracking store, created once (creating its tables takes seconds); each test logs to an
    experiment of its own."""
    directory = tmp_path_factory.mktemp("tracking")
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()
    return directory, uri


@pytest.fixture
def released(warehouse: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The warehouse above, as the dataset's warehouse of this test."""
    monkeypatch.setenv("SYNTH_ASSETS_WAREHOUSE", str(warehouse))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    return warehouse


def _stored(warehouse: Path) -> tuple[dict, dict]:
    """The stored report and leaderboard row, read straight from the warehouse tables."""
    with duckdb.connect(str(warehouse / "devices.duckdb"), read_only=True) as connection:
        ((report,),) = connection.execute(
            "select report_json from evaluation.privacy_risk where generator = ? and __partition_key = '1'",
            [REFERENCE]).fetchall()
        scores = connection.sql("select * from synthetic.benchmark_scores__summary "
                                f"where generator = '{REFERENCE}' and __partition_key = '1'").pl().to_dicts()
    return json.loads(report), scores[0]


def _in_report(report, path: list[str]):
    """The value a metric named ``evaluation/<path>`` was taken from."""
    head, *rest = path
    if isinstance(report, list):
        (item,) = [i for i in report if head in (i.get("name"), i.get("target"), i.get("column"))]
        return _in_report(item, rest)
    if head not in report and head.endswith(("_low", "_high")):
        key, end = head.rsplit("_", 1)
        assert not rest
        return report[key][0 if end == "low" else 1]
    return report[head] if not rest else _in_report(report[head], rest)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("store", ["sqlite", "file"])
def test_a_release_lands_in_mlflow_with_its_params_metrics_verdicts_and_files(
    tiny, released, sqlite_store, tmp_path, monkeypatch, store
):
    if store == "sqlite":
        uri, include_data = sqlite_store[1], True
    else:
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow's file store is in maintenance mode
        uri, include_data = (tmp_path / "mlruns").as_uri(), False
    run_id = log_release(tiny, 1.0, REFERENCE, tracking_uri=uri, experiment=f"handover {store}",
                         include_data=include_data)

    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == f"handover {store}"
    report, scores = _stored(released)
    ledger = PrivacyLedger(released / "devices.duckdb").releases("devices").to_dicts()
    assert len(ledger) == 1 and ledger[0]["kind"] == REFERENCE

    params = run.data.params
    assert params["dataset"] == "devices" and params["dataset_fingerprint"] == tiny.fingerprint
    assert params["generator"] == REFERENCE
    assert float(params["epsilon"]) == 1.0 and float(params["delta"]) == 1e-6
    assert "one entity" in params["neighbouring_relation"] and params["ledger_releases"] == "1"
    assert int(params["synthetic_rows"]) == report["rows"]["synthetic"] == scores["rows"]
    assert float(params[f"release/{REFERENCE}/sigma"]) == ledger[0]["sigma"] > 0
    assert params[f"release/{REFERENCE}/seed"] == str(ledger[0]["seed"])
    assert params[f"release/{REFERENCE}/identity"] == ledger[0]["identity"]

    metrics = run.data.metrics
    leaderboard = {"workload_query_pass_rate": "pass_rate",
                   "workload_value_metric_pass_rate": "metric_pass_rate",
                   "mean_tvd_1way_to_real": "tvd_1way", "mean_tvd_2way_to_real": "tvd_2way",
                   "mean_tvd_3way_to_real": "tvd_3way"}
    assert {name: metrics[f"leaderboard/{name}"] for name in leaderboard} == {
        name: scores[column] for name, column in leaderboard.items()}
    privacy, membership = report["privacy"], report["privacy"]["membership_inference"]
    assert membership["auc"] is not None  # the fixture's release is large enough to attack
    assert metrics["evaluation/privacy/membership_inference/auc"] == membership["auc"]
    assert metrics["evaluation/privacy/membership_inference/auc_ci95_low"] == membership["auc_ci95"][0]
    assert metrics["evaluation/privacy/dp_audit/auc_bound"] == privacy["dp_audit"]["auc_bound"]
    attacks = privacy["attacks"]
    assert metrics["evaluation/privacy/attacks/singling_out/risk"] == attacks["singling_out"]["risk"]
    fidelity = report["fidelity"]["synthetic_vs_training"]
    assert metrics["evaluation/fidelity/synthetic_vs_training/tvd_2way"] == fidelity["tvd_2way"]
    assert metrics["evaluation/workload/metric_pass_rate"] == report["workload"]["metric_pass_rate"]
    query = report["workload"]["query_scores"][0]
    metric, value = next(iter(query["metrics"].items()))
    assert metrics[f"evaluation/workload/query_scores/{query['name']}/metrics/{metric}"] == value
    evaluated = [name for name in metrics if name.startswith("evaluation/")]
    assert len(evaluated) > 50
    for name in evaluated:
        assert metrics[name] == _in_report(report, name.split("/")[1:]), name

    tags = run.data.tags
    assert tags[RELEASE_TAG] == RELEASE and tags["verdict"] == report["verdict"]
    assert {s: tags[f"verdict.{s}"] for s in report["verdicts"]} == report["verdicts"]
    assert tags["verdict.dp_audit"] == privacy["dp_audit"]["verdict"] == "green"
    assert report["recommendations"][0] in tags["mlflow.note.content"]

    logged = sorted(a.path for a in client.list_artifacts(run_id))
    assert logged == (["data", MANIFEST, "report"] if include_data else [MANIFEST, "report"])
    local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(tmp_path / "got"),
                                                     tracking_uri=uri))
    manifest = json.loads((local / MANIFEST).read_text())
    assert manifest["dataset_fingerprint"] == tiny.fingerprint and manifest["epsilon"] == 1.0
    assert [r["identity"] for r in manifest["releases"]] == [ledger[0]["identity"]]
    assert manifest["evaluation"]["verdicts"] == report["verdicts"]
    page = Path(manifest["evaluation"]["report"])
    assert (local / "report" / page.name).read_bytes() == page.read_bytes()
    if include_data:
        files = sorted(f["file"] for f in manifest["files"])
        assert sorted(p.name for p in (local / "data").iterdir()) == files
        for entry in manifest["files"]:
            assert _sha256(local / "data" / entry["file"]) == entry["sha256"], entry["file"]
        assert run.info.artifact_uri.startswith((sqlite_store[0] / "mlruns").as_uri())


def test_logging_the_same_release_again_makes_a_new_run(tiny, released, sqlite_store):
    uri = sqlite_store[1]
    first, second = (log_release(tiny, 1.0, REFERENCE, tracking_uri=uri) for _ in range(2))
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("synth_assets/devices")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{RELEASE_TAG}` = '{RELEASE}'")
    assert first != second and {r.info.run_id for r in runs} == {first, second}
    assert runs[0].data.params == runs[1].data.params and runs[0].data.metrics == runs[1].data.metrics


def test_the_stored_release_is_what_the_graph_wrote_and_what_export_hands_over(tiny, released, tmp_path):
    from synth_assets.defs.evaluation.assets import PRIVACY_RISK_KEY
    from synth_assets.defs.synthetic.assets import RELEASE_PLAN_KEY, SCORES_KEY, population_key
    from synth_assets.io_managers import PARTITION_COLUMN as GRAPH_PARTITION_COLUMN
    from synth_assets.io_managers import read_frame

    assert {name: population_table(name) for name in GENERATOR_NAMES} == {
        name: tuple(population_key(name).path) for name in GENERATOR_NAMES}
    assert RELEASE_PLAN_TABLE == tuple(RELEASE_PLAN_KEY.path)
    assert EVALUATION_TABLE == tuple(PRIVACY_RISK_KEY.path)
    assert SCORES_TABLE == (SCORES_KEY.path[0], f"{SCORES_KEY.path[1]}__summary")
    assert PARTITION_COLUMN == GRAPH_PARTITION_COLUMN

    release = stored_release(tiny, 1.0, REFERENCE)
    with duckdb.connect(str(released / "devices.duckdb"), read_only=True) as connection:
        assert release.population.equals(read_frame(connection, *population_key(REFERENCE).path, "1"))
    assert main(["export", "--dataset", str(tiny.directory), "--epsilon", "1", "--generator", REFERENCE,
                 "--out", str(tmp_path / "cli")]) == 0
    ours = json.loads(release.export(tmp_path / "ours").read_text())
    theirs = json.loads((tmp_path / "cli" / MANIFEST).read_text())
    assert ours.pop("exported_at") and theirs.pop("exported_at")
    assert ours == theirs and ours["evaluation"] and ours["releases"]


def test_the_mlflow_command_logs_a_release_without_dagster(tiny_dataset_dir, released, sqlite_store,
                                                            tmp_path):
    (store, uri), elsewhere = sqlite_store, tmp_path / "elsewhere"
    elsewhere.mkdir()
    command = (
        "import sys\n"
        "from synth_assets.cli import main\n"
        "status = main(sys.argv[1:])\n"
        "assert 'dagster' not in sys.modules, 'logging to MLflow imported dagster'\n"
        "sys.exit(status)\n"
    )
    env = {**os.environ, "SYNTH_ASSETS_WAREHOUSE": str(released)}
    env.pop("DAGSTER_HOME", None)
    completed = subprocess.run(
        [sys.executable, "-c", command, "mlflow", "--dataset", str(tiny_dataset_dir), "--epsilon", "1",
         "--generator", REFERENCE, "--tracking-uri", uri, "--experiment", "from the shell"],
        env=env, cwd=elsewhere, capture_output=True, text=True, timeout=120, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith(f"devices, {REFERENCE}, epsilon 1: logged as run ")
    run_id = completed.stdout.split("logged as run ")[1].split()[0]
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.tags[RELEASE_TAG] == RELEASE and run.data.params["generator"] == REFERENCE
    assert MlflowClient(uri).get_experiment(run.info.experiment_id).name == "from the shell"
    assert run.info.artifact_uri.startswith((store / "mlruns").as_uri()) and not any(elsewhere.iterdir())


def test_an_unknown_epsilon_or_an_empty_warehouse_is_refused_before_mlflow_is_touched(
    tiny_dataset_dir, released, tmp_path, monkeypatch, capsys
):
    database = tmp_path / "mlflow.db"
    args = ["mlflow", "--dataset", str(tiny_dataset_dir), "--generator", REFERENCE,
            "--tracking-uri", f"sqlite:///{database}"]
    assert main([*args, "--epsilon", "2"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"synth-assets: {REFERENCE} has no synthetic table at epsilon 2 (it has epsilon 1): "
        f"run 'synth-assets run --epsilon 2 --generator {REFERENCE}' first")
    monkeypatch.setenv("SYNTH_ASSETS_WAREHOUSE", str(tmp_path / "empty"))
    assert main([*args, "--epsilon", "1"]) == 2
    assert "no warehouse at " in capsys.readouterr().err
    assert not database.exists()
    with pytest.raises(SystemExit) as bad:
        main([*args, "--epsilon", "-1"])
    assert bad.value.code == 2 and "epsilon must be a positive number, got -1" in capsys.readouterr().err


def test_without_mlflow_the_error_says_what_to_install(tiny, tiny_dataset_dir, released, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(MlflowUnavailable, match=re.escape(INSTALL_HINT)):
        log_release(tiny, 1.0, REFERENCE)
    assert main(["mlflow", "--dataset", str(tiny_dataset_dir), "--epsilon", "1"]) == 2
    message = f"synth-assets: logging to MLflow needs the mlflow extra: {INSTALL_HINT}"
    assert capsys.readouterr().err.strip() == message


def test_a_release_that_was_not_evaluated_is_logged_with_its_leaderboard_only(tiny, released, sqlite_store,
                                                                             tmp_path):
    database = tmp_path / "devices.duckdb"
    database.write_bytes((released / "devices.duckdb").read_bytes())
    with duckdb.connect(str(database)) as connection:
        connection.execute("drop table evaluation.privacy_risk")
    uri = sqlite_store[1]
    run_id = log_release(tiny, 1.0, REFERENCE, tracking_uri=uri, database=database,
                         experiment="not evaluated")
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.data.tags["verdict"] == "not evaluated"
    assert not any(tag.startswith("verdict.") for tag in run.data.tags)
    assert run.data.metrics and all(name.startswith("leaderboard/") for name in run.data.metrics)
    assert [a.path for a in client.list_artifacts(run_id)] == [MANIFEST]


def test_a_store_mlflow_refuses_is_one_line_and_a_failed_exit(
    tiny_dataset_dir, released, tmp_path, monkeypatch, capsys
):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    status = main(["mlflow", "--dataset", str(tiny_dataset_dir), "--epsilon", "1", "--generator", REFERENCE,
                   "--tracking-uri", (tmp_path / "mlruns").as_uri()])
    error = capsys.readouterr().err
    assert status == 1 and len(error.strip().splitlines()) == 1
    assert error.startswith(f"synth-assets: MLflow at {(tmp_path / 'mlruns').as_uri()}: ")
    assert "MLFLOW_ALLOW_FILE_STORE" in error

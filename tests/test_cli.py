"""The synth-assets command, run as a real process."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

REQUIRED = {
    "dataset", "epsilon", "delta", "sigma", "T", "n_real", "n_synthetic", "pass_rate",
    "queries", "tvd_1way", "tvd_2way", "baseline", "seconds",
}


def _run(*args: str, tmp_path: Path, timeout: int = 600, dagster_home: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "SYNTH_ASSETS_WAREHOUSE": str(tmp_path / "warehouse")}
    env.pop("DAGSTER_HOME", None)
    if dagster_home is not None:
        env["DAGSTER_HOME"] = str(dagster_home)
    return subprocess.run(
        [sys.executable, "-m", "synth_assets.cli", *args],
        env=env, capture_output=True, text=True, timeout=timeout,
    )


def test_run_on_a_dataset_directory_prints_one_json_document(tiny_dataset_dir: Path, tmp_path: Path) -> None:
    # the evaluation is checked in test_run_of_one_generator_charges_and_scores_only_its_branch
    home = tmp_path / "dagster_home"
    completed = _run("run", "--dataset", str(tiny_dataset_dir), "--epsilon", "1", "--epsilon", "3",
                     "--json", "--no-evaluation", tmp_path=tmp_path, dagster_home=home)
    assert completed.returncode == 0, completed.stderr
    summaries = json.loads(completed.stdout)
    assert [s["epsilon"] for s in summaries] == [1.0, 3.0]  # 3 is not in the grid: added for this run
    with dg.DagsterInstance.from_config(str(home)) as instance:  # what the UI of that instance shows
        assert sorted(instance.get_dynamic_partitions("devices_epsilon")) == ["1", "3", "4"]
        runs = sorted((r.job_name, r.tags.get("dagster/partition", "")) for r in instance.get_runs())
    assert runs == [("epsilon_grid", "1"), ("epsilon_grid", "3"), ("real_tables", "")]
    for summary in summaries:
        assert REQUIRED <= set(summary)
        assert "evaluation" not in summary  # --no-evaluation
        assert summary["dataset"] == "devices" and summary["n_real"] == 400
        assert summary["epsilon_composed"] == pytest.approx(summary["epsilon"], abs=1e-6)
        assert {q["name"] for q in summary["queries"]} == {
            "mean_minutes_by_region", "crash_tail", "models", "busiest_years", "beta_regions"}
        assert set(summary["baseline"]) >= {"pass_rate", "tvd_1way", "tvd_2way"}
        assert [r["kind"] for r in summary["releases"]] == ["mst_prior", "nn_histogram"]
    assert summaries[1]["sigma"] < summaries[0]["sigma"]
    assert (tmp_path / "warehouse" / "devices.duckdb").is_file()
    assert not (tmp_path / "warehouse" / "reports").exists()  # no evaluation, no reports


def test_run_prints_a_readable_table(tiny_dataset_dir: Path, tmp_path: Path) -> None:
    completed = _run("run", "--dataset", str(tiny_dataset_dir), "--epsilon", "2", tmp_path=tmp_path)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert "generator" in completed.stdout and "tvd3" in completed.stdout
    first = next(line.split() for line in lines if line.strip().startswith("2 "))
    assert first[1] in {"private_evolution", "independent_marginals"}
    assert sum(line.split()[0] in {"private_evolution", "independent_marginals"} for line in lines if line.strip()) == 1
    assert "privacy: each partition spends its generators together (epsilon 2: 3.03" in completed.stdout
    assert "mia auc" in completed.stdout  # the evaluation's privacy table, printed after the leaderboard
    assert "every release compared: " in completed.stdout and "comparison.html" in completed.stdout


def test_run_of_one_generator_charges_and_scores_only_its_branch(tiny_dataset_dir: Path, tmp_path: Path) -> None:
    completed = _run(
        "run", "--dataset", str(tiny_dataset_dir), "--epsilon", "1", "--generator", "independent_marginals",
        "--json", tmp_path=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    (summary,) = json.loads(completed.stdout)
    assert [row["generator"] for row in summary["leaderboard"]] == ["independent_marginals"]
    assert summary["privacy"]["partition_epsilon_gdp"] == pytest.approx(1.0, abs=1e-6)  # the reference alone
    assert "queries" not in summary and summary["baseline"]["tvd_3way"] > 0
    (evaluation,) = summary["evaluation"]
    assert evaluation["generator"] == "independent_marginals" and evaluation["dp_audit"] == "green"
    assert Path(evaluation["report"]).is_file()

    page = tmp_path / "reference.html"
    reported = _run("report", "--dataset", str(tiny_dataset_dir), "--epsilon", "1", "--generator",
                    "independent_marginals", "--out", str(page), tmp_path=tmp_path, timeout=300)
    assert reported.returncode == 0, reported.stderr
    assert "independent_marginals, epsilon 1" in reported.stdout and "report written to" in reported.stdout
    assert "Audit against the DP bound" in page.read_text()
    assert "  - " in reported.stdout  # the release's recommendations follow the verdict
    everything = tmp_path / "all.html"
    compared = _run("report", "--dataset", str(tiny_dataset_dir), "--out", str(everything), tmp_path=tmp_path,
                    timeout=300)
    assert compared.returncode == 0, compared.stderr
    assert "devices: 1 releases compared" in compared.stdout
    assert 'alt="ROC at epsilon 1"' in everything.read_text()

    handed = tmp_path / "handover"
    exported = _run("export", "--dataset", str(tiny_dataset_dir), "--epsilon", "1", "--generator",
                    "independent_marginals", "--format", "csv", "--out", str(handed), tmp_path=tmp_path, timeout=300)
    assert exported.returncode == 0, exported.stderr
    manifest = json.loads((handed / "manifest.json").read_text())
    assert manifest["generator"] == "independent_marginals" and manifest["epsilon"] == 1.0
    assert manifest["evaluation"]["verdicts"]["privacy"] == evaluation["privacy_verdict"]
    assert [r["kind"] for r in manifest["releases"]] and all(r["partition_key"] == "1" for r in manifest["releases"])
    assert sum(r["release_epsilon"] for r in manifest["releases"]) == pytest.approx(1.0, rel=1e-3)
    assert {f["file"] for f in manifest["files"]} >= {"wide.csv"} and (handed / "wide.csv").is_file()
    again = _run("export", "--dataset", str(tiny_dataset_dir), "--epsilon", "1", "--generator",
                 "independent_marginals", "--out", str(handed), tmp_path=tmp_path, timeout=300)
    assert again.returncode == 2 and "already holds files" in again.stderr
    missing = _run("report", "--dataset", str(tiny_dataset_dir), "--epsilon", "2", "--generator",
                   "independent_marginals", "--out", str(page), tmp_path=tmp_path, timeout=300)
    assert missing.returncode == 2 and "synth-assets run --epsilon 2" in missing.stderr
    unknown = _run("run", "--dataset", str(tiny_dataset_dir), "--epsilon", "1", "--generator", "gan",
                   tmp_path=tmp_path, timeout=120)
    assert unknown.returncode == 2 and "generators ['gan'] are not in synthesis.generators" in unknown.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--epsilon", "0"], "epsilon must be a positive number, got 0"),
        (["run", "--epsilon", "abc"], "not a number: 'abc'"),
        (["run", "--epsilon", "1", "--dataset", "/no/such/dir"], "/no/such/dir: dataset directory not found"),
        (["run", "--entity-fraction", "2"], "must be in (0, 1], got 2.0"),
        (["fly"], "invalid choice: 'fly'"),
        (["export", "--epsilon", "1"], "the following arguments are required: --out"),
    ],
)
def test_bad_arguments_give_one_line_and_a_non_zero_exit(args, message, tmp_path: Path) -> None:
    completed = _run(*args, tmp_path=tmp_path, timeout=120)
    assert completed.returncode != 0
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert message in lines[0]


def test_without_a_command_the_help_and_with_version_the_version(tmp_path: Path) -> None:
    bare = _run(tmp_path=tmp_path, timeout=120)
    assert bare.returncode == 0 and bare.stderr == ""
    assert "usage: synth-assets" in bare.stdout and "export" in bare.stdout and "``" not in bare.stdout
    version = _run("--version", tmp_path=tmp_path, timeout=120)
    assert version.returncode == 0 and re.fullmatch(r"synth-assets \S+\n", version.stdout)


def test_invalid_dataset_gives_one_line(tiny_copy: Path, tmp_path: Path) -> None:
    (tiny_copy / "dataset.yaml").write_text("spec_version: 1\nname: x\n")
    completed = _run("run", "--epsilon", "1", "--dataset", str(tiny_copy), tmp_path=tmp_path, timeout=120)
    assert completed.returncode == 2
    assert completed.stderr.startswith(f"synth-assets: {tiny_copy / 'dataset.yaml'}: ")


@pytest.mark.slow
def test_embedded_run_at_epsilon_1_beats_the_reference_on_two_way_marginals(tmp_path: Path) -> None:
    completed = _run("run", "--epsilon", "1", "--json", tmp_path=tmp_path, timeout=900)
    assert completed.returncode == 0, completed.stderr
    (summary,) = json.loads(completed.stdout)
    assert summary["dataset"] == "lahman" and summary["n_real"] > 20_000
    assert abs(summary["n_synthetic"] - summary["n_real"]) < 0.05 * summary["n_real"]
    assert summary["tvd_2way"] < summary["baseline"]["tvd_2way"]
    assert len(summary["queries"]) >= 18
    # measured (epsilon 1): TVD 1/2/3-way PE 0.012 / 0.077 / 0.149, MST 0.012 / 0.082 / 0.156, reference
    # 0.010 / 0.150 / 0.297: the literature's MST (45 % below the reference), and PE on its MST prior ahead
    board = {row["generator"]: row for row in summary["leaderboard"]}
    mst, reference, pe = board["mst"], board["independent_marginals"], board["private_evolution"]
    for ways in ("tvd_2way", "tvd_3way"):
        assert mst[ways] < 0.7 * reference[ways], ways
        assert pe[ways] < 1.02 * mst[ways], ways
    assert mst["tvd_1way"] < 0.02
    # every table was evaluated against the holdout, and no membership attack beat the DP bound
    assert {row["generator"] for row in summary["evaluation"]} == set(board)
    assert {row["dp_audit"] for row in summary["evaluation"]} == {"green"}

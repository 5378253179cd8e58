"""The README's walk-through "From your CSV files to a release you can hand over" runs as written.

Everything comes from that section of README.md, never from a copy: the Python snippet that writes the
CSV files, every file shown under its name (`my_dataset/...`: an inline code span or the fenced block
that follows), and the shell commands of its bash block, run one after the other with the
``synth-assets`` console script, as a user would, in a fresh directory. An edit to the README that
breaks the walk-through fails here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from synth_assets.datasets.loading import load_dataset
from synth_assets.privacy.ledger import PrivacyLedger

README = Path(__file__).resolve().parents[1] / "README.md"
HEADING = "### From your CSV files to a release you can hand over"
COMMAND = ".venv/bin/synth-assets"
SCRIPT = Path(sys.executable).with_name("synth-assets")  # the console script of the environment under test

_FENCE = re.compile(r"^[ \t]*```")
_BLOCK = re.compile(r"^([ \t]*)```(\w*)[ \t]*\n(.*?)^[ \t]*```[ \t]*$", re.MULTILINE | re.DOTALL)
# "`my_dataset/x.sql`: `select ...`" or "`my_dataset/x.sql`:" (or "... `my_dataset/x.json`:") then a fenced block
_FILE = re.compile(
    r"`(my_dataset/[\w./-]+)`:(?:[ \t]+`([^`]+)`|[ \t]*\n(?:[ \t]*\n)?[ \t]*```\w*[ \t]*\n(.*?)^[ \t]*```)",
    re.MULTILINE | re.DOTALL,
)


def walkthrough_section(text: str) -> str:
    """The section from its heading to the next heading (a line starting with '#' outside a code block)."""
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.rstrip() == HEADING)
    in_code = False
    for end in range(start + 1, len(lines)):
        if _FENCE.match(lines[end]):
            in_code = not in_code
        elif not in_code and lines[end].startswith("#"):
            break
    else:
        end = len(lines)
    return "".join(lines[start + 1:end])


def _dedent_block(body: str) -> str:
    return textwrap.dedent(body).rstrip() + "\n"


def shown_files(section: str) -> dict[str, str]:
    """Every file the section shows with its name: path -> content."""
    files = {}
    for match in _FILE.finditer(section):
        path, inline, block = match.groups()
        assert path not in files, f"the walk-through shows {path} twice"
        files[path] = " ".join(inline.split()) + "\n" if inline is not None else _dedent_block(block)
    return files


def code_blocks(section: str, language: str) -> list[str]:
    return [_dedent_block(body) for _, lang, body in _BLOCK.findall(section) if lang == language]


def shell_commands(section: str) -> list[list[str]]:
    """The commands of the section's bash blocks, one per line (comments dropped), as argument lists."""
    commands = []
    for block in code_blocks(section, "bash"):
        for line in block.splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                commands.append(argv)
    return commands


def _verdict_table(stdout: str) -> list[dict[str, str]]:
    """The rows of the verdict table `synth-assets run` prints after the leaderboard."""
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["epsilon", "generator", "verdict"])
    names = lines[header].replace("mia auc", "mia_auc").split()
    rows = []
    for line in lines[header + 2:]:
        if line.startswith("verdicts against"):
            break
        rows.append(dict(zip(names, line.split(), strict=True)))
    return rows


@pytest.mark.slow
def test_readme_walkthrough_from_csv_files_to_a_handed_over_release(tmp_path: Path) -> None:
    section = walkthrough_section(README.read_text())
    files, snippets, commands = shown_files(section), code_blocks(section, "python"), shell_commands(section)
    assert "my_dataset/dataset.yaml" in files and any(p.startswith("my_dataset/queries/") for p in files), files
    assert len(snippets) == 1, "the walk-through shows one Python snippet: the one that writes the CSV files"
    assert commands and all(argv[0] == COMMAND for argv in commands), commands
    assert SCRIPT.is_file(), f"no console script at {SCRIPT}: install the package (pip install -e .)"

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("SYNTH_ASSETS_", "OPENAI_", "DAGSTER_"))}
    env.update(DAGSTER_HOME=str(home), SYNTH_ASSETS_WAREHOUSE=str(tmp_path / "warehouse"))

    # 1. the data: the snippet, run where my_dataset is to be
    made = subprocess.run([sys.executable, "-c", snippets[0]], check=False, cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    data = sorted(p.name for p in (tmp_path / "my_dataset" / "data").iterdir())
    sources = re.findall(r"path: (data/[\w./-]+)", files["my_dataset/dataset.yaml"])
    assert sorted(Path(s).name for s in sources) == data, (sources, data)  # the spec reads what was written
    # 2-6. the spec, the shared view, the reporting SQL and the query, as shown
    for relative, content in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)

    # 7. the commands, in order
    outputs = {}
    for argv in commands:
        completed = subprocess.run([str(SCRIPT), *argv[1:]], check=False, cwd=tmp_path, env=env,
                                   capture_output=True, text=True, timeout=900)
        assert completed.returncode == 0, f"{shlex.join(argv)} exited {completed.returncode}:\n{completed.stderr}"
        outputs.setdefault(argv[1], []).append((argv, completed.stdout))

    spec = load_dataset(tmp_path / "my_dataset").spec  # what the README's spec says, as the product reads it
    name, budget = spec.name, spec.privacy.budget_epsilon

    # the trial on a slice of the entities, then the whole run with its verdicts
    (trial, trial_out), (whole, whole_out) = outputs["run"]
    assert "--entity-fraction" in trial and "--no-evaluation" in trial and "--entity-fraction" not in whole
    assert "real half materialized" in trial_out and "mia auc" not in trial_out
    epsilon = whole[whole.index("--epsilon") + 1]
    verdicts = _verdict_table(whole_out)
    assert sorted(row["generator"] for row in verdicts) == sorted(spec.synthesis.generators)  # one row per release
    for row in verdicts:
        assert row["epsilon"] == epsilon
        assert {row[s] for s in ("verdict", "fidelity", "utility", "workload", "privacy")} <= {"green", "amber", "red"}
        assert row["audit"] == "green", row  # no membership attack beats the bound of a DP release
    comparison = re.search(r"every release compared: (\S+)", whole_out)
    assert comparison and Path(comparison[1]).is_file()
    spent = re.search(rf"dataset {name} has spent epsilon ([\d.]+) \(simple sum [\d.]+\) of its budget {budget:g}; "
                      r"remaining ([\d.]+)", whole_out)
    assert spent and float(spent[1]) > 0, whole_out

    # the comparison page
    ((report, report_out),) = outputs["report"]
    page = tmp_path / report[report.index("--out") + 1]
    assert f"{name}: {len(verdicts)} releases compared; page written to" in report_out
    assert f'alt="ROC at epsilon {epsilon}"' in page.read_text()

    # the ledger: every release of both runs (the trial is charged too), and what was spent
    ((_, ledger_out),) = outputs["ledger"]
    releases = PrivacyLedger(tmp_path / "warehouse" / f"{name}.duckdb").releases(name).sort("recorded_at")
    assert releases.height > 0 and set(releases["partition_key"]) == {epsilon}
    assert len(set(releases["run_id"])) == 2  # the trial run and the whole run
    for release in releases.iter_rows(named=True):
        assert release["identity"][:12] in ledger_out and release["kind"] in ledger_out
    assert f"total: {releases.height} releases" in ledger_out
    ledger_spent = re.search(r"spent: epsilon ([\d.]+) at delta", ledger_out)
    assert ledger_spent and float(ledger_spent[1]) == pytest.approx(float(spent[1]), abs=1e-3)  # as the run said
    assert f"budget: epsilon {budget:.4f}; remaining {budget - float(ledger_spent[1]):.4f}" in ledger_out

    # the release handed over: its tables, and a manifest whose SHA-256 match the files
    ((export, export_out),) = outputs["export"]
    out = tmp_path / export[export.index("--out") + 1]
    generator, fmt = export[export.index("--generator") + 1], export[export.index("--format") + 1]
    assert export[export.index("--epsilon") + 1] == epsilon
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset"] == name and manifest["generator"] == generator
    assert manifest["epsilon"] == float(epsilon)
    tables = {"wide", *spec.reporting_tables}
    assert {f["file"] for f in manifest["files"]} == {f"{table}.{fmt}" for table in tables}
    assert sorted(p.name for p in out.iterdir()) == sorted([*(f["file"] for f in manifest["files"]), "manifest.json"])
    for entry in manifest["files"]:
        assert hashlib.sha256((out / entry["file"]).read_bytes()).hexdigest() == entry["sha256"], entry["file"]
        assert entry["rows"] > 0
    # the releases the table was made from: the whole run's, not the trial's
    assert manifest["releases"] and {r["run_id"] for r in manifest["releases"]} == {releases["run_id"][-1]}
    assert {r["identity"] for r in manifest["releases"]} <= set(releases["identity"])
    (row,) = [r for r in verdicts if r["generator"] == generator]
    assert manifest["evaluation"]["verdict"] == row["verdict"]
    assert Path(manifest["evaluation"]["report"]).is_file()  # the release's own report page
    assert f"{len(manifest['files'])} tables written to" in export_out

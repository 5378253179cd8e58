"""The real Dagster UI, driven by headless Chromium.

The test starts ``dagster dev`` (webserver and daemon) on loopback with a fresh DAGSTER_HOME over a
deployment of two datasets (the tiny ``devices`` and a copy named ``shop``), one code location each,
after ``synth-assets run`` materialized the real half of ``devices`` and an epsilon off its grid (3,
the reference only). In the browser it checks that both locations are loaded, that the Partitions view
of the reference shows the grid's epsilons and the off-grid one (materialized), opens the asset graph of
the synthetic group, launches the materialization of epsilon partition 1 of the ``epsilon_grid`` job
from that job's asset graph (Materialize all -> run config in the config editor -> partition 1 -> Launch
1 run), finds the run in the runs list and follows it on its page until it shows Success. The Dagster
instance and the DuckDB warehouse then confirm what was materialized, and the evaluation's HTML report
of each synthetic table opens in the browser. The server is stopped by its process id.

Needs Debian's Chromium (/usr/bin/chromium, installed by .ci/install-browser) and the Python package
playwright (its bundled driver only: no browser download). Screenshots of every step are written to the
test's tmp_path/screenshots, and a last one when the test fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_TIMEOUT = 180  # s until /server_info answers and the code location has loaded
RUN_TIMEOUT = 300  # s for the launched run to finish
PARTITION = "1"  # one epsilon of the tiny dataset's grid [1, 4]
OTHER_PARTITION = "4"
OFF_GRID = "3"  # run by the command before the server starts
LOCATION = "devices"
OTHER_LOCATION = "shop"
# Typed into the launch dialog's config editor: a smaller PE run, and proof that UI config reaches it.
POOL_SIZE = 500
RUN_CONFIG = f"resources: {{pe: {{config: {{pool_size: {POOL_SIZE}, reference_points: 5000}}}}}}\n"

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def _require_browser():
    """Playwright's sync API, or a skip (a failure in CI, which must run this test)."""
    in_ci = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
    if not CHROMIUM.is_file():
        message = f"{CHROMIUM} not found: run .ci/install-browser (Debian's chromium and chromium-driver)"
        if in_ci:
            pytest.fail(message)
        pytest.skip(message)
    try:
        from playwright import sync_api
    except ImportError:
        message = "the Python package playwright is not installed (pip install -e '.[test]')"
        if in_ci:
            pytest.fail(message)
        pytest.skip(message)
    return sync_api


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _group_has_live_members(pgid: int) -> bool:
    """True while a process of the group is still running (zombies awaiting their reaper don't count)."""
    if not _group_alive(pgid):
        return False
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError, PermissionError):
            continue
        state, group = fields[0], int(fields[2])
        if group == pgid and state not in {"Z", "X"}:
            return True
    return False


def _default_signals() -> None:
    """A process started in the background inherits SIGINT ignored, and Python then installs no
    KeyboardInterrupt handler: `dagster dev` would ignore Ctrl-C (and copies that to SIGTERM)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _stop(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGINT (Ctrl-C, which `dagster dev` handles by stopping its webserver, daemon and code servers)
    to the server's process group (its id is the server's pid), then SIGTERM, SIGKILL if it lingers."""
    pgid = process.pid
    for stop in (signal.SIGINT, signal.SIGTERM):
        if process.poll() is None or _group_has_live_members(pgid):
            try:
                os.killpg(pgid, stop)
            except ProcessLookupError:
                pass
        try:
            process.wait(timeout=timeout / 2)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.monotonic() + timeout / 2
        while _group_has_live_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _group_has_live_members(pgid):
            return
    if process.poll() is None or _group_has_live_members(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        while _group_has_live_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)


WORKSPACE_QUERY = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""


def _code_locations(url: str) -> list[dict] | None:
    """The workspace's code locations as the webserver sees them, or None while it does not answer."""
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": WORKSPACE_QUERY}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            workspace = json.load(response)["data"]["workspaceOrError"]
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError, KeyError, TypeError):
        return None
    return workspace.get("locationEntries")


def _wait_until_ready(url: str, process: subprocess.Popen, log: Path) -> None:
    """Until /server_info answers and every code location has loaded; fail on a load error."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while True:
        assert process.poll() is None, f"dagster dev exited with {process.returncode}:\n{_tail(log)}"
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=5) as response:
                answered = response.status == 200 and b"dagster_webserver_version" in response.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            answered = False
        locations = _code_locations(url) if answered else None
        if locations:
            for entry in locations:
                error = entry.get("locationOrLoadError") or {}
                assert error.get("__typename") != "PythonError", (
                    f"code location {entry['name']} failed to load: {error.get('message')}"
                )
            if all(entry["loadStatus"] == "LOADED" for entry in locations):
                return
        assert time.monotonic() < deadline, f"dagster dev was not ready in time:\n{_tail(log)}"
        time.sleep(0.5)


@dataclass
class DagsterServer:
    url: str
    home: Path
    warehouse: Path
    process: subprocess.Popen
    log: Path


@pytest.fixture
def dagster_server(sync_api, tiny_dataset_dir: Path, tmp_path: Path) -> Iterator[DagsterServer]:
    """``dagster dev`` on a free loopback port over two datasets, one code location each; the first
    with its real half and an off-grid epsilon materialized by the command."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    warehouse = tmp_path / "warehouse"
    shop = tmp_path / "shop"
    shutil.copytree(tiny_dataset_dir, shop)
    spec = shop / "dataset.yaml"
    spec.write_text(spec.read_text().replace(f"name: {LOCATION}\n", f"name: {OTHER_LOCATION}\n", 1))
    deployment = tmp_path / "datasets.yaml"
    deployment.write_text(f"datasets:\n  {LOCATION}: {tiny_dataset_dir}\n  {OTHER_LOCATION}: {shop}\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "SYNTH_ASSETS_DATASETS": str(deployment),
        "SYNTH_ASSETS_WAREHOUSE": str(warehouse),
        "PYTHONUNBUFFERED": "1",
    }
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text("load_from:\n" + "".join(
        f"  - python_module: {{module_name: synth_assets.locations, attribute: {name}, location_name: {name}}}\n"
        for name in (LOCATION, OTHER_LOCATION)
    ))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "dagster_dev.log"
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster)] if dagster.is_file() else [sys.executable, "-m", "dagster"]
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*command, "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, whose id is process.pid
            preexec_fn=_default_signals,  # Ctrl-C stops it even when the tests run in the background
        )
    try:
        # The real half and an epsilon off the grid, into the same instance and warehouse, while the
        # server starts: the reference alone, without the evaluation, is enough to be seen.
        ran = subprocess.run(
            [sys.executable, "-m", "synth_assets.cli", "run", "--dataset", str(tiny_dataset_dir),
             "--epsilon", OFF_GRID, "--generator", "independent_marginals", "--no-evaluation"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False,
        )
        assert ran.returncode == 0, f"synth-assets run failed:\n{ran.stdout}\n{ran.stderr}"
        _wait_until_ready(url, process, log)
        yield DagsterServer(url=url, home=home, warehouse=warehouse, process=process, log=log)
    finally:
        _stop(process)
    assert process.poll() is not None, "dagster dev is still running"
    assert not _group_has_live_members(process.pid), "processes of dagster dev are still running"


@dataclass
class Browser:
    page: object  # playwright.sync_api.Page
    shots: Path
    error: type[Exception]  # playwright.sync_api.Error

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path

    @contextmanager
    def screenshot_on_failure(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            try:
                self.page.screenshot(path=str(self.shots / "failure.png"), full_page=True)
            except self.error as exc:  # the page may be gone; the test's own error matters more
                print(f"no failure screenshot: {exc}", file=sys.stderr)
            raise


@pytest.fixture
def sync_api():
    return _require_browser()


@pytest.fixture
def browser(sync_api, tmp_path: Path) -> Iterator[Browser]:
    """A fresh headless Chromium page (Debian's build, driven by Playwright's bundled driver)."""
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        try:
            context = chromium.new_context(viewport={"width": 1600, "height": 1000})
            # The UI shows a "Join the Dagster community" dialog on a new instance; it stays away
            # when the browser remembers it was dismissed.
            context.add_init_script("window.localStorage.setItem('communityNux', JSON.stringify('1'));")
            context.set_default_timeout(30_000)
            page = context.new_page()
            # Should the dialog show anyway, dismiss it whenever it gets in the way.
            page.add_locator_handler(
                page.get_by_role("button", name="Skip", exact=True), lambda skip: skip.click()
            )
            yield Browser(page=page, shots=shots, error=sync_api.Error)
        finally:
            chromium.close()


def test_materialize_one_epsilon_partition_from_the_ui(
    dagster_server: DagsterServer, browser: Browser, sync_api
) -> None:
    with browser.screenshot_on_failure():
        _see_both_datasets_and_the_off_grid_epsilon(dagster_server, browser, sync_api.expect)
    with browser.screenshot_on_failure():
        run_id = _materialize_partition_in_the_ui(dagster_server, browser, sync_api.expect)
    _assert_partition_materialized(dagster_server, run_id)
    with browser.screenshot_on_failure():
        _open_the_evaluation_reports(dagster_server, browser, sync_api.expect)


def _open_the_evaluation_reports(server: DagsterServer, browser: Browser, expect) -> None:
    """The run evaluated each synthetic table against the holdout: its HTML reports open in the browser."""
    reports = sorted((server.warehouse / "reports" / "devices" / f"epsilon_{PARTITION}").glob("*.html"))
    assert {r.stem for r in reports} == {"private_evolution", "independent_marginals"}
    page = browser.page
    for report in reports:
        page.goto(report.as_uri())
        expect(page.get_by_role("heading", name=re.compile("Membership inference"))).to_be_visible()
        expect(page.get_by_role("heading", name=re.compile("Audit against the DP bound"))).to_be_visible()
        expect(page.get_by_role("heading", name=re.compile("ML utility"))).to_be_visible()
        browser.shot(f"10-report-{report.stem}")


def _see_both_datasets_and_the_off_grid_epsilon(server: DagsterServer, browser: Browser, expect) -> None:
    """Both datasets are code locations; the reference's Partitions view lists the grid's epsilons and
    the one the command ran off the grid, that one materialized."""
    page = browser.page
    page.goto(f"{server.url}/deployment/locations")
    expect(page.get_by_text("2 code locations", exact=True)).to_be_visible(timeout=60_000)
    for name in (LOCATION, OTHER_LOCATION):
        # a link named by its text twice (its label and the truncation's measure)
        expect(page.get_by_role("link", name=f"{name} {name}", exact=True)).to_be_visible()
    browser.shot("00-two-code-locations")

    page.goto(f"{server.url}/assets/{LOCATION}/reference/independent_marginals?view=partitions")
    expect(page.get_by_text("3 Partitions Selected", exact=True)).to_be_visible(timeout=60_000)
    for key in (PARTITION, OFF_GRID, OTHER_PARTITION):
        expect(page.get_by_text(key, exact=True).first).to_be_visible()
    expect(page.get_by_text("Materialized (1)", exact=True)).to_be_visible()  # the off-grid one
    expect(page.get_by_text("Missing (2)", exact=True)).to_be_visible()
    browser.shot("00-partitions-with-the-off-grid-epsilon")


def _materialize_partition_in_the_ui(server: DagsterServer, browser: Browser, expect) -> str:
    """Drive the UI from the asset graph to a successful run of one partition; return the run's id."""
    page = browser.page

    # 1. The asset graph of the synthetic group shows the PE stages as nodes.
    page.goto(f"{server.url}/locations/{LOCATION}/asset-groups/synthetic")
    for name in ("dp_prior", "candidate_pool", "dp_histogram", "decomposed_tables"):
        expect(page.get_by_text(name, exact=True)).to_be_visible(timeout=60_000)
    # Long names are shortened in the nodes ("select…_population").
    expect(page.get_by_text(re.compile(r"^select.*population$"))).to_be_visible()
    expect(page.get_by_role("button", name="Materialize all…")).to_be_visible()
    browser.shot("01-synthetic-asset-graph")

    # 2. The epsilon_grid job's asset graph: the partitioned assets (synthetic, reference, scores).
    page.goto(f"{server.url}/locations/{LOCATION}/jobs/epsilon_grid")
    expect(page.get_by_text(re.compile(r"^View \d+ assets$"))).to_be_visible(timeout=60_000)
    browser.shot("02-job-graph")
    page.get_by_role("button", name="Materialize all…").click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    expect(dialog.get_by_text(re.compile(r"^Launch runs to materialize \d+ assets$"))).to_be_visible()
    browser.shot("02-launch-dialog")

    # 3. Run config, in the dialog's config editor: steps in one process, a small PE pool.
    dialog.get_by_text("Config", exact=True).click()
    dialog.get_by_role("button", name="Add config").click()
    editor = page.get_by_role("dialog").filter(has_text="Config Editor")
    editor.get_by_role("code").click()  # a CodeMirror editor: its textarea takes the keys
    editor.get_by_role("textbox").focus()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(RUN_CONFIG)  # inserted as is: no auto-indent, no auto-closed brackets
    expect(editor.get_by_text("No errors", exact=True)).to_be_visible()
    browser.shot("03-run-config")
    editor.get_by_role("button", name="Save config").click()
    expect(editor).to_be_hidden()
    expect(dialog.get_by_text("Config saved", exact=True)).to_be_visible()

    # 4. Select exactly one partition, epsilon 1, and launch one run.
    dialog.get_by_text("Select a partition or create one").click()
    # A menu item is named by its key twice ("1 1": the label and its tooltip).
    item = page.get_by_role("menuitem", name=re.compile(rf"^{PARTITION}\b"))
    expect(page.get_by_role("menuitem", name=re.compile(rf"^{OTHER_PARTITION}\b"))).to_be_visible()
    item.click()
    dialog.get_by_text("Launch runs to materialize").click()  # closes the partition menu
    expect(item).to_be_hidden()
    expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
    launch = dialog.get_by_role("button", name="Launch 1 run", exact=True)
    expect(launch).to_be_enabled()
    browser.shot("04-partition-1-selected")
    launch.click()

    # 5. A toast names the run; the runs list has it, for partition 1: follow it to its page.
    toast = page.get_by_text(re.compile(r"^Launched run [0-9a-f]{8}$"))
    expect(toast).to_be_visible(timeout=60_000)
    short_id = toast.inner_text().split()[-1]
    browser.shot("05-run-launched")
    page.goto(f"{server.url}/runs")
    link = page.get_by_role("link", name=re.compile(rf"(^|\s){short_id}$"))
    expect(link).to_be_visible(timeout=60_000)
    # The run's row: the nearest ancestor of its link that also names the job.
    row = link.locator("xpath=ancestor::*[.//*[normalize-space(text())='epsilon_grid']][1]")
    expect(row).to_contain_text("epsilon_grid")
    expect(row).not_to_contain_text("__ephemeral_asset_job__")  # one row, not the table (real half)
    expect(row).to_contain_text(f"partition: {PARTITION}")
    browser.shot("06-runs-list-with-the-run")
    link.click()
    page.wait_for_url(re.compile(rf"/runs/{short_id}[0-9a-f-]*$"))
    run_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    expect(page.get_by_text(f"partition: {PARTITION}", exact=True)).to_be_visible(timeout=60_000)
    expect(page.get_by_text("epsilon_grid", exact=True).first).to_be_visible()
    browser.shot("07-run-page")

    # 6. The run page updates live: wait until the run ends, then it must be a success.
    status = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$"))
    try:
        expect(status).to_be_visible(timeout=RUN_TIMEOUT * 1000)
    except AssertionError as exc:
        message = f"run {run_id} did not finish in {RUN_TIMEOUT} s:\n{_tail(server.log)}"
        raise AssertionError(message) from exc
    browser.shot("08-run-succeeded")
    outcome = status.inner_text()
    assert outcome == "Success", f"run {run_id} ended as {outcome}:\n{_tail(server.log)}"
    expect(page.get_by_role("img", name="run_success")).to_be_visible()

    # 7. The runs list shows it as a success too.
    page.goto(f"{server.url}/runs")
    expect(row).to_contain_text("Success", timeout=60_000)
    browser.shot("09-runs-list-success")

    return run_id


def _assert_partition_materialized(server: DagsterServer, run_id: str) -> None:
    """The instance and the warehouse agree: partition 1 of the job's assets, and not 4."""
    import dagster as dg
    import duckdb

    from synth_assets.defs.evaluation.assets import PRIVACY_RISK_KEY
    from synth_assets.defs.synthetic.assets import POPULATION_KEY, REFERENCE_KEY, SCORES_KEY
    from synth_assets.defs.synthetic.jobs import EPSILON_GRID_JOB

    with dg.DagsterInstance.from_config(str(server.home)) as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        assert run.job_name == EPSILON_GRID_JOB
        assert run.tags.get("dagster/partition") == PARTITION
        assert run.run_config["resources"]["pe"]["config"]["pool_size"] == POOL_SIZE
        for key in (POPULATION_KEY, PRIVACY_RISK_KEY):
            assert instance.get_materialized_partitions(key.with_prefix(LOCATION)) == {PARTITION}, key
        for key in (REFERENCE_KEY, SCORES_KEY):  # the command's run off the grid, the reference alone
            assert instance.get_materialized_partitions(key.with_prefix(LOCATION)) == {PARTITION, OFF_GRID}
        assert sorted(instance.get_dynamic_partitions(f"{LOCATION}_epsilon")) == ["1", "3", "4"]
        # the grid of the other dataset, made partitions by its sensor in the daemon
        assert sorted(instance.get_dynamic_partitions(f"{OTHER_LOCATION}_epsilon")) == ["1", "4"]
    with duckdb.connect(str(server.warehouse / "devices.duckdb"), read_only=True) as connection:
        rows = connection.execute(
            "select __partition_key, generator, pass_rate from synthetic.benchmark_scores__summary"
        ).fetchall()
    assert {(r[0], r[1]) for r in rows} == {
        (PARTITION, "private_evolution"), (PARTITION, "independent_marginals"), (OFF_GRID, "independent_marginals")}
    assert all(0 <= r[2] <= 1 for r in rows)

"""Scale run: the default chain on N entities in the embedded dataset's shape, stage by stage, and the
PE vote alone at 1,000,000 entities x 100,000 candidates.

    .venv/bin/python bench/scale.py                               # N = 100,000 and 1,000,000, then the vote
    .venv/bin/python bench/scale.py --entities 100000 --skip-vote
    .venv/bin/python bench/scale.py --entities --vote-candidates 25000 100000   # the vote only

For every N: the dataset directory of ``bench/scale_data.py`` (written under --data-dir when missing),
then ``synth-assets run --dataset DIR --epsilon 1 --json`` in a child process, exactly as a user runs it
(the real half, epsilon 1 of the dataset's default generators, the scores, the evaluation against the
holdout and the comparison page), with DAGSTER_HOME and SYNTH_ASSETS_WAREHOUSE in a fresh temporary
directory. While it runs, the child's process tree is sampled from /proc every --interval seconds (RSS
and CPU time; no extra dependency). Afterwards the runs' step events are read from that DAGSTER_HOME:
per Dagster step (every asset and asset check) the wall time between STEP_START and STEP_SUCCESS, split
into loading inputs (the IO manager reading DuckDB, up to the last LOADED_INPUT), writing outputs
(STEP_OUTPUT to HANDLED_OUTPUT: the IO manager writing DuckDB) and the rest (the asset's own compute),
the CPU time and the peak RSS of the process tree over the step's window (from the samples), and the
rows the step materialized (its metadata). Time outside steps (start-up, run set-up) is listed too.

The vote: the PE generator's vote (``synth_assets.pe.histogram.dp_nn_histogram``: the numba nearest-
candidate kernel, the histogram and the Gaussian noise) on the encoded wide table of --vote-entities
entities (the PE encoder of the scaled dataset; read from that N's warehouse when the run above made it,
else built with ``build_real_tables``), against candidates drawn column by column from those rows (like
independent-marginal candidates). Each candidate count runs in a child process of its own, so that its
peak RSS is the vote's: the increase of the high-water mark from after the inputs are loaded to after
the vote is compared with the candidates' own size (their array and the kernel's transposed copy), to
check that the vote's memory does not grow with the number of candidates beyond them. The reference
(the original design's chunked ``scipy.spatial.distance.cdist`` + argmin, ``nn.reference_nearest_cdist``)
is timed on a random slice of --ref-rows entities in the same child, extrapolated linearly in the rows
(its cost is exactly proportional to them), and its answers are compared with the kernel's on the slice.

Timings are indicative on a shared 2-core machine. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")
TARGETS = {"end_to_end_seconds_1m": 15 * 60, "peak_rss_mb_1m": 6 * 1024, "vote_seconds_1m_x_100k": 6 * 60}


# ------------------------------------------------------------------------------------ process sampling


def _proc_stat(pid: int) -> tuple[int, float, float] | None:
    """(parent pid, own CPU seconds, CPU seconds of reaped children) of a live process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) "
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return ppid, (utime + stime) / TICK, (cutime + cstime) / TICK


def _proc_rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


class TreeSampler:
    """Samples RSS and CPU time of a process and all its descendants, every ``interval`` seconds."""

    def __init__(self, root: int, interval: float):
        self.root, self.interval = root, interval
        self.samples: list[tuple[float, float, int, int, int]] = []  # (time, cpu s, rss tree, rss root, procs)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                stat = _proc_stat(int(entry.name))
                if stat:
                    children.setdefault(stat[0], []).append(int(entry.name))
        tree, todo = [], [self.root]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, []))
        return tree

    def sample(self) -> None:
        now = time.time()
        cpu, rss = 0.0, 0
        tree = self._tree()
        root_rss = 0
        for pid in tree:
            stat = _proc_stat(pid)
            if stat is None:
                continue
            cpu += stat[1] + (stat[2] if pid == self.root else 0.0)
            r = _proc_rss(pid)
            rss += r
            if pid == self.root:
                root_rss = r
        if root_rss or rss:
            self.samples.append((now, cpu, rss, root_rss, len(tree)))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def window(self, t0: float, t1: float) -> dict:
        """CPU seconds (interpolated at the ends) and peak RSS of the tree within [t0, t1]."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        before = [s for s in self.samples if s[0] < t0][-1:]
        after = [s for s in self.samples if s[0] > t1][:1]
        near = before + inside + after
        if not near:
            return {"cpu_s": None, "peak_rss_mb": None}

        def cpu_at(t: float) -> float:
            prev = max((s for s in near if s[0] <= t), key=lambda s: s[0], default=near[0])
            nxt = min((s for s in near if s[0] >= t), key=lambda s: s[0], default=near[-1])
            if nxt[0] == prev[0]:
                return prev[1]
            return prev[1] + (nxt[1] - prev[1]) * (t - prev[0]) / (nxt[0] - prev[0])

        peak = max(s[2] for s in (inside or near))
        return {"cpu_s": round(max(0.0, cpu_at(t1) - cpu_at(t0)), 2), "peak_rss_mb": round(peak / 2**20)}


# ---------------------------------------------------------------------------------------- the chain


def ensure_data(n: int, data_dir: Path, seed: int) -> tuple[Path, dict | None]:
    """The dataset directory of N entities; written by bench/scale_data.py when missing."""
    out = data_dir / f"lahman_scale_{n}"
    manifest = out / "scale_data.json"
    if manifest.is_file():
        return out, {**json.loads(manifest.read_text()), "reused": True}
    if out.exists():
        shutil.rmtree(out)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scale_data.py"), str(n), "--out", str(out), "--seed", str(seed)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench/scale_data.py {n} failed:\n{proc.stdout}\n{proc.stderr}")
    for line in proc.stdout.splitlines()[-3:-1]:
        print("  " + line)
    return out, json.loads(proc.stdout.splitlines()[-1])


def _rows(metadata: dict) -> int | None:
    for key in ("rows", "entities", "dagster/row_count", "row_count"):
        if key in metadata:
            value = metadata[key]
            value = getattr(value, "value", value)
            if isinstance(value, (int, float)):
                return int(value)
    return None


def read_steps(home: Path, sampler: TreeSampler) -> tuple[list[dict], list[dict]]:
    """Per run and step: wall / load / write / compute seconds, CPU, peak RSS and rows."""
    from dagster import DagsterEventType, DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    instance = DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    steps, runs = [], []
    try:
        for run in sorted(instance.get_runs(), key=lambda r: instance.get_run_record_by_id(r.run_id).create_timestamp):
            records = instance.all_logs(run.run_id)
            run_events = [r for r in records if r.dagster_event is not None]
            if not run_events:
                continue
            t_run0, t_run1 = records[0].timestamp, records[-1].timestamp
            by_step: dict[str, dict] = {}
            order: list[str] = []
            for r in run_events:
                key = r.step_key
                if key is None:
                    continue
                e = r.dagster_event
                s = by_step.get(key)
                if s is None:
                    s = by_step[key] = {"start": None, "end": None, "loaded": [], "outputs": [], "handled": [],
                                        "rows": [], "ok": None, "checks": 0}
                    order.append(key)
                t = r.timestamp
                kind = e.event_type
                if kind == DagsterEventType.STEP_START:
                    s["start"] = t
                elif kind in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
                    s["end"] = t
                    s["ok"] = kind == DagsterEventType.STEP_SUCCESS
                elif kind == DagsterEventType.LOADED_INPUT:
                    s["loaded"].append(t)
                elif kind == DagsterEventType.STEP_OUTPUT:
                    s["outputs"].append(t)
                elif kind == DagsterEventType.HANDLED_OUTPUT:
                    s["handled"].append(t)
                elif kind == DagsterEventType.ASSET_MATERIALIZATION:
                    meta = e.event_specific_data.materialization.metadata
                    n = _rows(meta)
                    if n is not None:
                        s["rows"].append(n)
                elif kind == DagsterEventType.ASSET_CHECK_EVALUATION:
                    s["checks"] += 1
            in_steps = 0.0
            for key in sorted(order, key=lambda k: by_step[k]["start"] or float("inf")):
                s = by_step[key]
                if s["start"] is None:
                    continue
                if s["end"] is None:  # still running when the run stopped (killed, or a crash)
                    s["end"] = max(t_run1, sampler.samples[-1][0] if sampler.samples else t_run1)
                wall = s["end"] - s["start"]
                in_steps += wall
                load = (max(s["loaded"]) - s["start"]) if s["loaded"] else 0.0
                write = sum(max(0.0, h - o) for o, h in zip(s["outputs"], s["handled"]))
                steps.append({
                    "job": run.job_name,
                    "step": key,
                    "kind": "check" if s["checks"] and not s["rows"] else "asset",
                    "ok": s["ok"] if s["ok"] is not None else "unfinished",
                    "start": s["start"],
                    "wall_s": round(wall, 2),
                    "load_s": round(load, 2),
                    "write_s": round(write, 2),
                    "compute_s": round(max(0.0, wall - load - write), 2),
                    "rows": sum(s["rows"]) if s["rows"] else None,
                    **sampler.window(s["start"], s["end"]),
                })
            runs.append({"job": run.job_name, "status": str(run.status.value), "start": t_run0,
                         "wall_s": round(t_run1 - t_run0, 2), "outside_steps_s": round(max(0.0, t_run1 - t_run0 - in_steps), 2),
                         **sampler.window(t_run0, t_run1)})
    finally:
        instance.dispose()
    return runs, steps


def run_chain(n: int, dataset_dir: Path, args) -> dict:
    """``synth-assets run --dataset DIR --epsilon 1 --json`` in a child process, sampled; then its steps."""
    scratch = Path(tempfile.mkdtemp(prefix=f"scale_{n}_", dir=args.tmp))
    home, warehouse = scratch / "dagster_home", scratch / "warehouse"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "SYNTH_ASSETS_WAREHOUSE": str(warehouse)}
    command = [str(VENV_BIN / "synth-assets"), "run", "--dataset", str(dataset_dir), "--epsilon", "1", "--json",
               *(["--no-evaluation"] if args.no_evaluation else []),
               *sum((["--generator", g] for g in args.generator or []), [])]
    print(f"  $ DAGSTER_HOME={home} SYNTH_ASSETS_WAREHOUSE={warehouse} {' '.join(command)}", flush=True)
    out_path, err_path = scratch / "stdout.json", scratch / "stderr.log"
    started = time.time()
    stopped = None
    with out_path.open("w") as out, err_path.open("w") as err:
        child = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=scratch)
        sampler = TreeSampler(child.pid, args.interval)
        sampler.start()
        try:
            while child.poll() is None:
                time.sleep(0.2)
                over_time = args.timeout and time.time() - started > args.timeout
                rss_now = sampler.samples[-1][2] / 2**20 if sampler.samples else 0
                over_memory = args.max_rss_mb and rss_now > args.max_rss_mb
                if over_time or over_memory:
                    stopped = (f"stopped after {time.time() - started:.0f} s: "
                               + (f"process tree RSS {rss_now:.0f} MB above --max-rss-mb {args.max_rss_mb}"
                                  if over_memory else f"--timeout {args.timeout} s"))
                    print("  " + stopped, flush=True)
                    child.terminate()
                    try:
                        child.wait(30)
                    except subprocess.TimeoutExpired:
                        child.kill()
                        child.wait()
        finally:
            sampler.stop()
    wall = time.time() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # high-water mark of the largest child so far
    (scratch / "samples.json").write_text(json.dumps(sampler.samples))
    try:
        runs, steps = read_steps(home, sampler)
    except Exception as exc:  # the figures of the whole run stay valid
        print(f"  could not read the step events from {home}: {exc!r}")
        runs, steps = [], []
    stderr_tail = err_path.read_text()[-3000:]
    peak_tree = max((s[2] for s in sampler.samples), default=0)
    summary = None
    if child.returncode == 0:
        try:
            summary = json.loads(out_path.read_text())
        except json.JSONDecodeError:
            summary = None
    first_step = min((s["start"] for s in steps), default=started)
    return {
        "entities": n,
        "dataset_dir": str(dataset_dir),
        "scratch": str(scratch),
        "returncode": child.returncode,
        "stopped": stopped,
        "wall_s": round(wall, 2),
        "cpu_s": round(sampler.samples[-1][1], 2) if sampler.samples else None,
        "peak_rss_mb_tree": round(peak_tree / 2**20),
        "peak_rss_mb_largest_process": round(usage.ru_maxrss / 1024),
        "startup_s": round(first_step - started, 2),
        "runs": runs,
        "steps": steps,
        "stderr_tail": None if child.returncode == 0 else stderr_tail,
        "summary": _short_summary(summary),
    }


def _short_summary(summary) -> dict | None:
    if not summary:
        return None
    first = summary[0] if isinstance(summary, list) else summary
    if isinstance(first, dict) and "summaries" in first:
        first = first["summaries"][0]
    if not isinstance(first, dict):
        return None
    keep = {k: first.get(k) for k in ("n_real", "seconds", "n_synthetic", "pass_rate", "tvd_1way", "tvd_2way",
                                      "tvd_3way", "candidates", "sigma")}
    keep["leaderboard"] = [
        {k: row.get(k) for k in ("generator", "pass_rate", "tvd_1way", "tvd_2way", "rows")}
        for row in first.get("leaderboard", [])
    ]
    return keep


def _name(step: str) -> str:
    parts = step.split("__")
    if parts and parts[0].startswith("lahman_scale_"):
        parts = parts[1:]
    return "/".join(parts)


def print_chain(result: dict) -> None:
    n = result["entities"]
    print(f"\nN = {n:,}: exit {result['returncode']}, wall {result['wall_s']:.1f} s, CPU {result['cpu_s']} s, "
          f"peak RSS {result['peak_rss_mb_tree']:,} MB (process tree; largest single process "
          f"{result['peak_rss_mb_largest_process']:,} MB); start-up before the first step {result['startup_s']:.1f} s")
    header = (f"{'job':<22} {'step':<52} {'wall s':>7} {'load':>6} {'write':>6} {'compute':>7} "
              f"{'CPU s':>7} {'RSS MB':>7} {'rows':>10}")
    print(header)
    print("-" * len(header))
    for s in result["steps"]:
        rows = f"{s['rows']:,}" if s["rows"] is not None else ""
        flag = "" if s["ok"] is True else "  UNFINISHED" if s["ok"] == "unfinished" else "  FAILED"
        print(f"{s['job'][:22]:<22} {_name(s['step'])[:52]:<52} {s['wall_s']:>7.1f} {s['load_s']:>6.1f} "
              f"{s['write_s']:>6.1f} {s['compute_s']:>7.1f} {s['cpu_s'] if s['cpu_s'] is not None else '':>7} "
              f"{s['peak_rss_mb'] if s['peak_rss_mb'] is not None else '':>7} {rows:>10}{flag}")
    for r in result["runs"]:
        print(f"run {r['job']:<22} {r['status']:<8} wall {r['wall_s']:>8.1f} s (outside steps {r['outside_steps_s']:.1f} s), "
              f"CPU {r['cpu_s']} s, peak RSS {r['peak_rss_mb']} MB")
    top = sorted(result["steps"], key=lambda s: -s["wall_s"])[:5]
    print("largest steps: " + "; ".join(f"{_name(s['step'])} {s['wall_s']:.0f} s" for s in top))
    if result["stopped"]:
        print(result["stopped"])
    if result["stderr_tail"]:
        print("stderr (tail):\n" + result["stderr_tail"])


# ------------------------------------------------------------------------------------------- the vote


def vote_prepare(dataset_dir: Path, warehouse_db: Path | None, out: Path, m_max: int, seed: int) -> dict:
    """Encode the wide table of the dataset (from its warehouse if given, else built) and draw candidates."""
    import numpy as np

    from synth_assets.datasets.loading import load_dataset
    from synth_assets.pe.encoding import build_encoder

    dataset = load_dataset(dataset_dir)
    started = time.perf_counter()
    wide = None
    source = "built with build_real_tables"
    if warehouse_db is not None and warehouse_db.is_file():
        import duckdb

        name = dataset.spec.wide_table.name
        connection = duckdb.connect(str(warehouse_db), read_only=True)
        try:
            wide = connection.sql(f'select * from real."{name}"').pl()
            source = f"read from {warehouse_db} (real.{name})"
        except duckdb.Error:
            wide = None
        finally:
            connection.close()
    if wide is None:
        from synth_assets.tables.build import build_real_tables

        wide = build_real_tables(dataset).wide
    t_wide = time.perf_counter() - started
    encoder = build_encoder(dataset)
    encoded = encoder.encode(wide)
    n = encoded.rows
    del wide
    rng = np.random.default_rng(seed)
    num = encoded.numeric
    cat = encoded.categorical
    cand_num = np.empty((m_max, num.shape[1]), dtype=np.float32)
    cand_cat = np.empty((m_max, cat.shape[1]), dtype=np.int32)
    for k in range(num.shape[1]):
        cand_num[:, k] = num[rng.integers(0, n, m_max), k]
    for k in range(cat.shape[1]):
        cand_cat[:, k] = cat[rng.integers(0, n, m_max), k]
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "real_num.npy", np.ascontiguousarray(num))
    np.save(out / "real_cat.npy", np.ascontiguousarray(cat))
    np.save(out / "cand_num.npy", cand_num)
    np.save(out / "cand_cat.npy", cand_cat)
    np.save(out / "cat_w.npy", np.asarray(encoded.categorical_weights, dtype=np.float32))
    (out / "columns.json").write_text(json.dumps({"numeric": list(encoded.numeric_columns),
                                                  "categorical": list(encoded.categorical_columns)}))
    return {"entities": n, "numeric": num.shape[1], "categorical": cat.shape[1], "wide_source": source,
            "wide_seconds": round(t_wide, 2), "seconds": round(time.perf_counter() - started, 2)}


def _vm(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def vote_run(prep: Path, m: int, ref_rows: int, seed: int) -> dict:
    """One vote (the PE's dp_nn_histogram) on the prepared inputs with the first m candidates."""
    import numpy as np

    from synth_assets.pe import nn
    from synth_assets.pe.encoding import EncodedTable
    from synth_assets.pe.histogram import dp_nn_histogram
    from synth_assets.privacy.accounting import calibrate_sigma

    columns = json.loads((prep / "columns.json").read_text())
    wc = np.load(prep / "cat_w.npy")
    real = EncodedTable(numeric=np.load(prep / "real_num.npy"), categorical=np.load(prep / "real_cat.npy"),
                        categorical_weights=wc, numeric_columns=tuple(columns["numeric"]),
                        categorical_columns=tuple(columns["categorical"]))
    # memory-mapped, so that only the m candidates used are ever resident (the baseline below stays clean)
    cands = EncodedTable(numeric=np.array(np.load(prep / "cand_num.npy", mmap_mode="r")[:m]),
                         categorical=np.array(np.load(prep / "cand_cat.npy", mmap_mode="r")[:m]),
                         categorical_weights=wc, numeric_columns=real.numeric_columns,
                         categorical_columns=real.categorical_columns)
    t = time.perf_counter()
    nn.warm_up()
    t_warm = time.perf_counter() - t
    real_bytes = real.numeric.nbytes + real.categorical.nbytes
    cand_bytes = cands.numeric.nbytes + cands.categorical.nbytes
    hwm_before, rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, _vm("VmRSS")
    sigma = calibrate_sigma(1.0, 1e-6, 1)
    rng = np.random.default_rng(seed)
    c, t = time.process_time(), time.perf_counter()
    release, votes = dp_nn_histogram(real, cands, wc, sigma, rng, seed=seed)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    hwm_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    n = real.rows
    dims = real.numeric.shape[1] + real.categorical.shape[1]
    result = {
        "entities": n, "candidates": m, "columns": dims, "gterms": round(n * m * dims / 1e9, 1),
        "warmup_s": round(t_warm, 2), "vote_s": round(wall, 2), "vote_cpu_s": round(cpu, 2),
        "gterms_per_s": round(n * m * dims / wall / 1e9, 2),
        "threads": nn.kernel_info().get("threads"),
        "inputs_mb": round(real_bytes / 2**20, 1), "candidates_mb": round(cand_bytes / 2**20, 1),
        "rss_before_mb": round(rss_before, 1), "peak_rss_mb": round(hwm_after, 1),
        "vote_peak_increase_mb": round(hwm_after - max(hwm_before, rss_before), 1),
        "voted_candidates": int((votes > 0).sum()),
    }
    if ref_rows:
        sub = np.sort(np.random.default_rng(seed + 1).choice(n, size=min(ref_rows, n), replace=False))
        qn, qc = real.numeric[sub], real.categorical[sub]
        c, t = time.process_time(), time.perf_counter()
        ref_idx = nn.reference_nearest_cdist(qn, qc, cands.numeric, cands.categorical, wc)
        t_ref, cpu_ref = time.perf_counter() - t, time.process_time() - c
        kernel_idx = nn.nearest_candidates(qn, qc, cands.numeric, cands.categorical, wc)
        scale = n / len(sub)
        result.update({
            "reference": "nn.reference_nearest_cdist (chunked scipy cdist cityblock + weighted hamming, argmin, 2 threads)",
            "reference_rows": int(len(sub)), "reference_measured_s": round(t_ref, 2),
            "reference_cpu_measured_s": round(cpu_ref, 2),
            "reference_extrapolated_s": round(t_ref * scale, 1),
            "speedup_vs_reference": round(t_ref * scale / wall, 1),
            "speedup_vs_reference_cpu": round(cpu_ref * scale / cpu, 1),
            "reference_agreement": round(float((ref_idx == kernel_idx).mean()), 5),
        })
    return result


def run_vote(args, warehouse_db: Path | None) -> dict:
    n = args.vote_entities
    dataset_dir, _ = ensure_data(n, args.data_dir, args.seed)
    prep = Path(tempfile.mkdtemp(prefix="scale_vote_", dir=args.tmp))
    out = {"entities": n}
    try:
        started = time.time()
        proc = subprocess.run([sys.executable, __file__, "--vote-prepare", str(dataset_dir), str(prep),
                               str(max(args.vote_candidates)),
                               *(["--warehouse-db", str(warehouse_db)] if warehouse_db else [])],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"vote preparation failed:\n{proc.stderr[-3000:]}")
        out["prepare"] = json.loads(proc.stdout.splitlines()[-1])
        out["prepare"]["wall_s"] = round(time.time() - started, 1)
        print(f"  inputs: {out['prepare']['entities']:,} entities x {out['prepare']['numeric']} numeric + "
              f"{out['prepare']['categorical']} categorical columns, wide table {out['prepare']['wide_source']} "
              f"({out['prepare']['wide_seconds']:.0f} s)", flush=True)
        runs = []
        for m in sorted(args.vote_candidates):
            ref = args.ref_rows if m == max(args.vote_candidates) else 0
            proc = subprocess.run([sys.executable, __file__, "--vote-run", str(prep), str(m), str(ref)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"vote with {m} candidates failed:\n{proc.stderr[-3000:]}")
            r = json.loads(proc.stdout.splitlines()[-1])
            runs.append(r)
            print(f"  vote {r['entities']:,} x {m:,} x {r['columns']} ({r['gterms']} G terms): {r['vote_s']:.1f} s wall, "
                  f"{r['vote_cpu_s']:.1f} s CPU, {r['gterms_per_s']} G terms/s; peak RSS {r['peak_rss_mb']:.0f} MB "
                  f"(inputs {r['inputs_mb']:.0f} MB, candidates {r['candidates_mb']:.1f} MB, increase during the vote "
                  f"{r['vote_peak_increase_mb']:.1f} MB)", flush=True)
            if "reference_rows" in r:
                print(f"  reference on {r['reference_rows']:,} rows: {r['reference_measured_s']:.1f} s -> "
                      f"extrapolated {r['reference_extrapolated_s']:.0f} s for {r['entities']:,}: kernel "
                      f"{r['speedup_vs_reference']}x faster wall ({r['speedup_vs_reference_cpu']}x CPU); "
                      f"same nearest candidate on {r['reference_agreement']:.2%} of the slice", flush=True)
        out["runs"] = runs
        if len(runs) >= 2:
            a, b = runs[0], runs[-1]
            extra = b["peak_rss_mb"] - a["peak_rss_mb"]
            # the candidates' array (loaded before the vote) and the kernel's transposed copy of it
            cand_extra = 2 * (b["candidates_mb"] - a["candidates_mb"])
            out["memory_growth"] = {
                "candidates": [a["candidates"], b["candidates"]],
                "peak_rss_mb": [a["peak_rss_mb"], b["peak_rss_mb"]],
                "peak_increase_during_vote_mb": [a["vote_peak_increase_mb"], b["vote_peak_increase_mb"]],
                "growth_mb": round(extra, 1),
                "candidate_arrays_growth_mb": round(cand_extra, 1),
                "beyond_candidates_mb": round(extra - cand_extra, 1),
            }
            print(f"  memory: peak RSS grew by {extra:.1f} MB from {a['candidates']:,} to {b['candidates']:,} "
                  f"candidates, against {cand_extra:.1f} MB for the candidates themselves (array + the "
                  f"kernel's transposed copy): {extra - cand_extra:+.1f} MB beyond them")
    finally:
        if not args.keep:
            shutil.rmtree(prep, ignore_errors=True)
    return out


# ------------------------------------------------------------------------------------------------ main


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entities", type=int, nargs="*", default=[100_000, 1_000_000])
    ap.add_argument("--skip-vote", action="store_true")
    ap.add_argument("--vote-entities", type=int, default=1_000_000)
    ap.add_argument("--vote-candidates", type=int, nargs="+", default=[25_000, 100_000])
    ap.add_argument("--ref-rows", type=int, default=2000, help="rows the scipy reference is timed on")
    ap.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "scale")
    ap.add_argument("--tmp", type=Path, default=None, help="where the temporary DAGSTER_HOME and warehouses go")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between memory/CPU samples")
    ap.add_argument("--timeout", type=float, default=0, help="stop a chain after this many seconds (0: never)")
    ap.add_argument("--max-rss-mb", type=float, default=14000,
                    help="stop a chain whose process tree exceeds this RSS (0: never; the box is shared)")
    ap.add_argument("--generator", action="append", help="run only these generators (default: the dataset's)")
    ap.add_argument("--no-evaluation", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the vote's prepared inputs")
    ap.add_argument("--vote-prepare", nargs=3, metavar=("DATASET_DIR", "OUT", "M"), help=argparse.SUPPRESS)
    ap.add_argument("--warehouse-db", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--vote-run", nargs=3, metavar=("PREP", "M", "REF_ROWS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    if args.vote_prepare:
        d, o, m = args.vote_prepare
        result = vote_prepare(Path(d), args.warehouse_db, Path(o), int(m), args.seed)
        print(json.dumps(result))
        return result
    if args.vote_run:
        p, m, r = args.vote_run
        result = vote_run(Path(p), int(m), int(r), args.seed)
        print(json.dumps(result))
        return result

    args.data_dir.mkdir(parents=True, exist_ok=True)
    if args.tmp:
        args.tmp.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} at the start (shared: timings are indicative)")
    results = {"chains": [], "vote": None, "loadavg_start": round(load[0], 2), "targets": TARGETS}
    warehouse_of: dict[int, Path] = {}
    for n in args.entities:
        print(f"\n== {n:,} entities", flush=True)
        t = time.perf_counter()
        dataset_dir, data = ensure_data(n, args.data_dir, args.seed)
        print(f"  dataset {dataset_dir} ({'reused' if data and data.get('reused') else 'written'}; "
              f"{time.perf_counter() - t:.1f} s here, {data['seconds'] if data else '?'} s and "
              f"{data['peak_rss_mb'] if data else '?'} MB peak when written)", flush=True)
        chain = run_chain(n, dataset_dir, args)
        chain["data"] = {k: data.get(k) for k in ("seconds", "peak_rss_mb", "rows_total", "reused")} if data else None
        print_chain(chain)
        results["chains"].append(chain)
        warehouse_of[n] = Path(chain["scratch"]) / "warehouse" / f"lahman_scale_{n}.duckdb"
        print(json.dumps({"chain": {k: v for k, v in chain.items() if k not in ("steps", "runs")}}), flush=True)
    if not args.skip_vote:
        print(f"\n== the vote alone: {args.vote_entities:,} entities x {max(args.vote_candidates):,} candidates",
              flush=True)
        results["vote"] = run_vote(args, warehouse_of.get(args.vote_entities))
    results["loadavg_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()

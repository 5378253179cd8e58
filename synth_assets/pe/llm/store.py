"""The result store: checkpoint and cache of LLM requests, one Parquet row per request id.

Layout of a store directory (``<cache_dir>/<dataset>/``)::

    results/part-*.parquet   completed requests: request_id (hash), status, response_text, tokens, ...
    batches.jsonl            journal of Batch API jobs (created / collected), to re-attach after a crash
    capabilities.json        structured-output mode that worked per endpoint and model

Every completed request is written at once as its own small Parquet segment (write to a temporary file,
then rename: a killed process leaves either the whole segment or nothing), so a re-run after a crash,
a kill or a failed batch never re-sends a request whose result is stored. Segments are merged into one
file when there are many (under a file lock; readers retry when a file vanishes under them). Only
successful responses are stored: a failed request has no result and is sent again by the next run.
Nothing secret is stored: no key, no header; the response text is what the model wrote.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl

__all__ = ["ResultStore", "StoredResult"]

SCHEMA = {
    "request_id": pl.Utf8,
    "status": pl.Utf8,
    "response_text": pl.Utf8,
    "finish_reason": pl.Utf8,
    "refusal": pl.Utf8,
    "input_tokens": pl.Int64,
    "output_tokens": pl.Int64,
    "model": pl.Utf8,
    "mode": pl.Utf8,
    "batch_id": pl.Utf8,
    "kind": pl.Utf8,
    "created_at": pl.Float64,
}
COMPACT_ABOVE = 64


@dataclass(frozen=True)
class StoredResult:
    request_id: str
    response_text: str | None
    input_tokens: int
    output_tokens: int
    finish_reason: str | None = None
    refusal: str | None = None
    model: str | None = None
    mode: str = "realtime"
    batch_id: str | None = None
    kind: str | None = None
    status: str = "ok"
    created_at: float = 0.0


class ResultStore:
    """Parquet checkpoint of completed requests, keyed by request hash. Safe across processes."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)
        self.results = self.directory / "results"
        self.results.mkdir(parents=True, exist_ok=True)
        self._cache: dict[str, StoredResult] | None = None

    # ----------------------------------------------------------------------------------- results

    def _segments(self) -> list[Path]:
        return sorted(self.results.glob("*.parquet"))

    def _read_all(self) -> pl.DataFrame:
        for _attempt in range(10):
            frames, vanished = [], False
            for path in self._segments():
                try:
                    frames.append(pl.read_parquet(path))
                except FileNotFoundError:
                    vanished = True  # compacted under us: list again
                    break
            if not vanished:
                if not frames:
                    return pl.DataFrame(schema=SCHEMA)
                return pl.concat([f.select(list(SCHEMA)).cast(SCHEMA) for f in frames], how="vertical")
        raise RuntimeError(f"{self.results}: segments keep changing while reading")

    def load(self) -> dict[str, StoredResult]:
        """All stored results (read once, then kept up to date by :meth:`put`)."""
        if self._cache is None:
            frame = self._read_all().filter(pl.col("status") == "ok")
            cache: dict[str, StoredResult] = {}
            for row in frame.iter_rows(named=True):
                cache.setdefault(row["request_id"], StoredResult(**row))
            self._cache = cache
        return self._cache

    def refresh(self) -> None:
        self._cache = None

    def get(self, request_id: str) -> StoredResult | None:
        return self.load().get(request_id)

    def __contains__(self, request_id: str) -> bool:
        return request_id in self.load()

    def __len__(self) -> int:
        return len(self.load())

    def put(self, results: list[StoredResult]) -> None:
        """Write results durably as one new segment (atomic rename)."""
        if not results:
            return
        stamp = time.time()
        rows = [{**asdict(r), "created_at": r.created_at or stamp} for r in results]
        frame = pl.DataFrame(rows, schema=SCHEMA)
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.results / f".{name}.tmp"
        frame.write_parquet(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        tmp.replace(self.results / name)
        cache = self.load()
        for result in results:
            cache.setdefault(result.request_id, result)

    @contextlib.contextmanager
    def _lock(self):
        with open(self.directory / ".lock", "a+") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def compact(self, *, above: int = COMPACT_ABOVE) -> bool:
        """Merge the segments into one when there are more than ``above``."""
        with self._lock():
            segments = self._segments()
            if len(segments) <= above:
                return False
            frame = pl.concat([pl.read_parquet(p).cast(SCHEMA) for p in segments], how="vertical")
            frame = frame.unique(subset=["request_id", "status"], keep="first", maintain_order=True)
            name = f"part-{time.time_ns():020d}-compact-{uuid.uuid4().hex[:8]}.parquet"
            tmp = self.results / f".{name}.tmp"
            frame.write_parquet(tmp)
            tmp.replace(self.results / name)
            for path in segments:
                path.unlink(missing_ok=True)
            return True

    # ----------------------------------------------------------------------------- batch journal

    @property
    def journal_path(self) -> Path:
        return self.directory / "batches.jsonl"

    def journal(self, event: str, **fields) -> None:
        line = json.dumps({"event": event, "at": time.time(), **fields}, sort_keys=True) + "\n"
        with open(self.journal_path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def open_batches(self) -> dict[str, dict]:
        """Batches created and not yet collected: batch_id -> created entry (request_ids, file id)."""
        if not self.journal_path.is_file():
            return {}
        created: dict[str, dict] = {}
        collected: set[str] = set()
        for line in self.journal_path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if entry.get("event") == "created":
                created[entry["batch_id"]] = entry
            elif entry.get("event") == "collected":
                collected.add(entry["batch_id"])
        return {k: v for k, v in created.items() if k not in collected}

    # ------------------------------------------------------------------------------ capabilities

    @property
    def capabilities_path(self) -> Path:
        return self.directory / "capabilities.json"

    def capability(self, endpoint: str, model: str) -> str | None:
        if not self.capabilities_path.is_file():
            return None
        try:
            return json.loads(self.capabilities_path.read_text()).get(f"{endpoint} {model}")
        except json.JSONDecodeError:
            return None

    def set_capability(self, endpoint: str, model: str, mode: str) -> None:
        with self._lock():
            data = {}
            if self.capabilities_path.is_file():
                with contextlib.suppress(json.JSONDecodeError):
                    data = json.loads(self.capabilities_path.read_text())
            data[f"{endpoint} {model}"] = mode
            tmp = self.capabilities_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            tmp.replace(self.capabilities_path)

"""The append-only results store: one JSON line per evaluation run.

``results/runs.jsonl`` (or ``--results-dir``) gains rows, never loses them: each append
re-writes the file to a temporary name and renames it over the old one under a lock, so a
crash leaves either the old or the new file, never half a row.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path

RESULTS_ENV = "DISTILL_BENCH_RESULTS"
DEFAULT_RESULTS_DIR = Path("results")
RUNS_FILE = "runs.jsonl"
# the columns that identify a leaderboard cell
CELL_KEYS = ("method", "dataset", "ipc", "shots", "backbone", "protocol")


def get_results_dir(results_dir: str | os.PathLike | None = None) -> Path:
    path = Path(results_dir or os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_hash(obj: dict) -> str:
    """Short stable hash of a JSON-able mapping (identifies a run's configuration)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


class ResultStore:
    """Rows of evaluation runs in ``<results_dir>/runs.jsonl``."""

    def __init__(self, results_dir: str | os.PathLike | None = None):
        self.dir = get_results_dir(results_dir)
        self.path = self.dir / RUNS_FILE

    @contextmanager
    def _lock(self):
        with open(self.dir / ".runs.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        rows = []
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{self.path}:{number} is not valid JSON ({err}); fix or "
                                 "remove that line (the other rows are intact)") from err
        return rows

    def append(self, row: dict) -> None:
        line = json.dumps(row, sort_keys=True, default=str)
        with self._lock():
            old = self.path.read_bytes() if self.path.exists() else b""
            if old and not old.endswith(b"\n"):
                old += b"\n"
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                f.write(old + line.encode() + b"\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)

    def done_runs(self, run_key: str) -> set[int]:
        """Run indices already stored for a run key (see ``runner.run_key``)."""
        return {r["run"] for r in self.rows() if r.get("run_key") == run_key}

"""Start `python -m spiders.run` in a child process and read the stats it leaves.

Used by tasks/crawl/stage.py and tasks/fetch/stage.py. The child is the only place Scrapy's
reactor runs, so the caller (a Prefect task, a test, a notebook) can run any number
of crawls. If the caller is interrupted, the child is asked to stop (SIGINT, as a Ctrl-C
would) and given a few seconds: Scrapy then saves its JOBDIR; a second SIGINT, and at last
SIGKILL, end one that waits on slow responses. Either way the files it wrote stay usable
for a resume (a crawl's page cache replays what it fetched). On Linux the child is also
told to stop when its parent dies (PR_SET_PDEATHSIG), so a SIGKILLed build leaves no
crawl running on its own, writing into the state the next build resumes from.
"""

from __future__ import annotations

import ctypes
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from spiders.budget import budget_file
from tasks.core.errors import FacesetError
from tasks.core.paths import DatasetPaths

REPO = Path(__file__).resolve().parents[1]
GRACE = 3.0  # seconds a stopping child gets to save its state before a second SIGINT, then as long to end
PR_SET_PDEATHSIG = 1
_PRCTL = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None) if sys.platform == "linux" else None


def die_with_parent(signum: int = signal.SIGINT) -> None:
    """In a child between fork and exec: receive `signum` when the parent dies (Linux; a no-op elsewhere).
    libc's prctl is looked up at import, so the child calls it without loading anything."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)


def safety_job(paths: DatasetPaths) -> dict[str, Any]:
    """What every spider job of a dataset carries: the build's byte budget file and where its
    takedown list is (by path: the job file itself never names a taken-down URL)."""
    return {"budget_file": str(budget_file(paths)),
            "takedowns": {"data_root": str(paths.root.parent), "dataset": paths.root.name}}


def start_job(job: dict[str, Any], state: Path) -> subprocess.Popen:
    """Write the job file and start `python -m spiders.run` on it; stderr goes to state/stderr.log."""
    state.mkdir(parents=True, exist_ok=True)
    job_file = state / "job.json"
    Path(job["stats_file"]).unlink(missing_ok=True)
    job_file.write_text(json.dumps(job, indent=2), encoding="utf-8")
    with (state / "stderr.log").open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "spiders.run", str(job_file)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr,
            preexec_fn=die_with_parent,
        )


def stop_gracefully(proc: subprocess.Popen, grace: float = GRACE) -> None:
    """Stop the child within about 2 x `grace` seconds: SIGINT (Scrapy closes cleanly and saves its
    JOBDIR once the responses in flight arrive), SIGINT again (Scrapy stops at once), then SIGKILL."""
    for stop in (signal.SIGINT, signal.SIGINT, signal.SIGKILL):
        if proc.poll() is not None:
            return
        proc.send_signal(stop)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


def job_stats(job: dict[str, Any], proc: subprocess.Popen, state: Path) -> dict[str, Any]:
    """The stats the finished child wrote, or a FacesetError quoting its last output."""
    stats_file = Path(job["stats_file"])
    if not stats_file.is_file():
        tail = (state / "stderr.log").read_text(encoding="utf-8", errors="replace")[-2000:]
        raise FacesetError(
            f"the {job['kind']} process ended (exit code {proc.returncode}) without reporting its results",
            f"see {job['log_file']} and {state / 'stderr.log'}; last output: {tail.strip() or '(none)'}",
        )
    return json.loads(stats_file.read_text(encoding="utf-8"))


def run_job(job: dict[str, Any], state: Path, timeout: float | None = None) -> dict[str, Any]:
    """Run one spider job in a child process; return its stats (finish_reason says how it ended)."""
    proc = start_job(job, state)
    try:
        proc.wait(timeout=timeout)
    except BaseException:
        stop_gracefully(proc)
        raise
    return job_stats(job, proc, state)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON Lines file; a last line cut short by a killed process is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records

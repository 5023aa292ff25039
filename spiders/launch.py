"""Start `python -m spiders.run` in a child process and read the stats it leaves.

Used by tasks/crawl/stage.py and tasks/fetch/stage.py. The child is the only place Scrapy's
reactor runs, so the caller (a Prefect task, a test, a notebook) can run any number
of crawls. If the caller is interrupted, the child is asked to stop gracefully (SIGINT,
as a Ctrl-C would) so its JOBDIR and the files it wrote stay usable for a resume.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tasks.core.errors import FacesetError

REPO = Path(__file__).resolve().parents[1]


def start_job(job: dict[str, Any], state: Path) -> subprocess.Popen:
    """Write the job file and start `python -m spiders.run` on it; stderr goes to state/stderr.log."""
    state.mkdir(parents=True, exist_ok=True)
    job_file = state / "job.json"
    Path(job["stats_file"]).unlink(missing_ok=True)
    job_file.write_text(json.dumps(job, indent=2), encoding="utf-8")
    with (state / "stderr.log").open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "spiders.run", str(job_file)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr
        )


def stop_gracefully(proc: subprocess.Popen) -> None:
    """Ask the child to stop as a Ctrl-C would (it saves its JOBDIR), killing it if it hangs."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
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

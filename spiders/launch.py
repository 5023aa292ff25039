"""Start `python -m spiders.run` in a child process and read the stats it leaves.

Used by tasks/crawl.py and tasks/fetch.py. The child is the only place Scrapy's
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

from tasks.errors import FacesetError

REPO = Path(__file__).resolve().parents[1]


def run_job(job: dict[str, Any], state: Path, timeout: float | None = None) -> dict[str, Any]:
    """Run one spider job in a child process; return its stats (finish_reason says how it ended)."""
    state.mkdir(parents=True, exist_ok=True)
    job_file = state / "job.json"
    stats_file = Path(job["stats_file"])
    stats_file.unlink(missing_ok=True)
    job_file.write_text(json.dumps(job, indent=2), encoding="utf-8")
    stderr_file = state / "stderr.log"
    with stderr_file.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "spiders.run", str(job_file)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            proc.wait(timeout=timeout)
        except BaseException:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
    if not stats_file.is_file():
        tail = stderr_file.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise FacesetError(
            f"the {job['kind']} process ended (exit code {proc.returncode}) without reporting its results",
            f"see {job['log_file']} and {stderr_file}; last output: {tail.strip() or '(none)'}",
        )
    return json.loads(stats_file.read_text(encoding="utf-8"))


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

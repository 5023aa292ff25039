"""Prefect's temporary server ends with the build that started it, however the build ends.

Without PREFECT_API_URL, Prefect starts a temporary API server (uvicorn, a child process)
on first use and stops it at interpreter exit. A build killed with SIGKILL (the OOM killer,
`kill -9`, a lost container) runs no exit hook, and that server kept running for ever.
`watch_temporary_server` starts the server before the flow (the same instance Prefect then
uses) and beside it a watchdog process (`python -m flows.server_watch BUILD SERVER`) that
stops the server as soon as the build process is gone, and ends itself when the server
ends. Nothing is started when the build talks to a Prefect server of its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

POLL = 0.1  # seconds between the watchdog's looks at the build
STOP_WAIT = 5.0  # seconds the server gets to stop on SIGTERM before SIGKILL


def watch_temporary_server() -> subprocess.Popen | None:
    """Start Prefect's temporary server (if this build uses one) and its watchdog; the watchdog's process."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_ALLOW_EPHEMERAL_MODE

    if PREFECT_API_URL.value() or not PREFECT_SERVER_ALLOW_EPHEMERAL_MODE.value():
        return None
    server = SubprocessASGIServer()
    server.start()
    process = server.server_process
    if process is None:
        return None
    watchdog = getattr(server, "faceset_watchdog", None)
    if watchdog is not None and watchdog.poll() is None and watchdog.args[-1] == str(process.pid):
        return watchdog  # a second build in the same process: the server is watched already
    watchdog = subprocess.Popen([sys.executable, "-m", "flows.server_watch", str(os.getpid()), str(process.pid)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)  # a Ctrl-C in the terminal is the build's to handle
    server.faceset_watchdog = watchdog
    return watchdog


def _started(pid: int) -> str | None:
    """The process's start time (from /proc), which tells it from a later process given the same pid;
    None once it has ended (a zombie has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def _stop(server: int, started: str) -> None:
    try:
        os.kill(server, signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT
        while _started(server) == started and time.monotonic() < deadline:
            time.sleep(POLL)
        if _started(server) == started:
            os.kill(server, signal.SIGKILL)
    except ProcessLookupError:
        pass  # it ended meanwhile


def watch(build: int, server: int) -> int:
    """Wait while both live; when the build has gone, stop the server (SIGTERM, then SIGKILL)."""
    started = _started(server)
    while started is not None and _started(server) == started:
        if os.getppid() != build:  # the build ended and this process was handed to another parent
            _stop(server, started)
            return 0
        time.sleep(POLL)
    return 0


if __name__ == "__main__":
    sys.exit(watch(int(sys.argv[1]), int(sys.argv[2])))

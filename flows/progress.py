"""What a person sees of a build in the terminal: a line per stage as it starts and ends,
bars for the per-image stages, and a closing summary.

The build flow reports to whichever `Progress` is current (set by `faceset build`); the
default one prints nothing, so library calls and tests stay quiet. `ConsoleProgress`
prints plain lines (logs, CI, pipes); `TerminalProgress` adds rich bars on a terminal.
Prefect's own log lines stay off the console unless `-v` (flows/commands/build.py); the
Prefect UI gets them all the same.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import IO, Iterator

from tasks.core import manifest as mf

WIDTH = 10  # stage names are padded to this


def counts(frame) -> dict[str, int]:
    """The figures a stage line shows of a manifest: rows and rows per status."""
    status = frame["status"].value_counts() if len(frame) else {}
    return {"rows": len(frame), **{str(k): int(v) for k, v in dict(status).items()}}


def stage_line(stage: str, note: str, rows_in: int | None, figures: dict[str, int] | None, seconds: float | None) -> str:
    """`crawl      ran in 12.3 s: 40 rows in, 52 out, 50 kept, 2 quarantined` (or `cached`, `started`)."""
    parts = []
    if rows_in is not None:
        parts.append(f"{rows_in} rows in")
    if figures:
        parts.append(f"{figures.get('rows', 0)} out")
        parts += [f"{figures[status]} {status}" for status in mf.STATUSES if figures.get(status)]
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    return f"{stage:<{WIDTH}} {note}{took}" + (": " + ", ".join(parts) if parts else "")


class Progress:
    """Silent progress: the interface the flow calls."""

    def start(self, stage: str, rows_in: int | None = None, total: int | None = None) -> None: ...

    def advance(self, stage: str, done: int, total: int) -> None: ...

    def finish(self, stage: str, note: str, figures: dict[str, int] | None = None) -> None: ...


class ConsoleProgress(Progress):
    """One plain line per stage as it starts and as it ends, on stderr."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.started: dict[str, tuple[float, int | None]] = {}

    def say(self, line: str) -> None:
        self.stream.write(line + "\n")  # not print(): the flow's log_prints would send it to Prefect's log
        self.stream.flush()

    def start(self, stage: str, rows_in: int | None = None, total: int | None = None) -> None:
        self.started[stage] = (time.monotonic(), rows_in)
        self.say(stage_line(stage, "started", rows_in, None, None))

    def finish(self, stage: str, note: str, figures: dict[str, int] | None = None) -> None:
        began, rows_in = self.started.pop(stage, (None, None))
        seconds = time.monotonic() - began if began is not None else None
        self.say(stage_line(stage, "cached (unchanged since the last build)" if note == "cached" else "ran",
                            rows_in, figures, seconds))


class TerminalProgress(ConsoleProgress):
    """The same lines, printed above rich progress bars for the per-image stages."""

    def __init__(self, stages: list[str]) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        super().__init__()
        self.bars = RichProgress(
            TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=Console(file=sys.stderr), transient=True,
        )
        self.ids: dict[str, int] = {}

    def say(self, line: str) -> None:
        self.bars.console.print(line, highlight=False, markup=False)

    def advance(self, stage: str, done: int, total: int) -> None:
        if stage not in self.ids:
            self.ids[stage] = self.bars.add_task(stage, total=total)
        self.bars.update(self.ids[stage], completed=done, total=total)

    def finish(self, stage: str, note: str, figures: dict[str, int] | None = None) -> None:
        if stage in self.ids:
            self.bars.remove_task(self.ids.pop(stage))
        super().finish(stage, note, figures)


_current: Progress = Progress()


def current() -> Progress:
    return _current


@contextmanager
def showing(progress: Progress) -> Iterator[Progress]:
    """Make `progress` the one the build reports to, for the duration of a build."""
    global _current
    previous, _current = _current, progress
    bars = getattr(progress, "bars", None)
    try:
        if bars is not None:
            bars.start()
        yield progress
    finally:
        if bars is not None:
            bars.stop()
        _current = previous

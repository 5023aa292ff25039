"""Progress bars in the terminal: one line per stage, advancing as its images are processed.

The build flow reports to whichever `Progress` is current (set by `faceset build`); the
default one prints nothing, so library calls and tests stay quiet.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator


class Progress:
    """Silent progress: the interface the flow calls."""

    def start(self, stage: str, total: int | None = None) -> None: ...

    def advance(self, stage: str, done: int, total: int) -> None: ...

    def finish(self, stage: str, note: str) -> None: ...


class TerminalProgress(Progress):
    """rich progress bars on stderr, one per stage."""

    def __init__(self, stages: list[str]) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        self.bars = RichProgress(
            TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"), TimeElapsedColumn(),
            console=Console(file=sys.stderr), transient=False,
        )
        self.ids = {stage: self.bars.add_task(stage, total=None, start=False, note="waiting") for stage in stages}

    def start(self, stage: str, total: int | None = None) -> None:
        self.bars.start_task(self.ids[stage])
        self.bars.update(self.ids[stage], total=total, note="running")

    def advance(self, stage: str, done: int, total: int) -> None:
        self.bars.update(self.ids[stage], completed=done, total=total)

    def finish(self, stage: str, note: str) -> None:
        task = self.bars.tasks[self.ids[stage]]
        total = task.total or 1
        self.bars.update(self.ids[stage], total=total, completed=total, note=note)


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

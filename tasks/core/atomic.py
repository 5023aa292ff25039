"""The one atomic writer: every file the build writes goes through a temporary file and a rename.

Readers see the old content or the new, never half a file, even after SIGKILL. A file
that is damaged all the same (a disk filled up, a copy cut short, an edit by hand) is read
back with `read_or_absent`: as if it were not there, with a warning, so the build makes
it again instead of failing on it for ever.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)
T = TypeVar("T")
# What a damaged file raises when read: cut short, not the format, or not the shape expected.
DAMAGED = (OSError, ValueError, LookupError, TypeError)


def atomic_write(path: Path, write: Callable[[str], object], *, durable: bool = True) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it into place.

    `durable=False` skips the fsync: for files that are cheap to make again (face crops),
    where an fsync per file would cost more than making it.
    """
    _replace(path, lambda fd, tmp: write(tmp), durable)


def _replace(path: Path, write: Callable[[int, str], object], durable: bool) -> None:
    """The mechanic: `write(fd, tmp)` fills a temporary file beside `path` (through the open
    descriptor or by name), fsync when `durable`, rename into place; never a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        write(fd, tmp)
        if durable:
            os.fsync(fd)  # the file's data, whichever descriptor or name wrote it
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Written through the temporary file's own descriptor: no second open (two files a photo in the faces stage)."""
    _replace(path, lambda fd, tmp: _write_all(fd, data), durable)


def write_text(path: Path, text: str, *, durable: bool = True) -> None:
    write_bytes(path, text.encode("utf-8"), durable=durable)


def _plain(value: Any) -> Any:
    """JSON for what `json` does not know: numpy numbers as numbers (NaN as null), the rest as text."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return str(value)


def write_json(path: Path, data: Any, *, indent: int | None = 2, durable: bool = True) -> None:
    write_text(path, json.dumps(data, indent=indent, ensure_ascii=False, default=_plain), durable=durable)


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """JSON Lines: one record per line (metadata.jsonl, the rows handed to a spider)."""
    write_text(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def write_figure(path: Path, figure: Any, *, dpi: int = 100) -> None:
    """A matplotlib figure as PNG (the format is named: the temporary file's suffix is .tmp)."""
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=dpi))


def read_or_absent(path: Path, read: Callable[[Path], T], what: str) -> T | None:
    """`read(path)`; None when the file is absent, or damaged (then a warning names it and `what` happens).

    For files the build can make again (its state, caches, reports): a damaged one must
    cost that work, never stop every later build.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return read(path)
    except DAMAGED as exc:
        log.warning("ignoring the damaged file %s (%s: %s); %s", path, type(exc).__name__, exc, what)
        return None


def read_json(path: Path, what: str) -> Any:
    """A JSON file written by `write_json`, or None (see `read_or_absent`)."""
    return read_or_absent(path, lambda p: json.loads(p.read_text(encoding="utf-8")), what)

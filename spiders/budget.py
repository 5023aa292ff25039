"""The build's download budget (`crawl.max_total_bytes`), kept in a file between processes.

A build downloads in several processes: its crawl, then its image download, each of them
perhaps killed and resumed. The bytes spent so far live in the dataset's state folder, so
each process starts from what the earlier ones spent. The crawl or the download opens the
budget (a new one when none is open), and the image download closes it when it has run to
its end: the next build starts from zero, while an unfinished build resumed later goes on
from its figure. Kept free of Scrapy, so the stages can open and close it cheaply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.core.atomic import read_json, write_json
from tasks.core.paths import DatasetPaths


def budget_file(paths: DatasetPaths) -> Path:
    """Where a dataset's byte budget is kept."""
    return paths.state_folder("budget") / "bytes.json"


def _read(path: Path) -> dict[str, Any]:
    record = read_json(path, "the download budget is counted from zero")
    ok = isinstance(record, dict) and isinstance(record.get("spent"), int) and isinstance(record.get("open"), bool)
    return record if ok else {"spent": 0, "open": False}


def spent(path: Path) -> int:
    """Bytes the open budget has spent (0 when none is open)."""
    record = _read(path)
    return record["spent"] if record["open"] else 0


def open_budget(path: Path) -> int:
    """Start a build's budget, or go on with the one an unfinished build left; returns what is spent."""
    record = _read(path)
    if not record["open"]:
        record = {"spent": 0, "open": True}
        write_json(path, record)
    return record["spent"]


def record_spent(path: Path, spent_bytes: int, *, durable: bool = True) -> None:
    write_json(path, {"spent": spent_bytes, "open": True}, durable=durable)


def close_budget(path: Path) -> None:
    """The build's downloads ran to their end: the next build starts a new budget."""
    write_json(path, {"spent": spent(path), "open": False})

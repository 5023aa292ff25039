"""Stage reports: `reports/<stage>.json`, written atomically and read back by the report and the card."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tasks.core.atomic import write_json
from tasks.core.paths import DatasetPaths

log = logging.getLogger(__name__)


def write_report(paths: DatasetPaths, stage: str, data: dict[str, Any]) -> Path:
    """Write reports/<stage>.json atomically (a crash never leaves half a report)."""
    target = paths.report_json(stage)
    write_json(target, data)
    return target


def read_report(paths: DatasetPaths, stage: str) -> dict[str, Any] | None:
    """A stage's report, or None when it is absent or unreadable (a warning says which)."""
    target = paths.report_json(stage)
    if not target.is_file():
        return None
    try:
        data = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("ignoring the unreadable report %s (%s); it is written again when its stage runs", target, exc)
        return None
    return data if isinstance(data, dict) else None

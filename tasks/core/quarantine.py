"""The quarantine folder: originals of rejected images, one folder per reason, for a person to look at."""

from __future__ import annotations

import shutil
from pathlib import Path

from tasks.core.paths import DatasetPaths
from tasks.core.reasons import reason_kind


def slug(reason: str) -> str:
    """A folder name for a reason: 'could not process: ValueError' -> 'could-not-process'."""
    kind = reason_kind(reason).split(":")[0]
    return "-".join("".join(c if c.isalnum() else " " for c in kind.lower()).split()) or "other"


def quarantine(source: Path, reason: str, item_id: str, paths: DatasetPaths) -> str | None:
    """Copy the original to quarantine/<reason>/<item_id>.<ext>; its relative path, or None."""
    if not source.is_file():
        return None
    target = paths.quarantine / slug(reason) / f"{item_id}{source.suffix.lower()}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target.relative_to(paths.root).as_posix()

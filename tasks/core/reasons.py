"""Reasons in the manifest: named constants for those several modules write, and their kinds."""

from __future__ import annotations

import re

TAKEDOWN = "takedown"


def reason_kind(reason: str) -> str:
    """The reason without its details: 'file too small (3 KB < 5 KB)' -> 'file too small'."""
    return re.sub(r"\s*\(.*\)$", "", reason).strip()

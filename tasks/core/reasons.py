"""Reasons in the manifest: named constants for those several modules write or read, and their kinds."""

from __future__ import annotations

import re

TAKEDOWN = "takedown"  # on the takedown list (tasks/core/takedown.py)
NO_FACE = "no face"  # the detector found none (the faces stage; `faceset apply` says it too)
BLANK = "blank image"  # a crop of almost one grey level (dedupe)
DUPLICATE_OF = "duplicate of"  # + the keeper's item_id (dedupe)
IN_REFERENCE_SET = "in reference set"  # + the set's name: in an earlier dataset's test split (dedupe)
AUTOTAGGER_DISAGREES = "autotagger disagrees: "  # + the cross-check's reason, with `on_disagreement: drop`
BUDGET_REACHED = "API budget reached"  # a paid autotagger's `max_calls` spent: the face is not tagged
PER_FACE = "one row per face"  # + (N faces): an image whose faces have rows of their own (faces: {each: true})


def duplicate_of(keeper: str) -> str:
    return f"{DUPLICATE_OF} {keeper}"


def in_reference_set(name: str) -> str:
    return f"{IN_REFERENCE_SET} {name} (test split)"


def reason_kind(reason: str) -> str:
    """The reason without its details: 'file too small (3 KB < 5 KB)' -> 'file too small'."""
    return re.sub(r"\s*\(.*\)$", "", reason).strip()

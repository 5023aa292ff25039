"""One funnel from found to kept and one set of distributions, for the report and the card.

Both documents read these numbers from the same manifest through these functions, so the
report's funnel and DATASET_CARD.md's cannot disagree, and a field is grouped in both as
the split groups it (tasks.core.binning).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tasks.core.binning import field_labels, label_order, small_groups
from tasks.core.manifest import DUPLICATE, EXCLUDED, FAILED, KEPT, QUARANTINED
from tasks.core.paths import SPLITS
from tasks.core.reasons import PER_FACE, TAKEDOWN, reason_kind
from tasks.core.recipe import Recipe

STEPS = ("found", "removed on request", "downloaded", "decoded", "one face", "unique", "agreed", "kept")
FACE_WORDS = ("face", "blur", "crop")  # reasons of the face step; other quarantines happened at decoding
WHY_SHOWN = 6  # reasons named per step, most common first
NO_REASON = "(no reason given)"


def fold_reason(reason: Any) -> str:
    """'duplicate of 3f2a...' and 'file too small (3 KB < 5 KB)' counted by their kind."""
    if not isinstance(reason, str) or not reason.strip():
        return NO_REASON
    if reason.startswith("duplicate of"):
        return "duplicate of another image"
    return reason_kind(reason)


def stopped_at(manifest: pd.DataFrame) -> pd.Series:
    """The step each row stopped at: 'kept' for kept rows, else the step it fell out at."""
    status = manifest["status"]
    reason = manifest["reason"].astype("string").fillna("")
    sha256 = manifest["sha256"] if "sha256" in manifest.columns else pd.Series(pd.NA, index=manifest.index)
    failing = status.isin([QUARANTINED, FAILED])
    conditions = [
        status == KEPT,
        (status == EXCLUDED) & (reason == TAKEDOWN),
        sha256.isna() & status.isin([FAILED, QUARANTINED, EXCLUDED]),
        status == DUPLICATE,
        failing & reason.str.lower().str.contains("|".join(FACE_WORDS), regex=True),
        failing,
    ]
    choices = ["kept", "removed on request", "downloaded", "unique", "one face", "decoded"]
    # anything else: excluded after the cross-check (on_disagreement: drop) or for another reason
    steps = np.select([c.fillna(False).to_numpy(dtype=bool) for c in conditions], choices, default="agreed")
    return pd.Series(steps, index=manifest.index, dtype=object)


def funnel(manifest: pd.DataFrame) -> list[dict[str, Any]]:
    """Images left after each step from found to kept, with how many fell out at that step
    and why; images taken down on request get their own step right after 'found'.

    With one row per face (`faces: {each: true}`) the count turns from images to faces at
    the face step: an image whose faces got rows of their own passes it as its faces (the
    step is then called 'faces'), and each face row goes on through the later steps."""
    is_face = manifest["parent_id"].notna() if "parent_id" in manifest.columns else pd.Series(False, index=manifest.index)
    reason = manifest["reason"].astype("string").fillna("")
    split_up = (manifest["status"] == EXCLUDED) & reason.str.startswith(PER_FACE) & ~is_face
    images = manifest[~is_face & ~split_up]  # rows that stay images to the end, then the faces' parents
    steps = pd.concat([stopped_at(images), pd.Series("kept", index=manifest.index[split_up], dtype=object)])
    face_steps = stopped_at(manifest[is_face])
    remaining = len(images) + int(split_up.sum())
    rows = [{"step": STEPS[0], "images": remaining, "dropped": 0, "why": ""}]
    faces_begun = False
    for step in STEPS[1:-1]:
        if faces_begun:
            steps, table = face_steps, manifest[is_face]
        else:
            table = manifest.loc[steps.index]
        gone = table.loc[steps[table.index] == step, "reason"].map(fold_reason).value_counts()
        remaining -= int(gone.sum())
        name = step
        if step == "one face" and is_face.any():  # from here on, faces: the parents give way to their faces
            remaining += len(face_steps) - int(split_up.sum())
            faces_begun, name = True, "faces"
        why = "; ".join(f"{r} ({n})" for r, n in gone.head(WHY_SHOWN).items())
        rows.append({"step": name, "images": remaining, "dropped": int(gone.sum()),
                     "why": why + ("; ..." if len(gone) > WHY_SHOWN else "")})
    rows.append({"step": STEPS[-1], "images": remaining, "dropped": 0, "why": ""})
    return rows


def dropped(steps: list[dict[str, Any]], step: str) -> int:
    """How many images `funnel` says fell out at `step`."""
    return next(row["dropped"] for row in steps if row["step"] == step)


def reasons(manifest: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows not kept, counted by status and reason kind, most common first."""
    turned_away = manifest[manifest["status"] != KEPT]
    folded = turned_away["reason"].map(fold_reason)
    counts = folded.groupby([turned_away["status"], folded]).size().sort_values(ascending=False, kind="stable")
    return [{"status": s, "reason": r, "images": int(n)} for (s, r), n in counts.items()]


def split_columns(manifest: pd.DataFrame, recipe: Recipe) -> dict[str, str]:
    """Variant name -> its manifest column (the original first)."""
    found = {"original": "split"} if "split" in manifest.columns else {}
    for variant in recipe.split.variants:
        if f"split_{variant.name}" in manifest.columns:
            found[variant.name] = f"split_{variant.name}"
    return found


def distribution(manifest: pd.DataFrame, field: str, recipe: Recipe, column: str = "split") -> list[dict[str, Any]]:
    """Kept images per group of `field` (grouped as the split groups it) and per value of
    `column` (a split column), with their total in 'all'; before the split (no such column,
    or an empty one) every kept image is counted in 'all' alone."""
    if field not in manifest.columns:
        return []
    kept_rows = manifest[manifest["status"] == KEPT]
    labels = field_labels(manifest, field, recipe).loc[kept_rows.index]  # the same bins for every column
    splits: list[str] = []
    if column in manifest.columns and kept_rows[column].notna().any():
        labels = labels[kept_rows[column].notna()]
        table = pd.crosstab(labels, kept_rows.loc[labels.index, column])
        splits = [s for s in SPLITS if s in table.columns]
    totals = labels.value_counts()
    return [{field: value, **{s: int(table.loc[value, s]) for s in splits}, "all": int(totals[value])}
            for value in sorted(totals.index, key=lambda v: label_order(str(v)))]


def thin(rows: list[dict[str, Any]], field: str) -> list[str]:
    """Groups of a `distribution` with fewer than MIN_GROUP images in all: too few to judge."""
    return small_groups({str(row[field]): row["all"] for row in rows})

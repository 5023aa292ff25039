"""The review queues: which faces a reviewer sees, in which order, and filters on top.

- `flags`: the cross-check's disagreements, most likely label errors first (its score,
  then the tagger's confidence), whatever their status (`on_disagreement: drop` removed
  some, and a reviewer may keep them);
- `sample`: the validation sample (sample.py), in drawing order;
- `duplicates` and `identities`: groups of near-copies (`dup_group`) and of one person
  (`person_group`) with two or more faces, largest first, paged by group so a group's
  faces stand side by side;
- `quarantine`: quarantined rows, by reason;
- `all`: every row in manifest order.

Filters apply to every queue: a field's value (an empty value means a missing one),
split, status, (for quarantine) the reason's kind, and whether people decided about the
face already (`decided=no` resumes a queue where the reviewers left it). Orders are
positions into the manifest, computed once per manifest version by the index; the
decided filter, which changes with every decision, is applied to them per request.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tasks.core.reasons import reason_kind

QUEUES: dict[str, str] = {
    "flags": "Flagged by the cross-check",
    "sample": "Validation sample",
    "duplicates": "Duplicates",
    "identities": "Identity groups",
    "quarantine": "Quarantine",
    "all": "All faces",
}
GROUPED = {"duplicates": "dup_group", "identities": "person_group"}


@dataclass(frozen=True)
class Query:
    """What a page asks for; every value comes from the request, so nothing here is trusted."""

    queue: str = "flags"
    field: str = ""
    value: str = ""
    split: str = ""
    status: str = ""
    reason: str = ""
    decided: str = ""  # "yes", "no" or "" (either)

    def filters(self) -> dict[str, str]:
        return {k: v for k, v in (("field", self.field), ("value", self.value), ("split", self.split),
                                  ("status", self.status), ("reason", self.reason), ("decided", self.decided)) if v}


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame[name].astype("string") if name in frame.columns else pd.Series(pd.NA, index=frame.index, dtype="string")


def _number(frame: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(frame[name], errors="coerce").astype(float).fillna(0.0) if name in frame.columns \
        else pd.Series(0.0, index=frame.index)


def reason_kinds(frame: pd.DataFrame) -> pd.Series:
    """Each row's reason without its details ('file too small (3 KB < 5 KB)' -> 'file too small')."""
    reasons = _column(frame, "reason")
    return reasons.map(reason_kind, na_action="ignore").astype("string")


def mask(frame: pd.DataFrame, query: Query, fields: list[str]) -> np.ndarray:
    """Rows passing the query's filters (an unknown field matches nothing)."""
    keep = pd.Series(True, index=frame.index)
    if query.field:
        if query.field not in fields:
            return np.zeros(len(frame), dtype=bool)
        values = _column(frame, query.field)
        keep &= values.isna() if query.value == "" else values.eq(query.value).fillna(False)
    if query.split:
        keep &= _column(frame, "split").eq(query.split).fillna(False)
    if query.status:
        keep &= _column(frame, "status").eq(query.status).fillna(False)
    if query.reason:
        keep &= reason_kinds(frame).eq(query.reason).fillna(False)
    return keep.to_numpy(dtype=bool)


def flat_order(frame: pd.DataFrame, queue: str, sample_ids: list[str], positions: dict[str, int]) -> np.ndarray:
    """Row positions of a queue that is a list of faces."""
    if queue == "flags":
        flagged = frame[_column(frame, "crosscheck").eq("disagree").fillna(False)]
        keys = pd.DataFrame({"score": _number(flagged, "crosscheck_score"),
                             "confidence": _number(flagged, "autotag_gender_confidence")}, index=flagged.index)
        order = keys.sort_values(["score", "confidence"], ascending=False, kind="stable").index
        return np.asarray(order, dtype=np.int64)
    if queue == "sample":
        return np.array([positions[i] for i in sample_ids if i in positions], dtype=np.int64)
    if queue == "quarantine":
        rows = frame[_column(frame, "status").eq("quarantined").fillna(False)]
        order = pd.DataFrame({"kind": reason_kinds(rows).fillna(""), "id": rows["item_id"].astype("string")},
                             index=rows.index).sort_values(["kind", "id"], kind="stable").index
        return np.asarray(order, dtype=np.int64)
    return np.arange(len(frame), dtype=np.int64)


def group_order(frame: pd.DataFrame, column: str) -> list[tuple[str, np.ndarray]]:
    """(group, row positions) for groups of two or more, largest first, then by name."""
    values = _column(frame, column)
    present = values[values.notna()]
    sizes = present.value_counts()
    sizes = sizes[sizes >= 2]
    ordered = sorted(sizes.items(), key=lambda kv: (-kv[1], str(kv[0])))
    members = {k: np.asarray(v, dtype=np.int64) for k, v in present.groupby(present, sort=False).indices.items()}
    return [(str(group), present.index.to_numpy()[members[group]].astype(np.int64)) for group, _ in ordered]


def quarantine_reasons(frame: pd.DataFrame) -> list[tuple[str, int]]:
    """(reason kind, count) over quarantined rows, most frequent first."""
    rows = frame[_column(frame, "status").eq("quarantined").fillna(False)]
    counts = reason_kinds(rows).fillna("(no reason)").value_counts()
    return sorted(((str(k), int(v)) for k, v in counts.items()), key=lambda kv: (-kv[1], kv[0]))


def filtered_order(order: np.ndarray, keep: np.ndarray) -> np.ndarray:
    return order[keep[order]]


def filtered_groups(groups: list[tuple[str, np.ndarray]], keep: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Groups with at least one member passing the filters, shown whole (a group is judged as one)."""
    return [(name, rows) for name, rows in groups if keep[rows].any()]


def by_decided(order: list | np.ndarray, decided: np.ndarray, wanted: str) -> list | np.ndarray:
    """Faces (or groups: all members) with a decision (`wanted` "yes") or without ("no")."""
    want = wanted == "yes"
    if isinstance(order, list):
        return [(name, rows) for name, rows in order if bool(decided[rows].all()) == want]
    return order[decided[order] == want]

"""The reviewers' decisions (decisions.csv, tasks.core.decisions), applied to the manifest by the cross-check.

The cross-check is where a face's labels are judged, so it is where people's judgement
overrides the machine's; the split, export and report after it see the result through
the manifest. For each item and field the latest decision holds:

- `drop`, `not_face`: the row becomes `excluded`, reason `reviewer: <note>`, so it is in
  no split folder, variant or metadata;
- `relabel FIELD=VALUE`: FIELD takes VALUE and `<FIELD>_crawled` keeps what was crawled;
- `keep`: a face the cross-check quarantined (`on_disagreement: drop`) is kept again;
  like every decision it settles the face's flag (`reviewed`), so the review page no
  longer lists it; `crosscheck` itself keeps the tagger's verdict, which gold labels score;
- `same_person A B` joins the person groups of A and B; `different_person A B` takes A
  out of B's group when the face descriptors put them together (A keeps any face a
  `same_person` decision joins it to). The split keeps each person group in one split.
  The descriptors' group stays in `person_group_descriptor`.

A decision about an item that is not in the manifest, or about a field the recipe does
not have, is applied to nothing, logged, and listed in reports/crosscheck.json: it
stays in decisions.csv, and an item crawled again later is decided again.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pandas as pd

from tasks.core import decisions as core
from tasks.core.manifest import EXCLUDED, KEPT, QUARANTINED, set_status
from tasks.core.paths import DatasetPaths
from tasks.core.reasons import AUTOTAGGER_DISAGREES
from tasks.core.recipe import Recipe
from tasks.core.unionfind import UnionFind

log = logging.getLogger(__name__)
REVIEWED, REVIEWED_BY = "reviewed", "reviewed_by"  # the decisions that hold for a row, and who made them
CRAWLED = "_crawled"  # suffix of the column keeping a relabelled field's crawled value
DESCRIPTOR_GROUP = "person_group_descriptor"
WORDS = {core.DROP: "dropped", core.NOT_FACE: "not a face"}  # the reason when the reviewer left no note
SHOWN = 20  # problems logged one by one; the rest are counted


def _held(paths: DatasetPaths) -> tuple[list[core.Decision], dict[tuple[str, str], core.Decision], list[str]]:
    every, problems = core.read(paths.root)
    return every, core.latest(every), problems


def _reason(decision: core.Decision) -> str:
    return core.REVIEWER_REASON + (decision.note or WORDS[decision.action])


def _mark(frame: pd.DataFrame, index: Any, decision: core.Decision) -> None:
    said = decision.action + (f" {decision.field}" if decision.field else "")
    for column, value in ((REVIEWED, said), (REVIEWED_BY, decision.reviewer)):
        before = frame.at[index, column]
        frame.at[index, column] = value if pd.isna(before) else f"{before}; {value}"


def _face(frame: pd.DataFrame, index: Any, decision: core.Decision) -> None:
    """keep, drop or not_face of a whole row."""
    status, reason = frame.at[index, "status"], frame.at[index, "reason"]
    dropped_by_tagger = status == QUARANTINED and str(reason).startswith(AUTOTAGGER_DISAGREES)
    if decision.action == core.KEEP and dropped_by_tagger:
        frame.at[index, "status"], frame.at[index, "reason"] = KEPT, pd.NA
    elif decision.action in WORDS and (status == KEPT or dropped_by_tagger):
        set_status(frame, frame.index == index, EXCLUDED, _reason(decision))


def _relabel(frame: pd.DataFrame, index: Any, decision: core.Decision) -> None:
    crawled = decision.field + CRAWLED
    if crawled not in frame:
        frame[crawled] = pd.Series(pd.NA, index=frame.index, dtype="string")
    if pd.isna(frame.at[index, crawled]):
        frame.at[index, crawled] = frame.at[index, decision.field]
    frame.at[index, decision.field] = decision.value


def _people(frame: pd.DataFrame, identity: list[core.Decision], at: pd.Series) -> None:
    """Person groups with the identity decisions applied (see the module docstring)."""
    if DESCRIPTOR_GROUP not in frame:
        frame[DESCRIPTOR_GROUP] = frame["person_group"].astype("string")
    groups = frame[DESCRIPTOR_GROUP].astype("string").copy()
    for decision in identity:
        if decision.action == core.DIFFERENT_PERSON:
            mine, theirs = at[decision.item_id], at[decision.value]
            if not pd.isna(groups[mine]) and groups[mine] == groups[theirs]:
                groups[mine] = f"reviewed-{decision.item_id}"
    labels = groups.fillna("item-" + frame["item_id"].astype("string"))
    names = sorted(set(labels))
    number = {name: i for i, name in enumerate(names)}
    finder = UnionFind(len(names))
    for decision in identity:
        if decision.action == core.SAME_PERSON:
            finder.union(number[labels[at[decision.item_id]]], number[labels[at[decision.value]]])
    joined = labels.map(lambda name: names[finder.find(number[name])])
    alone = joined.map(joined.value_counts()) == 1
    frame["person_group"] = joined.mask(alone & groups.isna(), pd.NA).astype("string")


def honour(frame: pd.DataFrame, recipe: Recipe, paths: DatasetPaths) -> pd.DataFrame:
    """The manifest with the decisions that hold applied; what cannot be applied is logged."""
    every, held, problems = _held(paths)
    if not every and not problems:
        return frame
    out = frame.copy()
    for column in (REVIEWED, REVIEWED_BY):
        out[column] = pd.Series(pd.NA, index=out.index, dtype="string")
    at = pd.Series(out.index, index=out["item_id"].astype(str))
    fields = set(recipe.field_names)
    identity = []
    for decision in held.values():
        if decision.item_id not in at.index or (decision.field and decision.field not in fields):
            continue
        index = at[decision.item_id]
        if decision.action in core.IDENTITY:
            if decision.value in at.index:
                identity.append(decision)
            continue
        if decision.action == core.RELABEL:
            _relabel(out, index, decision)
        elif not decision.field:
            _face(out, index, decision)
        _mark(out, index, decision)
    if identity:
        _people(out, identity, at)
    messages = problems + core.validate(every, frame, fields)
    for message in messages[:SHOWN]:
        log.warning("decisions.csv: %s", message)
    if len(messages) > SHOWN:
        log.warning("decisions.csv: %d more problems, listed in reports/crosscheck.json", len(messages) - SHOWN)
    return out


def unsettled(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows no reviewer has decided about: the flags still to look at."""
    return frame if REVIEWED not in frame else frame[frame[REVIEWED].isna()]


def summary(frame: pd.DataFrame, recipe: Recipe, paths: DatasetPaths) -> dict[str, Any]:
    """What the decisions did, for reports/crosscheck.json (the report and the card quote it):
    labels people changed per field and reviewer, faces dropped and kept, identity decisions,
    and every decision that could not be applied, with why."""
    every, held, problems = _held(paths)
    fields = set(recipe.field_names)
    known = set(frame["item_id"].astype(str))
    row = frame.set_index(frame["item_id"].astype(str))
    changed: dict[str, Counter[str]] = {}
    actions: Counter[str] = Counter()
    reviewers: Counter[str] = Counter()
    for decision in held.values():
        if decision.item_id not in known or (decision.field and decision.field not in fields):
            continue
        if decision.action in core.IDENTITY and decision.value not in known:
            continue
        actions[decision.action] += 1
        reviewers[decision.reviewer] += 1
        crawled = decision.field + CRAWLED
        if decision.action == core.RELABEL and crawled in row and str(row.at[decision.item_id, crawled]) != decision.value:
            changed.setdefault(decision.field, Counter())[decision.reviewer] += 1
    unknown = sorted({d.item_id for d in every if d.item_id not in known})
    return {
        "rows_in_file": len(every) + len(problems),
        "holding": len(held),
        "applied": dict(sorted(actions.items())),
        "by_reviewer": dict(sorted(reviewers.items())),
        "labels_changed": {f: dict(sorted(c.items())) for f, c in sorted(changed.items())},
        "labels_changed_total": sum(sum(c.values()) for c in changed.values()),
        "excluded": int(frame["reason"].astype("string").str.startswith(core.REVIEWER_REASON).fillna(False).sum()),
        "unknown_items": unknown,
        "problems": problems + core.validate(every, frame, fields),
    }

"""reports/review.html: a contact sheet of every face the autotagger disagrees with.

A reviewer fixes labels faster by looking than by reading tables: each disagreeing face
is shown with its crawled label, the tagger's opinion and a link to the page it came
from, in the order of `crosscheck_score` (strongest disagreement first). The page says
only what has been measured: a flag's precision once gold labels or reviewers' decisions
measured it, and until then that the tagger disagrees, with the tagger's own measured
error beside it (validation.flag_trust), never a per-face "chance of error" that nothing
calibrated. The layout is templates/review.html.j2, escaped by default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.core.atomic import write_text
from tasks.core.paths import DatasetPaths
from tasks.core.recipe import Recipe
from tasks.core.templates import render


def review_path(paths: DatasetPaths) -> Path:
    return paths.review_html


def disagreements(manifest: pd.DataFrame) -> pd.DataFrame:
    """Disagreeing rows, strongest disagreement first (ties: the tagger's confidence)."""
    rows = manifest[manifest["crosscheck"].eq("disagree").fillna(False) & manifest["face_path"].notna()]
    order = rows.assign(_score=rows["crosscheck_score"].astype("Float64").fillna(0.0),
                        _conf=rows["autotag_gender_confidence"].astype("Float64").fillna(0.0))
    return order.sort_values(["_score", "_conf"], ascending=False, kind="stable").drop(columns=["_score", "_conf"])


def _card(row: pd.Series, rank: int, fields: list[str], reports: Path, root: Path) -> dict[str, Any]:
    """What one face's card shows: the crop, the crawled labels, the tagger's opinion, the page."""
    tagger = []
    if not pd.isna(row.get("autotag_gender")):
        tagger.append(f"{row['autotag_gender']} ({float(row['autotag_gender_confidence']):.0f}%)")
    if not pd.isna(row.get("autotag_age")):
        tagger.append(f"age {float(row['autotag_age']):.0f}")
    link = row.get("page_url")
    return {
        "face": os.path.relpath(root / str(row["face_path"]), reports),
        "rank": rank,
        "item_id": str(row["item_id"]),
        "crawled": ", ".join(f"{f}: {row.get(f)}" for f in fields if f in row and not pd.isna(row.get(f))),
        "tagger": ", ".join(tagger),
        "reason": str(row["crosscheck_reason"]),
        "page": link if isinstance(link, str) and link else None,
    }


def write(manifest: pd.DataFrame, recipe: Recipe, paths: DatasetPaths, summary: dict[str, Any] | None = None,
          checked: dict[str, Any] | None = None) -> Path:
    """Write the review page (also when there is nothing to review, saying so). `summary` is
    reports/crosscheck.json's content (its `flag_trust` and `threshold`), `checked` validation.json's."""
    summary = summary or {}
    fields = list(dict.fromkeys([spec.field for spec in recipe.crosscheck.fields.values()]
                                + ([recipe.target] if recipe.crosscheck.labels else [])))
    cards = [_card(row, rank, fields, paths.reports, paths.root)
             for rank, (_, row) in enumerate(disagreements(manifest).iterrows(), start=1)]
    trust = [entry["says"] for entry in summary.get("flag_trust", {}).values()]
    measured = any(entry.get("measured") for entry in summary.get("flag_trust", {}).values())
    thresholds = [entry["says"] for entry in summary.get("threshold", {}).values()]
    gold_faces = (checked or {}).get("gold_faces", 0)
    target = review_path(paths)
    write_text(target, render("tasks.crosscheck", "review.html.j2", name=recipe.name, cards=cards, trust=trust,
                              measured=measured, thresholds=thresholds, gold_faces=gold_faces,
                              decisions=summary.get("calibration", "plain rules")))
    return target

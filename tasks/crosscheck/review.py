"""reports/review.html: a contact sheet of every face the autotagger disagrees with.

A reviewer fixes labels faster by looking than by reading tables: each disagreeing face
is shown with its crawled label, the tagger's opinion and a link to the page it came
from, most likely errors first (`crosscheck_score`, the estimated chance that the
crawled label is wrong).
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import pandas as pd

from tasks.core.paths import DatasetPaths
from tasks.core.recipe import Recipe

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
.sheet{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;width:170px;font-size:12px;border:1px solid #ddd;padding:4px}
figure img{width:170px;height:170px;object-fit:cover;display:block}
.score{font-weight:bold} .why{color:#a00}
"""


def review_path(paths: DatasetPaths) -> Path:
    return paths.reports / "review.html"


def disagreements(manifest: pd.DataFrame) -> pd.DataFrame:
    """Disagreeing rows, most likely label errors first (ties: the tagger's confidence)."""
    rows = manifest[manifest["crosscheck"].eq("disagree").fillna(False) & manifest["face_path"].notna()]
    order = rows.assign(_score=rows["crosscheck_score"].astype("Float64").fillna(0.0),
                        _conf=rows["autotag_gender_confidence"].astype("Float64").fillna(0.0))
    return order.sort_values(["_score", "_conf"], ascending=False, kind="stable").drop(columns=["_score", "_conf"])


def _card(row: pd.Series, fields: list[str], reports: Path, root: Path) -> str:
    face = os.path.relpath(root / str(row["face_path"]), reports)
    crawled = ", ".join(f"{f}: {row.get(f)}" for f in fields if f in row and not pd.isna(row.get(f)))
    tagger = []
    if not pd.isna(row.get("autotag_gender")):
        tagger.append(f"{row['autotag_gender']} ({float(row['autotag_gender_confidence']):.0f}%)")
    if not pd.isna(row.get("autotag_age")):
        tagger.append(f"age {float(row['autotag_age']):.0f}")
    score = row.get("crosscheck_score")
    link = row.get("page_url")
    page = (f"<a href='{html.escape(str(link))}' rel='noreferrer'>page</a>" if isinstance(link, str) and link else "")
    return (
        f"<figure><a href='{html.escape(face)}'><img src='{html.escape(face)}' loading='lazy' alt=''></a>"
        f"<figcaption><span class='score'>{'' if pd.isna(score) else f'{float(score):.2f}'}</span> "
        f"{html.escape(str(row['item_id']))}<br>crawled: {html.escape(crawled)}<br>"
        f"tagger: {html.escape(', '.join(tagger))}<br><span class='why'>{html.escape(str(row['crosscheck_reason']))}</span>"
        f"<br>{page}</figcaption></figure>"
    )


def write(manifest: pd.DataFrame, recipe: Recipe, paths: DatasetPaths) -> Path:
    """Write the review page (also when there is nothing to review, saying so)."""
    rows = disagreements(manifest)
    fields = list(dict.fromkeys([spec.field for spec in recipe.crosscheck.fields.values()]
                                + ([recipe.target] if recipe.crosscheck.labels else [])))
    cards = [_card(row, fields, paths.reports, paths.root) for _, row in rows.iterrows()]
    body = (f"<div class='sheet'>{''.join(cards)}</div>" if cards
            else "<p>The autotagger agrees with every checked face (or nothing was checked).</p>")
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(recipe.name)}: faces to review</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(recipe.name)}: {len(cards)} faces to review</h1>"
        "<p>Faces whose crawled labels the autotagger disagrees with, most likely label errors first. "
        "The number is the estimated chance that the crawled label is wrong.</p>"
        f"{body}</body></html>"
    )
    target = review_path(paths)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(target)
    return target

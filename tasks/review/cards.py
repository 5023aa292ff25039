"""What the review app shows of one face: a plain dict, the same for the HTML page and the JSON.

Everything a reviewer needs to judge a label without leaving the page: the crop, the
original photo and the page it came from, the crawled labels (and, after a relabel, the
crawled value beside the new one), every autotagger column (`autotag_*`), the
cross-check's verdict and why, and the decisions that hold for it now. Values are plain
text here; the template escapes them and the script writes them as text only. A page
link is given only for http(s) URLs, so a hostile `javascript:` URL is never a link.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import quote, urlsplit

import pandas as pd

from tasks.core.decisions import IDENTITY, Decision
from tasks.core.urls import SCHEMES

FILES = "/files/"  # the route that serves the dataset's crops and originals
TAGGER_PREFIX = "autotag_"


def text(value: Any) -> str | None:
    """A cell as text for people: None when missing, numbers without trailing zeros."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, float):
        return f"{value:.3g}" if math.isfinite(value) and value != int(value) else f"{value:g}"
    return str(value)


def file_url(relative: Any) -> str | None:
    """The app's URL of a dataset file named by the manifest (the server checks it again)."""
    path = text(relative)
    if not path or path.startswith("/"):
        return None
    return FILES + quote(path)


def page_link(url: Any) -> str | None:
    value = text(url)
    return value if value and urlsplit(value).scheme.lower() in SCHEMES else None


def said(decision: Decision) -> str:
    """A decision in a few words: 'relabel gender=female by ann'."""
    what = {"relabel": f"relabel {decision.field}={decision.value}",
            "same_person": f"same person as {decision.value}",
            "different_person": f"different person from {decision.value}"}.get(
        decision.action, f"{decision.action} {decision.field}".strip())
    note = f" ({decision.note})" if decision.note else ""
    return f"{what} by {decision.reviewer}, {decision.decided_at}{note}"


def held_by_item(held: dict[tuple[str, str], Decision]) -> dict[str, list[str]]:
    """The decisions that hold (tasks.core.decisions.latest), listed under each item they concern."""
    out: dict[str, list[str]] = {}
    for decision in held.values():
        out.setdefault(decision.item_id, []).append(said(decision))
        if decision.action in IDENTITY:
            out.setdefault(decision.value, []).append(said(decision))
    return out


def card(row: dict[str, Any], fields: list[str], decided: dict[str, list[str]]) -> dict[str, Any]:
    item = str(row["item_id"])
    labels = [{"field": f, "value": text(row.get(f)), "crawled": text(row.get(f"{f}_crawled")),
               "source": text(row.get(f"{f}_source"))} for f in fields]
    tagger = [{"name": name.removeprefix(TAGGER_PREFIX), "value": text(value)}
              for name, value in row.items() if name.startswith(TAGGER_PREFIX) and text(value) is not None]
    original = row.get("image_path")
    if text(original) is None:
        original = row.get("quarantine_path")
    return {
        "item_id": item,
        "status": text(row.get("status")), "reason": text(row.get("reason")), "split": text(row.get("split")),
        "crop": file_url(row.get("face_path")), "original": file_url(original),
        "page": page_link(row.get("page_url")), "page_text": text(row.get("page_url")),
        "labels": labels, "tagger": tagger,
        "flag": text(row.get("crosscheck")), "flag_reason": text(row.get("crosscheck_reason")),
        "dup_group": text(row.get("dup_group")), "person_group": text(row.get("person_group")),
        "decisions": decided.get(item, []),
    }

"""Crawl stage: run the recipe's spider and turn what it found into manifest rows.

Scrapy runs in a child process per crawl (spiders/launch.py); success is judged from
the crawl's stats, not the exit code, and a crawl that finds no image at all is an
error with hints, because an empty dataset is never what the user wanted.

Rows are never dropped: rows found again get their labels refreshed and `last_seen`
updated; rows no longer found keep their values and their old `last_seen`.

Resume: the crawl keeps its state under `<data>/.faceset/crawl/` until it completes: a
JOBDIR (Scrapy's resume after Ctrl-C), an HTTP cache of the pages fetched (so a crawl
killed any other way replays them without the network) and the items found so far.
Running the stage again finishes the crawl. The page cache outlives the crawl: the next
build asks the server only whether each page changed (conditional requests).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections import Counter, defaultdict
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from spiders import diagnosis
from spiders import scopes
from spiders.launch import read_jsonl, run_job, safety_job
from tasks.core import manifest as mf
from tasks.core.atomic import read_or_absent, write_text
from tasks.core.errors import FacesetError
from tasks.core.paths import DatasetPaths
from tasks.core.recipe import QUERY, Recipe
from tasks.crawl.local_sources import local_rows
from tasks.core.reports import write_report

LAST_SEEN = "last_seen"
CLEAN_ENDS = ("finished",)


def crawl_state(paths: DatasetPaths) -> Path:
    return paths.state_folder("crawl")


def _needs_browser(recipe: Recipe) -> bool:
    return any(s.render or any(f.render for f in s.follow) for s in recipe.sources)


def prepare_job(recipe: Recipe, paths: DatasetPaths, today: date) -> dict[str, Any]:
    """The crawl job: a new crawl, or the unfinished one left in the state folder, resumed.

    A new crawl revalidates the pages cached by earlier builds (RFC 2616 policy: a
    conditional request, answered 304 when the page did not change). A resumed crawl
    replays the pages it already fetched since it started, without asking the server.
    """
    state = crawl_state(paths)
    state.mkdir(parents=True, exist_ok=True)
    started_file, recipe_file = state / "started", state / "recipe.sha256"
    fingerprint = hashlib.sha256(json.dumps(recipe.section("crawl"), sort_keys=True).encode()).hexdigest()
    if recipe_file.is_file() and recipe_file.read_text(encoding="utf-8") != fingerprint:
        _close_crawl(state)  # the sources changed: an unfinished crawl of the old ones is not resumed
    write_text(recipe_file, fingerprint)
    started = read_or_absent(started_file, lambda path: float(path.read_text(encoding="utf-8")), "the crawl starts afresh")
    resuming = started is not None
    if (state / "job").exists() and not (state / "stats.json").is_file():
        # The last crawl process was killed before it could close its JOBDIR cleanly, so
        # its queue may be half written: walk again; the HTTP cache replays fetched pages.
        shutil.rmtree(state / "job", ignore_errors=True)
    if started is None:
        _close_crawl(state)  # nothing of an earlier crawl is resumed without its start time
        started = time.time()
        write_text(started_file, str(started))
    since_start = time.time() - started
    return {
        "kind": "crawl",
        "recipe": recipe.model_dump(mode="json"),
        "today": today.isoformat(),
        "items_file": str(state / "items.jsonl"),
        "stats_file": str(state / "stats.json"),
        "log_file": str(state / "crawl.log"),
        "jobdir": str(state / "job"),
        "cache_dir": str(state / "httpcache"),
        "cache_policy": "replay" if resuming else "revalidate",
        "cache_expiration_secs": int(since_start) + 60 if resuming else 0,
        **safety_job(paths),
    }


def _close_crawl(state: Path) -> None:
    """Forget a crawl that ran to its end (its page cache stays for the next build)."""
    for name in ("job", "items.jsonl", "started"):
        target = state / name
        shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)


def _ended_cleanly(stats: dict[str, Any]) -> bool:
    reason = str(stats.get("finish_reason", "unknown"))
    return reason in CLEAN_ENDS or reason.startswith("closespider")


def _judge(stats: dict[str, Any], records: list[dict[str, Any]], state: Path, findings: list[str]) -> None:
    """Raise a FacesetError when the crawl failed or found nothing; return when it is usable.
    `findings` (spiders/diagnosis.py) say which step of which source went wrong."""
    reason = str(stats.get("finish_reason", "unknown"))
    log = state / "crawl.log"
    if reason.startswith("error"):
        raise FacesetError(f"the crawl failed: {reason}", f"see {log} for details")
    if reason == "shutdown":
        raise FacesetError("the crawl was interrupted before it finished", "run the same command again to resume where it stopped")
    if not _ended_cleanly(stats):
        raise FacesetError(f"the crawl stopped early ({reason})", f"see {log}; run again to resume")
    if not records:
        pages = stats.get("response_received_count", 0)
        blocked = len(stats.get("faceset/robots_blocked", []))
        errors = stats.get("faceset/page_errors", 0)
        no_image = stats.get("faceset/pages_without_image", 0)
        found = "".join(f"\n  - {finding}" for finding in findings)
        raise FacesetError(
            f"the crawl found no images ({pages} pages fetched, {errors} page errors, "
            f"{blocked} pages blocked by robots.txt, {no_image} item pages without an image){found}",
            ("fix the selectors or steps named above" if findings else "check that the start URLs open in a browser, that the "
             "follow: links and item: image selectors match the pages, and that robots.txt allows them")
            + f" (see docs/recipe-reference.md); the crawl log is {log}",
        )


# Written for recipes that rank (see `_ranks`); local rows also carry their file.
RANKED = {mf.PAGE: "Int64", mf.RANK: "Int64"}
LOCAL = {mf.LOCAL_FILE: "string", mf.LOCAL_VERSION: "string"}


def _ranks(recipe: Recipe) -> bool:
    """Whether the manifest gets `page` and `rank`: for search-like sources (queries, max_items,
    pages that load more) and urls:/folder: lists, where the position of an image matters."""
    return any(s.queries or s.max_items or s.loads_more() or any(f.loads_more() for f in s.follow)
               or not s.start_urls for s in recipe.sources)


def _row_id(rec: dict[str, Any]) -> str:
    """A crawled item's id: its page and image URL, and its query (one image in two queries
    gives two rows), stable across rebuilds."""
    page_url = rec["page_url"] if not rec.get("query") else f"{rec['query']}\n{rec['page_url']}"
    return mf.item_id(page_url, rec["image_url"])


def _ranked(records: list[dict[str, Any]], recipe: Recipe) -> list[dict[str, Any]]:
    """Crawled records with their `rank`: 1, 2, 3... in page order within each source and query
    (spiders/scopes.py), whatever order the concurrent crawl found them in; beyond a source's
    `max_items` none (a resumed crawl counts its scopes afresh, so it may have found more)."""
    limits = {source.name: source.max_items for source in recipe.sources}
    scopes_found: dict[tuple[str, Any], list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        scopes_found[(rec["source"], rec.get("query"))].append(rec)
    ranked = []
    for (source, _), found in scopes_found.items():
        for rank, rec in enumerate(sorted(found, key=scopes.rank_key)[:limits.get(source)], start=1):
            rec["rank"] = rank if isinstance(rec.get("order"), list) else None
            ranked.append(rec)
    return ranked


def _new_rows(records: list[dict[str, Any]], recipe: Recipe, now: str, local: list[dict[str, Any]] = ()) -> pd.DataFrame:
    """Manifest rows for what the crawl found and for the rows of urls:/folder: sources (which
    come with their id, rank and, when a line was refused, status and reason)."""
    fields, ranks = recipe.field_names, _ranks(recipe)
    rows = []
    for rec in [*_ranked(records, recipe), *local]:
        values = {**rec["fields"], **({QUERY: rec["query"]} if rec.get("query") else {})}
        row = {
            "item_id": rec.get("item_id") or _row_id(rec),
            "source": rec["source"],
            "page_url": rec.get("page_url"),
            "image_url": rec.get("image_url"),
            "crawled_at": rec["crawled_at"],
            LAST_SEEN: now,
            "status": rec.get("status"),
            "reason": rec.get("reason"),
            mf.PAGE: rec.get("page"),
            mf.RANK: rec.get("rank"),
            mf.LOCAL_FILE: rec.get(mf.LOCAL_FILE),
            mf.LOCAL_VERSION: rec.get(mf.LOCAL_VERSION),
        }
        for name in fields:
            row[name] = values.get(name) or pd.NA
        rows.append(row)
    extra = {**(RANKED if ranks else {}), **(LOCAL if any(mf.LOCAL_FILE in rec for rec in local) else {})}
    columns = ["item_id", "source", "page_url", "image_url", "crawled_at", LAST_SEEN, "status", "reason", *extra, *fields]
    frame = mf.with_columns(pd.DataFrame(rows, columns=columns), extra)
    # an item found twice (two sources) keeps the same copy whatever the order pages arrived in
    frame = frame.sort_values(["item_id", "source"], kind="stable")
    return frame.drop_duplicates("item_id", keep="first").reset_index(drop=True)


def merge(manifest: pd.DataFrame, found: pd.DataFrame, fields: list[str], now: str) -> pd.DataFrame:
    """Previous rows (refreshed when found again, untouched otherwise) plus the new ones as `kept`
    (or `failed` with the reason a urls:/folder: line was refused), sorted by item_id: the row
    order, which later stages keep, never follows the order in which a concurrent crawl
    happened to receive its pages."""
    extra = {name: dtype for name, dtype in {**RANKED, **LOCAL}.items() if name in found.columns}
    previous = mf.with_columns(mf.conform(manifest, fields), extra)
    if LAST_SEEN not in previous.columns:
        previous[LAST_SEEN] = pd.Series(previous["crawled_at"], dtype="string")
    previous = previous.set_index("item_id", drop=False)
    found = found.set_index("item_id", drop=False)
    again = found.index.intersection(previous.index)
    for name in fields:
        fresh = found.loc[again, name].astype("string")
        has = fresh.notna()
        previous.loc[fresh.index[has], name] = fresh[has]
    for name in extra:  # where the image is now: its page and rank today, its file's version
        previous.loc[again, name] = found.loc[again, name]
    previous.loc[again, LAST_SEEN] = now
    new = found.loc[found.index.difference(previous.index, sort=False)].copy()
    new["status"] = new["status"].fillna(mf.KEPT) if "status" in new else mf.KEPT
    merged = pd.concat([previous, mf.conform(new, fields)], ignore_index=True) if len(new) else previous.reset_index(drop=True)
    merged = mf.with_columns(mf.conform(merged, fields), extra)
    merged[LAST_SEEN] = merged[LAST_SEEN].astype("string")
    return merged.sort_values("item_id", kind="stable").reset_index(drop=True)


def summarize(stats: dict[str, Any], records: list[dict[str, Any]], merged: pd.DataFrame, before: int,
              recipe: Recipe, paths: DatasetPaths, findings: list[str] | None = None) -> dict[str, Any]:
    """reports/crawl.json: what was fetched and found, what went wrong, and the settings used."""
    unmapped: dict[str, Counter[str]] = defaultdict(Counter)
    per_source: dict[str, Counter[str]] = defaultdict(Counter)
    for rec in records:
        for name, value in rec.get("unmapped", {}).items():
            unmapped[name][value] += 1
        per_source[rec["source"]]["items"] += 1
    for source in recipe.sources:
        per_source[source.name]["pages"] = stats.get(f"faceset/pages/{source.name}", 0)
        per_source[source.name]["budget_exhausted"] = stats.get(f"faceset/budget_exhausted/{source.name}", 0)
        per_source[source.name]["max_items_dropped"] = stats.get(f"faceset/max_items_dropped/{source.name}", 0)
    per_query: dict[str, Counter[str]] = defaultdict(Counter)
    for rec in records:
        if rec.get("query"):
            per_query[rec["source"]][rec["query"]] += 1
    elapsed = float(stats.get("elapsed_time_seconds") or 0.0)  # the crawl itself, without process start
    pages = int(stats.get("response_received_count", 0))
    summary = {
        "finish_reason": stats.get("finish_reason"),
        "pages": pages,
        "rendered_pages": stats.get("faceset/rendered_pages", 0),
        "pages_from_resume_cache": stats.get("httpcache/hit", 0),
        "pages_unchanged": stats.get("httpcache/revalidate", 0),
        "items": len({r.get("item_id") or _row_id(r) for r in records}),
        "rows_before": before,
        "rows_total": len(merged),
        "rows_new": len(merged) - before,
        "errors": stats.get("faceset/errors", []),
        "error_count": int(stats.get("faceset/page_errors", 0)) + int(stats.get("log_count/ERROR", 0)),
        "unmapped": {name: dict(values.most_common()) for name, values in unmapped.items()},
        "robots_blocked": stats.get("faceset/robots_blocked", []),
        "pages_without_image": stats.get("faceset/pages_without_image_urls", []),
        "depth_limited": stats.get("faceset/depth_limited", 0),
        "offsite_skipped": stats.get("faceset/offsite_skipped", 0),
        "retries": stats.get("retry/count", 0),
        "per_source": {k: dict(v) for k, v in per_source.items()},
        "per_query": {source: dict(counts) for source, counts in per_query.items()},
        "max_items": {source.name: source.max_items for source in recipe.sources if source.max_items},
        "scrolls": stats.get("faceset/scrolls", 0),
        "clicks": stats.get("faceset/clicks", 0),
        "diagnosis": findings or [],
        "selectors": stats.get(diagnosis.STATS_KEY, {}).get("selectors", {}),
        "elapsed_seconds": round(elapsed, 3),
        "pages_per_second": round(pages / elapsed, 2) if elapsed else None,
        "settings": recipe.crawl.model_dump(mode="json"),
        "scrapy_settings": stats.get("faceset/settings", {}),
    }
    write_report(paths, "crawl", summary)
    return summary


def run(manifest: pd.DataFrame, recipe: Recipe, paths: DatasetPaths, *, today: date | None = None,
        timeout: float | None = None, **_: Any) -> pd.DataFrame:
    """Crawl every source of the recipe; return the manifest with every row known so far."""
    if _needs_browser(recipe):
        from spiders.browser import require_browser

        require_browser()
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    local = local_rows(recipe, now)  # urls:/folder: sources: read, not crawled
    stats: dict[str, Any] = {"finish_reason": "finished"}
    records: list[dict[str, Any]] = []
    findings: list[str] = []
    if any(source.start_urls for source in recipe.sources):
        state = crawl_state(paths)
        job = prepare_job(recipe, paths, today or datetime.now(timezone.utc).date())
        stats = run_job(job, state, timeout=timeout)
        records = read_jsonl(Path(job["items_file"]))
        if stats.get("finish_reason") == "finished":
            _close_crawl(state)  # even if it found nothing: the next run starts afresh
        found = stats.setdefault(diagnosis.STATS_KEY, {})
        if _ended_cleanly(stats):  # an interrupted crawl has pages still to read: nothing to render yet
            diagnosis.check_rendered(recipe, found)  # only where a selector matched nothing
        findings = diagnosis.messages(recipe, found)
        _judge(stats, [*records, *local], state, findings)
    elif not local:
        raise FacesetError("the recipe's urls: and folder: sources hold no image", "check the files they name: a "
                           "url column with image URLs, or image files in the folder")
    fields = recipe.field_names
    merged = merge(manifest, _new_rows(records, recipe, now, local), fields, now)
    summarize(stats, [*records, *local], merged, len(manifest), recipe, paths, findings)
    return merged

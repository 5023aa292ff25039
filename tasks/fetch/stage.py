"""Fetch stage: download the images of kept rows into content-addressed storage.

Downloads run through Scrapy's media pipeline in a child process (spiders/pipelines.py),
so they get the crawl's politeness: robots.txt, delay and concurrency per domain,
retries with backoff, bounded redirects, a deadline and a size cap. The type is sniffed
from the bytes. Every row sent ends with a result: `sha256` and `image_path`, or status
`failed` with the reason.

What is fetched: kept rows without a stored file; rows whose file exists and whose
server gave validators (ETag / Last-Modified) get a conditional request and are only
downloaded again if the image changed; other stored rows are not requested at all.
Rows this stage failed earlier (a timeout, a 503) are tried again on the next run.

Images of `folder:` sources are copied from the folder, not downloaded (local_copy.py).

Resume: results are appended to `<data>/.faceset/fetch/results.jsonl` as each image
completes; an interrupted fetch started again only requests the rows still missing.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from spiders.launch import read_jsonl, run_job, safety_job
from spiders.budget import budget_file, close_budget
from tasks.core import manifest as mf
from tasks.core.atomic import write_jsonl
from tasks.core.reports import write_report
from tasks.core.errors import FacesetError
from tasks.core.paths import DatasetPaths
from tasks.core.recipe import Recipe
from tasks.fetch.local_copy import copy_local

EXTRA_COLUMNS = ("etag", "last_modified", "fetch_status", "fetched_at")


def _ensure_columns(frame: pd.DataFrame) -> pd.DataFrame:
    for name in EXTRA_COLUMNS:
        if name not in frame.columns:
            frame[name] = pd.Series(pd.NA, index=frame.index, dtype="string")
    return frame


def to_fetch(frame: pd.DataFrame, paths: DatasetPaths) -> tuple[pd.Series, pd.Series]:
    """(rows to request, rows already stored and left alone)."""
    stored = frame["image_path"].notna() & frame["image_path"].map(
        lambda p: isinstance(p, str) and (paths.root / p).is_file()
    ).astype(bool)
    has_validators = frame["etag"].fillna("").ne("") | frame["last_modified"].fillna("").ne("")
    candidates = mf.kept(frame).fillna(False) | (
        (frame["status"] == mf.FAILED) & (frame["fetch_status"] == "failed")
    ).fillna(False)
    request = candidates & (~stored | has_validators)
    return request, candidates & stored & ~request


def apply_results(frame: pd.DataFrame, results: dict[str, dict[str, Any]], now: str) -> pd.DataFrame:
    """Write each download result into its row (success: sha256/path; failure: status and reason)."""
    if not results:
        return frame
    table = pd.DataFrame.from_dict(results, orient="index")
    for name in ("status", "checksum", "path", "etag", "last_modified", "reason"):
        if name not in table.columns:
            table[name] = None
    table = table.reindex(frame["item_id"]).set_index(frame.index)
    got = table["status"].notna()
    ok = table["status"].isin(["downloaded", "unchanged"])
    failed = got & ~ok
    frame.loc[got, "fetched_at"] = now
    frame.loc[got, "fetch_status"] = table.loc[got, "status"].where(ok[got], "failed").astype("string")
    frame.loc[ok, "sha256"] = table.loc[ok, "checksum"].astype("string")
    frame.loc[ok, "image_path"] = table.loc[ok, "path"].astype("string")
    for name in ("etag", "last_modified"):
        fresh = ok & table[name].fillna("").ne("")
        frame.loc[fresh, name] = table.loc[fresh, name].astype("string")
    recovered = ok & (frame["status"] == mf.FAILED).fillna(False)
    frame.loc[recovered, "status"] = mf.KEPT
    frame.loc[recovered, "reason"] = pd.NA
    reasons = table.loc[failed, "reason"].fillna("download failed").astype("string")
    mf.set_status(frame, failed, mf.FAILED, reasons.reindex(frame.index))
    return frame


def summarize(frame: pd.DataFrame, results: dict[str, dict[str, Any]], skipped: int, stats: dict[str, Any],
              recipe: Recipe, paths: DatasetPaths) -> dict[str, Any]:
    """reports/fetch.json: downloads by outcome, failure reasons, bytes, speed, settings."""
    outcomes = Counter(r.get("status", "failed") for r in results.values())
    reasons = Counter(r.get("reason") for r in results.values() if r.get("status") == "failed")
    elapsed = float(stats.get("elapsed_time_seconds") or 0.0)  # the crawl itself, without process start
    done = outcomes["downloaded"] + outcomes["unchanged"]
    summary = {
        "finish_reason": stats.get("finish_reason"),
        "requested": len(results),
        "downloaded": outcomes["downloaded"],
        "unchanged": outcomes["unchanged"],
        "skipped_already_stored": skipped,
        "failed": outcomes["failed"],
        "failure_reasons": dict(reasons.most_common()),
        "bytes": sum(int(r.get("bytes") or 0) for r in results.values()),
        "with_image": int(frame["sha256"].notna().sum()),
        "elapsed_seconds": round(elapsed, 3),
        "images_per_second": round(done / elapsed, 2) if elapsed else None,
        "robots_blocked": sorted(r["url"] for r in results.values() if r.get("reason") == "blocked by robots.txt" and "url" in r),
        "settings": recipe.crawl.model_dump(mode="json"),
    }
    write_report(paths, "fetch", summary)
    return summary


def run(manifest: pd.DataFrame, recipe: Recipe, paths: DatasetPaths, *, timeout: float | None = None,
        **_: Any) -> pd.DataFrame:
    """Download the images of kept rows; never drops a row."""
    frame = _ensure_columns(mf.conform(manifest, recipe.field_names).reset_index(drop=True))
    request, stored = to_fetch(frame, paths)
    local = frame[mf.LOCAL_FILE].notna() if mf.LOCAL_FILE in frame.columns else pd.Series(False, index=frame.index)
    copied = copy_local(frame, (request | stored) & local, recipe, paths)  # folder: sources, never downloaded
    request, stored = request & ~local, stored & ~local
    state = paths.state_folder("fetch")
    state.mkdir(parents=True, exist_ok=True)
    results_file = state / "results.jsonl"
    done = {r["item_id"]: r["result"] for r in read_jsonl(results_file)}
    wanted = frame[request & ~frame["item_id"].isin(list(done))]
    stats: dict[str, Any] = {"finish_reason": "finished", "faceset/elapsed_seconds": 0.0}
    if len(wanted):
        rows_file = state / "rows.jsonl"
        columns = ["item_id", "image_url", "etag", "last_modified", "sha256", "image_path"]
        records = wanted[columns].astype(object).where(wanted[columns].notna(), None).to_dict("records")
        write_jsonl(rows_file, records)
        job = {
            "kind": "fetch",
            "recipe": recipe.model_dump(mode="json"),
            "rows_file": str(rows_file),
            "items_file": str(results_file),
            "stats_file": str(state / "stats.json"),
            "log_file": str(state / "fetch.log"),
            "root": str(paths.root),
            **safety_job(paths),
        }
        stats = run_job(job, state, timeout=timeout)
        for record in read_jsonl(results_file):
            done[record["item_id"]] = {**record["result"], "url": record["image_url"]}
        reason = str(stats.get("finish_reason"))
        if reason != "finished":
            hint = "run the same command again to resume" if reason == "shutdown" else f"see {job['log_file']}"
            raise FacesetError(f"the image download stopped early ({reason}); {len(done)} of {len(wanted)} done", hint)
        missing = set(wanted["item_id"]) - set(done)
        for item_id in missing:  # defensive: every row sent must end with a result
            done[item_id] = {"status": "failed", "reason": "download failed: no result"}
    close_budget(budget_file(paths))  # the build's downloads are done: the next build counts afresh
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    done.update(copied)
    frame = apply_results(frame, done, now)
    summarize(frame, done, int(stored.sum()), stats, recipe, paths)
    results_file.unlink(missing_ok=True)
    return frame

"""`python -m spiders.run JOB.json`: one crawl (or image fetch) in its own process.

Twisted's reactor cannot be restarted, so each crawl gets a fresh process, started by
tasks/crawl/stage.py or tasks/fetch/stage.py. The job file says what to do; this
process writes the items to a JSON Lines file and, at the end, Scrapy's stats (items,
errors, finish reason, faceset's own counters) to a JSON file. The caller judges
success from those stats, not from the exit code.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from tasks.core.recipe import Recipe


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run the job's spider to its end and return its stats (JSON-ready)."""
    from scrapy.crawler import CrawlerProcess

    from spiders.settings import crawl_settings, fetch_settings

    recipe = Recipe.model_validate(job["recipe"])
    if job["kind"] == "crawl":
        from spiders.recipe_spider import RecipeSpider

        settings = crawl_settings(recipe, job)
        spider, kwargs = RecipeSpider, {"recipe_json": recipe.model_dump_json(), "today": job["today"]}
    else:
        from spiders.fetch_spider import FetchSpider

        settings = fetch_settings(recipe, job)
        spider, kwargs = FetchSpider, {"rows_file": job["rows_file"]}
    # the build's byte budget (spiders/limits.py) and takedown list (spiders/guard.py), by path
    settings["FACESET_BUDGET_FILE"] = job.get("budget_file")
    settings["FACESET_TAKEDOWNS"] = job.get("takedowns")
    process = CrawlerProcess(settings)
    crawler = process.create_crawler(spider)
    started = time.monotonic()
    process.crawl(crawler, **kwargs)
    process.start()
    stats = dict(crawler.stats.get_stats())
    stats["faceset/elapsed_seconds"] = round(time.monotonic() - started, 3)
    stats["faceset/settings"] = {k: v for k, v in settings.items() if k.isupper() and not isinstance(v, dict)}
    return stats


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m spiders.run JOB.json", file=sys.stderr)
        return 2
    job = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    stats_file = Path(job["stats_file"])
    try:
        stats = run_job(job)
    except Exception as exc:  # reported through the stats file, which the task reads
        _write_json(stats_file, {"finish_reason": f"error: {exc}", "traceback": traceback.format_exc()})
        return 1
    _write_json(stats_file, stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())

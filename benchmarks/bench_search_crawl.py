"""Search-crawl benchmark: items/s from result pages that scroll or click for more, against
the plain static listing of the same results, in one run on a local search site.

The site (tests/sites/search.py) serves, for each query, the same results three ways:
static pages of 20 with a "next" link (no browser), a rendered page that appends 20
results a moment (`--delay-ms`, default 150 ms) after each scroll to the bottom, and a
rendered page with a "more results" button doing the same per click. Each kind is
crawled by tasks.crawl.run (Scrapy in its own process, 2 browsers) with every query;
items/s is the rows found divided by the crawl's own time (process start excluded).
A scrolled page always ends with one wait that brings nothing (spiders/browser.py
GROWTH_WAIT): that is how faceset knows the page stopped growing. Figures are printed
and written to benchmarks/results/search_crawl.json.

    .venv/bin/python benchmarks/bench_search_crawl.py [--queries 4] [--results 100] [--delay-ms 150]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the fixture site lives with the tests

from sites.search import build, recipe_dict  # noqa: E402
from sites.server import FixtureServer  # noqa: E402
from sites.staff import jpeg  # noqa: E402

from results_file import write_results  # noqa: E402
from spiders.browser import GROWTH_WAIT  # noqa: E402
from tasks.core import manifest as mf  # noqa: E402
from tasks.core.paths import DatasetPaths  # noqa: E402
from tasks.core.recipe import parse_recipe  # noqa: E402
from tasks.crawl import stage as crawl  # noqa: E402

PER_PAGE = 20
SETTINGS = {"delay": 0, "concurrency": 8, "autothrottle": False, "timeout": 30, "retries": 0, "render_workers": 2}


def crawl_kind(server: FixtureServer, site, kind: str, loads: int) -> dict:
    """Crawl every query's `kind` result pages; rows, time and items/s from the crawl report."""
    more = {"search": {}, "scroll": {"scroll": loads + 1}, "more": {"click": "#more", "max_clicks": loads + 1}}[kind]
    spec = recipe_dict(site, kind, **more)
    spec["crawl"] = SETTINGS
    recipe = parse_recipe(spec, "bench")
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        paths = DatasetPaths.create(tmp)
        started = time.perf_counter()
        frame = crawl.run(mf.empty(recipe.field_names), recipe, paths)
        wall = time.perf_counter() - started
        report = json.loads(paths.report_json("crawl").read_text())
    complete = all(list(frame[frame["query"] == q].sort_values("rank")["image_url"]) == site.expected(q)
                   for q in site.queries)
    seconds = report["elapsed_seconds"]
    return {"kind": kind, "rows": len(frame), "complete_and_in_order": complete, "pages": report["pages"],
            "scrolls": report["scrolls"], "clicks": report["clicks"], "crawl_seconds": seconds,
            "items_per_second": round(len(frame) / seconds, 1) if seconds else None,
            "wall_seconds_with_process_start": round(wall, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=4)
    parser.add_argument("--results", type=int, default=100, help="results per query")
    parser.add_argument("--delay-ms", type=int, default=150, help="how long the page takes to add results")
    args = parser.parse_args()
    queries = {f"query {q}": [(q * 7 + i) % (args.results * 2) for i in range(args.results)] for q in range(args.queries)}
    server = FixtureServer({}).start()
    try:
        site = build(server.base, [jpeg(i, 24) for i in range(args.results * 2)], queries, per_page=PER_PAGE,
                     batch=PER_PAGE, delay_ms=args.delay_ms)
        server.routes.update(site.routes)
        loads = math.ceil(args.results / PER_PAGE) - 1  # scrolls or clicks that bring results
        runs = {kind: crawl_kind(server, site, kind, loads) for kind in ("search", "scroll", "more")}
    finally:
        server.stop()
    static = runs["search"]["items_per_second"]
    for kind, label in (("search", "static listing (next links)"), ("scroll", "rendered, infinite scroll"),
                        ("more", "rendered, 'more results' button")):
        run = runs[kind]
        ratio = f", {run['items_per_second'] / static:.2f}x the static listing" if kind != "search" and static else ""
        print(f"{label:34s} {run['rows']} items in {run['crawl_seconds']} s = {run['items_per_second']} items/s"
              f"{ratio} (complete, in order: {run['complete_and_in_order']}; scrolls {run['scrolls']}, "
              f"clicks {run['clicks']}; {run['wall_seconds_with_process_start']} s with process start)")
    write_results("search_crawl", {
        "runs": runs, "queries": args.queries, "results_per_query": args.results, "per_page": PER_PAGE,
        "delay_ms": args.delay_ms, "growth_wait_seconds": GROWTH_WAIT, "settings": SETTINGS,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "note": "shared machine: timings are noisy"},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())

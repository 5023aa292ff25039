"""Crawl benchmark: a generated staff site of 1,000 profiles on 127.0.0.1.

Measures, in one run:
- static crawl (tasks.crawl.run: Scrapy in its own process) in pages/s and profiles/s;
- image fetch (tasks.fetch.run: media pipeline, content-addressed storage) in images/s;
- rendered crawl (every page through headless Chromium) on fewer profiles, in pages/s;
- the plain baseline: the same profile pages and images fetched one after another with
  urllib in this process, no parsing, no politeness.

Crawl settings: delay 0, concurrency 16, AutoThrottle off, robots.txt obeyed; this is
localhost, where politeness delays would only measure sleep. Figures are printed and
written to benchmarks/results/crawl.json. `--quick` uses 200 static and 10 rendered profiles.

    .venv/bin/python benchmarks/bench_crawl.py [--quick] [--profiles N] [--rendered N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the fixture site lives with the tests

from sites.server import FixtureServer  # noqa: E402
from sites.staff import build, recipe_dict  # noqa: E402

from tasks.crawl import stage as crawl  # noqa: E402
from tasks.fetch import stage as fetch  # noqa: E402
from tasks.core import manifest as mf  # noqa: E402
from tasks.core.paths import DatasetPaths  # noqa: E402
from tasks.core.recipe import parse_recipe  # noqa: E402
from results_file import write_results  # noqa: E402

SETTINGS = {"delay": 0, "concurrency": 16, "autothrottle": False, "obey_robots": True, "timeout": 30,
            "retries": 1, "render_workers": 2}


def baseline(server: FixtureServer, people) -> dict:
    """Profile pages and images fetched one by one with urllib: the floor of any crawler."""
    started = time.perf_counter()
    for person in people:
        for path in (f"/people/{person.pid}.html", person.image):
            with urllib.request.urlopen(server.url(path), timeout=30) as answer:
                answer.read()
    seconds = time.perf_counter() - started
    return {"profiles": len(people), "requests": 2 * len(people), "seconds": round(seconds, 2),
            "requests_per_second": round(2 * len(people) / seconds, 1)}


def crawl_and_fetch(profiles: int, render: bool, do_fetch: bool) -> dict:
    data = build(profiles, per_page=20)
    server = FixtureServer(data.routes).start()
    try:
        spec = recipe_dict(server.base, **SETTINGS)
        spec["sources"][0]["render"] = render
        recipe = parse_recipe(spec, "bench")
        with tempfile.TemporaryDirectory(prefix="bench-crawl-") as tmp:
            paths = DatasetPaths.create(tmp)
            started = time.perf_counter()
            manifest = crawl.run(mf.empty(recipe.field_names), recipe, paths)
            wall = time.perf_counter() - started
            report = json.loads(paths.report_json("crawl").read_text())
            result = {
                "profiles": profiles,
                "rows": len(manifest),
                "pages": report["pages"],
                "crawl_seconds": report["elapsed_seconds"],
                "pages_per_second": report["pages_per_second"],
                "wall_seconds_with_process_start": round(wall, 2),
            }
            if do_fetch:
                started = time.perf_counter()
                fetched = fetch.run(manifest, recipe, paths)
                wall = time.perf_counter() - started
                freport = json.loads(paths.report_json("fetch").read_text())
                result.update({
                    "images": int(fetched["sha256"].notna().sum()),
                    "fetch_seconds": freport["elapsed_seconds"],
                    "images_per_second": freport["images_per_second"],
                    "fetch_wall_seconds_with_process_start": round(wall, 2),
                })
        result["baseline"] = baseline(server, data.people[: min(200, profiles)]) if not render else None
        return result
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 static and 10 rendered profiles")
    parser.add_argument("--profiles", type=int, default=None, help="static profiles (default 1000)")
    parser.add_argument("--rendered", type=int, default=None, help="rendered profiles (default 40; 0 skips)")
    args = parser.parse_args()
    static_n = args.profiles or (200 if args.quick else 1000)
    rendered_n = args.rendered if args.rendered is not None else (10 if args.quick else 40)

    static = crawl_and_fetch(static_n, render=False, do_fetch=True)
    print(f"static:   {static['profiles']} profiles, {static['pages']} pages in {static['crawl_seconds']} s "
          f"= {static['pages_per_second']} pages/s ({static['wall_seconds_with_process_start']} s with process start)")
    print(f"fetch:    {static['images']} images in {static['fetch_seconds']} s = {static['images_per_second']} images/s "
          f"({static['fetch_wall_seconds_with_process_start']} s with process start)")
    base = static["baseline"]
    print(f"baseline: urllib one by one, {base['requests']} requests in {base['seconds']} s = "
          f"{base['requests_per_second']} requests/s")
    rendered = None
    if rendered_n:
        rendered = crawl_and_fetch(rendered_n, render=True, do_fetch=False)
        print(f"rendered: {rendered['profiles']} profiles, {rendered['pages']} pages in {rendered['crawl_seconds']} s "
              f"= {rendered['pages_per_second']} pages/s (headless Chromium, {SETTINGS['render_workers']} browsers)")
    target = static["wall_seconds_with_process_start"] < 60 if static_n >= 1000 else None
    print(f"settings: {SETTINGS}")
    if target is not None:
        print(f"target 1,000 static profiles under 60 s: {'met' if target else 'NOT met'}")
    results = {
        "static": static,
        "rendered": rendered,
        "settings": SETTINGS,
        "target_1000_static_under_60s": target,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "note": "shared machine: timings are noisy"},
    }
    write_results("crawl", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Attack: pages and downloads too big to handle (50,000 images on a page, endless bodies).

Items per page were deduplicated with a list (quadratic: a 1.3 MB page of 50,000
images took 15 s here), nothing capped items per page or per source, and an image over
the size cap sent without Content-Length failed as `DownloadCancelledError`. Each limit
now drops or refuses with a reason, and the rest of the crawl or download goes on.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import date

from parsel import Selector
from sites.hostile import index, manifest, profile, recipe, serve
from sites.server import Route
from sites.staff import jpeg

from spiders.extract import read_items
from tasks.core import manifest as mf
from tasks.core.paths import DatasetPaths
from tasks.core.recipe import ItemSpec
from tasks.crawl import stage as crawl
from tasks.fetch import stage as fetch


def gallery(tag: str, count: int) -> Route:
    images = "".join(f'<img src="/img/{tag}-{i}.jpg">' for i in range(count))
    return Route(f'<html><body><h1>{tag}</h1><p class="label">cs</p>{images}</body></html>'.encode())


def _crawl(tmp_path, routes: dict[str, Route], **settings):
    site = serve({"/index.html": index([p for p in routes if p != "/index.html"]), **routes})
    try:
        spec = recipe([site.url("/index.html")], **settings)
        paths = DatasetPaths.create(tmp_path)
        result = crawl.run(mf.empty(spec.field_names), spec, paths, timeout=60)
    finally:
        site.stop()
    return result, json.loads(paths.report_json("crawl").read_text()), site


def test_a_page_of_50000_images_is_read_in_linear_time() -> None:
    page = "<html><body>" + "".join(f'<img src="/img/{i:06d}.jpg">' for i in range(50_000)) + "</body></html>"
    spec = ItemSpec.model_validate({"image": "img::attr(src)"})
    started = time.perf_counter()
    items = read_items(Selector(text=page), spec, "http://127.0.0.1/", date.today())
    assert time.perf_counter() - started < 5.0  # 15 s with the list
    assert len(items) == 50_000
    assert len(read_items(Selector(text=page), spec, "http://127.0.0.1/", date.today(), limit=10)) == 10


def test_items_per_page_and_per_source_are_capped_with_reasons(tmp_path) -> None:
    routes = {f"/gallery/{k}.html": gallery(f"g{k}", 60) for k in range(4)}  # the last page read loses all
    result, report, _ = _crawl(tmp_path, routes, max_items_per_page=50, max_items_per_source=120)
    assert len(result) == 120
    assert report["pages_without_image"] == []
    reasons = Counter(error["reason"] for error in report["errors"])
    assert reasons == {
        "limit: more than 50 images on the page, the first 50 kept (crawl.max_items_per_page)": 4,
        "limit: source hostile reached 120 images; the rest of this page and the pages not yet crawled are "
        "dropped (crawl.max_items_per_source)": 1,
    }


def test_pages_over_the_size_cap_are_refused_with_or_without_content_length(tmp_path) -> None:
    padding = "<!--" + "x" * 60_000 + "-->"
    big = profile("Big", "/img/b.jpg", padding)
    routes = {"/people/a.html": profile("Ada", "/img/a.jpg"), "/people/big.html": big,
              "/people/endless.html": Route(big.body, length=False)}
    result, report, site = _crawl(tmp_path, routes, max_page_bytes=50_000)
    assert list(result["name"]) == ["Ada"]
    assert {"url": site.url("/people/big.html"), "reason": "page too large"} in report["errors"]
    assert {"url": site.url("/people/endless.html"), "reason": "page too large"} in report["errors"]


def test_an_image_over_the_cap_without_content_length_is_image_too_large(tmp_path) -> None:
    site = serve({"/img/small.jpg": Route(jpeg(1), "image/jpeg", length=False),
                  "/img/endless.jpg": Route(jpeg(2) + bytes(100_000), "image/jpeg", length=False)})
    urls = [site.url("/img/small.jpg"), site.url("/img/endless.jpg")]
    try:
        spec = recipe([site.url("/")], follow=False, max_image_bytes=50_000)
        result = fetch.run(manifest(spec, site.url("/"), urls), spec, DatasetPaths.create(tmp_path), timeout=60)
    finally:
        site.stop()
    result = result.set_index("image_url")
    assert result.loc[urls[0], "status"] == mf.KEPT
    assert (result.loc[urls[1], "status"], result.loc[urls[1], "reason"]) == (mf.FAILED, "image too large")


def test_the_download_budget_stops_the_download_and_declines_later_requests(tmp_path) -> None:
    """40 images of 10 KB, 30 KB allowed: two are stored, the third is stopped as it passes
    the budget, and the 37 queued behind it are declined without being sent."""
    routes = {f"/img/{i}.jpg": Route(jpeg(i) + bytes(10_000), "image/jpeg") for i in range(40)}
    site = serve(routes)
    urls = [site.url(path) for path in routes]
    try:
        spec = recipe([site.url("/")], follow=False, concurrency=1, max_total_bytes=30_000)
        result = fetch.run(manifest(spec, site.url("/"), urls), spec, DatasetPaths.create(tmp_path), timeout=60)
    finally:
        site.stop()
    kept = result["status"] == mf.KEPT
    assert kept.sum() == 2
    assert result.loc[~kept, "reason"].eq("limit: the download budget of 30000 bytes is spent (crawl.max_total_bytes)").all()
    assert len([p for p in site.paths() if p.startswith("/img/")]) == 3


def _sent(site, routes: dict[str, Route]) -> int:
    """Bytes of body the server sent, from its request log, each path once: the page in flight when
    the crawl was killed is logged twice but was received only once (robots.txt counts nothing)."""
    return sum(len(routes[path].body) for path in set(site.paths()) if path in routes)


def test_the_budget_is_the_builds_across_a_killed_crawl_its_resume_and_the_image_download(tmp_path) -> None:
    """20 pages and 20 images of 8 KB, 200 KB allowed for the build. The crawl is SIGKILLed after a
    few pages and resumed, then the images are downloaded: the server sends at most the budget
    (and the one response that crosses it), not 200 KB more for each process as before."""
    from spiders.budget import budget_file, spent
    from spiders.launch import start_job

    pad = "<!--" + "p" * 8_000 + "-->"
    people = {f"/people/{i}.html": profile(f"Person {i}", f"/img/{i}.jpg", pad) for i in range(20)}
    pictures = {f"/img/{i}.jpg": Route(jpeg(i) + bytes(8_000 - len(jpeg(i))), "image/jpeg") for i in range(20)}
    for route in people.values():
        route.delay = 0.1  # slow enough to kill the crawl half-way
    routes = {"/index.html": index(list(people)), **people, **pictures}
    site = serve(routes)
    budget = 200_000
    try:
        spec = recipe([site.url("/index.html")], concurrency=1, max_total_bytes=budget)
        paths = DatasetPaths.create(tmp_path)
        job = crawl.prepare_job(spec, paths, date.today())
        process = start_job(job, crawl.crawl_state(paths))
        deadline = time.monotonic() + 60
        while sum(p.startswith("/people/") for p in site.paths()) < 6:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        process.kill()
        process.wait()
        assert spent(budget_file(paths)) >= _sent(site, routes) - 8_500  # the killed process's figure is kept
        found = crawl.run(mf.empty(spec.field_names), spec, paths, timeout=120)
        assert len(found) == 20
        result = fetch.run(found, spec, paths, timeout=120)
    finally:
        site.stop()
    assert _sent(site, routes) <= budget + 8_500
    refused = result["reason"] == "limit: the download budget of 200000 bytes is spent (crawl.max_total_bytes)"
    assert 0 < refused.sum() < 20 and (result["status"] == mf.KEPT).sum() + refused.sum() == 20
    assert spent(budget_file(paths)) == 0  # the downloads ran to their end: the next build has a new budget

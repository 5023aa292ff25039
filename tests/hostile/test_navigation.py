"""Attack: a rendered page's script navigates elsewhere (`location.replace`), in real Chromium.

The browser went to another host, loaded its page and images without that host's
robots.txt ever being read, and the item found there was kept. Now the browser resolves
only the recipe's hosts, and a navigation comes back to Scrapy as a redirect, so the
final URL is held to the URL policy, the source's hosts and robots.txt like any other.
The browser cancels the navigation itself before sending a request: a page on the same
host that robots.txt disallows was loaded (then refused) before; now it is never requested.
"""

from __future__ import annotations

import json

import pytest
from sites.hostile import OTHER_HOST, image, profile, recipe, serve
from sites.server import Route

from spiders import browser
from tasks.core import manifest as mf
from tasks.core.errors import FacesetError
from tasks.core.paths import DatasetPaths
from tasks.crawl import stage as crawl


def _navigate(url: str) -> str:
    return f"<script>location.replace({json.dumps(url)})</script>"


@pytest.mark.slow
def test_script_navigation_is_checked_like_a_redirect(tmp_path) -> None:
    try:
        browser.require_browser()
    except FacesetError as exc:
        pytest.skip(str(exc))
    other = serve({"/people/evil.html": profile("Elsewhere Person", "/img/e.jpg"), "/img/e.jpg": image(9)}, OTHER_HOST)
    site = serve({
        "/robots.txt": Route(b"User-agent: *\nDisallow: /private/\n", "text/plain"),
        "/people/a.html": profile("Ada", "/img/a.jpg"),
        "/people/away.html": profile("Away", "/img/a.jpg", _navigate(other.url("/people/evil.html"))),
        "/people/hide.html": profile("Hide", "/img/a.jpg", _navigate("/private/p.html")),
        "/private/p.html": profile("Private Person", "/img/a.jpg"),
        "/people/moved.html": profile("Moved", "/img/a.jpg", _navigate("/people/b.html")),
        "/people/b.html": profile("Bea", "/img/b.jpg"),
    })
    pages = ["/people/a.html", "/people/away.html", "/people/hide.html", "/people/moved.html"]
    try:
        spec = recipe([site.url(p) for p in pages], follow=False, render=True)
        paths = DatasetPaths.create(tmp_path)
        result = crawl.run(mf.empty(spec.field_names), spec, paths, timeout=120)
    finally:
        site.stop()
        other.stop()
    assert other.paths() == []  # the browser never reached the other host, nor did Scrapy
    assert "/private/p.html" not in site.paths()  # disallowed: never loaded, not even by the browser
    assert sorted(zip(result["name"], result["page_url"])) == [("Ada", site.url("/people/a.html")),
                                                               ("Bea", site.url("/people/b.html"))]
    report = json.loads(paths.report_json("crawl").read_text())
    assert {"url": other.url("/people/evil.html"),
            "reason": f"refused: {OTHER_HOST} is not a host of this source (start URLs and allowed_domains), "
                      f"reached by a redirect from {site.url('/people/away.html')}"} in report["errors"]
    assert report["robots_blocked"] == [site.url("/private/p.html")]


@pytest.mark.slow
def test_rendered_pages_are_charged_to_the_byte_budget(tmp_path) -> None:
    """Four rendered pages of 12 KB, 30 KB allowed: two are kept, the third passes the budget and
    is refused, the fourth is refused before a browser loads it (rendered pages were not counted)."""
    try:
        browser.require_browser()
    except FacesetError as exc:
        pytest.skip(str(exc))
    pad = "<!--" + "r" * 12_000 + "-->"
    pages = {f"/people/{i}.html": profile(f"Person {i}", f"/img/{i}.jpg", pad) for i in range(4)}
    site = serve(pages)
    try:
        spec = recipe([site.url(p) for p in pages], follow=False, render=True, concurrency=1, render_workers=1,
                      max_total_bytes=30_000)
        paths = DatasetPaths.create(tmp_path)
        result = crawl.run(mf.empty(spec.field_names), spec, paths, timeout=120)
    finally:
        site.stop()
    assert len(result) == 2
    assert sum(path.startswith("/people/") for path in site.paths()) == 3
    report = json.loads(paths.report_json("crawl").read_text())
    budget = "limit: the download budget of 30000 bytes is spent (crawl.max_total_bytes)"
    assert [error["reason"] for error in report["errors"]] == [budget, budget]


def test_a_subdomain_of_a_recipe_host_gets_a_browser_that_resolves_it(monkeypatch) -> None:
    """Plain crawling allows subdomains of a source's hosts; the browser resolved the recipe's hosts
    only, so a rendered page on `img.example.org` could not load. Now the worker's browser is
    restarted with that host pinned too, to an address the URL policy checked; another host never is."""
    from scrapy.utils.test import get_crawler

    from spiders import rendering
    from spiders.settings import crawl_settings

    addresses = {"example.org": ["93.184.215.14"], "img.example.org": ["93.184.215.15"], "evil.org": ["1.2.3.4"],
                 "meta.example.org": ["169.254.169.254"]}
    monkeypatch.setattr(browser, "resolve", lambda host: addresses[host])
    started: list[str] = []

    class Started:
        def quit(self) -> None:
            started.append("quit")

    monkeypatch.setattr(rendering, "start_browser", lambda agent, timeout, rules: started.append(rules) or Started())
    spec = recipe(["https://example.org/people/"], render=True)
    job = {"log_file": "/dev/null", "jobdir": "", "cache_dir": "", "cache_expiration_secs": 0, "cache_policy": "replay",
           "items_file": ""}
    middleware = rendering.SeleniumRenderMiddleware(get_crawler(settings_dict=crawl_settings(spec, job)))
    middleware._browser("https://example.org/people/a.html")
    middleware._browser("https://example.org/people/b.html")  # the same browser
    middleware._browser("https://img.example.org/p.html")  # restarted, the subdomain pinned
    middleware._browser("https://evil.org/p.html")  # not a host of the recipe: nothing new resolves
    middleware._browser("https://meta.example.org/p.html")  # a subdomain on a link-local address: left out
    assert started[0] == "MAP example.org 93.184.215.14, MAP * ~NOTFOUND"
    assert started[1:3] == ["quit", "MAP example.org 93.184.215.14, MAP img.example.org 93.184.215.15, MAP * ~NOTFOUND"]
    assert started[3:] == ["quit", "MAP example.org 93.184.215.14, MAP img.example.org 93.184.215.15, MAP * ~NOTFOUND"]

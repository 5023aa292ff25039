"""Attack: a redirect out of the source's hosts (a page 302s to another site).

The crawl followed a page's 302 to another host and kept the item found there. Every
redirect now goes down the whole request chain again: the URL policy and the source's
hosts for pages, the address rule and that host's robots.txt for images.
"""

from __future__ import annotations

import json

import pytest
from sites.hostile import OTHER_HOST, image, index, manifest, profile, recipe, serve
from sites.server import Route

from tasks.core import manifest as mf
from tasks.core.paths import DatasetPaths
from tasks.crawl import stage as crawl
from tasks.fetch import stage as fetch


def test_a_page_redirected_to_another_host_is_refused_and_the_crawl_goes_on(tmp_path) -> None:
    other = serve({"/people/evil.html": profile("Elsewhere Person", "/img/e.jpg"), "/img/e.jpg": image(9)}, OTHER_HOST)
    site = serve({"/index.html": index(["/people/a.html", "/people/moved.html"]),
                  "/people/a.html": profile("Ada", "/img/a.jpg"), "/img/a.jpg": image(1),
                  "/people/moved.html": Route(status=302, headers={"Location": other.url("/people/evil.html")})})
    try:
        spec = recipe([site.url("/index.html")], allow_private_hosts=[OTHER_HOST])  # its address is not what stops it
        paths = DatasetPaths.create(tmp_path)
        result = crawl.run(mf.empty(spec.field_names), spec, paths, timeout=60)
    finally:
        site.stop()
        other.stop()
    assert list(result["name"]) == ["Ada"]
    assert other.paths() == []
    report = json.loads(paths.report_json("crawl").read_text())
    assert {"url": other.url("/people/evil.html"),
            "reason": f"refused: {OTHER_HOST} is not a host of this source (start URLs and allowed_domains), "
                      f"reached by a redirect from {site.url('/people/moved.html')}"} in report["errors"]


@pytest.mark.slow
def test_an_image_redirected_elsewhere_is_checked_again(tmp_path) -> None:
    """A redirect to a private host is refused; one to an allowed host reads that host's robots.txt."""
    other = serve({"/robots.txt": Route(b"User-agent: *\nDisallow: /img/\n", "text/plain"), "/img/x.jpg": image(3)},
                  OTHER_HOST)
    site = serve({"/img/a.jpg": image(1), "/img/to-other.jpg": Route(status=302, headers={"Location": other.url("/img/x.jpg")})})
    urls = [site.url("/img/a.jpg"), site.url("/img/to-other.jpg")]
    try:
        results = {}
        for allowed in ([], [OTHER_HOST]):
            spec = recipe([site.url("/")], follow=False, allow_private_hosts=allowed)
            fetched = fetch.run(manifest(spec, site.url("/"), urls), spec, DatasetPaths.create(tmp_path / f"{allowed}"),
                                timeout=60)
            results[bool(allowed)] = (fetched.set_index("image_url"), other.paths())
    finally:
        site.stop()
        other.stop()
    refused, requested = results[False]
    assert requested == []
    assert refused.loc[urls[0], "status"] == mf.KEPT
    assert refused.loc[urls[1], "reason"] == (
        f"refused: loopback address {OTHER_HOST} (not a host of the recipe's start URLs; crawl.allow_private_hosts "
        f"can allow it), reached by a redirect from {urls[1]}")
    blocked, requested = results[True]
    assert blocked.loc[urls[1], "reason"] == "blocked by robots.txt"
    assert requested == ["/robots.txt"]

"""Attack: a page or a manifest hands faceset a `file:`, `ftp:` or `data:` URL.

The crawler used to follow `file://<site host>/...` links (only the host was checked)
and so read local files into the manifest; the fetch read whatever scheme a row named.
Only http(s) is requested now; the others are refused with a reason, and the rest of
the crawl or the download goes on.
"""

from __future__ import annotations

import base64
import json

from sites.hostile import image, index, manifest, profile, recipe, serve
from sites.staff import jpeg

from tasks.core import manifest as mf
from tasks.core.paths import DatasetPaths
from tasks.crawl import stage as crawl
from tasks.fetch import stage as fetch

SECRET = "Secret Local Person"


def test_file_links_are_refused_and_the_crawl_goes_on(tmp_path) -> None:
    secret = tmp_path / "secret.html"
    secret.write_text(f'<html><body><h1>{SECRET}</h1><img src="http://127.0.0.1/x.jpg"><p class="label">cs</p></body></html>')
    server = serve({"/img/a.jpg": image(1), "/people/a.html": profile("Ada", "/img/a.jpg")})
    local = f"file://127.0.0.1{secret}"  # on the site's host: the crawl's host check let it through
    server.routes["/index.html"] = index(["/people/a.html", local, f"file://{secret}"])
    try:
        spec = recipe([server.url("/index.html")])
        paths = DatasetPaths.create(tmp_path / "data")
        result = crawl.run(mf.empty(spec.field_names), spec, paths)
    finally:
        server.stop()
    assert list(result["name"]) == ["Ada"]
    assert not result["page_url"].str.startswith("file:").any()
    report = json.loads(paths.report_json("crawl").read_text())
    assert {"url": local, "reason": "refused: file: URL (faceset requests http: and https: URLs only)"} in report["errors"]
    assert SECRET not in paths.report_json("crawl").read_text()


def test_fetch_refuses_other_schemes_with_a_reason(tmp_path) -> None:
    server = serve({"/img/a.jpg": image(1)})
    try:
        spec = recipe([server.url("/")], follow=False)
        data_url = "data:image/jpeg;base64," + base64.b64encode(jpeg(2)).decode()
        urls = [server.url("/img/a.jpg"), "file:///etc/passwd", f"ftp://127.0.0.1:{server.httpd.server_address[1]}/a.jpg",
                data_url]
        result = fetch.run(manifest(spec, server.url("/"), urls), spec, DatasetPaths.create(tmp_path), timeout=60)
    finally:
        server.stop()
    reasons = dict(zip(result["image_url"], result["reason"].fillna("")))
    assert result.set_index("image_url").loc[urls[0], "status"] == mf.KEPT
    for url, scheme in zip(urls[1:], ("file", "ftp", "data")):
        assert reasons[url] == f"refused: {scheme}: URL (faceset requests http: and https: URLs only)"
    assert (result["status"] == mf.FAILED).sum() == 3

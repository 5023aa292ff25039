"""A listing built by JavaScript from a JSON endpoint, crawled with real headless Chromium."""

from __future__ import annotations

import json
import subprocess

import pytest
from sites.server import FixtureServer, Route
from sites.staff import build, recipe_dict

from spiders import browser
from tasks.crawl import stage as crawl
from tasks.core import manifest as mf
from tasks.core.errors import FacesetError
from tasks.core.paths import DatasetPaths
from tasks.core.recipe import parse_recipe


def _browsers_running() -> list[str]:
    found = subprocess.run(["pgrep", "-af", "faceset-chromium-"], capture_output=True, text=True).stdout
    return [line for line in found.splitlines() if "pgrep" not in line]


@pytest.mark.slow
def test_javascript_listing_rendered_with_chromium(tmp_path) -> None:
    """A rendered listing (its JSON takes 3 s) beside a slow static source on the same site.

    The step has no `wait_for`: the page must still be read only once its links are there.
    The static pages must keep coming while the browser waits: proof that Selenium runs
    off Scrapy's reactor.
    """
    try:
        browser.require_browser()
    except FacesetError as exc:
        pytest.skip(str(exc))
    data = build(30, per_page=5, tricky=True)
    listed = [p for p in data.people[:9] if p.dept != "hist"][:6]
    data.routes["/api/people.json"] = Route(json.dumps([{"id": p.pid, "name": p.name} for p in listed]).encode(),
                                            "application/json", delay=3.0)
    history = [p for p in data.people if p.dept == "hist"]
    for path, route in data.routes.items():
        if path.startswith("/dept/hist/") or path in {f"/people/{p.pid}.html" for p in history}:
            route.delay = 0.5
    server = FixtureServer(data.routes).start()
    try:
        spec = recipe_dict(server.base, concurrency=1, autothrottle=False, timeout=10)
        rendered = spec["sources"][0]
        static = {**rendered, "name": "history", "start_urls": [server.url("/dept/hist/1.html")],
                  "follow": [{"links": "table.directory a.staff", "next_page": "a.pager-next"}]}
        rendered.update({"name": "jsdir", "start_urls": [server.url("/js/index.html")],
                         "follow": [{"links": "div.card a", "render": True}]})
        spec["sources"].append(static)
        recipe = parse_recipe(spec, "test")
        paths = DatasetPaths.create(tmp_path)
        result = crawl.run(mf.empty(recipe.field_names), recipe, paths)
    finally:
        server.stop()
    jsdir = result[result["source"] == "jsdir"].set_index("page_url")
    assert sorted(jsdir.index) == sorted(server.url(f"/people/{p.pid}.html") for p in listed)
    for person in listed:
        assert jsdir.loc[server.url(f"/people/{person.pid}.html"), "name"] == person.name
    assert (result["source"] == "history").sum() == len(history)
    # the browser itself fetched the JSON endpoint, with faceset's User-Agent
    api = [(ua, t) for path, ua, t in server.log if path == "/api/people.json"]
    assert len(api) == 1 and "faceset/" in api[0][0]
    waiting = [p for p, _, t in server.log if api[0][1] < t < api[0][1] + 3.0 and p.startswith(("/people/", "/dept/hist/"))]
    assert waiting, "no static page was fetched while the browser waited: the reactor was blocked"
    report = json.loads(paths.report_json("crawl").read_text())
    assert report["rendered_pages"] == 1
    assert not _browsers_running(), "the crawl left a browser running"


def test_missing_chromium_says_to_run_setup(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(browser, "CHROMIUM", str(tmp_path / "no-chromium"))
    spec = recipe_dict("http://127.0.0.1:9")
    spec["sources"][0]["render"] = True
    recipe = parse_recipe(spec, "test")
    with pytest.raises(FacesetError) as err:
        crawl.run(mf.empty(recipe.field_names), recipe, DatasetPaths.create(tmp_path / "ds"))
    assert "scripts/setup.sh" in err.value.hint

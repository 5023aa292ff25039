"""A listing built by JavaScript from a JSON endpoint, crawled with real headless Chromium."""

from __future__ import annotations

import json
import subprocess

import pytest
from sites.server import FixtureServer
from sites.staff import build, recipe_dict

from spiders import browser
from tasks import crawl
from tasks import manifest as mf
from tasks.errors import FacesetError
from tasks.paths import DatasetPaths
from tasks.recipe import parse_recipe


def _browsers_running() -> list[str]:
    found = subprocess.run(["pgrep", "-af", "faceset-chromium-"], capture_output=True, text=True).stdout
    return [line for line in found.splitlines() if "pgrep" not in line]


@pytest.mark.slow
def test_javascript_listing_rendered_with_chromium(tmp_path) -> None:
    try:
        browser.require_browser()
    except FacesetError as exc:
        pytest.skip(str(exc))
    data = build(30, per_page=5, tricky=True)
    server = FixtureServer(data.routes).start()
    try:
        spec = recipe_dict(server.base)
        source = spec["sources"][0]
        source["start_urls"] = [server.url("/js/index.html")]
        source["follow"] = [{"links": "div.card a", "render": True, "wait_for": "div.card a"}]
        recipe = parse_recipe(spec, "test")
        paths = DatasetPaths.create(tmp_path)
        result = crawl.run(mf.empty(recipe.field_names), recipe, paths)
    finally:
        server.stop()
    listed = data.people[:6]  # what /api/people.json lists
    assert sorted(result["page_url"]) == sorted(server.url(f"/people/{p.pid}.html") for p in listed)
    by_page = result.set_index("page_url")
    for person in listed:
        assert by_page.loc[server.url(f"/people/{person.pid}.html"), "name"] == person.name
    # the browser itself fetched the JSON endpoint, with faceset's User-Agent
    api = [ua for path, ua, _ in server.log if path == "/api/people.json"]
    assert api and all("faceset/" in ua for ua in api)
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

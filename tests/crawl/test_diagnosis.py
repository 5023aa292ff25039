"""Every diagnosis of spiders/diagnosis.py triggered on a local site and its sentence asserted.

Two crawls: the issue's case (a listing built by JavaScript, its follow step without
`render: true`), which finds nothing and must say which step to fix and how; and one crawl
of several sources, each wrong in its own way, whose report lists each finding.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sites.server import FixtureServer, Route
from sites.staff import JS_LISTING, build, recipe_dict

from spiders import browser
from tasks.core import manifest as mf
from tasks.core.errors import FacesetError
from tasks.core.paths import DatasetPaths
from tasks.core.recipe import parse_recipe, warnings
from tasks.core.reports import write_report
from tasks.crawl import stage as crawl
from tasks.report import sections


@pytest.fixture(autouse=True)
def chromium() -> None:
    try:
        browser.require_browser()
    except FacesetError as exc:
        pytest.skip(str(exc))


def _crawl(spec: dict, tmp_path):
    recipe = parse_recipe(spec, Path("test.yaml"))
    paths = DatasetPaths.create(tmp_path)
    return crawl.run(mf.empty(recipe.field_names), recipe, paths), paths


def test_javascript_roster_without_render_names_the_step_and_the_fix(tmp_path) -> None:
    """The issue's case, and a profile page whose portrait a script inserts."""
    data = build(6)
    data.routes["/js/index.html"] = Route(JS_LISTING.encode())
    data.routes["/jsprofile/index.html"] = Route(b'<a class="staff" href="/jsprofile/p0000.html">Ada</a>')
    data.routes["/jsprofile/p0000.html"] = Route(b"<h1 class='name'>Ada</h1><div id='photo'></div><script>"
                                                 b"document.getElementById('photo').innerHTML = "
                                                 b"'<img class=\"portrait\" src=\"/img/p0000.jpg\">';</script>")
    data.routes["/api/people.json"] = Route(json.dumps([{"id": p.pid, "name": p.name} for p in data.people]).encode(),
                                            "application/json")
    server = FixtureServer(data.routes).start()
    try:
        spec = recipe_dict(server.base)
        js = spec["sources"][0]
        js.update(start_urls=[server.url("/js/index.html")], follow=[{"links": "div.card a"}])
        spec["sources"].append({**js, "name": "jsprofiles", "start_urls": [server.url("/jsprofile/index.html")],
                                "follow": [{"links": "a.staff"}]})
        with pytest.raises(FacesetError) as err:
            _crawl(spec, tmp_path)
    finally:
        server.stop()
    assert ("source staffsite, follow step 1: the links selector `div.card a` matched nothing on the start page "
            f"(e.g. {server.url('/js/index.html')}), while the rendered page has 6 such links: "
            "add `render: true` to this step") in err.value.message
    assert ("source jsprofiles, item: the image selector `img.portrait::attr(src)` matched nothing on 1 item page "
            f"read (e.g. {server.url('/jsprofile/p0000.html')}), while the rendered page has 1 match: add `render: true` "
            "to the source") in err.value.message
    assert err.value.hint.startswith("fix the selectors or steps named above")


@pytest.mark.slow
def test_each_wrong_step_of_each_source_is_named(tmp_path) -> None:
    data = build(6)
    routes = data.routes
    routes["/robots.txt"] = Route(b"User-agent: *\nDisallow: /private/\n", "text/plain")
    routes["/links.html"] = Route(b'<a href="/people/p0001.html">in</a><a href="http://elsewhere.invalid/a.html">out</a>'
                                  b'<a href="/private/x.html">hidden</a>')
    server = FixtureServer(routes).start()
    try:
        spec = recipe_dict(server.base)
        fields = {
            "dept": {"css": "p.dept::text", "regex": "Department of (.+)",
                     "map": {"Computer Science": "cs", "Economics": "econ", "Law": "law"}},
            "faculty": {"css": "p.dept::text", "regex": "Faculty of (.+)"},
            "born": {"css": "p.dept::text", "parse": "birthdate"},
            "nickname": "span.nick::text",
        }
        item = {"image": "img.portrait::attr(src)", "fields": fields}
        spec["sources"] = [
            {"name": "fields", "start_urls": [server.url("/dept/hist/1.html")], "item": item,
             "follow": [{"links": "table.directory a.staff", "next_page": "a.next-page"}]},
            {"name": "elsewhere", "start_urls": [server.url("/links.html")], "item": item, "follow": [{"links": "a"}]},
            {"name": "photos", "start_urls": [server.url("/dept/cs/1.html")], "follow": [{"links": "a.staff"}],
             "item": {"image": "img.photo::attr(src)", "fields": {"dept": "p.dept::text"}}},
        ]
        spec["target"], spec["attributes"] = "dept", []
        result, paths = _crawl(spec, tmp_path)
    finally:
        server.stop()
    assert len(result)
    found = json.loads(paths.report_json("crawl").read_text())["diagnosis"]
    hist = server.url("/dept/hist/1.html")
    expected = [
        f"source fields, follow step 1: the next_page selector `a.next-page` matched nothing on the start page (e.g. {hist}), "
        "nor does the page rendered in a browser: check the selector against the page source",
        "source fields, item: the selector of field nickname `span.nick::text` matched nothing on the 2 item pages read",
        "source fields, field dept: `map` has no key for 'History' (2 items); these items got no dept: add the values to map",
        "source fields, field dept: `map` keys never seen on the pages read: 'Computer Science', 'Economics', 'Law'",
        "source fields, field faculty: regex `Faculty of (.+)` never matched (e.g. 'Department of History'); fix the regex",
        "source fields, field born: parse: birthdate read no value from 2 of 2 texts (e.g. 'Department of History')",
        "source elsewhere: 1 link led off the source's hosts and was not followed (e.g. http://elsewhere.invalid/a.html); "
        "if they should be, add their hosts to the source's allowed_domains",
        f"source elsewhere: 1 page blocked by robots.txt (e.g. {server.url('/private/x.html')})",
        "source photos, item: the image selector `img.photo::attr(src)` matched nothing on the 2 item pages read",
    ]
    for sentence in expected:
        assert any(sentence in line for line in found), sentence
    # report.html's crawl section lists them, with the faces stage's images without a face
    write_report(paths, "faces", {"images": 4, "reasons": {"no face": 3}})
    html = str(sections.crawl(json.loads(paths.report_json("crawl").read_text()), paths))
    assert "What to check in the recipe" in html and "matched nothing on the 2 item pages read" in html
    assert "3 of 4 images had no face the detector could find" in html
    assert "<td>links: table.directory a.staff</td>" in html


def test_settings_without_effect_are_warned_about() -> None:
    spec = recipe_dict("http://127.0.0.1:9")
    source = spec["sources"][0]
    source["wait_for"] = "div.card"
    source["follow"][1]["wait_for"] = "a.staff"
    source["item"]["fields"]["name"] = {"css": "h1.name::text", "date_order": "mdy"}
    spec["crosscheck"] = {"autotagger": "local", "region": "eu-west-1"}
    assert warnings(parse_recipe(spec, Path("test.yaml"))) == [
        "source staffsite: wait_for 'div.card' has no effect, as none of its pages is rendered: add render: true "
        "to the source (or to a follow step), or remove wait_for",
        "source staffsite, follow step 2: wait_for 'a.staff' has no effect, as this step is not rendered: add "
        "render: true to the step, or remove wait_for",
        "source staffsite, field name: date_order has no effect without parse: birthdate",
        "crosscheck: region applies to autotagger: rekognition only (this recipe uses local)",
    ]
    source["follow"][0]["render"] = source["follow"][1]["render"] = True  # the source's and the step's wait_for now work
    assert len(warnings(parse_recipe(spec, Path("test.yaml")))) == 2

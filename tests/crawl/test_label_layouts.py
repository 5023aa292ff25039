"""Portraits in <picture>/srcset and lazy images, and labels in dt/dd pairs and tables, as
docs/recipe-reference.md shows them, crawled from a local site."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from sites.server import FixtureServer, Route

from tasks.core import manifest as mf
from tasks.core.paths import DatasetPaths
from tasks.core.recipe import parse_recipe
from tasks.crawl import stage as crawl

PICTURE = """<picture class="portrait"><source type="image/webp" srcset="/img/ada-400.webp 400w, /img/ada-800.webp 800w">
<img src="/img/ada-200.jpg" srcset="/img/ada-200.jpg 200w, /img/ada-600.jpg 600w" alt=""></picture>"""
LAZY = """<img class="portrait" src="data:image/gif;base64,R0lGODlhAQABAAAAACw="
data-srcset="/img/kofi-300.jpg 300w, /img/kofi-900.jpg 900w">"""


def _profile(name: str, image: str, department: str, born: str, pronouns: str) -> bytes:
    return (f"<html><body><h1>{name}</h1>{image}"
            f"<dl><dt>Office</dt><dd>B 12</dd><dt> Department </dt><dd>{department}</dd></dl>"
            f"<table class='facts'><tr><th>Born</th><td>{born}</td></tr><tr><th>Pronouns</th><td>{pronouns}</td></tr>"
            "</table></body></html>").encode()


def test_picture_srcset_and_labels_in_definition_lists_and_tables(tmp_path) -> None:
    routes = {
        "/robots.txt": Route(b"User-agent: *\nAllow: /\n", "text/plain"),
        "/": Route(b'<a class="person" href="/ada.html">Ada</a><a class="person" href="/kofi.html">Kofi</a>'),
        "/ada.html": Route(_profile("Ada Lin", PICTURE, "Physics", "14 March 1985", "she/her")),
        "/kofi.html": Route(_profile("Kofi Mensah", LAZY, "History", "1979", "he/him")),
    }
    server = FixtureServer(routes).start()
    try:
        recipe = parse_recipe({
            "name": "layouts", "contact": "tests@example.org", "crawl": {"delay": 0, "autothrottle": False},
            "sources": [{"name": "site", "start_urls": [server.url("/")], "follow": [{"links": "a.person"}],
                         "item": {"image": "picture.portrait, img.portrait", "fields": {
                             "name": "h1::text",
                             "department": 'dt:contains("Department") + dd::text',
                             "age": {"xpath": "//table[@class='facts']//th[normalize-space()='Born']/following-sibling::td[1]/text()",
                                     "parse": "birthdate"},
                             "gender": {"css": 'th:contains("Pronouns") + td::text', "parse": "pronoun"}}}}],
            "target": "department"}, Path("layouts.yaml"))
        found = crawl.run(mf.empty(recipe.field_names), recipe, DatasetPaths.create(tmp_path))
    finally:
        server.stop()
    rows = found.set_index("name")
    assert rows.loc["Ada Lin", "image_url"] == server.url("/img/ada-600.jpg")  # the <img>'s largest candidate
    assert rows.loc["Kofi Mensah", "image_url"] == server.url("/img/kofi-900.jpg")  # lazy data-srcset
    assert rows.loc["Ada Lin", "department"] == "Physics" and rows.loc["Kofi Mensah", "department"] == "History"
    assert rows.loc["Ada Lin", "gender"] == "female" and rows.loc["Kofi Mensah", "gender"] == "male"
    today = date.today()
    assert rows.loc["Ada Lin", "age"] == str(today.year - 1985 - ((today.month, today.day) < (3, 14)))
    assert rows.loc["Kofi Mensah", "age"] == str(today.year - 1979)  # only the year: this year's age

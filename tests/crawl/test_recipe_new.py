"""`faceset recipe new` on generated sites of several shapes, each recipe BUILT WITHOUT EDITS.

Each site (tests/sites/shapes.py: listing -> profile; paginated listings of departments;
a team page of cards; lazy `srcset` portraits in <picture>; a JavaScript-built listing;
profiles with a logo, icons and a campus photo beside the portrait) serves real UTKFace
faces on 127.0.0.1. The suggested recipe goes as written into a real flow run up to the
faces stage (Scrapy crawl, image download, YuNet), and the test asserts that at least
95% of the people were reached and that each kept face is that person's portrait.
"""

from __future__ import annotations

import pandas as pd
from parsel import Selector
import pytest
import yaml

from flows.build import build
from flows.cli import main
from sites import shapes, staff
from sites.server import FixtureServer, Route

from tasks.crawl.suggest.links import Page, link_groups
from tasks.crawl.suggest.selectors import candidates, first_fitting



@pytest.fixture
def serve(utkface_dir):
    servers: list[FixtureServer] = []

    def start(shape: str, **kwargs) -> tuple[FixtureServer, shapes.ShapeSite]:
        site = shapes.build(shape, utkface_dir, **kwargs)
        servers.append(FixtureServer(site.routes).start())
        return servers[-1], site

    yield start
    for server in servers:
        server.stop()


def _suggest(server: FixtureServer, tmp_path, *extra: str):
    out = tmp_path / "suggested.yaml"
    assert main(["recipe", "new", server.url("/"), "--out", str(out), "--contact", "tests@example.org",
                 "--delay", "0", *extra]) == 0
    return out


@pytest.mark.slow
@pytest.mark.parametrize("shape", shapes.SHAPES)
def test_suggested_recipe_builds_without_edits(shape, serve, tmp_path, monkeypatch, prefect_server) -> None:
    monkeypatch.setenv("FACESET_WORKERS", "1")
    server, site = serve(shape, n=10, per_page=2)
    recipe_path = _suggest(server, tmp_path)
    recipe = yaml.safe_load(recipe_path.read_text())
    source = recipe["sources"][0]
    if shape == "team":
        assert source["follow"] == [] and source["item"]["each"] and source["next_page"], "cards over two pages"
    if shape == "departments":
        assert len(source["follow"]) == 2 and source["follow"][1].get("next_page"), "the listings paginate"
    if shape == "javascript":
        assert source["follow"][0]["render"] is True and source["render"] is False
    assert "# " in recipe_path.read_text() and "read:" in recipe_path.read_text()
    assert server.log and all("tests@example.org" in agent for _, agent, _ in server.log)

    root = build(recipe_path, data_root=tmp_path / "data", until="faces")
    frame = pd.read_parquet(root / ".faceset" / "stages" / "faces.parquet")
    photo = {server.url(f"/people/{p.pid}.html") if shape != "team" else p.name: server.url(p.photo) for p in site.people}
    if shape == "team":
        reached = set(frame["name"])
        picked = dict(zip(frame["name"], frame["image_url"]))
    else:
        reached = set(frame["page_url"])
        picked = dict(zip(frame["page_url"], frame["image_url"]))
    assert len(reached & set(photo)) >= 0.95 * len(photo), f"{shape}: people reached {len(reached & set(photo))}"
    right = sum(picked.get(key) == url for key, url in photo.items())
    assert right >= 0.95 * len(photo), f"{shape}: right portraits {right} of {len(photo)}"
    assert (frame["status"] == "kept").sum() >= 0.8 * len(photo), "the faces stage keeps the portraits it was given"
    assert not any("/static/" in url or "/campus/" in url for url in frame["image_url"])


def test_a_site_without_faces_says_what_to_do(tmp_path, capsys) -> None:
    site = staff.build(n=6)  # synthetic one-colour pictures: nothing holds a face
    server = FixtureServer(site.routes).start()
    try:
        code = main(["recipe", "new", server.url("/index.html"), "--out", str(tmp_path / "x.yaml"),
                     "--contact", "tests@example.org", "--delay", "0", "--render", "no"])
    finally:
        server.stop()
    err = capsys.readouterr().err
    assert code == 2 and "no portraits found" in err and "start from the page that lists the people" in err
    assert not (tmp_path / "x.yaml").exists()


def test_contact_is_required_and_robots_txt_obeyed(serve, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("FACESET_CONTACT", raising=False)
    server, site = serve("directory", n=3)
    site.routes["/go.html"] = Route(status=302, headers={"Location": "/private/index.html"})
    assert main(["recipe", "new", server.url("/"), "--out", str(tmp_path / "x.yaml")]) == 2
    assert "needs a contact" in capsys.readouterr().err
    assert main(["recipe", "new", server.url("/private/index.html"), "--out", str(tmp_path / "x.yaml"),
                 "--contact", "tests@example.org", "--delay", "0"]) == 2
    assert "blocked by robots.txt" in capsys.readouterr().err
    assert main(["recipe", "new", server.url("/go.html"), "--out", str(tmp_path / "x.yaml"),
                 "--contact", "tests@example.org", "--delay", "0"]) == 2, "a redirect into /private/ is not followed"
    assert "/go.html" in server.paths()
    assert not any(path.startswith("/private/") for path in server.paths())


def test_a_javascript_listing_read_without_rendering_says_to_render(serve, tmp_path, capsys) -> None:
    server, _ = serve("javascript", n=3)
    assert main(["recipe", "new", server.url("/"), "--out", str(tmp_path / "x.yaml"), "--contact", "tests@example.org",
                 "--delay", "0", "--render", "no"]) == 2
    assert "--render yes" in capsys.readouterr().err


def test_selectors_prefer_written_classes_and_generalise_over_examples() -> None:
    page = Selector(text="<div class='css-1x2y3z grid'><div class='card'><img class='sc-9f8e7d'></div>"
                         "<div class='card'><img class='sc-1a2b3c'></div></div>")
    images = [m.root for m in page.css("img")]
    assert candidates(images[0])[0] == ".card img", "generated class names are not used"
    chosen = first_fitting(images, lambda css: len(page.css(css)) == 2)
    assert chosen == ".card img"


def test_menus_repeated_from_the_page_above_are_not_link_groups() -> None:
    menu = "<nav><a href='/a.html'>A</a><a href='/b.html'>B</a><a href='/c.html'>C</a></nav>"
    people = "".join(f"<li><a href='/people/{i}.html'>P{i}</a></li>" for i in range(5))
    page = Page("http://site.test/list.html", f"<body>{menu}<ul class='staff'>{people}</ul></body>")
    above = {f"http://site.test/{x}.html" for x in "abc"}
    groups = link_groups(page, frozenset({"site.test"}), above)
    assert groups[0].css == ".staff a" and len(groups[0].urls) == 5
    assert not any(set(g.urls) <= above for g in groups)

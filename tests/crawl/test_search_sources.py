"""Search-result sources: queries, result pages that load more, thumbnail links, max_items,
and the sources without crawling (a URL list, a folder), on local sites and real files.

The scrolling and 'more results' pages run in real headless Chromium; the URL list and
the folder go through the crawl and fetch stages with real images from ../shared/corpus.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from conftest import corpus_dir
from sites.search import build, recipe_dict
from sites.server import FixtureServer, Route
from sites.staff import jpeg

from spiders import browser
from tasks.core import manifest as mf
from tasks.core.errors import FacesetError
from tasks.core.paths import DatasetPaths
from tasks.core.recipe import RecipeError, load_recipe, parse_recipe
from tasks import faces
from tasks.crawl import stage as crawl
from tasks.fetch import stage as fetch

QUERIES = {"nurse": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "software engineer": [10, 11, 3, 12, 13, 14, 15]}


@pytest.fixture
def search_site():
    server = FixtureServer({}).start()
    site = build(server.base, [jpeg(i) for i in range(16)], QUERIES)
    server.routes.update(site.routes)
    yield server, site
    server.stop()


def _crawl(spec: dict, root: Path) -> tuple[pd.DataFrame, dict]:
    recipe = parse_recipe(spec, Path("test.yaml"))
    paths = DatasetPaths.create(root)
    frame = crawl.run(mf.empty(recipe.field_names), recipe, paths)
    return frame, json.loads(paths.report_json("crawl").read_text())


def _ranked(frame: pd.DataFrame, query: str) -> list[str]:
    rows = frame[frame["query"] == query].sort_values("rank")
    assert list(rows["rank"]) == list(range(1, len(rows) + 1)), "ranks are 1, 2, 3... within a query"
    return list(rows["image_url"])


def test_queries_on_paged_results_with_thumbnail_links(search_site, tmp_path) -> None:
    server, site = search_site
    frame, report = _crawl(recipe_dict(site, "search"), tmp_path)
    for query in QUERIES:
        # the originals, decoded out of /imgres?imgurl=..., in the order of the result pages
        assert _ranked(frame, query) == site.expected(query)
    nurse = frame[frame["query"] == "nurse"].set_index("rank")
    assert list(nurse.loc[[1, 4, 5, 9], "page"]) == [1, 1, 2, 3]  # four results a page
    assert nurse.loc[5, "page_url"] == server.url("/search/nurse/2.html")
    # one image in two queries is two rows, each with its own rank
    shared = frame[frame["image_url"] == site.original(3)].set_index("query")["rank"]
    assert shared.to_dict() == {"nurse": 4, "software engineer": 3}
    assert server.counts()["/search/software+engineer/1.html"] == 1  # the query URL-encoded into the start URL
    assert report["per_query"]["search"] == {"nurse": 10, "software engineer": 7}


def test_max_items_per_query_stops_the_crawl_and_is_reported(search_site, tmp_path) -> None:
    server, site = search_site
    frame, report = _crawl(recipe_dict(site, "search", max_items=5), tmp_path)
    for query in QUERIES:
        assert _ranked(frame, query) == site.expected(query)[:5]
    assert report["max_items"] == {"search": 5}
    assert report["per_source"]["search"]["max_items_dropped"] == 3 + 2  # of each query's second page
    assert "/search/nurse/3.html" not in server.counts(), "a query with its max_items asks for no more pages"


def _needs_browser() -> None:
    try:
        browser.require_browser()
    except FacesetError as exc:
        pytest.skip(str(exc))


@pytest.mark.slow
def test_scrolling_and_more_button_pages_in_chromium(search_site, tmp_path) -> None:
    """Both pages show 4 results at first; scrolling and clicking bring the rest."""
    _needs_browser()
    server, site = search_site
    spec = recipe_dict(site, "scroll", scroll=10)
    clicks = recipe_dict(site, "more", click="#more", max_clicks=10)["sources"][0]
    spec["sources"].append(clicks)
    frame, report = _crawl(spec, tmp_path)
    for source in ("scroll", "more"):
        rows = frame[frame["source"] == source]
        for query in QUERIES:
            assert _ranked(rows, query) == site.expected(query), (source, query)
    # 10 and 7 results in batches of 4: two and one growing scroll or click per query; the
    # next try finds no growth (scroll) or no button (click) and stops
    assert report["scrolls"] == 2 + 1 and report["clicks"] == 2 + 1
    assert report["rendered_pages"] == 4


@pytest.mark.slow
def test_scrolling_stops_at_its_bound(search_site, tmp_path) -> None:
    _needs_browser()
    _, site = search_site
    frame, report = _crawl(recipe_dict(site, "scroll", scroll=1), tmp_path)
    assert _ranked(frame, "nurse") == site.expected("nurse")[:8]
    assert report["scrolls"] == 2


@pytest.mark.slow
def test_a_follow_step_scrolls_its_result_page_and_ranks_the_pages_it_links_to(search_site, tmp_path) -> None:
    """scroll on a follow step: the rendered result page is scrolled to the end, and the pages
    its results link to are ranked in the order of the results, not in the order they arrived."""
    _needs_browser()
    server, site = search_site
    spec = recipe_dict(site, "scroll")
    source = spec["sources"][0]
    del source["wait_for"]
    source.update(render=False, follow=[{"links": "a.visit", "render": True, "wait_for": "div.result", "scroll": 10}],
                  item={"image": "img.full::attr(src)", "fields": {"caption": "p.caption::text"}})
    frame, report = _crawl(spec, tmp_path)
    for query in QUERIES:
        assert _ranked(frame, query) == site.expected(query)
    nurse = frame[frame["query"] == "nurse"].set_index("rank")
    assert nurse.loc[10, "caption"] == "caption 9" and nurse.loc[10, "page_url"] == server.url("/visit/9.html")
    assert server.counts()["/visit/3.html"] == 2  # the image both queries found: its page read in each
    assert report["scrolls"] == 3 and report["rendered_pages"] == 2


@pytest.mark.parametrize("change, message", [
    ({"urls": "list.csv"}, "exactly one of 'start_urls'"),
    ({"queries": []}, "give the search terms in 'queries'"),
    ({"render": False}, "scroll and click need a rendered page"),
    ({"queries": ["a", "a"]}, "distinct"),
    ({"item": {"image": {"css": "a::attr(href)", "map": {"a": "b"}}}}, "not map or parse"),
])
def test_bad_search_sources_are_refused_with_a_clear_message(search_site, tmp_path, change, message) -> None:
    _, site = search_site
    spec = recipe_dict(site, "scroll", scroll=3)
    (tmp_path / "list.csv").write_text("url\nhttp://127.0.0.1/a.jpg\n")
    spec["sources"][0].update(change)
    with pytest.raises(RecipeError, match=message):
        parse_recipe(spec, tmp_path / "recipe.yaml")


# ---------------------------------------------------------------- sources without crawling


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def local_sources(tmp_path):
    """A URL list served by a local site and a folder of images, both of real portraits from the
    corpus (read from ../shared/corpus; the folder is a temporary copy, never in the repository)."""
    portraits = [corpus_dir("photos", "deepface") / f"img{i}.jpg" for i in range(1, 7)]
    served = {f"/img/{i}.jpg": Route(face.read_bytes(), "image/jpeg") for i, face in enumerate(portraits[:3])}
    server = FixtureServer(served).start()
    folder = tmp_path / "recipe" / "photos"
    (folder / "sub").mkdir(parents=True)
    for name, face in (("a.jpg", portraits[3]), ("sub/b.jpg", portraits[4])):
        (folder / name).write_bytes(face.read_bytes())
    (folder / "notes.txt").write_text("not an image: not a row")
    os.symlink(portraits[5], folder / "outside.jpg")  # a link leading out of the folder
    (folder / "labels.csv").write_text(
        "file,gender,note\n"
        "a.jpg,female,=HYPERLINK(\"http://evil\")\n"
        "sub/b.jpg,male,\n"
        "../escape.jpg,female,\n"
        "missing.jpg,male,\n")
    (tmp_path / "recipe" / "list.csv").write_text(
        "url,gender,note\n"
        f"{server.url('/img/0.jpg')},female,first\n"
        f"{server.url('/img/1.jpg')},male,\n"
        f"{server.url('/img/2.jpg')},female,\n"
        "ftp://files.example.org/a.jpg,male,\n"
        ",female,no url\n"
        "http://169.254.169.254/latest/meta-data.jpg,male,\n"
        f"{server.url('/img/404.jpg')},male,\n")
    recipe_file = tmp_path / "recipe" / "local.yaml"
    recipe_file.write_text(
        "name: local\ncontact: tests@example.org\n"
        "crawl: {delay: 0, retries: 0, timeout: 5, allow_private_hosts: ['127.0.0.1']}\n"
        "sources:\n  - {name: listed, urls: list.csv}\n  - {name: photos, folder: photos}\n"
        "target: gender\n")
    yield load_recipe(recipe_file), server, portraits
    server.stop()


@pytest.mark.slow
def test_a_url_list_and_a_folder_go_through_crawl_and_fetch(local_sources, tmp_path) -> None:
    recipe, server, portraits = local_sources
    assert recipe.sources[0].fields == ["gender", "note"]  # every column but url, read from the file
    paths = DatasetPaths.create(tmp_path / "data")
    crawled = crawl.run(mf.empty(recipe.field_names), recipe, paths)
    frame = fetch.run(crawled, recipe, paths).set_index("image_url", drop=False)

    listed = frame[frame["source"] == "listed"]
    for index in range(3):
        row = listed.loc[server.url(f"/img/{index}.jpg")]
        assert row["status"] == mf.KEPT and row["sha256"] == _sha256(portraits[index])
        assert (paths.root / row["image_path"]).is_file()
        assert row["rank"] == index + 1
    assert listed.loc[server.url("/img/0.jpg"), "note"] == "first"
    reasons = dict(zip(listed["image_url"].fillna("<none>"), listed["reason"]))
    assert reasons["ftp://files.example.org/a.jpg"].startswith("refused: ftp: URL")
    assert reasons["<none>"] == "line 6 of list.csv has no url"
    assert "link-local" in reasons["http://169.254.169.254/latest/meta-data.jpg"]
    assert reasons[server.url("/img/404.jpg")] == "download failed: 404"
    assert "/latest/meta-data.jpg" not in server.paths()

    photos = frame[frame["source"] == "photos"].set_index("item_id")
    by_file = {row.local_file: row for row in photos.itertuples() if isinstance(row.local_file, str)}
    assert set(by_file) == {"a.jpg", "sub/b.jpg", "outside.jpg"}  # notes.txt is no image
    assert by_file["a.jpg"].sha256 == _sha256(portraits[3]) and by_file["a.jpg"].gender == "female"
    assert by_file["sub/b.jpg"].gender == "male" and by_file["sub/b.jpg"].status == mf.KEPT
    assert by_file["a.jpg"].note == '=HYPERLINK("http://evil")'  # kept as text in the manifest...
    written = mf.write(frame.reset_index(drop=True), tmp_path / "manifest.parquet").with_suffix(".csv").read_text()
    assert "'=HYPERLINK" in written  # ...and a spreadsheet shows it as text
    assert by_file["outside.jpg"].status == mf.FAILED
    assert by_file["outside.jpg"].reason == "refused: outside.jpg is a link leading out of the folder"
    other = sorted(photos.loc[photos["local_file"].isna(), "reason"])
    assert other[0].startswith("labels.csv names missing.jpg")
    assert "refused: file '../escape.jpg' would leave its folder" in other[1]
    assert not (paths.root / "images").joinpath("..", "escape.jpg").exists()

    # the faces stage crops the faces of both sources like crawled ones
    faced = faces.run(frame.reset_index(drop=True), recipe, paths)
    kept = faced[faced["status"] == mf.KEPT]
    assert set(kept["source"]) == {"listed", "photos"} and len(kept) >= 4
    assert all((paths.root / path).is_file() for path in kept["face_path"])

    # a second crawl finds the same rows again (stable ids), and a changed file is copied anew
    (recipe.local_path("photos") / "a.jpg").write_bytes(portraits[0].read_bytes())
    again = fetch.run(crawl.run(frame.reset_index(drop=True), recipe, paths), recipe, paths)
    assert len(again) == len(frame)
    assert again.set_index("local_file").loc["a.jpg", "sha256"] == _sha256(portraits[0])


def test_a_source_has_one_origin_and_its_files_must_exist(tmp_path) -> None:
    base = {"name": "x", "contact": "a@b.c", "target": "gender"}
    (tmp_path / "list.csv").write_text("address,gender\nhttp://x.org/a.jpg,male\n")
    with pytest.raises(RecipeError, match="needs a 'url' column"):
        parse_recipe({**base, "sources": [{"name": "s", "urls": "list.csv"}]}, tmp_path / "r.yaml")
    with pytest.raises(RecipeError, match="urls: .*absent.csv is not a file"):
        parse_recipe({**base, "sources": [{"name": "s", "urls": "absent.csv"}]}, tmp_path / "r.yaml")
    with pytest.raises(RecipeError, match="exactly one of 'start_urls'.*has urls, folder"):
        parse_recipe({**base, "sources": [{"name": "s", "urls": "list.csv", "folder": "."}]}, tmp_path / "r.yaml")
    with pytest.raises(RecipeError, match="item belong to crawled sources"):
        parse_recipe({**base, "sources": [{"name": "s", "folder": ".", "fields": ["gender"],
                                           "item": {"image": "img::attr(src)"}}]}, tmp_path / "r.yaml")


def test_url_list_bounds_and_damaged_files(tmp_path) -> None:
    """max_items takes the first lines; a folder without labels.csv is read unlabelled; a list
    that is not UTF-8 stops the crawl with a message naming the file."""
    (tmp_path / "list.csv").write_text("url,gender\n" + "".join(f"https://img.example.org/{i}.jpg,male\n"
                                                               for i in range(10)))
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "x.jpg").write_bytes(jpeg(1))
    spec = {"name": "x", "contact": "a@b.c", "target": "gender", "sources": [
        {"name": "listed", "urls": "list.csv", "max_items": 3}, {"name": "photos", "folder": "photos"}]}
    recipe = parse_recipe(spec, tmp_path / "r.yaml")
    frame = crawl.run(mf.empty(recipe.field_names), recipe, DatasetPaths.create(tmp_path / "data"))
    listed = frame[frame["source"] == "listed"].sort_values("rank")
    assert list(listed["image_url"]) == [f"https://img.example.org/{i}.jpg" for i in range(3)]
    photos = frame[frame["source"] == "photos"]
    assert list(photos["local_file"]) == ["x.jpg"] and photos["gender"].isna().all()

    (tmp_path / "list.csv").write_bytes("url,gender\nhttps://img.example.org/é.jpg,male\n".encode("latin-1"))
    spec["sources"][0]["fields"] = ["gender"]  # so that loading does not read the file
    with pytest.raises(FacesetError, match="list.csv cannot be read as a UTF-8 CSV file"):
        crawl.run(mf.empty(["gender"]), parse_recipe(spec, tmp_path / "r.yaml"), DatasetPaths.create(tmp_path / "d2"))


def test_image_links_decoded_only_when_encoded_whole() -> None:
    from parsel import Selector

    from spiders.extract import image_urls
    from tasks.core.recipe import FieldSpec

    links = ["/imgres?imgurl=https%3A%2F%2Fcdn.example.org%2Fa%2520b.jpg&h=1",  # a %20 inside the original stays
             "/imgres?imgurl=%2F%2Fcdn.example.org%2Fc.jpg",  # protocol-relative, on the page's scheme
             "/imgres?imgurl=javascript%3Aalert(1)", "/imgres?imgurl=file%3A%2F%2F%2Fetc%2Fpasswd",
             "/imgres?h=1"]  # script and file URLs are dropped, a link without imgurl gives nothing
    page = Selector(text="".join(f'<a class="hit" href="{link}">x</a>' for link in links))
    spec = FieldSpec(css="a.hit::attr(href)", regex=r"imgurl=([^&]+)")
    assert image_urls(page, spec, "https://search.example.org/s?q=x") == [
        "https://cdn.example.org/a%20b.jpg", "https://cdn.example.org/c.jpg"]

"""Crawl stage end to end: a real Scrapy process against the fixture site on 127.0.0.1."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import pandas as pd
import pytest
import sites.staff
from sites.server import FixtureServer
from sites.staff import DEPARTMENTS, build, recipe_dict

from tasks.crawl import stage as crawl
from tasks.core import manifest as mf
from tasks.core.errors import FacesetError
from tasks.core.paths import DatasetPaths
from tasks.core.recipe import parse_recipe
from tasks.report import sections

MAP = {"Computer Science": "cs", "Economics": "econ", "History": "hist"}


def expected_age(person, today: date) -> str:
    y, m, d = person.born
    if person.born_text in (f"born {y}", str(y)):
        return str(today.year - y)
    return str(today.year - y - ((today.month, today.day) < (m, d)))


@pytest.fixture(scope="module")
def site():
    data = build(30, per_page=5, tricky=True)
    server = FixtureServer(data.routes).start()
    yield data, server
    server.stop()


@pytest.fixture(scope="module")
def crawled(site, tmp_path_factory):
    data, server = site
    spec = recipe_dict(server.base)
    # a second start URL in the disallowed folder: it arrives while robots.txt is still loading
    spec["sources"][0]["start_urls"].append(server.url("/private/dept/1.html"))
    recipe = parse_recipe(spec, "test")
    paths = DatasetPaths.create(tmp_path_factory.mktemp("crawl"))
    today = datetime.now(timezone.utc).date()
    result = crawl.run(mf.empty(recipe.field_names), recipe, paths)
    report = json.loads(paths.report_json("crawl").read_text())
    return result, report, recipe, paths, today


def test_every_allowed_profile_found_with_its_fields(site, crawled) -> None:
    data, server = site
    result, _, _, _, today = crawled
    by_page = result.set_index("page_url")
    assert len(result) == len(data.people)
    for person in data.people:
        row = by_page.loc[server.url(f"/people/{person.pid}.html")]
        assert row["name"] == person.name
        label = MAP.get(person.dept_label or DEPARTMENTS[person.dept])
        assert (row["label"] if pd.notna(row["label"]) else None) == label
        assert row["gender"] == person.gender
        assert row["age"] == expected_age(person, today), person.born_text
        assert row["item_id"] == mf.item_id(row.name, row["image_url"])
        assert row["status"] == "kept" and row["source"] == "staffsite"
        assert datetime.fromisoformat(row["crawled_at"]).tzinfo is not None
    assert result["name"].dtype == "string" and result["age"].dtype == "string"


def test_robots_disallowed_folder_is_never_requested(site, crawled) -> None:
    _, server = site
    _, report, _, _, _ = crawled
    paths = server.paths()
    assert "/robots.txt" in paths
    assert not [p for p in paths if p.startswith("/private/")]
    assert report["robots_blocked"] == [server.url("/private/dept/1.html")]


def test_user_agent_names_faceset_and_contact(site, crawled) -> None:
    _, server = site
    agents = {ua for _, ua, _ in server.log}
    assert agents and all("faceset/" in ua and "crawl-tests@example.org" in ua for ua in agents)


def test_latin1_srcset_lazy_and_person_listed_twice(site, crawled) -> None:
    data, server = site
    result = crawled[0].set_index("page_url")
    latin = data.person("latin1")
    assert result.loc[server.url(f"/people/{latin.pid}.html"), "name"] == "José Müller Ñúñez"
    srcset = data.person("srcset")
    assert result.loc[server.url(f"/people/{srcset.pid}.html"), "image_url"] == server.url(srcset.image)
    lazy = data.person("datasrc")
    assert result.loc[server.url(f"/people/{lazy.pid}.html"), "image_url"] == server.url(lazy.image)
    twice = data.person("twice")
    assert crawled[0]["page_url"].eq(server.url(f"/people/{twice.pid}.html")).sum() == 1
    assert server.counts()[f"/people/{twice.pid}.html"] == 1
    relative = data.person("redirect")  # relative img src resolved against the page
    assert result.loc[server.url(f"/people/{relative.pid}.html"), "image_url"] == server.url(relative.image)


def test_report_lists_unmapped_values_and_settings(crawled) -> None:
    _, report, _, _, _ = crawled
    assert report["unmapped"] == {"label": {"Astrology": 1}}
    assert report["finish_reason"] == "finished"
    assert report["items"] == 30 and report["rows_new"] == 30
    assert report["pages"] >= 30 + 7  # profiles + index + listings (+ robots.txt)
    assert report["settings"]["concurrency"] == 8 and report["settings"]["obey_robots"] is True
    assert report["pages_per_second"] > 0


def test_recrawl_keeps_rows_no_longer_found(site, crawled) -> None:
    data, server = site
    result, _, recipe, paths, _ = crawled
    gone = result.iloc[:1].copy()
    gone["item_id"], gone["page_url"], gone["last_seen"] = "gone0000gone0000", "http://old.test/p.html", "2020-01-01T00:00:00+00:00"
    previous = pd.concat([result, gone], ignore_index=True)
    previous.loc[previous["item_id"] == result["item_id"].iloc[1], "status"] = "excluded"
    moved = data.people[15]  # from Computer Science to Economics: its page changes (and so does its ETag)
    assert result.set_index("page_url").loc[server.url(f"/people/{moved.pid}.html"), "label"] == "cs"
    moved.dept_label = "Economics"
    page = data.routes[f"/people/{moved.pid}.html"]
    page.body, page.headers["ETag"] = sites.staff.profile_html(moved).encode(), '"moved"'
    server.clear_log()
    again = crawl.run(previous, recipe, paths)
    report = json.loads(paths.report_json("crawl").read_text())
    # a later build asks whether each page changed: unchanged pages answer 304, without a body
    assert report["pages_unchanged"] >= len(data.people) - 1
    assert again.set_index("page_url").loc[server.url(f"/people/{moved.pid}.html"), "label"] == "econ"
    assert set(again["item_id"]) == set(previous["item_id"])
    kept_gone = again.set_index("item_id").loc["gone0000gone0000"]
    assert kept_gone["last_seen"] == "2020-01-01T00:00:00+00:00" and kept_gone["name"] == gone["name"].iloc[0]
    assert again.set_index("item_id").loc[result["item_id"].iloc[1], "status"] == "excluded"
    assert (again.set_index("item_id").loc[list(result["item_id"]), "last_seen"] > "2021").all()
    mf.check_invariants(previous, again, "crawl")


def test_crawl_that_finds_nothing_says_what_to_check(site, tmp_path) -> None:
    _, server = site
    data = recipe_dict(server.base)
    data["sources"][0]["item"]["image"] = "img.no-such-class::attr(src)"
    recipe = parse_recipe(data, "test")
    with pytest.raises(FacesetError) as err:
        crawl.run(mf.empty(recipe.field_names), recipe, DatasetPaths.create(tmp_path))
    assert "found no images" in err.value.message and "selectors" in err.value.hint
    assert "item pages without an image" in err.value.message


def test_report_section_shows_unmapped_and_blocked(crawled) -> None:
    _, report, _, paths, _ = crawled
    fragment = sections.crawl(report, paths)
    assert "Astrology" in fragment and "/private/dept/1.html" in fragment and "<table>" in fragment


def test_unfinished_crawl_resumed_only_for_the_same_sources(tmp_path) -> None:
    paths = DatasetPaths.create(tmp_path)
    recipe = parse_recipe(recipe_dict("http://127.0.0.1:9"), "test")
    first = crawl.prepare_job(recipe, paths, date.today())
    assert first["cache_policy"] == "revalidate"  # a new crawl
    (crawl.crawl_state(paths) / "items.jsonl").write_text("{}\n")
    assert crawl.prepare_job(recipe, paths, date.today())["cache_policy"] == "replay"  # resumed
    changed = recipe_dict("http://127.0.0.1:9")
    changed["sources"][0]["item"]["image"] = "img.photo::attr(src)"
    again = crawl.prepare_job(parse_recipe(changed, "test"), paths, date.today())
    assert again["cache_policy"] == "revalidate"
    assert not (crawl.crawl_state(paths) / "items.jsonl").exists()

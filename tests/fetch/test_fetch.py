"""Fetch stage end to end: Scrapy's media pipeline in a child process against the fixture site."""

from __future__ import annotations

import hashlib
import json

import pytest
from sites.server import FixtureServer
from sites.staff import build, jpeg, recipe_dict

from spiders.pipelines import store_bytes
from tasks.crawl import stage as crawl
from tasks.fetch import stage as fetch
from tasks.core import manifest as mf
from tasks.core.paths import DatasetPaths
from tasks.core.recipe import parse_recipe
from tasks.report import sections


@pytest.fixture(scope="module")
def fetched(tmp_path_factory):
    data = build(30, per_page=5, tricky=True)
    server = FixtureServer(data.routes).start()
    recipe = parse_recipe(recipe_dict(server.base), "test")
    paths = DatasetPaths.create(tmp_path_factory.mktemp("fetch"))
    crawled = crawl.run(mf.empty(recipe.field_names), recipe, paths)
    server.clear_log()
    result = fetch.run(crawled, recipe, paths)
    report = json.loads(paths.report_json("fetch").read_text())
    yield data, server, recipe, paths, crawled, result, report
    server.stop()


def _row(result, server, person):
    return result.set_index("page_url").loc[server.url(f"/people/{person.pid}.html")]


def test_images_stored_by_sha256_with_original_bytes(fetched) -> None:
    data, server, _, paths, crawled, result, _ = fetched
    mf.check_invariants(crawled, result, "fetch")
    ok = result[result["status"] == "kept"]
    assert len(ok) == len(data.people) - 6  # 6 tricky images fail (see below)
    for _, row in ok.iterrows():
        served = data.routes[row["image_url"].removeprefix(server.base)].body
        if row["image_url"].endswith(f"/old/{data.person('redirect').pid}.jpg"):
            served = jpeg(2)
        assert row["sha256"] == hashlib.sha256(served).hexdigest()
        assert row["image_path"] == paths.image_file(row["sha256"], "jpg").relative_to(paths.root).as_posix()
        assert (paths.root / row["image_path"]).read_bytes() == served


@pytest.mark.parametrize(
    "case, reason",
    [
        ("broken", "not an image"),
        ("missing", "download failed: 404"),
        ("slow", "timeout"),
        ("robots_image", "blocked by robots.txt"),
        ("huge", "image too large"),
        ("bomb", "image too large"),  # small on the wire, too large once decompressed
    ],
)
def test_failures_keep_their_row_with_a_reason(fetched, case: str, reason: str) -> None:
    data, server, _, _, _, result, report = fetched
    row = _row(result, server, data.person(case))
    assert (row["status"], row["reason"]) == ("failed", reason)
    assert row["fetch_status"] == "failed"
    assert report["failure_reasons"][reason] >= 1


def test_redirect_followed_and_unmapped_row_still_downloaded(fetched) -> None:
    data, server, _, _, _, result, _ = fetched
    row = _row(result, server, data.person("redirect"))
    assert row["status"] == "kept" and row["sha256"] == hashlib.sha256(jpeg(2)).hexdigest()
    assert server.counts()[f"/img/{data.person('redirect').pid}.jpg"] == 1


def test_429_retried_after_the_retry_after_wait(fetched) -> None:
    data, server, _, _, _, result, _ = fetched
    row = _row(result, server, data.person("throttled"))
    assert row["status"] == "kept"
    times = [t for p, _, t in server.log if p == "/img/throttled.jpg"]
    assert len(times) == 2 and times[1] - times[0] >= 0.9  # Retry-After: 1


def test_no_disallowed_image_requested_and_report(fetched) -> None:
    data, server, _, _, _, _, report = fetched
    assert not [p for p in server.paths() if p.startswith("/private/")]
    assert report["downloaded"] == len(data.people) - 6 and report["failed"] == 6
    assert report["robots_blocked"] == [server.url(data.person("robots_image").image)]
    assert report["images_per_second"] > 0


def test_second_fetch_downloads_only_changed_images(fetched) -> None:
    data, server, recipe, paths, _, result, _ = fetched
    changed = data.people[20]
    data.routes[changed.image].body = jpeg(777)
    data.routes[changed.image].headers["ETag"] = '"changed"'
    server.clear_log()
    again = fetch.run(result, recipe, paths)
    report = json.loads(paths.report_json("fetch").read_text())
    assert report["downloaded"] == 1 and report["unchanged"] >= 20
    row = _row(again, server, changed)
    assert row["sha256"] == hashlib.sha256(jpeg(777)).hexdigest()
    unchanged = _row(again, server, data.people[21])
    assert unchanged["sha256"] == _row(result, server, data.people[21])["sha256"]
    assert unchanged["fetch_status"] == "unchanged"
    assert server.counts()[data.people[21].image] == 1  # one conditional request, answered 304


def test_report_section_lists_failure_reasons(fetched) -> None:
    _, _, _, paths, _, _, report = fetched
    fragment = sections.fetch(report, paths)
    assert "not an image" in fragment and "blocked by robots.txt" in fragment


def test_interrupted_fetch_requests_only_the_missing_rows(tmp_path) -> None:
    data = build(10, per_page=5)
    server = FixtureServer(data.routes).start()
    try:
        recipe = parse_recipe(recipe_dict(server.base), "test")
        paths = DatasetPaths.create(tmp_path)
        rows = mf.empty(recipe.field_names)
        for person in data.people:
            page, image = server.url(f"/people/{person.pid}.html"), server.url(person.image)
            rows.loc[len(rows), ["item_id", "source", "page_url", "image_url", "status"]] = [
                mf.item_id(page, image), "staffsite", page, image, "kept"]
        # what an interrupted run left: 4 images stored, their results appended
        state = paths.state / "fetch"
        state.mkdir(parents=True)
        with (state / "results.jsonl").open("w") as handle:
            for _, row in rows.iloc[:4].iterrows():
                body = data.routes[row["image_url"].removeprefix(server.base)].body
                digest, target = store_bytes(paths, body, "jpg")
                result = {"status": "downloaded", "checksum": digest, "path": target.relative_to(paths.root).as_posix()}
                handle.write(json.dumps({"item_id": row["item_id"], "image_url": row["image_url"], "result": result}) + "\n")
        result = fetch.run(rows, recipe, paths)
    finally:
        server.stop()
    images = [p for p in server.paths() if p.startswith("/img/")]
    assert sorted(images) == sorted(p.image for p in data.people[4:])
    assert result["sha256"].notna().all() and (result["status"] == "kept").all()
    assert not (state / "results.jsonl").exists()

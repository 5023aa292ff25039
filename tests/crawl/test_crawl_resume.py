"""An interrupted crawl, started again, finishes without fetching any page twice."""

from __future__ import annotations

import json
import signal
import time
from datetime import date
from pathlib import Path

import pytest
from sites.server import FixtureServer
from sites.staff import build, recipe_dict

from spiders.launch import start_job
from tasks.crawl import stage as crawl
from tasks.core import manifest as mf
from tasks.core.paths import DatasetPaths
from tasks.core.recipe import parse_recipe

PEOPLE = 40


def _interrupt_then_resume(tmp_path: Path, sig: signal.Signals):
    data = build(PEOPLE, per_page=5, page_delay=0.1)
    server = FixtureServer(data.routes).start()
    try:
        recipe = parse_recipe(recipe_dict(server.base, concurrency=1, autothrottle=False), "test")
        paths = DatasetPaths.create(tmp_path)
        job = crawl.prepare_job(recipe, paths, date.today())
        proc = start_job(job, crawl.crawl_state(paths))
        items = Path(job["items_file"])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if items.is_file() and len(items.read_text().splitlines()) >= 8:
                break
            time.sleep(0.1)
        proc.send_signal(sig)
        proc.wait(timeout=60)
        first = server.counts()
        found_first = len(items.read_text().splitlines())
        assert 8 <= found_first < PEOPLE, "the crawl was not interrupted half-way"
        result = crawl.run(mf.empty(recipe.field_names), recipe, paths)
        report = json.loads(paths.report_json("crawl").read_text())
    finally:
        server.stop()
    return data, server, result, report, first


def _assert_complete_without_refetch(data, server, result, first, in_flight: int = 0) -> None:
    """Every profile found; no page fetched twice, except `in_flight` pages a kill cut off mid-response."""
    assert sorted(result["page_url"]) == sorted(server.url(f"/people/{p.pid}.html") for p in data.people)
    counts = server.counts()
    pages = [p for p in counts if p != "/robots.txt"]
    twice = {p: counts[p] for p in pages if counts[p] > 1}
    assert len(twice) <= in_flight and all(n == 2 for n in twice.values()), f"pages fetched again after the resume: {twice}"
    assert any(first[p] for p in pages) and any(counts[p] > first[p] for p in pages)
    assert server.max_active == 1  # the recipe's concurrency: 1 request at a time per domain


@pytest.mark.slow
def test_ctrl_c_then_resume_with_jobdir(tmp_path) -> None:
    data, server, result, report, first = _interrupt_then_resume(tmp_path, signal.SIGINT)
    _assert_complete_without_refetch(data, server, result, first)
    assert report["finish_reason"] == "finished"


@pytest.mark.slow
def test_killed_crawl_resumes_from_its_page_cache(tmp_path) -> None:
    data, server, result, report, first = _interrupt_then_resume(tmp_path, signal.SIGKILL)
    # concurrency is 1: at most the one page being received when the process died is fetched again
    _assert_complete_without_refetch(data, server, result, first, in_flight=1)
    assert report["pages_from_resume_cache"] > 0

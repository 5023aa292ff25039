"""State a build reads back (a stage's cache record, row-cache parts, stage reports, the faces
cache, the crawl's start time, the takedown hash cache), cut short: the next run goes on,
doing that work again, and a warning names the file."""

from __future__ import annotations

import io
import json
import logging
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from builders import make_recipe
from fakes.detectors import ScriptedDetector
from PIL import Image

from flows.caching import RowCache, StageCache
from tasks.core import manifest as mf
from tasks.core import takedown
from tasks.core.parallel import serial_mapper
from tasks.core.paths import DatasetPaths
from tasks.core.reports import read_report, write_report
from tasks.crawl import stage as crawl
from tasks.faces import stage as faces


@pytest.fixture
def paths(tmp_path: Path) -> DatasetPaths:
    return DatasetPaths.create(tmp_path / "ds")


def halve(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def warned(caplog: pytest.LogCaptureFixture, path: Path) -> bool:
    return any(str(path) in record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING)


def test_a_half_cache_record_runs_the_stage_again(paths: DatasetPaths, caplog: pytest.LogCaptureFixture) -> None:
    cache, output = StageCache(paths), paths.stage_manifest("dedupe")
    mf.write(mf.empty(), output, csv=False)
    cache.store("dedupe", "key-1", output)
    assert cache.holds("dedupe", "key-1") and not cache.holds("dedupe", "key-2")
    record = paths.state_folder("cache") / "dedupe.json"
    halve(record)
    with caplog.at_level(logging.WARNING):
        assert not cache.holds("dedupe", "key-1")
    assert warned(caplog, record)
    cache.store("dedupe", "key-1", output)  # the stage ran again
    assert cache.holds("dedupe", "key-1")


def test_a_half_row_cache_part_loses_only_its_rows(paths: DatasetPaths, caplog: pytest.LogCaptureFixture) -> None:
    rows = RowCache(paths, "faces")
    rows.add(pd.DataFrame({"_faceset_row_key": ["a", "b"], "item_id": ["1", "2"]}))
    rows.add(pd.DataFrame({"_faceset_row_key": [f"k{n}" for n in range(300)], "item_id": [str(n) for n in range(300)]}))
    damaged = sorted(paths.state_folder("rows").glob("faces/*.parquet"))[-1]
    halve(damaged)
    with caplog.at_level(logging.WARNING):
        assert sorted(rows.load()["_faceset_row_key"]) == ["a", "b"]
    assert warned(caplog, damaged)


def test_a_half_stage_report_reads_as_absent(paths: DatasetPaths, caplog: pytest.LogCaptureFixture) -> None:
    write_report(paths, "split", {"counts": {"train": 70, "val": 20, "test": 10}, "warnings": ["x" * 100]})
    assert read_report(paths, "split")["counts"]["train"] == 70
    halve(paths.report_json("split"))
    with caplog.at_level(logging.WARNING):
        assert read_report(paths, "split") is None
    assert warned(caplog, paths.report_json("split"))


def test_a_half_faces_cache_file_looks_at_the_image_again(paths: DatasetPaths, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(0)
    pixels = np.kron(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), np.ones((4, 4, 1), np.uint8))
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=92)
    target = paths.image_file("ab" * 32, "jpg")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(buffer.getvalue())
    frame = mf.conform(pd.DataFrame([{"item_id": "a", "status": "kept", "sha256": "ab" * 32,
                                      "image_path": str(target.relative_to(paths.root))}]), ["label"])
    recipe = make_recipe("faces-state", fields=("label",))
    detector = ScriptedDetector()
    first = faces.run(frame, recipe, paths, detector=detector, mapper=serial_mapper)
    cached = next(paths.state_folder("faces").glob("*.json"))
    halve(cached)
    with caplog.at_level(logging.WARNING):
        again = faces.run(frame, recipe, paths, detector=detector, mapper=serial_mapper)
    assert warned(caplog, cached) and len(detector.seen) == 2  # detected again, not failed
    assert again.loc[0, "status"] == first.loc[0, "status"] == "kept"
    assert again.loc[0, "face_box"] == first.loc[0, "face_box"]
    assert isinstance(json.loads(cached.read_text()), dict)  # written whole again


def test_a_half_crawl_start_time_starts_the_crawl_afresh(paths: DatasetPaths, caplog: pytest.LogCaptureFixture) -> None:
    recipe = make_recipe("crawl-state")
    first = crawl.prepare_job(recipe, paths, date(2026, 1, 1))
    assert first["cache_policy"] == "revalidate"
    started = crawl.crawl_state(paths) / "started"
    assert crawl.prepare_job(recipe, paths, date(2026, 1, 1))["cache_policy"] == "replay"  # an unfinished crawl resumes
    started.write_text("")  # cut to nothing by a crash
    with caplog.at_level(logging.WARNING):
        job = crawl.prepare_job(recipe, paths, date(2026, 1, 1))
    assert warned(caplog, started) and job["cache_policy"] == "revalidate"
    assert float(started.read_text())  # a fresh start time


def test_a_half_takedown_hash_cache_hashes_again(paths: DatasetPaths, caplog: pytest.LogCaptureFixture,
                                                 tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    picture = tmp_path / "remove-me.png"
    Image.fromarray(np.kron(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), np.ones((16, 16, 1), np.uint8))).save(picture)
    stored = paths.image_file("cd" * 32, "png")
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_bytes(picture.read_bytes())
    frame = mf.conform(pd.DataFrame([{"item_id": "a", "status": "kept", "image_path": str(stored.relative_to(paths.root))},
                                     {"item_id": "b", "status": "kept"}]))
    entries = [takedown.make_entry(str(picture))]
    assert takedown.apply(frame, paths, entries).loc[0, "status"] == "excluded"
    cache = paths.state / takedown.PHASH_CACHE
    stored.write_bytes(picture.read_bytes())  # apply deleted it; the next build fetches it again
    halve(cache)
    with caplog.at_level(logging.WARNING):
        out = takedown.apply(frame, paths, entries)
    assert warned(caplog, cache) and out.loc[0, "status"] == "excluded" and out.loc[1, "status"] == "kept"

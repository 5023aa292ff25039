"""The build flow with small fake stages (tests/fakes/flow_stages.py): real Prefect flow runs, real files.

What is checked: an unchanged re-run runs no stage; a changed recipe section re-runs that
stage and the ones after it only; a re-crawl that adds 10 images makes the per-image
stages process those 10; --rebuild and --from; failures name the stage and the item; the
UI gets its artifacts.
"""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import pandas as pd
import pytest
from fakes import flow_stages as fakes

from flows.build import StageFailed, build
from tasks.core import manifest as mf
from tasks.core.errors import FacesetError
from tasks.core.recipe import STAGES

FAKES = "fakes.flow_stages:stages"
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("prefect_server")


class Site:
    """A fake site, a recipe and a data root in tmp_path, with the log of what the stages did."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int = 20, name: str = "fakeset"):
        self.tmp = tmp_path
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.site = tmp_path / "site.json"
        self.log = tmp_path / "calls.log"
        self.data = tmp_path / "data"
        monkeypatch.setenv("FACESET_TEST_SITE", str(self.site))
        monkeypatch.setenv("FACESET_TEST_LOG", str(self.log))
        monkeypatch.setenv("FACESET_WORKERS", "1")
        fakes.write_site(self.site, count)
        self.recipe = fakes.write_recipe(tmp_path, name)

    def build(self, **kwargs) -> Path:
        if self.log.exists():
            self.log.unlink()
        return build(self.recipe, data_root=self.data, stages=FAKES, **kwargs)

    def calls(self) -> collections.Counter:
        """How often each stage ran, and (for per-image stages) how many rows it processed."""
        lines = self.log.read_text().split("\n") if self.log.exists() else []
        return collections.Counter(line.split(" ")[0] for line in lines if line)


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("item_id").reset_index(drop=True).astype("string")


def test_unchanged_rebuild_runs_no_stage(tmp_path, monkeypatch):
    site = Site(tmp_path, monkeypatch)
    root = site.build()
    assert root == (site.data / "fakeset").resolve()
    first = mf.read(root / "manifest.parquet")
    assert len(first) == 20 and (root / "manifest.csv").is_file()
    calls = site.calls()
    assert calls["faces-row"] == 20 and calls["crawl"] == 1 and calls["report"] == 1
    assert calls["crosscheck-row"] == int((first["status"] == "kept").sum()) == 17
    for stage in STAGES:
        assert (root / ".faceset" / "stages" / f"{stage}.parquet").is_file()

    site.build()
    assert site.calls() == collections.Counter()
    pd.testing.assert_frame_equal(comparable(first), comparable(mf.read(root / "manifest.parquet")))


def test_changed_section_reruns_that_stage_and_later_only(tmp_path, monkeypatch):
    site = Site(tmp_path, monkeypatch)
    site.build()
    site.recipe.write_text(site.recipe.read_text().replace("finetune: {epochs: 1}", "finetune: {epochs: 1}\nsplit: {seed: 99}"))
    site.build()
    assert set(site.calls()) == {"split", "export", "finetune", "report"}

    site.recipe.write_text(site.recipe.read_text().replace("finetune: {epochs: 1}", "finetune: {epochs: 2}"))
    site.build()
    assert set(site.calls()) == {"finetune", "report"}


def test_recrawl_adding_ten_images_processes_those_ten(tmp_path, monkeypatch):
    site = Site(tmp_path, monkeypatch)
    root = site.build()
    site.build(recrawl=True)  # the site did not change: crawl runs, nothing after it has new work,
    assert site.calls() == collections.Counter({"crawl": 1, "report": 1})  # but the report shows the new crawl's figures

    fakes.write_site(site.site, 30)  # ten more images appeared
    site.build(recrawl=True)
    calls = site.calls()
    assert calls["crawl"] == calls["fetch"] == calls["dedupe"] == 1
    assert calls["faces-row"] == 10
    manifest = mf.read(root / "manifest.parquet")
    assert len(manifest) == 30
    new_kept = [f"http://site/img/{i}.jpg" for i in range(20, 30) if i % 7 != 3]
    assert calls["crosscheck-row"] == len(new_kept)
    assert manifest.loc[manifest["status"] == "kept", "crosscheck"].eq("agree").all()

    # the same manifest as a build that saw all 30 images at once
    fresh = Site(tmp_path / "fresh", monkeypatch, count=30)
    reference = mf.read(fresh.build() / "manifest.parquet")
    pd.testing.assert_frame_equal(comparable(manifest), comparable(reference))


def test_rebuild_and_from_stage(tmp_path, monkeypatch):
    site = Site(tmp_path, monkeypatch)
    site.build()
    site.build(from_stage="dedupe")
    calls = site.calls()
    assert {"crawl", "fetch", "faces-row"}.isdisjoint(calls)
    assert calls["dedupe"] == 1 and calls["crosscheck-row"] == 17 and calls["report"] == 1

    site.build(rebuild=True)
    calls = site.calls()
    assert calls["crawl"] == 1 and calls["faces-row"] == 20 and calls["report"] == 1

    with pytest.raises(FacesetError, match="not a stage"):
        site.build(from_stage="nonsense")


def test_deleted_output_file_is_redone(tmp_path, monkeypatch):
    site = Site(tmp_path, monkeypatch)
    root = site.build()
    crops = sorted((root / "faces").glob("*.jpg"))
    crops[0].unlink()
    site.build(from_stage="faces")  # --from faces redoes faces entirely
    assert site.calls()["faces-row"] == 20
    assert crops[0].is_file()


def test_failure_names_stage_and_item_and_resumes(tmp_path, monkeypatch):
    site = Site(tmp_path, monkeypatch)
    broken = "http://site/img/5.jpg"
    monkeypatch.setenv("FACESET_TEST_BROKEN", broken)
    with pytest.raises(StageFailed) as error:
        site.build()
    message = str(error.value)
    assert "stage 'faces'" in message and broken in message and "cannot read JPEG header" in message
    assert "what to do:" in message

    from prefect.client.orchestration import get_client

    async def last_state():
        async with get_client() as client:
            runs = await client.read_flow_runs(limit=5, sort="START_TIME_DESC")
            return [(r.state.type.value, r.state.message) for r in runs if r.state and r.state.is_failed()]

    failed = asyncio.run(last_state())
    assert any("faces" in (m or "") and broken in (m or "") for _, m in failed), failed

    monkeypatch.delenv("FACESET_TEST_BROKEN")
    site.build()
    calls = site.calls()
    assert "crawl" not in calls and "fetch" not in calls  # finished stages were not redone
    assert calls["faces-row"] < 20  # the batches that had finished before the failure are kept


def test_artifacts_tell_the_story(tmp_path, monkeypatch):
    site = Site(tmp_path, monkeypatch, name="storyset")
    site.build()
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def artifacts():
        async with get_client() as client:
            found = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_="storyset")))
            return {a.key: a for a in found}

    found = asyncio.run(artifacts())
    for stage in STAGES:
        assert f"storyset-{stage}" in found, sorted(found)
    faces = found["storyset-faces"].data
    assert "| no face | 3 |" in faces and "| kept | 17 |" in faces
    assert found["storyset-faces-progress"].type == "progress"
    assert float(found["storyset-faces-progress"].data) == 100.0
    link = found["storyset-report-link"]
    assert "report.html" in str(link.data)


def test_partial_files_are_removed_on_restart(tmp_path, monkeypatch):
    site = Site(tmp_path, monkeypatch)
    root = site.build()
    leftover = root / "faces" / ".half-written.jpg.tmp"
    leftover.write_bytes(b"half")
    site.build()
    assert not leftover.exists()
    assert not list(root.rglob("*.tmp"))


def test_stage_registry_imports_real_stage_modules():
    from flows.build import StageRegistry

    registry = StageRegistry({"crawl": "fake"})
    assert registry["crawl"] == "fake"
    assert list(registry) == list(STAGES)
    assert registry["faces"].__name__ == "tasks.faces"


def test_code_version_follows_imports_without_importing(tmp_path):
    from flows.caching import code_files, code_version, module_files

    tasks = REPO / "tasks"
    faces = {p.relative_to(tasks).as_posix() for p in code_files(module_files("tasks.faces"), "faces")}
    assert {"faces/stage.py", "vision/decode.py", "vision/detector.py", "core/manifest.py"} <= faces
    assert not any(p.startswith(("crawl/", "report/", "dedupe/")) for p in faces)
    crawl = {p.relative_to(REPO).as_posix() for p in code_files(module_files("tasks.crawl"), "crawl")}
    assert "spiders/settings.py" in crawl  # Scrapy runs the spiders in a subprocess: still the crawl's code
    report = {p.relative_to(tasks).as_posix() for p in code_files(module_files("tasks.report"), "report")}
    assert "report/sections.py" in report and not any(p.startswith("faces/") for p in report)

    stage = tmp_path / "my_stage.py"
    stage.write_text("from tasks.core import manifest\n\ndef run(manifest, recipe, paths):\n    return manifest\n")
    before = code_version("faces", [stage])
    assert code_version("faces", [stage]) == before
    stage.write_text(stage.read_text() + "# a change\n")
    assert code_version("faces", [stage]) != before


def test_dry_run_stops_after_dedupe_and_prints_the_cost(tmp_path, monkeypatch, capsys):
    site = Site(tmp_path, monkeypatch)
    root = site.build(dry_run=True)
    calls = site.calls()
    assert calls["dedupe"] == 1 and "crosscheck-row" not in calls and "report" not in calls
    assert not (root / ".faceset" / "stages" / "crosscheck.parquet").exists()
    out = capsys.readouterr().out
    assert "the cross-check would make" in out and "calls: 0" in out

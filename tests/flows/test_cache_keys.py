"""Cache keys follow the layout: a stage re-runs for its own code, the core and vision code it
uses, its recipe section and its inputs, and for nothing else.

The code side is checked on a copy of the source tree (edits there, keys computed from it);
the data side with real flow runs of the fake stages: a stage that re-runs and writes the
same manifest leaves every later stage cached.
"""

from __future__ import annotations

import collections
import shutil
from pathlib import Path

import pytest

from fakes import flow_stages as fakes
from flows import caching
from flows.build import build
from tasks.core.recipe import STAGES

REPO = Path(__file__).resolve().parents[2]
FAKES = "fakes.flow_stages:stages"


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of tasks/ and spiders/ that caching reads instead of the repository."""
    for top in ("tasks", "spiders"):
        shutil.copytree(REPO / top, tmp_path / top, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(caching, "REPO", tmp_path)
    return tmp_path


def versions() -> dict[str, str]:
    return {s: caching.code_version(s, caching.module_files(f"tasks.{s}")) for s in STAGES}


def changed_after(tree: Path, relative: str) -> set[str]:
    before = versions()
    target = tree / relative
    target.write_text(target.read_text(encoding="utf-8") + "\n# an edit\n", encoding="utf-8")
    after = versions()
    return {s for s in STAGES if before[s] != after[s]}


def test_editing_the_report_re_runs_the_report_only(tree: Path) -> None:
    presentation = sorted((tree / "tasks" / "report").rglob("*.j2")) or [tree / "tasks" / "report" / "sections.py"]
    assert changed_after(tree, str(presentation[0].relative_to(tree))) == {"report"}


def test_editing_another_stage_leaves_crawl_faces_and_finetune_cached(tree: Path) -> None:
    assert changed_after(tree, "tasks/dedupe/stage.py") == {"dedupe"}
    assert changed_after(tree, "tasks/split/assign.py") == {"split"}


def test_editing_a_stage_re_runs_that_stage(tree: Path) -> None:
    assert changed_after(tree, "tasks/faces/stage.py") == {"faces"}
    # Scrapy runs both spiders from one entry point, so fetch re-runs too; its output is the same,
    # so faces and every later stage stay cached (see the last test).
    assert changed_after(tree, "spiders/extract.py") == {"crawl", "fetch"}


def test_shared_code_re_runs_the_stages_that_use_it(tree: Path) -> None:
    assert changed_after(tree, "tasks/core/recipe.py") == set(STAGES)
    # union-find groups duplicates (dedupe), the split's groups and reviewers' identity decisions (crosscheck)
    assert changed_after(tree, "tasks/core/unionfind.py") == {"dedupe", "crosscheck", "split"}
    uses_detector = changed_after(tree, "tasks/vision/detector.py")
    assert "faces" in uses_detector and "crawl" not in uses_detector and "finetune" in uses_detector


@pytest.mark.usefixtures("prefect_server")
def test_a_stage_that_re_runs_with_the_same_output_leaves_later_stages_cached(tmp_path, monkeypatch) -> None:
    log = tmp_path / "calls.log"
    monkeypatch.setenv("FACESET_TEST_LOG", str(log))
    monkeypatch.setenv("FACESET_TEST_SITE", str(tmp_path / "site.json"))
    fakes.write_site(tmp_path / "site.json", 12)
    recipe = fakes.write_recipe(tmp_path)
    root = build(recipe, data_root=tmp_path / "data", stages=FAKES)
    log.write_text("")
    (root / ".faceset" / "cache" / "dedupe.json").unlink()  # as if dedupe's code had changed
    build(recipe, data_root=tmp_path / "data", stages=FAKES)
    calls = collections.Counter(line.split()[0] for line in log.read_text().splitlines())
    assert calls == collections.Counter({"dedupe": 1})

"""`faceset build --until STAGE`: a real flow run that stops after the stage, then resumes."""

from __future__ import annotations

import collections
import io

import pytest
from fakes import flow_stages as fakes

from flows import progress
from flows.build import build
from flows.cli import main
from flows.commands.build import summary
from tasks.core.errors import FacesetError
from tasks.core.recipe import STAGES

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]


def _calls(log) -> collections.Counter:
    lines = log.read_text().split("\n") if log.exists() else []
    return collections.Counter(line.split(" ")[0] for line in lines if line)


def test_until_stops_after_the_stage_and_the_next_build_goes_on(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FACESET_TEST_SITE", str(tmp_path / "site.json"))
    monkeypatch.setenv("FACESET_TEST_LOG", str(log := tmp_path / "calls.log"))
    monkeypatch.setenv("FACESET_WORKERS", "1")
    fakes.write_site(tmp_path / "site.json", 8)
    recipe = fakes.write_recipe(tmp_path)
    console = io.StringIO()
    with progress.showing(progress.ConsoleProgress(console)):
        root = build(recipe, data_root=tmp_path / "data", stages="fakes.flow_stages:stages", until="faces")
    lines = console.getvalue().splitlines()
    assert [line.split()[1].rstrip(":") for line in lines] == ["started", "ran"] * 3
    assert [line.split()[0] for line in lines] == [s for s in ("crawl", "fetch", "faces") for _ in (1, 2)]
    assert lines[0] == "crawl      started: 0 rows in"
    assert lines[-1].startswith("faces      ran in ") and lines[-1].endswith(" s: 8 rows in, 8 out, 7 kept, 1 quarantined")
    assert summary(root, str(tmp_path / "data"), "faces")[1:] == [
        "rows: 7 kept, 0 flagged for review, 1 quarantined", f"manifest: {root / 'manifest.parquet'}",
        f"stopped after faces (--until); the stage reports are in {root / 'reports'}",
        "check: 1 images had no face the detector could find (is the item image selector picking portraits? see "
        "the faces section of the report)"]
    ran = {stage for stage in _calls(log) if not stage.endswith("-row")}
    assert ran == {"crawl", "fetch"} and _calls(log)["faces-row"] == 8
    stages = root / ".faceset" / "stages"
    assert sorted(p.stem for p in stages.glob("*.parquet")) == sorted(["crawl", "fetch", "faces"])
    assert not (root / "reports" / "report.html").exists()

    log.unlink()
    build(recipe, data_root=tmp_path / "data", stages="fakes.flow_stages:stages")
    calls = _calls(log)
    assert "crawl" not in calls and "faces-row" not in calls, "the stages run before were cached"
    assert calls["dedupe"] == 1 and calls["report"] == 1
    assert sorted(p.stem for p in stages.glob("*.parquet")) == sorted(STAGES)


def test_until_before_from_is_refused(tmp_path, capsys) -> None:
    recipe = fakes.write_recipe(tmp_path)
    with pytest.raises(FacesetError, match="--until crawl comes before --from faces"):
        build(recipe, data_root=tmp_path / "data", from_stage="faces", until="crawl")
    with pytest.raises(SystemExit):
        main(["build", str(recipe), "--until", "nothing"])
    assert "invalid choice: 'nothing'" in capsys.readouterr().err

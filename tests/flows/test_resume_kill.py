"""Resume: SIGKILL a real build process at several points, run it again, get the same dataset.

The build runs in a subprocess (the same `flows.build.build` the CLI calls) with slowed
fake stages, against the session's Prefect server. It is killed in the middle of the
per-image `faces` stage, in the middle of `crosscheck`, inside `finetune`, and then run
to the end. The final manifest must equal an uninterrupted build's, no stage that had
finished may run again, a per-image stage may redo at most the batch in flight at the
kill, and no temporary file may be left behind.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from fakes import flow_stages as fakes
from tasks.core import manifest as mf

FAKES = "fakes.flow_stages:stages"
REPO = Path(__file__).resolve().parents[2]
DRIVER = """
import sys
import flows.build
flows.build.ROW_FLUSH_SECONDS = 0  # save every finished batch, so the kill points below are exact
flows.build.build(sys.argv[1], data_root=sys.argv[2], stages="fakes.flow_stages:stages")
print("BUILD DONE")
"""


def _env(tmp_path: Path, api_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]),
        PREFECT_API_URL=api_url,
        FACESET_TEST_SITE=str(tmp_path / "site.json"),
        FACESET_TEST_LOG=str(tmp_path / "calls.log"),
        FACESET_TEST_SLEEP="0.15",
        FACESET_TEST_PAUSE="finetune",
        FACESET_WORKERS="1",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    return env


def _calls(log: Path) -> collections.Counter:
    lines = log.read_text().split("\n") if log.exists() else []
    return collections.Counter(line.split(" ")[0] for line in lines if line)


def _run_until(command: list[str], env: dict[str, str], log: Path, stage: str, count: int, out: Path) -> None:
    """Start a build; SIGKILL it once the log shows `count` more `stage` lines than before."""
    start = _calls(log)[stage]
    with open(out, "a") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, cwd=REPO)
    deadline = time.monotonic() + 240
    while _calls(log)[stage] < start + count:
        if process.poll() is not None:
            pytest.fail(f"the build ended before reaching {stage}: see {out}:\n{out.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the build did not reach {stage} in time: {out.read_text()[-3000:]}")
        time.sleep(0.05)
    process.kill()  # SIGKILL: no cleanup handler runs
    process.wait()


@pytest.mark.slow
def test_build_killed_at_several_points_resumes_identically(tmp_path, prefect_server, monkeypatch):
    from prefect.settings import PREFECT_API_URL

    fakes.write_site(tmp_path / "site.json", 20)
    recipe = fakes.write_recipe(tmp_path)
    data = tmp_path / "data"
    env = _env(tmp_path, PREFECT_API_URL.value())
    log, out = tmp_path / "calls.log", tmp_path / "build-output.txt"
    command = [sys.executable, "-c", DRIVER, str(recipe), str(data)]

    _run_until(command, env, log, "faces-row", 6, out)  # in the middle of faces
    _run_until(command, env, log, "crosscheck-row", 5, out)  # in the middle of crosscheck
    _run_until(command, env, log, "finetune", 1, out)  # inside finetune (it pauses there)
    finished = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                              timeout=240)
    assert "BUILD DONE" in finished.stdout, finished.stdout[-3000:]

    calls = _calls(log)
    assert calls["crawl"] == calls["fetch"] == calls["dedupe"] == 1  # finished before the first kill
    assert calls["split"] == calls["export"] == calls["report"] == 1
    assert calls["finetune"] == 2  # killed once inside, then done
    assert 20 <= calls["faces-row"] <= 20 + 4  # at most the batch in flight at the kill (4 rows) again
    assert 17 <= calls["crosscheck-row"] <= 17 + 8

    root = data / "fakeset"
    assert not list(root.rglob("*.tmp")), "a temporary file was left behind"
    resumed = mf.read(root / "manifest.parquet")

    monkeypatch.setenv("FACESET_TEST_SITE", str(tmp_path / "site.json"))
    monkeypatch.setenv("FACESET_TEST_LOG", str(tmp_path / "reference.log"))
    monkeypatch.setenv("FACESET_WORKERS", "1")
    from flows.build import build

    reference = mf.read(build(recipe, data_root=tmp_path / "reference", stages=FAKES) / "manifest.parquet")

    def comparable(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.sort_values("item_id").reset_index(drop=True).astype("string")

    pd.testing.assert_frame_equal(comparable(resumed), comparable(reference))
    for name in ("manifest.csv", "reports/faces.json", "reports/report.html"):
        assert (root / name).is_file()
    crops = sorted(p.name for p in (root / "faces").iterdir())
    assert crops == sorted(p.name for p in (tmp_path / "reference" / "fakeset" / "faces").iterdir())

"""Two fresh builds of one unchanged site give the same dataset (issue 18, defect 11).

A staff directory of 40 profiles with real faces (UTKFace, from the shared corpus) is
crawled with 16 requests at a time, so pages arrive in a different order each time. One
build runs through; the other is SIGKILLed (with its crawl process) half-way through the
crawl and run again. Real stages from crawl to export (no cross-check tagger, no
fine-tune). The manifests must be equal row for row, order included, except clock times,
and the split folders file for file.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sites.server import FixtureServer, Route
from sites.staff import build as staff_site
from sites.staff import recipe_dict

from tasks.core import manifest as mf

REPO = Path(__file__).resolve().parents[2]
PEOPLE = 40
CLOCK_COLUMNS = {"crawled_at", "last_seen", "fetched_at", "faces_ms"}
DRIVER = """
import sys
import flows.build
flows.build.build(sys.argv[1], data_root=sys.argv[2])
print("BUILD DONE")
"""


def _site(utkface_dir: Path):
    """The staff site with a real face per profile; the last profile reuses the one before's photo."""
    data = staff_site(PEOPLE, per_page=4, page_delay=0.3)
    faces = sorted(utkface_dir.glob("*.jpg"))[:PEOPLE]
    for person, face in zip(data.people, faces):
        data.routes[person.image] = Route(face.read_bytes(), "image/jpeg")
    data.routes[data.people[-1].image] = Route(faces[-2].read_bytes(), "image/jpeg")
    return data


def _recipe(tmp_path: Path, base: str) -> Path:
    spec = recipe_dict(base, concurrency=16, autothrottle=False)
    spec.update(crosscheck={"autotagger": "none"}, finetune="none", split={"stratify": ["label", "gender"], "seed": 5})
    path = tmp_path / "staff.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _env(api_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(REPO), PREFECT_API_URL=api_url, PREFECT_LOGGING_LEVEL="WARNING", FACESET_WORKERS="2")
    return env


def _build(recipe: Path, data: Path, env: dict[str, str], log: Path) -> None:
    with open(log, "a") as output:
        done = subprocess.run([sys.executable, "-c", DRIVER, str(recipe), str(data)], env=env, cwd=REPO,
                              stdout=output, stderr=subprocess.STDOUT, timeout=400)
    assert done.returncode == 0, log.read_text()[-3000:]


def _build_killed_half_way(recipe: Path, data: Path, env: dict[str, str], log: Path) -> int:
    """Start a build and SIGKILL it, crawl process included, once the crawl has found some items."""
    items = data / "staff" / ".faceset" / "crawl" / "items.jsonl"
    with open(log, "a") as output:
        process = subprocess.Popen([sys.executable, "-c", DRIVER, str(recipe), str(data)], env=env, cwd=REPO,
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    found = 0
    while found < 8:
        assert process.poll() is None, f"the build ended before it was killed: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "the crawl found nothing in time"
        time.sleep(0.05)
        found = len(items.read_text().splitlines()) if items.is_file() else 0
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return found


def _comparable(root: Path) -> pd.DataFrame:
    frame = mf.read(root / "manifest.parquet")
    return frame.drop(columns=sorted(CLOCK_COLUMNS & set(frame.columns))).astype("string")


def _tree(root: Path) -> dict[str, str]:
    """Every file and folder under splits/, with a digest of each file."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted((root / "splits").rglob("*"))}


@pytest.mark.slow
def test_two_fresh_builds_one_killed_and_resumed_give_the_same_dataset(tmp_path, utkface_dir, prefect_server):
    from prefect.settings import PREFECT_API_URL

    data = _site(utkface_dir)
    server = FixtureServer(data.routes).start()
    try:
        recipe = _recipe(tmp_path, server.base)
        env = _env(PREFECT_API_URL.value())
        found = _build_killed_half_way(recipe, tmp_path / "resumed", env, tmp_path / "resumed.log")
        assert found < PEOPLE, "the crawl ended before the kill"
        _build(recipe, tmp_path / "resumed", env, tmp_path / "resumed.log")
        _build(recipe, tmp_path / "fresh", env, tmp_path / "fresh.log")
    finally:
        server.stop()
    assert server.max_active > 1  # pages did arrive concurrently

    resumed, fresh = tmp_path / "resumed" / "staff", tmp_path / "fresh" / "staff"
    first, second = _comparable(resumed), _comparable(fresh)
    assert first["item_id"].tolist() == sorted(first["item_id"])
    pd.testing.assert_frame_equal(first, second)
    kept = first[first["status"] == "kept"]
    assert len(kept) >= PEOPLE // 2
    assert (pd.crosstab(kept["label"], kept["split"])[["train", "val", "test"]] > 0).all(axis=None)
    assert first["dup_group"].nunique() < first["dup_group"].notna().sum()  # the repeated photo: a group
    assert _tree(resumed) == _tree(fresh)
    assert "splits/classes.json" in _tree(fresh)

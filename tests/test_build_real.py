"""The real stages end to end through the build flow, then `faceset build` on the same recipe: all cached.

A small demo site (real UTKFace portraits served on 127.0.0.1) is crawled, downloaded,
cropped, deduplicated, cross-checked, split, exported, fine-tuned (1 epoch) and reported
on; running the command again must run no stage and leave the manifest as it was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tasks import manifest as mf
from tasks.recipe import STAGES

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_real_build_then_cached_cli_rerun(tmp_path, utkface_dir, prefect_server):
    from prefect.settings import PREFECT_API_URL

    from flows.build import build
    from flows.demo_site import DemoServer, build_site, recipe_text

    site = build_site(utkface_dir, limit=10)
    data = tmp_path / "data"
    with DemoServer(site) as server:
        recipe = tmp_path / "real.yaml"
        recipe.write_text(recipe_text(site, server.url, name="realset", epochs=1))
        root = build(recipe, data_root=data)
        first = mf.read(root / "manifest.parquet")
        records = {s: json.loads((root / ".faceset" / "cache" / f"{s}.json").read_text()) for s in STAGES}
        stamps = {s: (root / ".faceset" / "cache" / f"{s}.json").stat().st_mtime_ns for s in STAGES}

        env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value())
        cli = subprocess.run([sys.executable, "-m", "flows.cli", "build", str(recipe), "--data-root", str(data)],
                             env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert cli.returncode == 0, cli.stdout[-3000:]
    assert f"dataset: {root}" in cli.stdout and "report:" in cli.stdout

    assert (first["status"] == "kept").sum() >= 5
    assert first["face_path"].notna().sum() >= 5 and first["split"].notna().any()
    assert (root / "reports" / "report.html").is_file() and (root / "reports" / "finetune.json").is_file()
    for stage in STAGES:  # no stage ran again: every cache record is the one the first build wrote
        assert (root / ".faceset" / "cache" / f"{stage}.json").stat().st_mtime_ns == stamps[stage], stage
        assert json.loads((root / ".faceset" / "cache" / f"{stage}.json").read_text()) == records[stage]
    pd.testing.assert_frame_equal(first, mf.read(root / "manifest.parquet"))

"""What `faceset build` prints: a line per stage, and an error as one message with what to do,
its traceback only with -v (run as a user runs it, in a subprocess, against the session's
Prefect server)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from builders import recipe_data
from sites.server import FixtureServer, Route

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]


def _faceset(*args: str) -> subprocess.CompletedProcess:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def test_a_failing_build_says_it_once_without_traceback_unless_verbose(tmp_path) -> None:
    server = FixtureServer({"/": Route(b"<h1>Staff</h1><p>No pictures here.</p>")}).start()
    try:
        recipe = tmp_path / "empty.yaml"
        recipe.write_text(yaml.safe_dump(recipe_data("empty", base=server.base, finetune="none",
                                                     crosscheck={"autotagger": "none"})))
        quiet = _faceset("build", str(recipe), "--data-root", str(tmp_path / "data"))
        loud = _faceset("build", str(recipe), "--data-root", str(tmp_path / "data"), "-v")
    finally:
        server.stop()
    assert quiet.returncode == 2, quiet.stderr
    err = quiet.stderr
    assert "Traceback" not in err
    assert err.count("the crawl found no images") == 1
    lines = err.strip().splitlines()
    assert lines[0].startswith("crawl      started: 0 rows in")
    assert lines[1].startswith("error: stage 'crawl' of empty: the crawl found no images (")
    assert "source north, item: the image selector `img::attr(src)` matched nothing on 1 item page read" in err
    assert lines[-1].startswith("what to do: fix the selectors or steps named above")
    assert len(lines) <= 8, err
    assert loud.returncode == 2
    assert "Traceback" in loud.stderr and loud.stderr.count("error: stage 'crawl'") == 1

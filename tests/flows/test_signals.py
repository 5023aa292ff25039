"""SIGTERM stops a build within seconds, stops its temporary Prefect server, and leaves it resumable.

The build runs through the command line (`flows.cli.main(["build", ...])`, with fake stages
swapped in by a small driver) without PREFECT_API_URL, so it starts Prefect's temporary
server as a child process, as a user's build does. Before the fix the default SIGTERM action
ended the process at once and that server (uvicorn) kept running, orphaned.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes import flow_stages as fakes

from tasks.core import manifest as mf

REPO = Path(__file__).resolve().parents[2]
DRIVER = """
import functools, sys
import flows.build
flows.build.build = functools.partial(flows.build.build, stages="fakes.flow_stages:stages")
from flows.cli import main
sys.exit(main(["build", *sys.argv[1:]]))
"""
STOP_WITHIN = 5.0  # seconds


def _calls(log: Path) -> collections.Counter:
    lines = log.read_text().split("\n") if log.exists() else []
    return collections.Counter(line.split(" ")[0] for line in lines if line)


def _children(pid: int) -> dict[int, str]:
    """pid -> command line of every live process whose parent is `pid` (read from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("PPid", "").strip() == str(pid) and not fields.get("State", "").startswith("Z"):
            found[int(entry.name)] = command
    return found


def _alive(pid: int) -> bool:
    try:
        return not (Path("/proc") / str(pid) / "status").read_text().split("State:\t", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return False


@pytest.mark.slow
def test_sigterm_stops_the_build_and_its_prefect_server_and_the_build_resumes(tmp_path):
    fakes.write_site(tmp_path / "site.json", 40)
    recipe = fakes.write_recipe(tmp_path)
    log = tmp_path / "calls.log"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # a temporary server of its own
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]), PREFECT_HOME=str(tmp_path / "prefect"),
               FACESET_TEST_SITE=str(tmp_path / "site.json"), FACESET_TEST_LOG=str(log), FACESET_TEST_SLEEP="0.5",
               FACESET_WORKERS="2", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    command = [sys.executable, "-c", DRIVER, str(recipe), "--data-root", str(tmp_path / "data")]
    out = tmp_path / "build-output.txt"
    with open(out, "w") as output:  # a file, not a pipe: a surviving server would hold a pipe open
        build = subprocess.Popen(command, env=env, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
    children: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 240
        while _calls(log)["faces-row"] < 2:  # in the middle of faces, its worker processes busy
            assert build.poll() is None, out.read_text()[-3000:]
            assert time.monotonic() < deadline, "the build never reached faces"
            time.sleep(0.05)
        children = _children(build.pid)
        assert any("uvicorn" in c for c in children.values()), children  # Prefect's temporary server

        sent = time.monotonic()
        build.send_signal(signal.SIGTERM)
        build.wait(timeout=60)
        took = time.monotonic() - sent
        said = out.read_text()
        assert took < STOP_WITHIN, f"the build took {took:.1f} s to stop:\n{said[-3000:]}"
        assert build.returncode == 130 and "run the same command again to resume" in said, said[-3000:]
        time.sleep(0.5)
        left = {pid: c for pid, c in children.items() if _alive(pid)}
        assert not left, f"still running after the build stopped: {left}"
    finally:
        build.kill()
        for pid in [pid for pid in children if _alive(pid)]:
            os.kill(pid, signal.SIGKILL)
    assert _calls(log)["faces-row"] < 40

    again = subprocess.run(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=240)
    assert again.returncode == 0, again.stdout[-3000:]
    calls = _calls(log)
    assert calls["crawl"] == calls["fetch"] == 1  # finished before the signal: not redone
    assert calls["report"] == 1
    frame = mf.read(tmp_path / "data" / "fakeset" / "manifest.parquet")
    assert len(frame) == 40 and frame["face_path"].notna().sum() + (frame["reason"] == "no face").sum() == 40


def _gone_within(pids: dict[int, str], seconds: float) -> dict[int, str]:
    """The processes of `pids` still running after `seconds` (checked every 0.1 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    return {pid: command for pid, command in pids.items() if _alive(pid)}


@pytest.mark.slow
def test_a_sigkilled_build_leaves_no_prefect_server_or_worker_running(tmp_path):
    """SIGKILL runs no exit hook: the temporary server (and the build's workers) used to run on, orphaned."""
    fakes.write_site(tmp_path / "site.json", 40)
    recipe = fakes.write_recipe(tmp_path)
    log = tmp_path / "calls.log"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]), PREFECT_HOME=str(tmp_path / "prefect"),
               FACESET_TEST_SITE=str(tmp_path / "site.json"), FACESET_TEST_LOG=str(log), FACESET_TEST_SLEEP="0.5",
               FACESET_WORKERS="2", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    command = [sys.executable, "-c", DRIVER, str(recipe), "--data-root", str(tmp_path / "data")]
    with open(tmp_path / "build-output.txt", "w") as output:
        build = subprocess.Popen(command, env=env, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
    children: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 240
        while _calls(log)["faces-row"] < 2:
            assert build.poll() is None, (tmp_path / "build-output.txt").read_text()[-3000:]
            assert time.monotonic() < deadline, "the build never reached faces"
            time.sleep(0.05)
        children = _children(build.pid)
        assert any("uvicorn" in c for c in children.values()), children
        build.kill()
        build.wait()
        left = _gone_within(children, 8.0)
        assert not left, f"still running 8 s after the build was killed: {left}"
    finally:
        build.kill()
        for pid in [pid for pid in children if _alive(pid)]:
            os.kill(pid, signal.SIGKILL)


def test_a_crawl_child_stops_within_seconds_while_a_page_hangs_and_resumes(tmp_path):
    """The crawl process used to get 30 s to stop; one waiting on a slow page now ends in a few."""
    from sites.hostile import image, index, profile, recipe as hostile_recipe, serve

    from spiders.launch import start_job, stop_gracefully
    from tasks.core.paths import DatasetPaths
    from tasks.crawl import stage as crawl

    people = {f"/people/{i}.html": profile(f"P{i}", f"/img/{i}.jpg") for i in range(3)}
    people["/people/2.html"].delay = 60.0
    site = serve({"/index.html": index(list(people)), **people, **{f"/img/{i}.jpg": image(i) for i in range(3)}})
    try:
        spec = hostile_recipe([site.url("/index.html")], timeout=120)
        paths = DatasetPaths.create(tmp_path)
        job = crawl.prepare_job(spec, paths, __import__("datetime").date.today())
        process = start_job(job, crawl.crawl_state(paths))
        deadline = time.monotonic() + 60
        while "/people/2.html" not in site.paths():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.5)
        sent = time.monotonic()
        stop_gracefully(process)
        took = time.monotonic() - sent
        assert process.returncode is not None and took < 7.0, took
        people["/people/2.html"].delay = 0.0
        found = crawl.run(mf.empty(spec.field_names), spec, paths, timeout=60)
    finally:
        site.stop()
    assert sorted(found["name"]) == ["P0", "P1", "P2"]

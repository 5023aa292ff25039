"""Races on one dataset: a takedown added during a build, and two builds on two machines.

Before the fix `faceset takedown add` changed a dataset under a running build, which then
wrote its stale manifest back (the person returned), and an s3:// data root was pulled
before the build lock was taken, a lock that held on one machine only.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from fakes import flow_stages as fakes

from flows.cli import main as faceset
from tasks.core import locks
from tasks.core import manifest as mf
from tasks.core.errors import FacesetError

FAKES = "fakes.flow_stages:stages"
REPO = Path(__file__).resolve().parents[2]
DRIVER = """
import sys
import flows.build
flows.build.build(sys.argv[1], data_root=sys.argv[2], stages="fakes.flow_stages:stages")
print("BUILD DONE")
"""


def _calls(log: Path) -> collections.Counter:
    lines = log.read_text().split("\n") if log.exists() else []
    return collections.Counter(line.split(" ")[0] for line in lines if line)


@pytest.mark.slow
def test_takedown_added_during_a_build_is_not_undone_by_it(tmp_path, prefect_server, capsys):
    from prefect.settings import PREFECT_API_URL

    fakes.write_site(tmp_path / "site.json", 12)
    recipe = fakes.write_recipe(tmp_path)
    data, log = tmp_path / "data", tmp_path / "calls.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]),
               PREFECT_API_URL=PREFECT_API_URL.value(), FACESET_TEST_SITE=str(tmp_path / "site.json"),
               FACESET_TEST_LOG=str(log), FACESET_TEST_PAUSE="export", FACESET_WORKERS="1",
               PREFECT_LOGGING_LEVEL="WARNING")
    build = subprocess.Popen([sys.executable, "-c", DRIVER, str(recipe), str(data)], env=env, cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while not _calls(log)["export"]:  # the build is now paused inside export, holding the old manifest
        assert build.poll() is None, build.stdout.read()
        assert time.monotonic() < deadline, "the build never reached export"
        time.sleep(0.05)

    assert faceset(["takedown", "add", "person 4", "--kind", "name", "--data-root", str(data)]) == 0
    said = capsys.readouterr().out
    output, _ = build.communicate(timeout=240)
    assert "BUILD DONE" in output, output[-3000:]
    assert "waiting for it to finish" in said

    root = data / "fakeset"
    item = mf.item_id("http://site/page/4.jpg", "http://site/img/4.jpg")  # person 4's row (see fakes.crawl)
    for manifest in (root / "manifest.parquet", root / ".faceset" / "stages" / "report.parquet"):
        person = mf.read(manifest).set_index("item_id").loc[item]
        assert (person["status"], person["reason"]) == ("excluded", "takedown") and pd.isna(person["name"])
    assert not [p for p in root.rglob("*") if item in p.name]
    exported = sum(1 for _ in (root / "splits").rglob("*.jpg"))
    counts = json.loads((root / "models" / "fake-model.json").read_text())["images"]
    assert sum(counts.values()) == exported  # the model was trained again, without the person


def _token(client, bucket: str, key: str) -> str:
    return json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())["token"]


def test_a_second_build_on_the_same_s3_dataset_is_refused_while_the_first_holds_the_lease(
        s3, tmp_path, monkeypatch, prefect_server):
    from flows.build import build

    client, bucket = s3
    monkeypatch.setenv("FACESET_TEST_SITE", str(tmp_path / "site.json"))
    monkeypatch.setenv("FACESET_WORKERS", "1")
    fakes.write_site(tmp_path / "site.json", 6)
    recipe = fakes.write_recipe(tmp_path)
    key = "team/.faceset-leases/fakeset.json"
    assert locks.lease_key("team/fakeset/") == key
    # the first build, on another machine (its own mirror), holds the lease
    with locks.Lease(client, bucket, key, "fakeset") as first:
        monkeypatch.setenv("FACESET_MIRROR", str(tmp_path / "this-machine"))
        with pytest.raises(FacesetError, match="another build of fakeset is running") as refused:
            build(recipe, data_root=f"s3://{bucket}/team", stages=FAKES)
        assert first.holder in str(refused.value)
        assert not (tmp_path / "this-machine" / bucket / "team" / "fakeset" / "manifest.parquet").exists()
        assert _token(client, bucket, key) == first.token  # not taken over
    assert "Contents" not in client.list_objects_v2(Bucket=bucket, Prefix="team/.faceset-leases/")
    build(recipe, data_root=f"s3://{bucket}/team", stages=FAKES)  # released: the build runs
    assert "Contents" not in client.list_objects_v2(Bucket=bucket, Prefix="team/.faceset-leases/")


def test_the_lease_of_a_crashed_build_is_taken_over_after_it_expires(s3):
    client, bucket = s3
    key = locks.lease_key("p/ds/")
    crashed = locks.Lease(client, bucket, key, "ds", seconds=2)
    crashed.acquire()  # and never renewed nor released: the build was killed
    with pytest.raises(FacesetError, match="another build of ds is running") as refused:
        locks.Lease(client, bucket, key, "ds").acquire()
    assert "released by itself in" in refused.value.hint
    time.sleep(3)
    with locks.Lease(client, bucket, key, "ds", seconds=2) as taker:
        time.sleep(2.5)  # renewed meanwhile: still ours, and nobody else's
        assert _token(client, bucket, key) == taker.token
        with pytest.raises(FacesetError, match="another build of ds is running"):
            locks.Lease(client, bucket, key, "ds").acquire()


def test_a_build_whose_lease_was_taken_over_stops(s3):
    """Renewals failed long enough for another machine to take the lease: the first must write no more."""
    client, bucket = s3
    key = locks.lease_key("p/ds/")
    first = locks.Lease(client, bucket, key, "ds", seconds=1.2)
    first.acquire()
    time.sleep(2.5)  # not renewed (a network cut): it expires
    with locks.Lease(client, bucket, key, "ds") as second:
        first._renew()  # the network is back: its next renewal finds the lease taken over
        with pytest.raises(FacesetError, match="another machine took over the build lock of ds"):
            first.check()
        second.check()


def test_two_machines_adding_takedowns_to_one_bucket_at_once_lose_neither(s3, monkeypatch):
    """Another machine writes the bucket's list between this command's read and write: the
    write is refused (a conditional put), the list read again, and both entries are kept."""
    from flows.commands import takedown as command

    client, bucket = s3
    root = f"s3://{bucket}/team"
    assert faceset(["takedown", "add", "Person 1", "--kind", "name", "--data-root", root]) == 0
    read = command._s3_list
    calls = []

    def read_then_another_machine_writes(data_root: str):
        found = read(data_root)
        if not calls:
            other = json.loads(client.get_object(Bucket=bucket, Key="team/takedowns.json")["Body"].read())
            other["entries"].append({**other["entries"][0], "value": "person 2", "given": "Person 2"})
            client.put_object(Bucket=bucket, Key="team/takedowns.json", Body=json.dumps(other).encode())
        calls.append(data_root)
        return found

    monkeypatch.setattr(command, "_s3_list", read_then_another_machine_writes)
    assert faceset(["takedown", "add", "Person 3", "--kind", "name", "--data-root", root]) == 0
    stored = json.loads(client.get_object(Bucket=bucket, Key="team/takedowns.json")["Body"].read())
    assert [e["value"] for e in stored["entries"]] == ["person 1", "person 2", "person 3"]
    assert len(calls) == 2

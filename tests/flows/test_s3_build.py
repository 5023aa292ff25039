"""`--data-root s3://bucket/prefix` end to end against a real moto_server on 127.0.0.1.

The build works in a local mirror and pushes every stage's files with their SHA-256; a
second machine (a fresh, empty mirror) pulls the dataset and finds every stage cached.
"""

from __future__ import annotations

import base64
import collections
import hashlib
from pathlib import Path

import pandas as pd
import pytest
from fakes import flow_stages as fakes

from tasks.core import manifest as mf
from tasks.core.errors import FacesetError
from tasks.core.storage import S3Root, open_root, parse_s3_url

FAKES = "fakes.flow_stages:stages"


def _calls(log: Path) -> collections.Counter:
    lines = log.read_text().split("\n") if log.exists() else []
    return collections.Counter(line.split(" ")[0] for line in lines if line)


def test_parse_s3_url():
    assert parse_s3_url("s3://bucket/a/b/") == ("bucket", "a/b/")
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    with pytest.raises(FacesetError, match="names no bucket"):
        parse_s3_url("s3:///x")


def test_build_on_s3_and_resume_from_another_mirror(s3, tmp_path, monkeypatch, prefect_server):
    from flows.build import build

    client, bucket = s3
    monkeypatch.setenv("FACESET_TEST_SITE", str(tmp_path / "site.json"))
    monkeypatch.setenv("FACESET_TEST_LOG", str(tmp_path / "calls.log"))
    monkeypatch.setenv("FACESET_WORKERS", "1")
    fakes.write_site(tmp_path / "site.json", 12)
    recipe = fakes.write_recipe(tmp_path)
    root = build(recipe, data_root=f"s3://{bucket}/team/datasets", stages=FAKES)
    assert root == (tmp_path / "mirror" / bucket / "team" / "datasets" / "fakeset")

    listed = client.list_objects_v2(Bucket=bucket, Prefix="team/datasets/fakeset/")
    keys = {o["Key"].removeprefix("team/datasets/fakeset/") for o in listed["Contents"]}
    assert {"manifest.parquet", "manifest.csv", "reports/faces.json", "reports/report.html",
            ".faceset/cache/report.json", ".faceset/stages/faces.parquet"} <= keys
    assert any(k.startswith("faces/") for k in keys) and any(k.startswith("images/") for k in keys)
    head = client.head_object(Bucket=bucket, Key="team/datasets/fakeset/manifest.parquet", ChecksumMode="ENABLED")
    local = (root / "manifest.parquet").read_bytes()
    assert head["Metadata"]["sha256"] == hashlib.sha256(local).hexdigest()
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(local).digest()).decode()
    remote = client.get_object(Bucket=bucket, Key="team/datasets/fakeset/manifest.parquet")["Body"].read()
    assert remote == local

    # another machine: an empty mirror pulls the dataset, and finds every stage done
    monkeypatch.setenv("FACESET_MIRROR", str(tmp_path / "other-machine"))
    (tmp_path / "calls.log").unlink()
    again = build(recipe, data_root=f"s3://{bucket}/team/datasets", stages=FAKES)
    assert _calls(tmp_path / "calls.log") == collections.Counter()
    pd.testing.assert_frame_equal(mf.read(again / "manifest.parquet"), mf.read(root / "manifest.parquet"))

    # a re-crawl with 3 new images there uploads the new crops only and deletes nothing
    fakes.write_site(tmp_path / "site.json", 15)
    build(recipe, data_root=f"s3://{bucket}/team/datasets", stages=FAKES, recrawl=True)
    assert _calls(tmp_path / "calls.log")["faces-row"] == 3
    listed = client.list_objects_v2(Bucket=bucket, Prefix="team/datasets/fakeset/faces/")
    assert len(listed["Contents"]) == len(list((again / "faces").iterdir())) == 13


def test_corrupted_object_is_detected_on_pull(s3, tmp_path):
    client, bucket = s3
    root = open_root(f"s3://{bucket}/p", "ds")
    assert isinstance(root, S3Root)
    (root.local / "reports").mkdir(parents=True)
    (root.local / "reports" / "a.json").write_text('{"a": 1}')
    root.push()
    # someone overwrites the object behind faceset's back, keeping the old checksum metadata
    head = client.head_object(Bucket=bucket, Key="p/ds/reports/a.json")
    client.put_object(Bucket=bucket, Key="p/ds/reports/a.json", Body=b'{"a": 2}', Metadata=head["Metadata"])
    (root.local / "reports" / "a.json").unlink()
    with pytest.raises(FacesetError, match="corrupted"):
        root.pull()
    assert not (root.local / "reports" / "a.json").exists()  # never left half-trusted on disk


def test_bytes_damaged_on_the_way_are_detected(s3, tmp_path):
    """Corrupt the request body after the checksums were computed: the upload must fail."""
    client, bucket = s3
    root = open_root(f"s3://{bucket}/p", "ds")
    (root.local / "reports").mkdir(parents=True)
    (root.local / "reports" / "b.json").write_text('{"b": 1}')

    def damage(request, **_):
        if request.body is not None and hasattr(request.body, "read"):
            request.body = request.body.read()[:-1] + b"X"

    root.client.meta.events.register("before-send.s3.PutObject", damage)
    with pytest.raises(FacesetError, match="S3 received p/ds/reports/b.json damaged"):
        root.push()


def test_unreachable_bucket_says_what_to_do(s3, tmp_path):
    root = open_root("s3://no-such-bucket-here/p", "ds")
    with pytest.raises(FacesetError, match="what to do: check the bucket name"):
        root.pull()

"""Attack: a bucket (an S3 data root someone else can write to) holds keys that name paths
outside the dataset: `prefix/name/../../../x` or `prefix/name//abs/path`.

The pull used to join every key to the local mirror as it came, so such keys wrote files
outside the mirror (anywhere the user can write). Now each key must be plain names going
down from the dataset's folder; the others are left out with a warning, and the rest of
the dataset is pulled as usual. Runs against a real moto S3 server on 127.0.0.1.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tasks.core.storage import S3Root, open_root


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_keys_leading_out_of_the_mirror_are_not_pulled(s3, tmp_path, caplog):
    client, bucket = s3
    root = open_root(f"s3://{bucket}/team", "faces")
    assert isinstance(root, S3Root) and root.local == tmp_path / "mirror" / bucket / "team" / "faces"
    escaped = tmp_path / "escaped.txt"  # four folders up from the mirror's dataset folder
    absolute = tmp_path / "absolute.txt"
    keys = {"team/faces/manifest.csv": b"item_id\na\n",
            "team/faces/reports/crawl.json": b"{}",
            "team/faces/../../../../escaped.txt": b"outside",
            f"team/faces/{absolute}": b"outside",  # "team/faces//tmp/.../absolute.txt"
            "team/faces/a/../../../../../escaped.txt": b"outside"}
    for key, body in keys.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    listed = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="team/faces/")["Contents"]}
    assert listed == set(keys)  # the server keeps the keys as written
    before = _files(tmp_path)
    with caplog.at_level(logging.WARNING, logger="tasks.core.storage"):
        root.pull()
    assert not escaped.exists() and not absolute.exists()
    new = _files(tmp_path) - before
    assert all(root.local in path.parents for path in new), sorted(map(str, new))
    assert (root.local / "manifest.csv").read_bytes() == b"item_id\na\n"
    assert (root.local / "reports" / "crawl.json").is_file()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and all("would leave its folder" in w and "not pulled" in w for w in warnings)
    assert any("'../../../../escaped.txt'" in w for w in warnings)
    assert any(f"'{absolute}'" in w and "absolute path" in w for w in warnings)


def test_a_key_where_a_folder_goes_and_a_name_too_long_leave_the_rest_pulled(s3, tmp_path, caplog):
    """Found by benchmarks/hostile_check.py: a key `reports` beside `reports/crawl.json`, or a name of
    300 characters, raised OSError and stopped the whole pull (and so every build of that data root)."""
    client, bucket = s3
    root = open_root(f"s3://{bucket}/team", "faces")
    keys = {"team/faces/manifest.csv": b"item_id\na\n", "team/faces/reports": b"a file where a folder goes",
            "team/faces/reports/crawl.json": b"{}", "team/faces/" + "n" * 300 + ".txt": b"long"}
    for key, body in keys.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    with caplog.at_level(logging.WARNING, logger="tasks.core.storage"):
        root.pull()
    assert (root.local / "manifest.csv").read_bytes() == b"item_id\na\n"
    assert (root.local / "reports").is_file() != (root.local / "reports" / "crawl.json").is_file()  # one of the two
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("longer than 255 bytes" in w for w in warnings)
    assert any("cannot be stored in the mirror" in w for w in warnings)

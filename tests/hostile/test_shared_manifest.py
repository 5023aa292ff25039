"""Attack: a shared manifest (manifest_share.csv and its .json) names paths outside OUT_DIR,
or holds a damaged row.

`faceset hydrate` used to join the manifest's `class` and `item_id` and the JSON's split
folders to OUT_DIR as they came: `class=../../../x` and an absolute split folder wrote
files outside it. And one row with a `face_box` of `[1,2` stopped the whole run without a
report. Now each such value is refused (or the row failed) with its reason, nothing is
written outside OUT_DIR, and the other rows are rebuilt. The images come from a server on
127.0.0.1.
"""

from __future__ import annotations

import json
from pathlib import Path

from sites.hostile import image, serve
from sites.server import Route
from sites.shares import share_row, write_share
from sites.staff import jpeg

from flows.cli import main as faceset
from tasks.export.hydrate import hydrate

LOCAL = ("127.0.0.1",)


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_classes_item_ids_and_split_folders_stay_inside_out_dir(tmp_path, capsys):
    server = serve({f"/{i}.jpg": image(i) for i in range(6)})
    outside = tmp_path / "outside"
    rows = [share_row("good", server.url("/0.jpg"), jpeg(0)),
            share_row("up", server.url("/1.jpg"), jpeg(1), cls="../../../escaped"),
            share_row("abs", server.url("/2.jpg"), jpeg(2), cls=str(outside)),
            share_row("../../../escaped-id", server.url("/3.jpg"), jpeg(3)),
            share_row("drive", server.url("/4.jpg"), jpeg(4), cls="C:evil"),
            share_row("variant", server.url("/5.jpg"), jpeg(5), split="", split_evil="train"),
            share_row("\x1b[2J\x1b]0;owned\x07", server.url("/6.jpg"), jpeg(6), cls="../x")]  # rewrites a terminal
    share = write_share(tmp_path / "share", rows, split_columns={"split": "splits", "split_evil": str(outside)})
    out = tmp_path / "work" / "out"
    before = _files(tmp_path)
    try:
        assert faceset(["hydrate", str(share), str(out), "--delay", "0", "--allow-private-hosts", "127.0.0.1"]) == 0
    finally:
        server.stop()
    printed = capsys.readouterr().out
    written = _files(tmp_path) - before
    assert written and all(out in path.parents for path in written), sorted(map(str, written))
    assert not outside.exists() and not (tmp_path / "escaped").exists() and not (tmp_path / "escaped-id.jpg").exists()
    assert (out / "splits" / "train" / "cs" / "good.jpg").read_bytes() == jpeg(0)
    report = json.loads((out / "hydrate_report.json").read_text())
    assert (report["ok"], report["refused"]) == (1, 6)
    problems = report["problems"]
    assert problems["up"]["why"] == ("refused: class '../../../escaped' would leave its folder "
                                     "(it holds a path separator)")
    assert problems["variant"]["why"] == report["refused_folders"]["split_evil"]  # its only tree is refused
    assert "would leave its folder" in problems["abs"]["why"] and "drive letter" in problems["drive"]["why"]
    assert problems["../../../escaped-id"]["why"].startswith("refused: item_id '../../../escaped-id'")
    assert report["refused_folders"] == {"split_evil": f"refused: split folder '{outside}' would leave its folder "
                                                      "(it is an absolute path)"}
    assert "split_evil: not rebuilt" in printed and "refused: 6" in printed
    assert "\x1b" not in printed and "\\x1b[2J\\x1b]0;owned\\x07: refused" in printed
    # refused rows were never downloaded
    assert sorted(p for p in server.paths() if p.endswith(".jpg")) == ["/0.jpg"]


def test_a_relative_split_folder_that_climbs_out_is_refused(tmp_path):
    server = serve({"/0.jpg": image(0)})
    share = write_share(tmp_path / "share", [share_row("a", server.url("/0.jpg"), jpeg(0), split_x="val")],
                        split_columns={"split": "splits", "split_x": "variants/../../../climbed"})
    try:
        report = hydrate(share, tmp_path / "a" / "b" / "out", delay=0, allow_private_hosts=LOCAL)
    finally:
        server.stop()
    assert not (tmp_path / "climbed").exists()
    assert (tmp_path / "a" / "b" / "out" / "splits" / "train" / "cs" / "a.jpg").is_file()
    assert "'..' names a folder" in report["refused_folders"]["split_x"]


def test_a_damaged_row_gets_a_reason_and_the_run_goes_on(tmp_path):
    big = jpeg(0, size=160)  # passes the decode gate, so the box is read
    server = serve({"/0.jpg": Route(big, "image/jpeg"), **{f"/{i}.jpg": image(i) for i in range(1, 4)}})
    rows = [share_row("box", server.url("/0.jpg"), big, face_box="[1,2"),
            share_row("flat", server.url("/1.jpg"), jpeg(1), face_box="7"),
            share_row("hash", server.url("/2.jpg"), jpeg(2)) | {"sha256": "not a hash"},
            share_row("fine", server.url("/3.jpg"), jpeg(3))]
    share = write_share(tmp_path / "share", rows, faces={"size": 32})
    try:
        report = hydrate(share, tmp_path / "out", delay=0, allow_private_hosts=LOCAL)
    finally:
        server.stop()
    assert (report["ok"], report["failed"]) == (1, 3)
    assert report["problems"]["box"]["why"] == "damaged row: face_box '[1,2' is not a list of four numbers"
    assert report["problems"]["flat"]["why"] == "damaged row: face_box '7' is not a list of four numbers"
    assert report["problems"]["hash"]["why"] == "damaged row: sha256 'not a hash' is not a SHA-256"
    assert (tmp_path / "out" / "splits" / "train" / "cs" / "fine.jpg").read_bytes() == jpeg(3)
    assert json.loads((tmp_path / "out" / "hydrate_report.json").read_text())["rows"] == 4

"""Takedowns: each kind of key removes every derived file of the images it names, through
the real `faceset takedown add` command; the list survives rebuilds and is applied
before anything is downloaded again."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest
from builders import make_recipe, picture
from PIL import Image, ImageOps

from flows.cli import main as faceset
from tasks.export import stage as export
from tasks.split import stage as split
from tasks.core import takedown
from tasks.core import manifest as mf
from tasks.core.paths import DatasetPaths

RECIPE = make_recipe("tiny", fields=("name", "label", "gender"), attributes=("gender",),
                     split={"train": 0.6, "val": 0.2, "test": 0.2, "variants": [{"kind": "balanced", "by": ["gender"]}]})


def build(data_root, people: int = 16) -> tuple[pd.DataFrame, DatasetPaths]:
    """A built dataset: raw images, crops, one quarantined image, split trees, share, manifest.
    Person 3 has two photos; rows 5 and 6 are near-copies (one dup_group)."""
    paths = DatasetPaths.create(data_root / "tiny")
    rows = []
    for i in range(people + 1):
        person = 3 if i == people else i
        image = picture(5 if i == 6 else i)
        if i == 6:
            image = image.resize((180, 180))  # a resized repost of image 5
        raw = paths.images / "tmp.jpg"
        image.save(raw, quality=92)
        sha = hashlib.sha256(raw.read_bytes()).hexdigest()
        stored = paths.image_file(sha, "jpg")
        stored.parent.mkdir(parents=True, exist_ok=True)
        raw.replace(stored)
        row = {"item_id": f"item{i:02d}", "source": "north", "page_url": f"http://127.0.0.1/people/{i}.html",
               "image_url": f"http://127.0.0.1/img/{i}.jpg", "crawled_at": "2026-11-20T10:00:00+00:00",
               "name": f"Person {person}", "label": ["cs", "econ"][person % 2], "gender": ["female", "male"][(person // 2) % 2],
               "sha256": sha, "image_path": stored.relative_to(paths.root).as_posix(), "status": "kept",
               "dup_group": "d5" if i in (5, 6) else pd.NA}
        if i == 2:  # quarantined: its original is copied to quarantine/
            target = paths.quarantine / "no-face" / f"{row['item_id']}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(stored.read_bytes())
            row.update(status="quarantined", reason="no face", quarantine_path=target.relative_to(paths.root).as_posix())
        else:
            face = paths.faces / f"{sha}_cfg.jpg"
            image.crop((40, 40, 160, 160)).save(face)
            row["face_path"] = face.relative_to(paths.root).as_posix()
        rows.append(row)
    frame = mf.conform(pd.DataFrame(rows), RECIPE.field_names)
    frame = export.run(split.run(frame, RECIPE, paths), RECIPE, paths)
    mf.write(frame, paths.manifest)
    # `faceset evaluate models <dataset>/variants/balanced` lists each image it measured
    tree = sorted((paths.variants / "balanced").rglob("*.jpg"))
    evaluations = paths.models / "evaluations"
    evaluations.mkdir(parents=True)
    pd.DataFrame({"path": [str(p) for p in tree], "class": [p.parent.name for p in tree]}).to_csv(
        evaluations / "balanced.csv", index=False)
    return frame, paths


def traces(paths: DatasetPaths, row: pd.Series) -> list[str]:
    """Every file under the dataset that still derives from `row`, or lists it."""
    found = [p.relative_to(paths.root).as_posix() for p in paths.root.rglob("*")
             if p.is_file() and (p.stem == row["item_id"] or p.name.startswith(str(row["sha256"])))]
    for listing in [*paths.root.rglob("metadata.jsonl"), paths.root / "manifest_share.csv",
                    *paths.models.glob("evaluations/*.csv")]:
        if row["item_id"] in listing.read_text():
            found.append(listing.relative_to(paths.root).as_posix())
    return found


def mirrored_copy(paths: DatasetPaths, row: pd.Series, tmp_path) -> str:
    """What a person might send: their photo, smaller, mirrored, as PNG."""
    with Image.open(paths.root / row["image_path"]) as image:
        given = ImageOps.mirror(image.convert("RGB").resize((150, 150)))
    target = tmp_path / "please-remove.png"
    given.save(target)
    return str(target)


@pytest.mark.parametrize("kind", ["image_url", "page_url", "name", "image"])
def test_takedown_by_each_key_removes_every_derived_file(kind, tmp_path):
    data_root = tmp_path / "data"
    frame, paths = build(data_root)
    by_id = frame.set_index("item_id", drop=False)
    if kind == "image_url":
        key, expected = "HTTP://127.0.0.1:80/img/1.jpg#top", {"item01"}  # normalised before comparing
    elif kind == "page_url":
        key, expected = "https://127.0.0.1/people/5.html", {"item05", "item06"}  # https too; 6 is a near-copy of 5
    elif kind == "name":
        key, expected = "  person   3 ", {"item03", f"item{len(frame) - 1:02d}"}
    else:
        key, expected = mirrored_copy(paths, by_id.loc["item02"], tmp_path), {"item02"}  # quarantined original
    before = {r: traces(paths, by_id.loc[r]) for r in by_id.index}
    assert all(before[r] for r in expected)
    assert faceset(["takedown", "add", key, "--data-root", str(data_root)]) == 0
    out = mf.read(paths.manifest).set_index("item_id", drop=False)
    gone = set(out.index[(out["status"] == "excluded") & (out["reason"] == "takedown")])
    assert gone == expected
    for item in expected:
        assert traces(paths, by_id.loc[item]) == [], item
        assert pd.isna(out.loc[item, "split"]) and pd.isna(out.loc[item, "split_balanced"])
    for item in set(by_id.index) - expected:  # nothing else was touched
        assert traces(paths, by_id.loc[item]) == before[item]
    listed = json.loads((data_root / "takedowns.json").read_text())["entries"]
    assert len(listed) == 1 and listed[0]["kind"] == {"image_url": "url", "page_url": "url"}.get(kind, kind)


def test_the_list_survives_a_rebuild_and_applies_before_download(tmp_path, capsys):
    data_root = tmp_path / "data"
    frame, paths = build(data_root)
    by_id = frame.set_index("item_id", drop=False)
    for key in ("http://127.0.0.1/img/1.jpg", "Person 7", mirrored_copy(paths, by_id.loc["item09"], tmp_path)):
        assert faceset(["takedown", "add", key, "--data-root", str(data_root)]) == 0
    assert faceset(["takedown", "add", "Person 7", "--data-root", str(data_root)]) == 0
    assert "already on the list" in capsys.readouterr().out
    # a rebuild from scratch: the crawl finds the same pages again, nothing downloaded yet
    crawled = frame[["item_id", "source", "page_url", "image_url", "crawled_at", "name", "label", "gender"]].copy()
    crawled["status"] = "kept"
    crawled = mf.conform(crawled, RECIPE.field_names)
    out = takedown.apply(crawled, paths).set_index("item_id")
    excluded = set(out.index[out["status"] == "excluded"])
    # the image entry learnt the URL it was found at, so item09 goes before any download
    assert excluded == {"item01", "item07", "item09"}
    assert (out.loc[list(excluded), "reason"] == "takedown").all()
    assert faceset(["takedown", "list", "--data-root", str(data_root)]) == 0
    shown = capsys.readouterr().out
    assert "url" in shown and "Person 7" in shown and "please-remove.png" in shown


def test_dataset_scope_and_untouched_other_datasets(tmp_path):
    data_root = tmp_path / "data"
    frame, paths = build(data_root)
    other = DatasetPaths.create(data_root / "other")
    empty = takedown.fingerprint(data_root)
    entry = takedown.make_entry("Person 4", dataset="other")
    takedown.add(data_root, entry)
    assert (takedown.apply(frame, paths)["status"] == frame["status"]).all()
    hit = takedown.apply(frame, other)
    assert set(hit.loc[hit["status"] == "excluded", "item_id"]) == {"item04"}
    # the build cache key: a new entry changes it (so the stages that apply the list run again), reading does not
    one = takedown.fingerprint(data_root)
    assert one != empty and takedown.fingerprint(data_root) == one
    takedown.add(data_root, takedown.make_entry("Person 5"))
    assert takedown.fingerprint(data_root) not in (empty, one)


def test_unreadable_image_and_bad_url_are_explained(tmp_path):
    from tasks.core.errors import FacesetError

    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    with pytest.raises(FacesetError, match="not an image that can be read"):
        takedown.make_entry(str(bad))
    with pytest.raises(FacesetError, match="not a web address"):
        takedown.make_entry("Anna Smith", kind="url")
    assert takedown.make_entry("example.org/x.jpg").kind == "url"  # as copied from an address bar
    assert takedown.make_entry("Dr. J. Smith").kind == "name"


def test_takedown_on_an_s3_data_root_updates_the_list_there_and_in_the_mirror(s3, tmp_path):
    client, bucket = s3
    root = f"s3://{bucket}/team"
    assert faceset(["takedown", "add", "http://127.0.0.1/img/1.jpg", "--data-root", root]) == 0
    assert faceset(["takedown", "add", "Person 7", "--data-root", root]) == 0
    stored = json.loads(client.get_object(Bucket=bucket, Key="team/takedowns.json")["Body"].read())
    assert [e["kind"] for e in stored["entries"]] == ["url", "name"]
    # a build on this machine works in the mirror <FACESET_MIRROR>/<bucket>/team/<dataset>/ and reads it there
    frame, paths = build(tmp_path / "mirror" / bucket / "team")
    out = takedown.apply(frame, paths)
    assert set(out.loc[out["status"] == "excluded", "item_id"]) == {"item01", "item07"}


def test_real_photo_sent_mirrored_and_recompressed_matches_only_itself(utkface_dir, tmp_path):
    """40 real UTKFace photos as a dataset's raw images and crops; the person sends theirs
    mirrored, smaller and re-saved: it, and only it, is excluded."""
    paths = DatasetPaths.create(tmp_path / "data" / "faces40")
    files = sorted(utkface_dir.glob("*.jpg"))[100:140]
    rows = []
    for i, source in enumerate(files):
        sha = hashlib.sha256(source.read_bytes()).hexdigest()
        stored = paths.image_file(sha, "jpg")
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_bytes(source.read_bytes())
        face = paths.faces / f"{sha}_cfg.jpg"
        Image.open(source).crop((30, 30, 170, 170)).resize((112, 112)).save(face)
        rows.append({"item_id": f"utk{i:02d}", "source": "north", "page_url": f"http://127.0.0.1/p/{i}",
                     "image_url": f"http://127.0.0.1/i/{i}.jpg", "name": f"Person {i}", "label": "x",
                     "gender": "female", "sha256": sha, "status": "kept",
                     "image_path": stored.relative_to(paths.root).as_posix(),
                     "face_path": face.relative_to(paths.root).as_posix()})
    frame = mf.conform(pd.DataFrame(rows), RECIPE.field_names)
    sent = tmp_path / "me.jpg"
    ImageOps.mirror(Image.open(files[17]).convert("RGB")).resize((150, 150)).save(sent, quality=70)
    takedown.add(paths.root.parent, takedown.make_entry(str(sent)))
    out = takedown.apply(frame, paths)
    assert set(out.loc[out["status"] == "excluded", "item_id"]) == {"utk17"}
    assert not list(paths.root.rglob(f"{frame.loc[17, 'sha256']}*"))
    assert len(list(paths.faces.glob("*.jpg"))) == 39

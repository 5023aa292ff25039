"""A real build flow with `faces: {each: true}`: group photos in, one kept row per face out,
each face exported once, the faces of one photo in one split, the photos' own rows kept
in the manifest but never exported (real faces, dedupe, split and export stages;
tests/fakes/group_site.py)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from fakes import group_site
from PIL import Image

from flows.build import build
from tasks.core import manifest as mf
from tasks.faces.group_photos import background, compose

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]


def test_build_with_one_row_per_face(utkface_dir, dedup_dir, tmp_path, monkeypatch):
    chips = sorted(utkface_dir.glob("*.jpg"))
    backgrounds = sorted((dedup_dir / "imagededup" / "base_images").glob("*.jpg"))
    rng = np.random.default_rng(7)
    items, truth = [], {}
    for number, count in enumerate((3, 2, 4, 1)):
        people = [chips[int(i)] for i in rng.choice(len(chips), count, replace=False)]
        photo = compose(people, [int(s) for s in rng.integers(70, 180, count)],
                        background(backgrounds[number], (1280, 960)), rng)
        path = tmp_path / f"group{number}.jpg"
        buffer = io.BytesIO()
        Image.fromarray(photo.rgb).save(buffer, "JPEG", quality=92)
        path.write_bytes(buffer.getvalue())
        items.append({"file": str(path), "name": f"photo {number}", "label": ("nurse", "engineer")[number % 2],
                      "gender": "female"})
        truth[str(path)] = len(photo.boxes)
    site = tmp_path / "site.json"
    site.write_text(json.dumps(items))
    monkeypatch.setenv("FACESET_TEST_SITE", str(site))
    monkeypatch.setenv("FACESET_WORKERS", "1")

    root = build(group_site.write_recipe(tmp_path), data_root=tmp_path / "data", stages="fakes.group_site:stages")
    manifest = mf.read(root / "manifest.parquet")
    images = manifest[manifest["parent_id"].isna()]
    faces = manifest[manifest["parent_id"].notna()]
    assert len(images) == 4 and (images["status"] == mf.EXCLUDED).all()
    for image in images.itertuples():
        expected = truth[image.image_url.removeprefix("file://")]
        assert image.faces == expected and image.reason == f"one row per face ({expected} face{'s' * (expected > 1)})"
        mine = faces[faces["parent_id"] == image.item_id]
        assert len(mine) == expected and set(mine["label"]) == {image.label} and mine["split"].nunique() == 1
    kept = faces[faces["status"] == mf.KEPT]
    assert len(kept) == sum(truth.values()) and kept["split"].notna().all()
    exported = sorted(p.stem for p in (root / "splits").rglob("*.jpg"))
    assert exported == sorted(kept["item_id"])  # every face once; no photo as a whole
    # every stage run again (the faces from their cached outcomes): the same rows, the same ids
    again = mf.read(build(group_site.write_recipe(tmp_path), data_root=tmp_path / "data", rebuild=True,
                          stages="fakes.group_site:stages") / "manifest.parquet")
    columns = ["item_id", "parent_id", "face_index", "face_box", "status", "split"]
    assert again[columns].equals(manifest[columns])

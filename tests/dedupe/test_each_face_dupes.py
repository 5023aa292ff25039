"""Dedupe with one row per face (`faces: {each: true}`): a re-posted group photo duplicates
every one of its faces, and two faces of one photo are never duplicates or one person.

Real photos: UTKFace faces pasted onto a UKBench photo (tasks/faces/group_photos.py), the
real faces stage (YuNet), the real dedupe stage (dlib descriptors, aligned-face hashes)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from builders import make_recipe, stored_images
from PIL import Image

from tasks import dedupe, faces
from tasks.core.manifest import DUPLICATE, KEPT, check_invariants, conform
from tasks.core.parallel import serial_mapper
from tasks.core.paths import DatasetPaths
from tasks.faces.group_photos import background, compose

pytestmark = pytest.mark.slow  # dlib looks at a dozen crops twice


def jpeg(rgb: np.ndarray, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def test_a_reposted_group_photo_duplicates_all_its_faces(utkface_dir, dedup_dir, tmp_path):
    chips = sorted(utkface_dir.glob("*.jpg"))
    people = [chips[40], chips[900], chips[1700], chips[40]]  # the first person twice: a mirror, a poster
    canvas = background(sorted((dedup_dir / "imagededup" / "base_images").glob("*.jpg"))[2], (1280, 960))
    photo = compose(people, [150, 140, 160, 150], canvas, np.random.default_rng(3),
                    at=[(100, 300), (420, 280), (740, 320), (1060, 300)])
    assert len(photo.boxes) == 4
    smaller = np.asarray(Image.fromarray(photo.rgb).resize((1024, 768), Image.Resampling.LANCZOS))
    files = {"a-original": jpeg(photo.rgb), "b-same-bytes": jpeg(photo.rgb), "c-resized": jpeg(smaller, 85)}
    paths = DatasetPaths.create(tmp_path / "data")
    rows = stored_images(paths, files, label="x")
    recipe = make_recipe("reposts", fields=("label",), faces={"each": True, "blur_threshold": 0})
    cropped = faces.run(conform(pd.DataFrame(rows), ["label"]), recipe, paths, mapper=serial_mapper)
    out = dedupe.run(cropped, recipe, paths, mapper=serial_mapper)
    check_invariants(cropped, out, "dedupe")

    face_rows = out[out["parent_id"].notna()].set_index(["parent_id", "face_index"])
    original = face_rows.loc["a-original"]
    assert len(original) == 4 and (original["status"] == KEPT).all()
    for copy, how in (("b-same-bytes", "same bytes"), ("c-resized", None)):
        faces_of_copy = face_rows.loc[copy]
        assert list(faces_of_copy.index) == list(original.index)  # the same faces, in the same order
        assert (faces_of_copy["status"] == DUPLICATE).all(), faces_of_copy[["status", "reason"]]
        # each face is a duplicate of the same face of the original: all kept from one copy
        assert list(faces_of_copy["dup_group"]) == list(original["item_id"])
        if how:
            assert (faces_of_copy["dup_match"] == how).all()
    # the same person twice in one photo: two faces, neither a duplicate nor one person
    twins = original.loc[[0, 3]]
    assert (twins["status"] == KEPT).all() and twins["dup_group"].nunique() == 2
    assert twins["person_group"].nunique() == 2
    # the images' own rows are not compared at all
    assert (out.loc[out["parent_id"].isna(), "status"] == "excluded").all()

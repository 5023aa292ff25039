"""The faces of one group photo (`faces: {each: true}`, rows sharing a `parent_id`) are never
spread over splits, whatever their labels, and the split report counts no leak for them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from builders import split_recipe, synthetic_people

from tasks.core import manifest as mf
from tasks.core.paths import DatasetPaths
from tasks.split.stage import run


def group_photos(seed: int) -> pd.DataFrame:
    """Synthetic people whose rows are cut into photos of 1 to 6 faces (their image rows
    `excluded`, as the faces stage leaves them), the faces of one photo of different people."""
    frame = synthetic_people(seed, people=300).sample(frac=1, random_state=seed).reset_index(drop=True)
    rng = np.random.default_rng(seed)
    parents, photo, start = [], 0, 0
    while start < len(frame):
        count = int(rng.integers(1, 7))
        parents.extend([f"photo{photo}"] * min(count, len(frame) - start))
        photo, start = photo + 1, start + count
    frame["parent_id"] = pd.Series(parents, dtype="string")
    frame["face_index"] = frame.groupby("parent_id").cumcount().astype("Int64")
    images = pd.DataFrame({"item_id": sorted(set(parents)), "status": mf.EXCLUDED, "reason": "one row per face"})
    return mf.conform(pd.concat([frame, images], ignore_index=True), list(frame.columns))


@pytest.mark.parametrize("seed", range(5))
def test_faces_of_one_photo_share_a_split(seed, tmp_path):
    manifest = group_photos(seed)
    assert manifest.groupby("parent_id")["label"].nunique().max() > 1  # photos of people of several classes
    paths = DatasetPaths.create(tmp_path / "photos")
    out = run(manifest, split_recipe(seed=seed, stratify=["label", "gender"]), paths)
    faces = out[out["split"].notna()]
    assert faces["parent_id"].notna().all() and set(faces["split"]) == {"train", "val", "test"}
    spans = faces.groupby("parent_id")["split"].nunique()
    assert (spans == 1).all(), spans[spans > 1].head()
    assert out.loc[out["parent_id"].isna(), "split"].isna().all()  # the images' own rows are not split
    report = json.loads(paths.report_json("split").read_text())
    assert report["variants"]["original"]["leaks"]["parent_id"] == 0

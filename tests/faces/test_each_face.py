"""One row per face (`faces: {each: true}`): group photos with known faces (real UTKFace
faces pasted onto real photos, tasks/faces/group_photos.py) through the real YuNet, and
the counting rules with a scripted detector where the model is not the point."""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pandas as pd
import pytest
from tasks.vision.yunet import YuNetOnnx
from builders import make_recipe, stored_images
from fakes.detectors import ScriptedDetector
from PIL import Image

from tasks.core.manifest import EXCLUDED, KEPT, check_invariants, conform, face_item_id
from tasks.core.parallel import process_mapper, serial_mapper
from tasks.core.paths import DatasetPaths
from tasks.core.recipe import Recipe
from tasks.faces import stage as faces
from tasks.faces.group_photos import GroupPhoto, background, compose, matched
from tasks.vision import detector as vision


def recipe(**section) -> Recipe:
    return make_recipe("each-test", fields=("label",), faces={"each": True, **section})


def jpeg(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def texture(width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)


def add_rows(paths: DatasetPaths, files: dict[str, bytes]) -> pd.DataFrame:
    """Rows as the fetch stage leaves them, with a label and provenance to be carried to the faces."""
    rows = stored_images(paths, files, source="search", page_url=lambda item: f"http://127.0.0.1/q?{item}",
                         label=lambda item: f"label-{item}")
    return conform(pd.DataFrame(rows), ["label"])


def faces_of(out: pd.DataFrame, parent: str) -> pd.DataFrame:
    return out[out["parent_id"] == parent].sort_values("face_index")


@pytest.fixture()
def paths(tmp_path) -> DatasetPaths:
    return DatasetPaths.create(tmp_path / "data")


@pytest.fixture(scope="module")
def group_photos(utkface_dir, dedup_dir) -> list[GroupPhoto]:
    """Four 1280x960 photos of 1, 3, 5 and 6 faces, 56 to 200 px wide, on UKBench photos (no faces)."""
    chips = sorted(utkface_dir.glob("*.jpg"))
    backgrounds = sorted((dedup_dir / "imagededup" / "base_images").glob("*.jpg"))
    rng = np.random.default_rng(16)
    photos = []
    for number, count in enumerate((1, 3, 5, 6)):
        people = [chips[int(i)] for i in rng.choice(len(chips), count, replace=False)]
        sides = [int(s) for s in rng.integers(56, 201, count)]
        photo = compose(people, sides, background(backgrounds[number], (1280, 960)), rng)
        assert len(photo.boxes) == count
        photos.append(photo)
    return photos


# ---------------------------------------------------------------- real faces, real detector


def test_every_face_of_a_group_photo_is_a_row_with_its_box(group_photos, paths, tmp_path):
    files = {f"photo{i}": jpeg(photo.rgb) for i, photo in enumerate(group_photos)}
    manifest = add_rows(paths, files)
    sharp_or_not = recipe(blur_threshold=0)  # upscaled 200 px chips can be soft; sharpness is not the point here
    out = faces.run(manifest, sharp_or_not, paths, mapper=serial_mapper)
    check_invariants(manifest, out, "faces")
    assert len(out) == len(manifest) + sum(len(p.boxes) for p in group_photos)
    for i, photo in enumerate(group_photos):
        parent = out[out["item_id"] == f"photo{i}"].iloc[0]
        rows = faces_of(out, f"photo{i}")
        assert (parent["status"], parent["reason"]) == (EXCLUDED, faces.parent_reason(len(photo.boxes)))
        assert (parent["faces"], parent["faces_over"], parent["faces_blurred"]) == (len(photo.boxes), 0, 0)
        assert pd.isna(parent["face_path"]) and pd.isna(parent["parent_id"])
        boxes = [json.loads(box) for box in rows["face_box"]]
        match = matched(photo.boxes, boxes, least=0.5)
        assert None not in match and len(boxes) == len(photo.boxes), (photo.boxes, boxes)
        # the face rows come right after their image's row, numbered left to right
        position = out.index[out["item_id"] == f"photo{i}"][0]
        assert list(out.loc[position + 1 : position + len(rows), "parent_id"]) == [f"photo{i}"] * len(rows)
        centres = [box[0] + box[2] // 2 for box in boxes]
        numbers = list(rows["face_index"])  # over every face found: a small one counted aside keeps its number
        assert centres == sorted(centres) and numbers == sorted(set(numbers))
        for row in rows.itertuples():
            assert row.status == KEPT and pd.isna(row.reason)
            assert row.item_id == face_item_id(f"photo{i}", row.face_index)
            assert (row.label, row.source, row.page_url, row.sha256) == (
                parent["label"], "search", parent["page_url"], parent["sha256"])
            assert row.face_score >= 0.7 and row.face_path.startswith(f"faces/{parent['sha256']}_")
            crop = Image.open(paths.root / row.face_path)
            assert crop.size == (224, 224) and crop.format == "JPEG"
    # the same photos built again elsewhere (in worker processes this time): the same rows
    other = DatasetPaths.create(tmp_path / "again")
    again = faces.run(add_rows(other, files), sharp_or_not, other, mapper=process_mapper(2))
    columns = ["item_id", "parent_id", "face_index", "face_box", "status", "reason"]
    pd.testing.assert_frame_equal(out[columns], again[columns])


def test_faces_on_tile_borders_of_a_large_photo_are_found_once(utkface_dir, dedup_dir, paths):
    """A 4400x1800 photo is detected in three 2048 px tiles; faces cut by a tile's border
    are found whole in the next tile, and only once."""
    chips = sorted(utkface_dir.glob("*.jpg"))[5:10]
    canvas = background(sorted((dedup_dir / "imagededup" / "base_images").glob("*.jpg"))[0], (4400, 1800))
    corners = [(2000, 300), (1600, 900), (2300, 1300), (200, 200), (4000, 1500)]  # tiles start at 0, 1648, 2352
    photo = compose(chips, [120, 90, 70, 150, 100], canvas, np.random.default_rng(0), at=corners)
    assert len(photo.boxes) == 5
    spy = SpyYuNet()
    out = faces.run(add_rows(paths, {"wide": jpeg(photo.rgb)}), recipe(blur_threshold=0), paths, detector=spy,
                    mapper=serial_mapper)
    boxes = [json.loads(box) for box in faces_of(out, "wide")["face_box"]]
    assert None not in matched(photo.boxes, boxes) and len(boxes) == 5, (photo.boxes, boxes)
    assert max(max(shape) for shape in spy.seen) <= vision.TILE_SIDE
    assert sorted(spy.seen)[-3:] == [(1800, 2048)] * 3


class SpyYuNet(YuNetOnnx):
    """The real detector, recording the size of every image it is shown."""

    def __init__(self) -> None:
        super().__init__(score_threshold=0.7)
        self.seen: list[tuple[int, int]] = []

    def detect(self, image, *, details=False):
        self.seen.append(image.shape[:2])
        return super().detect(image, details=details)


def test_detection_scale_follows_min_face_px():
    each = recipe().faces
    assert vision.detection_scales(1280, 960, each) == [1.0, pytest.approx(1 / 6)]
    assert vision.detection_scales(1280, 960, recipe(min_face_px=24).faces)[0] == vision.MAX_UPSCALE
    assert vision.detection_scales(640, 300, recipe(min_face_px=96).faces) == [0.5]
    # one face per image keeps its single downscaled copy
    assert vision.detection_scales(4000, 3000, make_recipe("one", fields=("label",)).faces) == [0.16]


# ---------------------------------------------------------------- counting rules (scripted detector)

BIG, MEDIUM, SMALL = (0.1, 0.1, 0.3, 0.4, 0.95), (0.5, 0.1, 0.2, 0.3, 0.9), (0.8, 0.8, 0.05, 0.06, 0.92)


def test_small_faces_are_counted_and_max_faces_keeps_the_largest(paths):
    manifest = add_rows(paths, {"group": jpeg(texture(640, 480))})
    detector = ScriptedDetector((SMALL, MEDIUM, BIG))
    out = faces.run(manifest, recipe(), paths, detector=detector, mapper=serial_mapper)
    parent = out[out["item_id"] == "group"].iloc[0]
    assert (parent["face_count"], parent["faces"], parent["faces_small"], parent["faces_over"]) == (3, 2, 1, 0)
    assert parent["reason"] == "one row per face (2 faces)"
    rows = faces_of(out, "group")
    assert list(rows["face_index"]) == [0, 1]  # left to right: BIG, MEDIUM; SMALL (2) is counted only
    assert [json.loads(b) for b in rows["face_box"]] == [[64, 48, 192, 192], [320, 48, 128, 144]]

    out = faces.run(manifest, recipe(max_faces=1), paths, detector=detector, mapper=serial_mapper)
    parent = out[out["item_id"] == "group"].iloc[0]
    assert (parent["faces"], parent["faces_small"], parent["faces_over"]) == (1, 1, 1)
    assert list(faces_of(out, "group")["face_index"]) == [0]  # the largest, keeping its number
    assert faces_of(out, "group")["item_id"].iloc[0] == face_item_id("group", 0)


def test_face_numbers_do_not_depend_on_the_detectors_order(paths, tmp_path):
    manifest = add_rows(paths, {"group": jpeg(texture(640, 480))})
    first = faces.run(manifest, recipe(), paths, detector=ScriptedDetector((BIG, MEDIUM)), mapper=serial_mapper)
    other = DatasetPaths.create(tmp_path / "other")
    second = faces.run(add_rows(other, {"group": jpeg(texture(640, 480))}), recipe(), other,
                       detector=ScriptedDetector((MEDIUM, BIG)), mapper=serial_mapper)
    columns = ["item_id", "face_index", "face_box"]
    pd.testing.assert_frame_equal(first[columns], second[columns])


def test_an_image_without_a_usable_face_is_quarantined_as_before(paths):
    sharp = texture(640, 480, 2)
    manifest = add_rows(paths, {"sharp": jpeg(sharp), "blurred": jpeg(cv2.GaussianBlur(sharp, (0, 0), 6))})
    for detector, reason in [(ScriptedDetector(()), "no face"),
                             (ScriptedDetector((SMALL,)), "face too small (29 px < 48 px)")]:
        out = faces.run(manifest, recipe(), paths, detector=detector, mapper=serial_mapper)
        assert len(out) == 2 and out["parent_id"].isna().all()
        row = out[out["item_id"] == "sharp"].iloc[0]
        assert (row["status"], row["reason"]) == ("quarantined", reason)
    out = faces.run(manifest, recipe(), paths, detector=ScriptedDetector((BIG,)), mapper=serial_mapper)
    blurred = out[out["item_id"] == "blurred"].iloc[0]
    assert blurred["status"] == "quarantined" and blurred["reason"].startswith("blurred face (sharpness")
    assert blurred["faces_blurred"] == 1 and len(faces_of(out, "blurred")) == 0
    assert len(faces_of(out, "sharp")) == 1


def test_cached_outcomes_give_the_same_rows_and_a_deleted_crop_is_made_again(paths):
    manifest = add_rows(paths, {"group": jpeg(texture(640, 480))})
    detector = ScriptedDetector((BIG, MEDIUM))
    first = faces.run(manifest, recipe(), paths, detector=detector, mapper=serial_mapper)
    looks = len(detector.seen)  # one per detection level
    again = faces.run(manifest, recipe(), paths, detector=detector, mapper=serial_mapper)
    assert len(detector.seen) == looks
    pd.testing.assert_frame_equal(first, again)
    (paths.root / first["face_path"].dropna().iloc[1]).unlink()
    faces.run(manifest, recipe(), paths, detector=detector, mapper=serial_mapper)
    assert len(detector.seen) == 2 * looks and (paths.root / first["face_path"].dropna().iloc[1]).is_file()


def test_summary_counts_images_and_their_faces(paths):
    manifest = add_rows(paths, {"group": jpeg(texture(640, 480)), "empty": b""})
    out = faces.run(manifest, recipe(), paths, detector=ScriptedDetector((SMALL, MEDIUM, BIG)), mapper=serial_mapper)
    summary = json.loads(paths.report_json("faces").read_text())
    assert (summary["images"], summary["kept"], summary["quarantined"]) == (2, 2, 1)
    assert summary["each"] == {"images_with_faces": 1, "face_rows": 2, "kept_faces": 2, "faces_small": 1,
                               "faces_blurred": 0, "faces_over_max": 0, "faces_per_image": {"2": 1}}
    assert summary["reasons"] == {"one row per face": 1, "empty file": 1}
    assert len(out) == 4

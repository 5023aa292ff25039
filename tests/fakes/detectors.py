"""A scripted face detector for tests where the model is not the point."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Box = tuple[float, float, float, float, float]  # x, y, w, h as fractions of the image, score


class ScriptedDetector:
    """Returns faces given as fractions of whatever image it is shown (x, y, w, h, score),
    and records the size of that image, so tests see what the stage fed the model."""

    def __init__(self, boxes: Sequence[Box] = ((0.35, 0.3, 0.3, 0.4, 0.95),), fail_on_width: int | None = None) -> None:
        self.boxes = tuple(boxes)
        self.seen: list[tuple[int, int]] = []
        self.fail_on_width = fail_on_width

    def __repr__(self) -> str:
        return f"ScriptedDetector({self.boxes}, fail_on_width={self.fail_on_width})"

    def detect(self, image: np.ndarray) -> np.ndarray:
        """The scripted boxes in pixels of `image`, as YuNet's [n, 5] array; raises on `fail_on_width`."""
        height, width = image.shape[:2]
        self.seen.append((height, width))
        if width == self.fail_on_width:
            raise RuntimeError("model blew up")
        return np.array([[x * width, y * height, w * width, h * height, s] for x, y, w, h, s in self.boxes],
                        dtype=np.float32).reshape(-1, 5)

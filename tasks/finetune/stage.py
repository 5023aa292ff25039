"""The finetune stage's entry: train on the exported splits (pipeline.py), record the figures for the report."""

from __future__ import annotations

import logging

import pandas as pd

from tasks.core.paths import DatasetPaths
from tasks.core.recipe import Recipe
from tasks.core.reports import write_report
from tasks.finetune.pipeline import finetune_tree

log = logging.getLogger(__name__)


def run(manifest: pd.DataFrame, recipe: Recipe, paths: DatasetPaths, *, device: str | None = None) -> pd.DataFrame:
    """Fine-tune on paths.splits, write paths.models and reports/finetune.json; the manifest is unchanged."""
    config = recipe.finetune
    if config is None:
        summary = {"skipped": True, "reason": "the recipe says 'finetune: none'"}
    elif not (paths.splits / "train").is_dir() or not (paths.splits / "val").is_dir():
        summary = {"skipped": True, "reason": f"no exported train/ and val/ folders under {paths.splits}"}
    else:
        crop = recipe.faces.model_dump(mode="json") if recipe.faces is not None else None
        summary = finetune_tree(paths.splits, paths.models, config, attributes=recipe.attributes,
                                bins=recipe.split.bins, device=device, crop_faces=crop, log=log.info)
    if summary.get("skipped"):
        log.warning("finetune skipped: %s", summary["reason"])
    write_report(paths, "finetune", summary)
    return manifest

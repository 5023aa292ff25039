"""Fine-tune on an image tree and evaluate once: the work behind the stage and `faceset finetune`.

Order matters for honest numbers: the grid is chosen on validation only, and the test
split is evaluated once, at the end, by the chosen model (a tree without test/ is
evaluated on val/, and the results say so).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tasks.core.atomic import atomic_write, write_csv, write_json
from tasks.core.paths import ModelPaths
from tasks.finetune import budget, data, device_plan, ensemble, evaluate
from tasks.vision.backbones import PRETRAINED, Net, Normalization, apply_freeze, build_net, resolve_arch
from tasks.finetune.grid import GridResult, run_grid
from tasks.finetune.training import pick_device
from tasks.vision.face_features import LICENCES
from tasks.finetune.unlearn import run_unlearning
from tasks.core.recipe import FinetuneConfig

def save_model(net: Net, norm: Normalization, classes: list[str], config: FinetuneConfig, folder: ModelPaths,
               crop_faces: dict | None) -> Path:
    """The book's MODELS folder: weights with class map and recipe, loadable by `faceset apply`."""
    checkpoint = {
        "arch": net.arch, "classes": classes, "state_dict": net.state_dict(),
        "mean": list(norm.mean), "std": list(norm.std), "image_size": config.image_size,
        "finetune": config.model_dump(mode="json"), "crop_faces": crop_faces,
    }
    atomic_write(folder.model, lambda tmp: torch.save(checkpoint, tmp))
    write_json(folder.class_map, {str(i): c for i, c in enumerate(classes)})
    write_json(folder.settings, {"finetune": config.model_dump(mode="json"), "crop_faces": crop_faces,
                                 "pretrained": PRETRAINED.get(config.weights, f"weights from the file {config.weights}"),
                                 "face_features": {name: LICENCES[name] for name in config.face_features}})
    return folder.model


def _write_grid(grid: GridResult, folder: ModelPaths) -> None:
    write_json(folder.grid_json, {"cached_features": grid.cached, "feature_seconds": round(grid.feature_seconds, 2),
                                  "seconds": round(grid.seconds, 2), "chosen": grid.chosen, "points": grid.table})
    write_csv(folder.grid_csv, pd.DataFrame(grid.table))
    for row, fitted in zip(grid.table, grid.fits):
        write_json(folder.grid_point(row["point"]), fitted.history)
    write_json(folder.metrics_per_epoch, grid.fits[grid.best].history)


def _build(config: FinetuneConfig, classes: list[str]) -> tuple[Net, Normalization]:
    return build_net(config.model, config.weights, len(classes), features_from=config.features_from, pool=config.pool,
                     face_features=config.face_features)


def _ensemble_summary(members: list[ensemble.Model], grids: list[GridResult], folder: ModelPaths,
                      probabilities: Callable[[str], tuple[pd.DataFrame, np.ndarray]]) -> dict:
    """Each member's settings and chosen grid point, and the averaged model's validation
    accuracy (to compare with the main model's: the ensemble is only worth its cost if higher)."""
    rows, probs = probabilities("val")
    return {
        "val_accuracy": float((probs.argmax(1) == rows["target"].to_numpy()).mean()),
        "members": [{"arch": c.model, "weights": c.weights, "image_size": c.image_size, "pool": c.pool,
                     "features_from": c.features_from,
                     "val_acc": g.chosen["val_acc"], "model": str(folder.member(n).model)}
                    for n, ((_, _, c), g) in enumerate(zip(members, grids), 1)],
    }


def skip_reason(frame: pd.DataFrame, classes: list[str], config: FinetuneConfig) -> str | None:
    """Why there is nothing worth training, in words; None when training can go ahead."""
    train = frame[frame["split"] == "train"]
    if len(classes) < 2:
        return f"fine-tuning needs at least 2 classes; the training split has {len(classes)} ({', '.join(classes) or 'none'})"
    if len(train) < config.min_images:
        return f"fine-tuning needs at least {config.min_images} training images (finetune.min_images); there are {len(train)}"
    if not (frame["split"] == "val").any():
        return "fine-tuning needs validation images (val/) to choose a model; there are none"
    return None


def finetune_tree(directory: Path, out_dir: Path, config: FinetuneConfig, *, attributes: list[str] | None = None,
                  bins: dict[str, list[float]] | None = None, device: str | torch.device | None = None,
                  crop_faces: dict | None = None, use_cache: bool = True,
                  log: Callable[[str], None] | None = print) -> dict:
    """Train the grid, save the best model, evaluate it once; returns the summary (also as JSON).

    `crop_faces` is the face-crop settings when the images are face crops made by
    faceset, so that `faceset apply` crops new images the same way.
    """
    started = time.perf_counter()
    frame, classes = data.read_tree(Path(directory))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    layout = ModelPaths(out_dir)
    reason = skip_reason(frame, classes, config)
    if reason:
        if log:
            log(f"finetune skipped: {reason}")
        return {"skipped": True, "reason": reason, "classes": classes, "images": int(len(frame))}
    device = pick_device(device)
    config, decisions = device_plan.for_device(config, device)
    for line in decisions:
        if log:
            log(line)
    budgeted = None
    if config.budget:
        budgeted = budget.plan(frame, classes, config, device)
        for line in budgeted.lines():
            if log:
                log(line)
        config = budgeted.config
    attributes = [a for a in (attributes if attributes is not None else data.attribute_columns(frame)) if a in frame.columns]

    def make_net() -> tuple[Net, list]:
        net = _build(config, classes)[0]
        return net, apply_freeze(net, config.freeze)

    if log:
        log(f"fine-tuning {resolve_arch(config.model, config.weights)} (weights {config.weights}, freeze "
            f"{config.freeze}, {config.image_size} px" + (f", features from {config.features_from}, pool {config.pool}"
                                                          if config.features_from else "")
            + (f", with the outputs of {', '.join(config.face_features)}" if config.face_features else "")
            + (", a logistic head" if config.head == "logistic" else "")
            + f") on {device.type}: {len(classes)} classes, "
            + ", ".join(f"{s} {int((frame['split'] == s).sum())}" for s in data.SPLITS))
    models: list[ensemble.Model] = []
    grids: list[GridResult] = []
    deadline = None if budgeted is None else started + budget.SAFETY * budgeted.budget_seconds
    for number, settings in enumerate(config.members()):
        if number and deadline is not None and time.perf_counter() > deadline:
            if log:
                log(f"budget reached: ensemble members {number}-{len(config.ensemble)} left out")
            break
        if number and log:
            log(f"ensemble member {number}/{len(config.ensemble)}: image size {settings.image_size}, pool {settings.pool}, "
                f"features from {settings.features_from or 'the last layer'}")
        folder = layout.member(number) if number else layout
        net, norm = _build(settings, classes)
        grid = run_grid(net, apply_freeze(net, settings.freeze), frame, settings, norm, device, use_cache=use_cache, log=log,
                        deadline=deadline)
        _write_grid(grid, folder)
        save_model(net, norm, classes, settings, folder, crop_faces)
        models.append((net, norm, settings))
        grids.append(grid)
    if len(models) < len(config.members()):  # the budget ran out: the main model lists only the members trained
        config = config.model_copy(update={"ensemble": config.ensemble[:len(models) - 1]})
        save_model(models[0][0], models[0][1], classes, config, layout, crop_faces)
    (net, norm, _), grid, model_path = models[0], grids[0], layout.model

    def probabilities(split: str) -> tuple[pd.DataFrame, np.ndarray]:
        rows = frame[frame["split"] == split].reset_index(drop=True)
        return rows, ensemble.average_probabilities(
            models, lambda transform: data.loader(rows, transform, data.INFERENCE_BATCH, shuffle=False), device)

    eval_split = "test" if (frame["split"] == "test").any() else "val"
    rows, probs = probabilities(eval_split)
    targets = rows["target"].to_numpy()
    result = evaluate.metrics(targets, probs, classes)
    result["per_group"] = evaluate.per_group(rows, probs.argmax(1) == targets, attributes, bins, seed=config.seed,
                                             reference=frame)
    result.update(evaluated_on=eval_split, model=str(model_path), arch=net.arch, weights=config.weights,
                  freeze=config.freeze, chosen=grid.chosen)
    write_json(layout.test_metrics, result)
    write_json(layout.confusion_json, result["confusion_matrix"])
    evaluate.plot_confusion(result, layout.confusion_png)
    evaluate.plot_curves(grid.fits[grid.best].history, layout.curves)
    gallery = evaluate.galleries(rows, probs, classes, layout.galleries)
    write_csv(layout.predictions, evaluate.probability_table(rows, probs, classes))

    unlearning = None
    if config.unlearn is not None:
        unlearning = run_unlearning(frame, classes, config, config.unlearn, norm, grid.hypers[grid.best], make_net,
                                    device, layout.unlearn, bins=bins, log=log)
        write_json(layout.unlearn_json, unlearning)

    summary = {
        "skipped": False, "classes": classes, "arch": net.arch, "weights": config.weights, "freeze": config.freeze,
        "device": device.type, "mixed_precision": device.type == "cuda", "device_decisions": decisions,
        "host": platform.node(),
        "images": {s: int((frame["split"] == s).sum()) for s in data.SPLITS},
        "grid": {"points": grid.table, "chosen": grid.chosen, "cached_features": grid.cached,
                 "feature_seconds": round(grid.feature_seconds, 2), "seconds": round(grid.seconds, 2)},
        "history": grid.fits[grid.best].history,
        "test": {k: result[k] for k in ("n", "accuracy", "macro_precision", "macro_recall", "macro_f1",
                                        "per_class", "distribution", "confusion_matrix", "per_group", "evaluated_on")},
        "ensemble": _ensemble_summary(models[1:], grids[1:], layout, probabilities) if config.ensemble else None,
        "galleries": gallery, "unlearn": unlearning, "model_dir": str(out_dir), "model": str(model_path),
        "figures": {"curves": str(layout.curves), "confusion": str(layout.confusion_png)},
        "seconds": round(time.perf_counter() - started, 2),
        "budget": None if budgeted is None else {**budgeted.summary(), "seconds_taken": round(time.perf_counter() - started, 2)},
    }
    if log:
        log(f"{eval_split} accuracy {result['accuracy']:.3f}, macro F1 {result['macro_f1']:.3f}; model saved in {model_path}")
    return summary

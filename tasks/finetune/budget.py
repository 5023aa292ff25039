"""A time budget for the fine-tune (`finetune.budget`, `faceset finetune --budget 15m`).

How long a fine-tune takes depends on the machine far more than on the settings' names,
so the plan is made from a cost measured here: each model's seconds per image (decode,
resize and a forward pass over a few real training images), times the passes its settings
ask for (cached views, grid points x epochs, test views). What does not fit is taken away in
the order it helps least: ensemble members from the last, then, when passes over the images
cost more than training the head from their cached features, cached views (down to the image
alone), then grid values (weight decay, batch size, momentum, lr: each down to its middle
value), then epochs. A default run with
room to spare gains the measured ensemble members (EXTRA_MEMBERS). The plan is printed
before any training, and the estimate is kept beside the time the run really took. A
machine that slows down during the run (a shared one) is caught by the deadline the
pipeline passes on: grid points and members not started by SAFETY x budget are left out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import torch

from tasks.core.recipe import DEFAULT_FINETUNE, EnsembleMember, FinetuneConfig, budget_seconds
from tasks.finetune import data
from tasks.finetune.grid import LOGISTIC_C
from tasks.finetune.training import embed
from tasks.vision.backbones import build_net

SAFETY = 0.8  # plan for this share of the budget: estimates from a few images run a little short
MEASURE_IMAGES = 8
GRID_ORDER = ("weight_decay", "batch_size", "momentum", "lr")  # what the grid gives up first
MIN_EPOCHS = 2
# seconds per cached sample and feature of one logistic-regression fit (sklearn's lbfgs, two shared
# CPU cores: 12 s for 4,342 samples of 8,434 features); a rough figure, the features cost far more
LOGISTIC_SECONDS = 3e-7
# More models for a default run with time to spare, best first. Empty for now: Lite0's middle
# stages averaged with the default WideResNet lowered UTKFace gender from 0.883 to 0.817
# (docs/benchmarks.md, 'finetune'); a member goes here once it is measured to help.
EXTRA_MEMBERS: list[EnsembleMember] = []

Measure = Callable[[FinetuneConfig, pd.DataFrame, int, torch.device], tuple[float, int]]


@dataclass
class Plan:
    config: FinetuneConfig
    budget_seconds: float
    estimate_seconds: float
    seconds_per_image: list[float]
    changes: list[str] = field(default_factory=list)
    measure_seconds: float = 0.0

    def lines(self) -> list[str]:
        members = self.config.members()
        head = (f"a logistic head ({len(LOGISTIC_C)} strengths)" if self.config.head == "logistic" else
                f"a {len(_points(self.config))}-point grid, up to {self.config.epochs} epochs")
        out = [f"plan for a budget of {self.budget_seconds / 60:.1f} min (estimated {self.estimate_seconds / 60:.1f} min "
               f"from {', '.join(f'{s * 1000:.0f}' for s in self.seconds_per_image)} ms per image, measured in "
               f"{self.measure_seconds:.0f} s): {len(members)} model(s), {head}"]
        out += [f"  model {n}: {m.model} ({m.weights}), {m.image_size} px, freeze {m.freeze}"
                + (f", features from {m.features_from}" if m.features_from else "") + (f", pool {m.pool}" if m.pool > 1 else "")
                + (f", with the outputs of {', '.join(m.face_features)}" if m.face_features else "")
                + (f", {m.cached_views} cached view(s)" if m.freeze == "head" else "")
                for n, m in enumerate(members, 1)]
        out += [f"  {change}" for change in self.changes]
        return out

    def summary(self) -> dict:
        return {"budget_seconds": self.budget_seconds, "estimate_seconds": round(self.estimate_seconds, 1),
                "seconds_per_image": [round(s, 4) for s in self.seconds_per_image], "changes": self.changes,
                "members": len(self.config.members()),
                "grid_points": len(LOGISTIC_C) if self.config.head == "logistic" else len(_points(self.config)),
                "epochs": self.config.epochs, "measure_seconds": round(self.measure_seconds, 1)}


def _points(config: FinetuneConfig) -> list[int]:
    count = 1
    for values in config.grid.values():
        count *= len(values)
    return list(range(count))


def head_seconds(dim: int, batch_size: int, device: torch.device, samples: int = 64) -> float:
    """Seconds per cached sample and epoch of training a linear head, as the grid does it (a
    data loader over cached views: on a CPU its per-sample overhead outweighs the arithmetic)."""
    from torch.utils.data import DataLoader

    from tasks.finetune.grid import ViewCache

    views = ViewCache(torch.randn(samples, 2, dim).half(), torch.randint(0, 2, (samples,)))
    head = torch.nn.Linear(dim, 2).to(device)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.001, momentum=0.9)
    started = time.perf_counter()
    for inputs, targets in DataLoader(views, batch_size=batch_size, shuffle=True):
        loss = torch.nn.functional.cross_entropy(head(inputs.to(device)), targets.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - started) / samples


def measure_cost(config: FinetuneConfig, frame: pd.DataFrame, num_classes: int,
                 device: torch.device) -> tuple[float, float]:
    """Seconds per image for one pass of this model (decoding included), and per cached sample
    and epoch of training its head (a logistic head: per cached sample and fit)."""
    net, norm = build_net(config.model, config.weights, num_classes, features_from=config.features_from, pool=config.pool,
                          face_features=config.face_features)
    rows = frame[frame["split"] == "train"].head(MEASURE_IMAGES + 2)
    transform = data.eval_transform(config.image_size, norm, config.eval_crop)
    embed(net.body, data.loader(rows.head(2), transform, 2, shuffle=False), device)  # warm-up: first-call costs
    started = time.perf_counter()
    embed(net.body, data.loader(rows.tail(MEASURE_IMAGES), transform, MEASURE_IMAGES, shuffle=False), device)
    per_image = (time.perf_counter() - started) / max(1, min(MEASURE_IMAGES, len(rows) - 2))
    if config.head == "logistic":  # per cached sample and fit
        return per_image, LOGISTIC_SECONDS * net.embedding_dim
    batch = min(config.grid.get("batch_size", [config.batch_size]))
    return per_image, head_seconds(net.embedding_dim, int(batch), device)


def estimate_parts(config: FinetuneConfig, frame: pd.DataFrame, costs: list[tuple[float, float]]) -> tuple[float, float]:
    """Seconds the fine-tune of `config` should take, from each model's measured cost, as
    (passes over the images, training from cached features)."""
    n = {s: int((frame["split"] == s).sum()) for s in data.SPLITS}
    features, training = 0.0, 0.0
    for member, (per_image, per_sample) in zip(config.members(), costs):
        tta = 2 if member.tta else 1
        points = len(_points(member))
        if member.freeze == "head" and member.cached_views > 0:
            features += per_image * (n["train"] * member.cached_views + n["val"])
            if member.head == "logistic":
                training += len(LOGISTIC_C) * n["train"] * member.cached_views * per_sample
            else:
                training += points * member.epochs * n["train"] * per_sample
        else:  # trained from images: a backward pass costs about two forward ones
            training += points * member.epochs * per_image * (3 * n["train"] + n["val"])
        features += per_image * tta * (n["test"] + n["val"])  # the test, and the ensemble's validation check
    return features, training


def estimate(config: FinetuneConfig, frame: pd.DataFrame, costs: list[tuple[float, float]]) -> float:
    """Seconds the fine-tune of `config` should take, from each model's measured cost."""
    return sum(estimate_parts(config, frame, costs))


def _shrink(config: FinetuneConfig, features_dominate: bool = False) -> tuple[FinetuneConfig, str] | None:
    """One step smaller, with what was given up; None when nothing is left to give up. When
    passes over the images cost more than training from them, a cached view (the mirror image,
    then random crops) goes before any grid point: a grid point over cached features costs little."""
    if config.ensemble:
        return config.model_copy(update={"ensemble": config.ensemble[:-1]}), \
            f"left out ensemble member {len(config.ensemble)}"
    if (features_dominate or config.head == "logistic") and config.freeze == "head" and config.cached_views > 1:
        views = config.cached_views - 1
        return config.model_copy(update={"cached_views": views}), \
            f"cached views {config.cached_views} -> {views} (passes over the images cost most)"
    if config.head == "logistic":  # neither the grid nor epochs are used
        return None
    for key in GRID_ORDER:
        values = config.grid.get(key, [])
        if len(values) > 1:
            kept = values[len(values) // 2] if len(values) > 2 else values[0]
            return config.model_copy(update={"grid": {**config.grid, key: [kept]}}), f"grid: {key} only {kept:g}"
    if config.epochs > MIN_EPOCHS:
        epochs = max(MIN_EPOCHS, config.epochs * 2 // 3)
        return config.model_copy(update={"epochs": epochs, "patience": min(config.patience, epochs)}), \
            f"epochs {config.epochs} -> {epochs}"
    return None


def plan(frame: pd.DataFrame, classes: list[str], config: FinetuneConfig, device: torch.device, *,
         measure: Measure = measure_cost) -> Plan:
    """The settings that fit `config.budget` on this machine (unchanged ones when they fit)."""
    budget = budget_seconds(config.budget or 0)
    started = time.perf_counter()
    default_run = config.model == DEFAULT_FINETUNE["model"] and "ensemble" not in config.model_fields_set
    costs: dict[tuple, tuple[float, float]] = {}

    def cost(cfg: FinetuneConfig) -> list[tuple[float, float]]:
        out = []
        for member in cfg.members():
            key = (member.model, member.weights, member.image_size, str(member.features_from), member.pool,
                   str(member.face_features))
            if key not in costs:
                costs[key] = measure(member, frame, len(classes), device)
            out.append(costs[key])
        return out

    def fits(cfg: FinetuneConfig) -> tuple[bool, float]:
        seconds = estimate(cfg, frame, cost(cfg))
        return seconds + time.perf_counter() - started <= SAFETY * budget, seconds

    def features_dominate(cfg: FinetuneConfig) -> bool:
        features, training = estimate_parts(cfg, frame, cost(cfg))
        return features > training

    candidate, changes = config, []
    ok, seconds = fits(candidate)
    while not ok:
        smaller = _shrink(candidate, features_dominate(candidate))
        if smaller is None:
            changes.append(f"even the smallest plan is estimated at {seconds / 60:.1f} min, over the budget: "
                           "it runs anyway; give a larger budget or fewer images")
            break
        candidate, change = smaller
        changes.append(change)
        ok, seconds = fits(candidate)
    if default_run and ok:  # time to spare: the measured members, one at a time, while they fit
        for member in EXTRA_MEMBERS:
            trial = candidate.model_copy(update={"ensemble": [*candidate.ensemble, member]})
            trial_ok, trial_seconds = fits(trial)
            if not trial_ok:
                break
            candidate, seconds = trial, trial_seconds
        changes.append(f"default run: {len(candidate.ensemble)} of {len(EXTRA_MEMBERS)} measured ensemble "
                       "members fit the budget")
    return Plan(candidate, budget, seconds, [c for c, _ in cost(candidate)], changes,
                time.perf_counter() - started)

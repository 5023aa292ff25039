"""The hyper-parameter grid over lr, momentum and batch size: every point, one table, best on val.

Frozen layers give the same output in every epoch and every grid point, so their
output is computed once and cached: with `freeze: head` that is the whole backbone
and each grid point trains only the head; with `freeze: last` (ResNets,
EfficientNet-Lite0) it is everything before the last blocks, and each point trains
the last blocks and the head from the cache. A 12-point grid then costs about one
pass over the images plus cheap training. The cache holds each training image, its
mirror image and `cached_views - 2` random crops, one drawn per epoch, so the
augmentation is paid once (`use_cache=False` or `cached_views: 0` trains from images, fresh
crops every epoch).
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision.transforms import functional as TF

from tasks.core.errors import FacesetError
from tasks.finetune import data
from tasks.vision.backbones import Net, Normalization, split_frozen
from tasks.finetune.training import FitResult, Hyper, class_weights, embed, fit, seed_everything
from tasks.core.recipe import FinetuneConfig


# `head: logistic`: the regularisation strengths tried, validation choosing (UTKFace gender chose 0.3-3)
LOGISTIC_C = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
LOGISTIC_ITERATIONS = 500
# lbfgs stops when no gradient component exceeds this. The standardised features are small (each
# block divided by the root of its size), so the 1e-3 used before stopped after 10-19 iterations,
# short of the optimum; 1e-5 takes 58-115 on UTKFace gender (docs/benchmarks.md, 'finetune')
LOGISTIC_TOLERANCE = 1e-5


@dataclass
class GridResult:
    table: list[dict]
    best: int
    fits: list[FitResult]
    hypers: list[Hyper]
    cached: bool
    feature_seconds: float
    seconds: float

    @property
    def chosen(self) -> dict:
        return self.table[self.best]


class ViewCache(Dataset):
    """Cached frozen-layer outputs, several views per image (original, mirror); one drawn per visit."""

    def __init__(self, views: torch.Tensor, targets: torch.Tensor) -> None:
        self.views = views  # [images, views, ...] in float16 to halve the memory
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        view = int(torch.randint(self.views.shape[1], ()))
        return self.views[index, view].float(), self.targets[index]


class Standardize(nn.Module):
    """(x - mean) / std with the statistics of the cached training features.

    Plain SGD on a head is well conditioned only if its inputs are on a similar scale;
    raw middle-stage activations (`features_from`) run into the tens and made every grid
    point diverge. After training, `fold_into` moves the standardization into the head's
    weights, so the saved model stays a plain body + linear head. A feature that hardly
    varies in training (a channel that is dead on these images) is divided by at least a
    tenth of the typical spread, not by its own near-zero one, which turned any value it
    took on validation into a huge input (validation loss 56 on a 112-image grid)."""

    def __init__(self, features: torch.Tensor, blocks: list[int] | None = None) -> None:
        super().__init__()
        flat = features.float().reshape(-1, features.shape[-1])
        std = flat.std(0)
        std = std.clamp_min(max(0.1 * float(std.mean()), 1e-6))
        if blocks:  # each block of features (a backbone's, a face network's) gets the same total variance
            std = std * torch.cat([torch.full((size,), size ** 0.5) for size in blocks])
        self.register_buffer("mean", flat.mean(0))
        self.register_buffer("std", std)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return (inputs - self.mean) / self.std

    @torch.no_grad()
    def fold_into(self, head: nn.Linear) -> None:
        head.weight /= self.std
        head.bias -= head.weight @ self.mean


def fit_logistic(trainable: nn.Module, standardize: nn.Module, head: nn.Linear,
                 cache: dict[str, tuple[torch.Tensor, torch.Tensor]], c: float) -> FitResult:
    """A logistic regression (L2, inverse strength `c`, classes weighted by their share) on the
    standardised cached features, every cached view a sample, copied into `head`.

    On frozen Lite0 middle-stage features with the face networks' outputs it beat the SGD grid
    (UTKFace gender: docs/benchmarks.md, 'finetune'): the exact optimum of a convex problem, where
    SGD with early stopping underused the few strong face-network inputs among thousands."""
    from sklearn.linear_model import LogisticRegression

    started = time.perf_counter()
    views, targets = cache["train"]
    with torch.no_grad():
        inputs = standardize(views.float()).reshape(-1, views.shape[-1]).numpy()
    labels = targets.repeat_interleave(views.shape[1]).numpy()
    model = LogisticRegression(C=c, max_iter=LOGISTIC_ITERATIONS, tol=LOGISTIC_TOLERANCE,
                               class_weight="balanced").fit(inputs, labels)
    weight, bias = torch.zeros_like(head.weight), torch.zeros_like(head.bias)
    coef, intercept = torch.from_numpy(model.coef_).float(), torch.from_numpy(model.intercept_).float()
    rows = torch.as_tensor(model.classes_, dtype=torch.long)
    if len(rows) == 2:  # one vector: the log-odds of the second class against the first
        weight[rows[1]], bias[rows[1]] = coef[0], intercept[0]
    else:
        weight[rows], bias[rows] = coef, intercept
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    trainable.eval()

    def scores(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        with torch.no_grad():
            logits = trainable(x.float())
        return float(nn.functional.cross_entropy(logits, y.long())), float((logits.argmax(1) == y).float().mean())

    train_loss, train_acc = scores(views[:, 0], targets)
    val_loss, val_acc = scores(*cache["val"])
    seconds = time.perf_counter() - started
    history = [{"epoch": 1, "lr": 0.0, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
                "val_acc": val_acc, "seconds": round(seconds, 3), "train_images_per_s": round(len(labels) / seconds, 2)}]
    return FitResult(copy.deepcopy(trainable.state_dict()), 1, val_loss, val_acc, history, seconds, len(labels))


def grid_points(config: FinetuneConfig) -> list[Hyper]:
    """Every combination of the grid's values; keys left out take the config's single value."""
    keys = ("lr", "momentum", "batch_size", "weight_decay")
    values = [config.grid.get(key, [getattr(config, key)]) for key in keys]
    return [
        Hyper(lr=float(lr), momentum=float(m), batch_size=int(bs), weight_decay=float(wd), epochs=config.epochs,
              step_size=config.step_size, gamma=config.gamma, patience=config.patience, seed=config.seed)
        for lr, m, bs, wd in itertools.product(*values)
    ]


def _image_loaders(frame: pd.DataFrame, config: FinetuneConfig, norm: Normalization, batch_size: int, seed: int):
    train = data.loader(frame[frame["split"] == "train"],
                        data.train_transform(config.image_size, norm, config.min_crop_scale, config.crop_ratio), batch_size,
                        shuffle=True, seed=seed)
    val = data.loader(frame[frame["split"] == "val"], data.eval_transform(config.image_size, norm, config.eval_crop),
                      batch_size=data.INFERENCE_BATCH, shuffle=False)
    return train, val


def cache_frozen(prefix: nn.Module, frame: pd.DataFrame, config: FinetuneConfig, norm: Normalization,
                 device: torch.device) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Frozen-layer outputs: train as [n, views, ...], val as [n, ...].

    The training views are the image, its mirror, then `cached_views - 2` random
    resized crops with flips: augmentation paid for once instead of every epoch.
    """
    transform = data.eval_transform(config.image_size, norm, config.eval_crop)
    augment = data.train_transform(config.image_size, norm, config.min_crop_scale, config.crop_ratio)
    train_views = [transform, then_flip(transform), *[augment] * max(0, config.cached_views - 2)]
    cache = {}
    for split in ("train", "val"):
        rows = frame[frame["split"] == split]
        if split == "val":
            cache[split] = embed(prefix, data.loader(rows, transform, data.INFERENCE_BATCH, shuffle=False), device)
            continue
        seed_everything(config.seed)
        views = [embed(prefix, data.loader(rows, t, data.INFERENCE_BATCH, shuffle=False), device)
                 for t in train_views[:config.cached_views]]
        cache[split] = (torch.stack([v[0] for v in views], 1).half(), views[0][1])
    return cache


def then_flip(transform):
    from torchvision import transforms

    return transforms.Compose([transform, transforms.Lambda(TF.hflip)])


def run_grid(net: Net, frozen_norms: list, frame: pd.DataFrame, config: FinetuneConfig, norm: Normalization,
             device: torch.device, *, use_cache: bool = True, log: Callable[[str], None] | None = None,
             deadline: float | None = None) -> GridResult:
    """Train every grid point from the same starting weights; `net` ends with the best point's weights.

    Past `deadline` (a time.perf_counter() value: the budget's end), the points not yet
    trained are left out, and the best of those trained is kept.

    The best point has the highest validation accuracy (ties: lower validation loss), as in the book.
    """
    hypers = grid_points(config)
    logistic = config.head == "logistic"
    if logistic:
        hypers = hypers[:1] * len(LOGISTIC_C)
    split = split_frozen(net, config.freeze) if use_cache and config.cached_views > 0 else None
    if logistic and split is None:
        raise FacesetError("head: logistic is fitted on cached frozen features, and none are cached here",
                           "use freeze: head with cached_views of 1 or more, or head: sgd")
    weights = class_weights(frame.loc[frame["split"] == "train", "target"], net.head.out_features)
    initial = copy.deepcopy(net.state_dict())
    started = time.perf_counter()
    feature_seconds = 0.0
    if split is not None:
        prefix, suffix = split
        cache = cache_frozen(prefix, frame, config, norm, device)
        flat = cache["train"][0].dim() == 3  # [images, views, features]: the whole body is cached
        blocks = getattr(net.body, "feature_blocks", [net.embedding_dim]) if logistic else None
        standardize = Standardize(cache["train"][0], blocks) if flat else nn.Identity()
        trainable = nn.Sequential(suffix, standardize, net.head)
        feature_seconds = time.perf_counter() - started
        if log:
            log(f"frozen layers computed once for {len(frame[frame['split'].isin(['train', 'val'])])} images "
                f"in {feature_seconds:.1f} s; every grid point trains from this cache")
    fits: list[FitResult] = []
    for number, hyper in enumerate(hypers, 1):
        if deadline is not None and fits and time.perf_counter() > deadline:
            if log:
                log(f"budget reached: grid points {number}-{len(hypers)} left out")
            hypers = hypers[:number - 1]
            break
        if log and not logistic:
            log(f"grid point {number}/{len(hypers)}: lr {hyper.lr:g}, momentum {hyper.momentum:g}, "
                f"batch size {hyper.batch_size}, weight decay {hyper.weight_decay:g}")
        net.load_state_dict(initial)
        seed_everything(hyper.seed)
        net.head.reset_parameters()
        if logistic:
            if log:
                log(f"logistic regression {number}/{len(hypers)}: C {LOGISTIC_C[number - 1]:g}")
            fits.append(fit_logistic(trainable, standardize, net.head, cache, LOGISTIC_C[number - 1]))
        elif split is not None:
            generator = torch.Generator().manual_seed(hyper.seed)
            train = DataLoader(ViewCache(*cache["train"]), batch_size=hyper.batch_size, shuffle=True, generator=generator)
            val = DataLoader(TensorDataset(*cache["val"]), batch_size=128)
            fits.append(fit(trainable, train, val, hyper, weights=weights, device=device, log=log))
        else:
            train, val = _image_loaders(frame, config, norm, hyper.batch_size, hyper.seed)
            fits.append(fit(net, train, val, hyper, weights=weights, device=device, frozen_norms=frozen_norms, log=log))
    table = [{"point": i + 1, "cached": split is not None, **f.summary(h), **({"C": LOGISTIC_C[i]} if logistic else {})}
             for i, (f, h) in enumerate(zip(fits, hypers))]
    best = min(range(len(fits)), key=lambda i: (-fits[i].best_val_acc, fits[i].best_val_loss, i))
    net.load_state_dict(initial)
    (trainable if split is not None else net).load_state_dict(fits[best].best_state)
    if split is not None and isinstance(standardize, Standardize):
        standardize.fold_into(net.head)
    return GridResult(table, best, fits, hypers, split is not None, feature_seconds, time.perf_counter() - started)

"""The training loop of the book: SGD with momentum, StepLR, early stopping on validation loss.

One loop serves both the whole network on images and the head alone on cached
features (the grid's fast path): it only sees a module and two loaders.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from tasks.vision.cpu_memory import keep_freed_memory
from tasks.vision.backbones import Net, channels_last, train_mode


@dataclass(frozen=True)
class Hyper:
    """One point of the grid plus the schedule shared by all points."""

    lr: float
    momentum: float
    batch_size: int
    epochs: int
    step_size: int
    gamma: float
    patience: int
    seed: int
    weight_decay: float = 0.0


@dataclass
class FitResult:
    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_val_loss: float
    best_val_acc: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    images_seen: int = 0

    def summary(self, hyper: Hyper) -> dict[str, float]:
        return {**asdict(hyper), "best_epoch": self.best_epoch, "val_loss": self.best_val_loss,
                "val_acc": self.best_val_acc, "epochs_run": len(self.history), "seconds": round(self.seconds, 2)}


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """CUDA when present (or asked for), the CPU otherwise; on the CPU, malloc is set to
    keep freed memory (tasks/vision/cpu_memory.py: much faster Lite0 passes; docs/benchmarks.md)."""
    chosen = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
    if chosen.type == "cpu":
        keep_freed_memory()
    return chosen



def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a batch; image batches (4-D) also go channels-last, to match `channels_last`."""
    batch = batch.to(device, non_blocking=True)
    return batch.contiguous(memory_format=torch.channels_last) if batch.dim() == 4 else batch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device):
    """Mixed precision on CUDA; full precision on the CPU (where it would not be faster)."""
    return torch.autocast("cuda", dtype=torch.float16) if device.type == "cuda" else nullcontext()


def class_weights(targets: Iterable[int], num_classes: int) -> torch.Tensor:
    """Balanced weights n / (k * n_c), so a rare class counts as much as a common one."""
    counts = np.bincount(np.asarray(list(targets), dtype=int), minlength=num_classes).astype(float)
    weights = counts.sum() / (num_classes * np.maximum(counts, 1.0))
    return torch.tensor(weights, dtype=torch.float32)


def _run_epoch(model: nn.Module, batches: Iterable, loss_fn: nn.Module, device: torch.device,
               optimizer: torch.optim.Optimizer | None, scaler: torch.amp.GradScaler | None) -> tuple[float, float, int]:
    """One pass; trains when an optimizer is given. Returns mean loss, accuracy and images."""
    total_loss, correct, seen = 0.0, 0, 0
    with torch.set_grad_enabled(optimizer is not None):
        for inputs, targets in batches:
            inputs, targets = to_device(inputs, device), targets.to(device, non_blocking=True)
            with autocast(device):
                logits = model(inputs)
                loss = loss_fn(logits.float(), targets)
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
            total_loss += float(loss.detach()) * len(targets)
            correct += int((logits.argmax(1) == targets).sum())
            seen += len(targets)
    return total_loss / max(seen, 1), correct / max(seen, 1), seen


def fit(model: nn.Module, train_batches: Iterable, val_batches: Iterable, hyper: Hyper, *,
        weights: torch.Tensor | None, device: torch.device, frozen_norms: list[nn.Module] | None = None,
        log: Callable[[str], None] | None = None) -> FitResult:
    """Train with SGD + StepLR, keep the state of the epoch with the lowest validation loss.

    Stops early once validation loss has not improved for `patience` epochs.
    """
    seed_everything(hyper.seed)
    channels_last(model.to(device))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=hyper.lr, momentum=hyper.momentum, weight_decay=hyper.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=hyper.step_size, gamma=hyper.gamma)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None
    loss_fn = nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device))
    result = FitResult(best_state=copy.deepcopy(model.state_dict()), best_epoch=0,
                       best_val_loss=float("inf"), best_val_acc=0.0)
    started, stale = time.perf_counter(), 0
    for epoch in range(1, hyper.epochs + 1):
        tick = time.perf_counter()
        train_mode(model, frozen_norms or [])
        train_loss, train_acc, seen = _run_epoch(model, train_batches, loss_fn, device, optimizer, scaler)
        train_seconds = time.perf_counter() - tick
        model.eval()
        val_loss, val_acc, _ = _run_epoch(model, val_batches, loss_fn, device, None, None)
        result.images_seen += seen
        result.history.append({
            "epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_loss": train_loss, "train_acc": train_acc,
            "val_loss": val_loss, "val_acc": val_acc, "seconds": round(time.perf_counter() - tick, 3),
            "train_images_per_s": round(seen / max(train_seconds, 1e-9), 2),
        })
        scheduler.step()
        if log:
            log(f"epoch {epoch}/{hyper.epochs}: train loss {train_loss:.3f} acc {train_acc:.3f}, "
                f"val loss {val_loss:.3f} acc {val_acc:.3f}")
        if val_loss < result.best_val_loss:
            result.best_val_loss, result.best_val_acc, result.best_epoch = val_loss, val_acc, epoch
            result.best_state = copy.deepcopy(model.state_dict())
            stale = 0
        else:
            stale += 1
            if stale >= hyper.patience:
                break
    result.seconds = time.perf_counter() - started
    return result


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable, device: torch.device,
            mirror: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and embeddings (the head's input) for every input, in order;
    with `mirror`, probabilities are the mean of the image's and its mirror image's."""
    channels_last(model.to(device)).eval()
    probs, embeddings = [], []
    for inputs, _ in batches:
        inputs = to_device(inputs, device)
        with autocast(device):
            embedding = model.body(inputs) if isinstance(model, Net) else inputs
            logits = model.head(embedding) if isinstance(model, Net) else model(inputs)
            p = torch.softmax(logits.float(), 1)
            if mirror:
                p = (p + torch.softmax(model(inputs.flip(-1)).float(), 1)) / 2
        probs.append(p.cpu().numpy())
        embeddings.append(embedding.float().cpu().numpy())
    return np.concatenate(probs), np.concatenate(embeddings)


@torch.no_grad()
def embed(body: nn.Module, batches: Iterable, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The body's output for every input (the grid's feature cache) and the targets."""
    channels_last(body.to(device)).eval()
    features, targets = [], []
    for inputs, target in batches:
        with autocast(device):
            features.append(body(to_device(inputs, device)).float().cpu().contiguous())
        targets.append(torch.as_tensor(target))
    return torch.cat(features), torch.cat(targets)

"""Joint learning and unlearning (Alvi, Zisserman and Nellåker 2018, "Turning a blind eye").

A shared embedding feeds two heads: the target head, and an attribute head (gender,
say) that tries to read the attribute from the embedding. Training alternates:
1. the attribute head learns to predict the attribute (cross-entropy, embedding fixed);
2. the embedding and target head learn the target while a confusion loss, weighted by
   alpha, pushes the attribute head's output towards uniform (it cannot tell anymore).
The report compares a linear probe of the attribute on embeddings trained with alpha=0
(no unlearning) and with each of the recipe's alphas (`unlearn.alpha` may be a list: a grid),
so the effect and its price in target accuracy are measured, not assumed. Each unlearned
model is saved under `models/unlearn/alpha_<a>/` (`save_unlearned`; `faceset apply` loads it: `apply.load_model`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from tasks.core.atomic import atomic_write, write_figure, write_json  # noqa: E402
from tasks.core.errors import FacesetError  # noqa: E402
from tasks.finetune import data  # noqa: E402
from tasks.vision.backbones import Net, Normalization, channels_last, train_mode  # noqa: E402
from tasks.finetune.evaluate import group_values  # noqa: E402
from tasks.finetune.training import (  # noqa: E402
    Hyper, autocast, class_weights, embed, seed_everything, to_device)
from tasks.core.recipe import FinetuneConfig, UnlearnConfig  # noqa: E402


class UnlearnNet(nn.Module):
    """body -> neck (the shared embedding) -> target head and attribute head."""

    def __init__(self, body: nn.Module, in_dim: int, embedding_dim: int, classes: int, attribute_values: int) -> None:
        super().__init__()
        self.body = body
        self.neck = nn.Sequential(nn.Linear(in_dim, embedding_dim), nn.ReLU())
        self.head = nn.Linear(embedding_dim, classes)
        self.attribute_head = nn.Linear(embedding_dim, attribute_values)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """The shared embedding."""
        return self.neck(self.body(inputs))


def confusion_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between the attribute head's softmax and the uniform distribution."""
    return -torch.log_softmax(logits.float(), 1).mean()


def train_unlearning(model: UnlearnNet, train: DataLoader, hyper: Hyper, alpha: float, *,
                     weights: torch.Tensor, device: torch.device, frozen_norms: list[nn.Module]) -> list[dict]:
    """Alternate attribute-head steps and embedding steps for `hyper.epochs` epochs."""
    seed_everything(hyper.seed)
    channels_last(model.to(device))
    shared = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("attribute_head")]
    main_opt = torch.optim.SGD(shared, lr=hyper.lr, momentum=hyper.momentum, weight_decay=hyper.weight_decay)
    adv_opt = torch.optim.SGD(model.attribute_head.parameters(), lr=hyper.lr, momentum=hyper.momentum)
    schedulers = [torch.optim.lr_scheduler.StepLR(o, hyper.step_size, hyper.gamma) for o in (main_opt, adv_opt)]
    target_loss = nn.CrossEntropyLoss(weight=weights.to(device))
    history = []
    for epoch in range(1, hyper.epochs + 1):
        train_mode(model, frozen_norms)
        totals = np.zeros(3)
        for inputs, (targets, attributes) in train:
            inputs, targets, attributes = to_device(inputs, device), targets.to(device), attributes.to(device)
            with autocast(device):  # step 1: the attribute head, on a fixed embedding
                embedding = model(inputs)
                adv = nn.functional.cross_entropy(model.attribute_head(embedding.detach()).float(), attributes)
            adv_opt.zero_grad(set_to_none=True)
            adv.backward()
            adv_opt.step()
            with autocast(device):  # step 2: target + alpha * confusion, attribute head fixed
                main = target_loss(model.head(embedding).float(), targets)
                confusion = confusion_loss(nn.functional.linear(embedding, model.attribute_head.weight.detach(),
                                                                model.attribute_head.bias.detach()))
                loss = main + alpha * confusion
            main_opt.zero_grad(set_to_none=True)
            loss.backward()
            main_opt.step()
            totals += np.array([float(main.detach()), float(adv.detach()), float(confusion.detach())]) * len(targets)
        for scheduler in schedulers:
            scheduler.step()
        seen = len(train.dataset)
        history.append({"epoch": epoch, "target_loss": totals[0] / seen, "attribute_loss": totals[1] / seen,
                        "confusion_loss": totals[2] / seen})
    return history


@torch.no_grad()
def embeddings(model: UnlearnNet, batches: DataLoader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Shared embeddings and target predictions for every input, in order."""
    channels_last(model.to(device)).eval()
    found, predicted = [], []
    for inputs, _ in batches:
        with autocast(device):
            embedding = model(to_device(inputs, device)).float()
            predicted.append(model.head(embedding).argmax(1).cpu().numpy())
        found.append(embedding.cpu().numpy())
    return np.concatenate(found), np.concatenate(predicted)


def probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """How well a linear classifier still reads the attribute from embeddings."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(train_x, train_y)
    return float(probe.score(test_x, test_y))


def _plot(embedded: dict[str, np.ndarray], values: np.ndarray, names: list[str], path: Path) -> Path:
    """2-D PCA of the evaluation embeddings, coloured by the attribute, with and without unlearning."""
    fig, axes = plt.subplots(1, len(embedded), figsize=(4.2 * len(embedded), 3.8), squeeze=False)
    for ax, (title, points) in zip(axes[0], embedded.items()):
        flat = PCA(n_components=2, random_state=0).fit_transform(points)
        for index, name in enumerate(names):
            mask = values == index
            ax.scatter(flat[mask, 0], flat[mask, 1], s=8, alpha=0.7, label=name)
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    write_figure(path, fig)
    plt.close(fig)
    return path


def run_unlearning(frame: pd.DataFrame, classes: list[str], config: FinetuneConfig, unlearn: UnlearnConfig,
                   norm: Normalization, hyper: Hyper, make_net: Callable[[], tuple[Net, list[nn.Module]]],
                   device: torch.device, out_dir: Path, bins: dict[str, list[float]] | None = None,
                   log: Callable[[str], None] | None = None) -> dict:
    """Train with alpha=0 and with the recipe's alpha; probe the attribute (grouped as the split groups it) on both embeddings."""
    if unlearn.attribute not in frame.columns:
        raise FacesetError(f"unlearn.attribute {unlearn.attribute!r} is not in metadata.jsonl",
                           f"use one of the recipe's attributes present there: {data.attribute_columns(frame)}")
    groups = group_values(frame[unlearn.attribute], unlearn.attribute, bins)
    frame = frame.assign(_attribute=groups).dropna(subset=["_attribute"])
    names = sorted(frame["_attribute"].unique())
    frame["_attribute_index"] = frame["_attribute"].map({n: i for i, n in enumerate(names)}).astype(int)
    eval_split = "test" if (frame["split"] == "test").any() else "val"
    if len(names) < 2:
        raise FacesetError(f"unlearn.attribute {unlearn.attribute!r} has fewer than 2 values", "pick an attribute that varies")
    out_dir.mkdir(parents=True, exist_ok=True)
    net, frozen_norms = make_net()
    cached = config.freeze == "head"
    eval_tf = data.eval_transform(config.image_size, norm, config.eval_crop)
    splits = {s: frame[frame["split"] == s] for s in ("train", eval_split)}
    features = {s: embed(net.body, data.loader(rows, eval_tf, data.INFERENCE_BATCH, shuffle=False), device)[0]
                for s, rows in splits.items()} if cached else {}
    weights = class_weights(splits["train"]["target"], len(classes))
    initial_body = copy.deepcopy(net.body.state_dict())
    results: dict[str, dict] = {}
    embedded: dict[str, np.ndarray] = {}
    saved: dict[str, str] = {}
    for title, alpha in (("without unlearning", 0.0), *((f"with unlearning (alpha {a:g})", a) for a in unlearn.alphas)):
        net.body.load_state_dict(initial_body)
        seed_everything(hyper.seed)
        model = UnlearnNet(nn.Identity() if cached else net.body, net.embedding_dim, unlearn.embedding_dim,
                           len(classes), len(names))
        labels = {s: (torch.tensor(rows["target"].to_numpy()), torch.tensor(rows["_attribute_index"].to_numpy()))
                  for s, rows in splits.items()}
        generator = torch.Generator().manual_seed(hyper.seed)
        if cached:
            train = DataLoader(TensorDataset(features["train"], torch.stack(labels["train"], 1)),
                               batch_size=hyper.batch_size, shuffle=True, generator=generator,
                               collate_fn=_split_labels)
            batches = {s: DataLoader(TensorDataset(features[s], labels[s][0]), batch_size=256) for s in splits}
        else:
            table = data.ImageTable(splits["train"]["path"].tolist(), list(zip(*(t.tolist() for t in labels["train"]))),
                                    data.train_transform(config.image_size, norm, config.min_crop_scale, config.crop_ratio))
            train = DataLoader(table, batch_size=hyper.batch_size, shuffle=True, generator=generator,
                               collate_fn=_split_image_labels)
            batches = {s: data.loader(rows, eval_tf, data.INFERENCE_BATCH, shuffle=False) for s, rows in splits.items()}
        history = train_unlearning(model, train, hyper, alpha, weights=weights, device=device,
                                   frozen_norms=[] if cached else frozen_norms)
        train_x, _ = embeddings(model, batches["train"], device)
        eval_x, predicted = embeddings(model, batches[eval_split], device)
        attr_train, attr_eval = labels["train"][1].numpy(), labels[eval_split][1].numpy()
        results[title] = {
            "alpha": alpha,
            "probe_accuracy": probe_accuracy(train_x, attr_train, eval_x, attr_eval),
            "target_accuracy": float((predicted == splits[eval_split]["target"].to_numpy()).mean()),
            "history": history,
        }
        embedded[title] = eval_x
        if alpha > 0:
            saved[title] = str(save_unlearned(net, model, classes, config, unlearn, alpha, norm, out_dir))
            results[title]["model"] = saved[title]
        if log:
            log(f"unlearning {title}: attribute probe {results[title]['probe_accuracy']:.3f}, "
                f"target accuracy {results[title]['target_accuracy']:.3f}")
    majority = float(np.bincount(labels[eval_split][1].numpy()).max() / len(labels[eval_split][1]))
    plot = _plot(embedded, labels[eval_split][1].numpy(), names, out_dir / "embedding_2d.png")
    return {"attribute": unlearn.attribute, "alpha": unlearn.alpha, "values": names, "evaluated_on": eval_split,
            "cached_features": cached, "probe_majority_baseline": majority, "runs": results, "plot": str(plot),
            "alpha_grid": [{"alpha": run["alpha"], "probe_accuracy": run["probe_accuracy"],
                            "target_accuracy": run["target_accuracy"], "model": run.get("model")}
                           for run in results.values()]}


def alpha_folder(out_dir: Path, alpha: float) -> Path:
    """models/unlearn/alpha_<a>/: one folder per unlearned model."""
    return Path(out_dir) / f"alpha_{alpha:g}"


def save_unlearned(net: Net, model: UnlearnNet, classes: list[str], config: FinetuneConfig, unlearn: UnlearnConfig,
                   alpha: float, norm: Normalization, out_dir: Path) -> Path:
    """The unlearned model as a faceset checkpoint: the backbone (`net.body`), the shared
    embedding (`neck`) and the target head, with the class map and settings of any model.pt."""
    folder = alpha_folder(out_dir, alpha)
    folder.mkdir(parents=True, exist_ok=True)
    state = {**{f"body.{k}": v for k, v in net.body.state_dict().items()},
             **{f"neck.{k}": v for k, v in model.neck.state_dict().items()},
             **{f"head.{k}": v for k, v in model.head.state_dict().items()}}
    checkpoint = {"arch": net.arch, "classes": classes, "state_dict": state, "mean": list(norm.mean),
                  "std": list(norm.std), "image_size": config.image_size, "finetune": config.model_dump(mode="json"),
                  "unlearn": {"attribute": unlearn.attribute, "alpha": alpha, "embedding_dim": unlearn.embedding_dim}}
    atomic_write(folder / "model.pt", lambda tmp: torch.save(checkpoint, tmp))
    write_json(folder / "recipe.json", {"finetune": config.model_dump(mode="json"), "unlearn": checkpoint["unlearn"]})
    write_json(folder / "class_map.json", {str(i): c for i, c in enumerate(classes)})
    return folder / "model.pt"


def _split_labels(batch):
    inputs, labels = torch.utils.data.default_collate(batch)
    return inputs, (labels[:, 0], labels[:, 1])


def _split_image_labels(batch):
    inputs, labels = torch.utils.data.default_collate(batch)
    return inputs, (labels[0], labels[1])

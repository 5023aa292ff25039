"""Evaluation of the chosen model on the test split: metrics, confusion, subgroups, galleries.

Accuracy per subgroup comes with a bootstrap confidence interval and the largest gap
between groups: the check the Pew team ran before publishing, because a classifier
that is right 90% of the time overall can be right far less often for one group.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support  # noqa: E402

from tasks.core.atomic import write_figure  # noqa: E402
from tasks.core.binning import UNKNOWN, group_labels, label_order, small_groups  # noqa: E402


def metrics(targets: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """Accuracy; precision, recall, F1 per class and macro; confusion; real vs predicted counts."""
    predicted = probs.argmax(1)
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(targets, predicted, labels=labels, zero_division=0)
    matrix = confusion_matrix(targets, predicted, labels=labels)
    return {
        "n": int(len(targets)),
        "accuracy": float((predicted == targets).mean()) if len(targets) else float("nan"),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "per_class": {
            c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
            for i, c in enumerate(classes)
        },
        "confusion_matrix": {"labels": classes, "matrix": matrix.tolist(), "rows": "true class", "columns": "predicted class"},
        "distribution": {c: {"real": int((targets == i).sum()), "predicted": int((predicted == i).sum())}
                         for i, c in enumerate(classes)},
    }


def probability_table(rows: pd.DataFrame, probs: np.ndarray, classes: list[str],
                      keep: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """Per labelled image: path, true class, predicted class, confidence and the probability
    of each class (`p_<class>`), plus the `keep` columns. What `faceset apply` reads back to
    adjust shares for the model's errors (tasks/finetune/shares.py), so nothing is rounded."""
    table = rows[["path", "class", *[c for c in keep if c in rows.columns]]].reset_index(drop=True).assign(
        predicted=[classes[i] for i in probs.argmax(1)], confidence=probs.max(1) if len(probs) else [])
    for index, name in enumerate(classes):
        table[f"p_{name}"] = probs[:, index]
    return table


def group_values(values: pd.Series, name: str, bins: dict[str, list[float]] | None = None,
                 reference: pd.Series | None = None) -> pd.Series:
    """Attribute values as group labels, grouped as the split groups them (tasks.core.binning):
    the recipe's bins for `name`, else the quartiles of `reference` (the whole tree, so the
    test split is grouped as the dataset is). Missing values are no group (NA)."""
    labels = group_labels(values, (bins or {}).get(name), reference)
    return labels.mask(labels == UNKNOWN)


def bootstrap_ci(correct: np.ndarray, rounds: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of 0/1 outcomes."""
    if len(correct) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = rng.choice(correct, size=(rounds, len(correct)), replace=True).mean(1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def per_group(frame: pd.DataFrame, correct: np.ndarray, attributes: list[str],
              bins: dict[str, list[float]] | None = None, seed: int = 0, reference: pd.DataFrame | None = None) -> dict:
    """For each attribute: accuracy, n and 95% bootstrap CI per group (groups of `group_values`,
    quartiles from `reference`), and the largest gap. A group under MIN_GROUP images is marked
    `too_few_to_judge` and left out of the gap; with fewer than two groups to judge, the gap
    spans every group and is marked too."""
    report: dict[str, dict] = {}
    for attribute in attributes:
        if attribute not in frame.columns:
            continue
        basis = reference[attribute] if reference is not None and attribute in reference.columns else None
        groups = group_values(frame[attribute].reset_index(drop=True), attribute, bins, basis)
        rows = {}
        for value in sorted(groups.dropna().unique(), key=label_order):
            mask = (groups == value).fillna(False).to_numpy()
            low, high = bootstrap_ci(correct[mask].astype(float), seed=seed)
            rows[str(value)] = {"n": int(mask.sum()), "accuracy": float(correct[mask].mean()), "ci_low": low, "ci_high": high}
        if not rows:
            continue
        few = set(small_groups({g: r["n"] for g, r in rows.items()}))
        for group, row in rows.items():
            row["too_few_to_judge"] = group in few
        judged = [g for g in rows if g not in few]
        compared = judged if len(judged) >= 2 else list(rows)
        best = max(compared, key=lambda g: rows[g]["accuracy"])
        worst = min(compared, key=lambda g: rows[g]["accuracy"])
        report[attribute] = {"groups": rows, "largest_gap": {
            "gap": rows[best]["accuracy"] - rows[worst]["accuracy"], "highest": best, "lowest": worst,
            "too_few_to_judge": len(judged) < 2}}
    return report


def plot_confusion(result: dict, path: Path) -> Path:
    labels, matrix = result["confusion_matrix"]["labels"], np.array(result["confusion_matrix"]["matrix"])
    size = 2.5 + 0.5 * len(labels)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > matrix.max() / 2 else "black")
    fig.tight_layout()
    write_figure(path, fig)
    plt.close(fig)
    return path


def plot_curves(history: list[dict], path: Path) -> Path:
    """Train and validation loss and accuracy per epoch of the chosen grid point."""
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    for key, ax in (("loss", left), ("acc", right)):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], marker="o", label="train")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy" if key == "acc" else "loss")
        ax.legend()
    fig.tight_layout()
    write_figure(path, fig)
    plt.close(fig)
    return path


def _montage(paths: list[str], captions: list[str], out: Path, thumb: int = 96) -> Path:
    """A row of thumbnails with captions, one PNG per gallery."""
    fig, axes = plt.subplots(1, len(paths), figsize=(1.4 * len(paths), 1.7), squeeze=False)
    for ax, path, caption in zip(axes[0], paths, captions):
        with Image.open(path) as image:
            ax.imshow(ImageOps.fit(image.convert("RGB"), (thumb, thumb)))
        ax.set_title(caption, fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    write_figure(out, fig)
    plt.close(fig)
    return out


def galleries(frame: pd.DataFrame, probs: np.ndarray, classes: list[str], out_dir: Path, per_gallery: int = 6) -> dict:
    """The most confident false positives and false negatives of every class.

    A false positive of class c was predicted c but is not; a false negative is c but
    was predicted another class with high confidence. Returns the images per gallery.
    Galleries of an earlier run are deleted first: one left beside the new ones could show
    a face that has since been taken down.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.png"):
        stale.unlink()
    targets = frame["target"].to_numpy()
    predicted = probs.argmax(1)
    result: dict[str, dict] = {}
    for index, name in enumerate(classes):
        entry: dict[str, dict] = {}
        kinds = {"false_positives": (predicted == index) & (targets != index),
                 "false_negatives": (targets == index) & (predicted != index)}
        for kind, mask in kinds.items():
            rows = np.flatnonzero(mask)
            rows = rows[np.argsort(-probs[rows, predicted[rows]], kind="stable")][:per_gallery]
            items = [{"path": frame["path"].iloc[r], "true": classes[targets[r]], "predicted": classes[predicted[r]],
                      "confidence": float(probs[r, predicted[r]])} for r in rows]
            picture = None
            if items:
                picture = _montage([i["path"] for i in items],
                                   [f"{i['true']}→{i['predicted']}\n{i['confidence']:.2f}" for i in items],
                                   out_dir / f"{_safe(name)}_{kind}.png")
            entry[kind] = {"images": items, "png": str(picture) if picture else None}
        result[name] = entry
    return result


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def _folders(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def labelled_images(folder: Path, classes: list[str], split: str | None = None) -> tuple[pd.DataFrame, str]:
    """The labelled images of an ImageFolder tree, as rows (path, class, target and group columns),
    and a sentence saying what was read. Layouts, the first that fits:

    - a split tree (train/ val/ test/: a dataset's splits/ or variants/<name>/): its `split`
      folder, by default test/, else val/ (metadata.jsonl columns come along);
    - <class>/ folders named as the model's classes (metadata.jsonl columns come along);
    - <group>/<class>/ folders: the first level becomes the `group` column.
    """
    from tasks.core.errors import FacesetError
    from tasks.core.paths import SPLITS
    from tasks.finetune.data import read_split

    folder = Path(folder)
    if not folder.is_dir():
        raise FacesetError(f"{folder}: no such folder", "give a folder of <class>/ image folders (an ImageFolder tree)")
    if (folder / "splits").is_dir():
        folder = folder / "splits"
    said = str(folder)
    present = [s for s in SPLITS if (folder / s).is_dir()]
    if present:
        chosen = split or ("test" if "test" in present else "val" if "val" in present else present[-1])
        if chosen not in present:
            raise FacesetError(f"{folder} has no {chosen}/ folder", f"choose --split among {', '.join(present)}")
        folder, said = folder / chosen, f"the {chosen}/ split of {folder}"
    subfolders = _folders(folder)
    if subfolders and set(subfolders) <= set(classes):
        rows = read_split(folder, split or "")
    elif subfolders and all(set(_folders(folder / g)) and set(_folders(folder / g)) <= set(classes) for g in subfolders):
        rows = pd.concat([read_split(folder / g, split or "").assign(group=g) for g in subfolders], ignore_index=True)
        said += " (one folder per group, the group in column 'group')"
    else:
        strange = sorted(set(subfolders) - set(classes))
        raise FacesetError(f"{folder}: the folders {', '.join(strange) or '(none)'} are not classes of the model "
                           f"({', '.join(classes)})",
                           "lay the images out as <class>/*.jpg or <group>/<class>/*.jpg with the model's class names")
    if rows.empty:
        raise FacesetError(f"{folder} holds no labelled images", "put images in its <class>/ folders")
    rows["target"] = rows["class"].map({c: i for i, c in enumerate(classes)}).astype(int)
    return rows.drop(columns=["split"]), said


def merge_labels(rows: pd.DataFrame, labels_csv: Path) -> pd.DataFrame:
    """Group columns from a CSV: a `file` column (a path under the labelled folder, or a file
    name) and any other columns, joined to the images by that path or name."""
    from tasks.core.errors import FacesetError

    labels = pd.read_csv(labels_csv, dtype="string")
    if "file" not in labels.columns:
        raise FacesetError(f"{labels_csv} has no 'file' column", "name the image column 'file' (a path or file name)")
    extra = labels.drop(columns=[c for c in labels.columns if c in rows.columns and c != "file"])
    by_name = extra.assign(file=extra["file"].map(lambda f: Path(f).name)).drop_duplicates("file")
    return rows.assign(file=rows["path"].map(lambda p: Path(p).name)).merge(by_name, on="file", how="left").drop(
        columns="file")


def evaluate_folder(model_dir: Path, folder: Path, *, name: str | None = None, labels_csv: Path | None = None,
                    split: str | None = None, device: str | None = None) -> dict:
    """`faceset evaluate`: the model on labelled images it never saw. Writes the metrics (accuracy,
    per class, per group, confusion) to MODEL_DIR/evaluations/<name>.json and every image's
    probabilities to <name>.csv, which `faceset apply` then prefers to the finetune's own split."""
    from tasks.core.atomic import write_csv, write_json
    from tasks.core.paths import ModelPaths
    from tasks.core.safepaths import folder_name
    from tasks.core.storage import sha256_file
    from tasks.finetune.apply import classify, load_models
    from tasks.finetune.data import attribute_columns
    from tasks.finetune.training import pick_device

    model_dir = Path(model_dir)
    models, checkpoint = load_models(model_dir)
    classes = list(checkpoint["classes"])
    rows, said = labelled_images(Path(folder), classes, split)
    if labels_csv is not None:
        rows = merge_labels(rows, Path(labels_csv))
    crops = []
    for path in rows["path"]:
        with Image.open(path) as image:
            crops.append(image.convert("RGB"))
    probs = classify(models, crops, pick_device(device))
    targets = rows["target"].to_numpy()
    groups = [c for c in ["group", *attribute_columns(rows)] if c in rows.columns and rows[c].notna().any()]
    groups = list(dict.fromkeys(groups))
    result = metrics(targets, probs, classes)
    result["per_group"] = per_group(rows, probs.argmax(1) == targets, groups, reference=rows)
    name = folder_name(name or Path(folder).resolve().name)
    layout = ModelPaths(model_dir)
    result.update(name=name, labelled=said, model=str(layout.model), model_sha256=sha256_file(layout.model),
                  groups=groups, probabilities=str(layout.evaluation_csv(name)))
    write_csv(layout.evaluation_csv(name), probability_table(rows, probs, classes, keep=groups))
    write_json(layout.evaluation_json(name), result)
    return result

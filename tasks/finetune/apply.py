"""Applying a trained model to new images or a built dataset: predicted class and probabilities, as a table.

When the model was trained on faceset's face crops, new images are cropped the same
way first (the faces stage's detector, same settings), because a model trained on tight crops sees
whole photos as something else entirely. With `faces="each"` every face of an image is
classified (group photos: one row per face, with its box); a built dataset's own kept face
crops are classified as they are, with the manifest's columns beside them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from PIL import Image

from tasks.core.errors import FacesetError
from tasks.core.manifest import KEPT
from tasks.core.reasons import NO_FACE
from tasks.core.paths import DatasetPaths, ModelPaths
from tasks.finetune import ensemble
from tasks.vision.backbones import Net, Normalization, build_net
from tasks.finetune.data import IMAGE_SUFFIXES, INFERENCE_BATCH
from tasks.finetune.training import pick_device
from tasks.core.recipe import FacesConfig, FinetuneConfig


FEW_LABELLED = 100  # held-out faces under which apply warns that the adjustment's error rates are rough


def trained_config(checkpoint: dict) -> FinetuneConfig:
    """The finetune settings a model was trained with; keys an older model lacks take their defaults.
    The model is the architecture the checkpoint holds: models trained before model and weights
    were checked recorded `model: resnet18, weights: lite0` and trained Lite0."""
    settings = dict(checkpoint.get("finetune") or {})
    if checkpoint.get("arch"):
        settings["model"] = checkpoint["arch"]
    return FinetuneConfig.model_validate(settings)


def load_unlearned(net: Net, checkpoint: dict) -> Net:
    """`net` (built for the checkpoint's arch and settings) turned into the saved unlearned model:
    body, then the shared embedding, then the target head, weights loaded strictly."""
    dim = int(checkpoint["unlearn"]["embedding_dim"])
    body = nn.Sequential()
    body.add_module("0", net.body)
    body.add_module("1", nn.Sequential(nn.Linear(net.embedding_dim, dim), nn.ReLU()))
    unlearned = Net(body, nn.Linear(dim, len(checkpoint["classes"])), net.arch)
    state = checkpoint["state_dict"]
    renamed = {(f"body.0.{k[5:]}" if k.startswith("body.") else f"body.1.{k[5:]}" if k.startswith("neck.") else k): v
               for k, v in state.items()}
    unlearned.load_state_dict(renamed, strict=True)
    return unlearned.eval()


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
                       pool=trained.pool, face_features=trained.face_features)
    if "unlearn" in checkpoint:  # models/unlearn/alpha_<a>/: body, shared embedding, target head
        return load_unlearned(net, checkpoint), checkpoint
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


def is_dataset(path: Path) -> bool:
    """A folder `faceset build` wrote: it has the manifest."""
    return DatasetPaths(Path(path)).manifest.is_file()


@dataclass
class Face:
    """One thing to classify (or why there is nothing): its image, where the face is, the crop,
    and the columns reported beside the prediction."""

    image: str
    status: str
    crop: Image.Image | None = None
    face_index: int | None = None
    face_box: str | None = None
    columns: dict[str, object] = field(default_factory=dict)


def crop_settings(checkpoint: dict, faces: str) -> FacesConfig | None:
    """The face crop the model was trained with; for `faces="each"` a crop is needed even for a
    model trained on whole images (the recipe defaults), and no bound on faces per image."""
    settings = checkpoint.get("crop_faces")
    if faces != "each":  # one face per image, as the faces stage takes it without `each`
        one = {**settings, "each": False, "max_faces": None} if settings and settings.get("each") else settings
        return FacesConfig(**one) if one is not None else None
    return FacesConfig(**{**(settings or {}), "each": True, "max_faces": None})


def face_cropper(settings: dict | None, log: Callable[[str], None] | None = print) -> Callable | None:
    """A function RGB array -> (crop or None, reason) using the face detector, or None to use whole images."""
    if settings is None:
        return None
    from tasks.vision.detector import default_detector, verify_and_crop

    config = FacesConfig(**settings)
    detector = default_detector(config.min_score)

    def crop(rgb: np.ndarray) -> tuple[np.ndarray | None, str | None]:
        outcome = verify_and_crop(rgb, config, detector)
        return outcome["crop"], outcome["reason"]

    return crop


def every_face(rgb: np.ndarray, config: FacesConfig, detector=None) -> tuple[list[dict], str | None]:
    """Each usable face of the image, as the faces stage finds them with `faces: {each: true}`
    (tasks/vision/detector.py `each_face`: detection at a scale that keeps `min_face_px` faces
    findable, numbered in reading order, small and blurred faces left out): per face its
    face_index, face_box (JSON, the image's pixels) and crop; and why there is none."""
    from tasks.vision.detector import default_detector, each_face

    outcome = each_face(rgb, config, detector or default_detector(config.min_score))
    return outcome["face_list"], outcome["reason"]


def _read(path: Path) -> tuple[Image.Image | None, str]:
    if not path.is_file():
        return None, "file not found"
    try:
        with Image.open(path) as image:
            return image.convert("RGB"), ""
    except Exception as exc:  # Pillow raises many kinds for broken files
        return None, f"not an image ({exc.__class__.__name__})"


def image_faces(paths: list[Path], checkpoint: dict, faces: str, cropper: Callable | None | str = "auto",
                detector=None) -> Iterator[Face]:
    """Loose images: the whole image, its one face (a model trained on crops), or each face."""
    config = crop_settings(checkpoint, faces)
    if cropper == "auto":
        cropper = face_cropper(config.model_dump(mode="json") if config and faces != "each" else None)
    for path in paths:
        columns = {"folder": path.parent.name}
        image, problem = _read(path)
        if image is None:
            yield Face(str(path), problem, columns=columns)
        elif faces == "each":
            found, reason = every_face(np.asarray(image), config, detector)
            if not found:
                yield Face(str(path), reason or NO_FACE, columns=columns)
            for face in found:
                yield Face(str(path), "face crop", Image.fromarray(face["crop"]), face["face_index"], face["face_box"],
                           columns)
        elif cropper is None:
            yield Face(str(path), "whole image", image, columns=columns)
        else:
            crop, reason = cropper(np.asarray(image))
            yield (Face(str(path), "face crop", Image.fromarray(crop), 0, columns=columns) if crop is not None
                   else Face(str(path), reason or NO_FACE, columns=columns))


def dataset_faces(root: Path) -> tuple[Iterator[Face], list[str]]:
    """A built dataset's kept faces (its face rows when it keeps one row per face) with every
    manifest column, and the names of those columns (what --by may name)."""
    paths = DatasetPaths(Path(root))
    manifest = pd.read_parquet(paths.manifest)
    kept = manifest[(manifest["status"] == KEPT) & manifest["face_path"].notna()]
    if "parent_id" in kept.columns and kept["parent_id"].notna().any():
        kept = kept[kept["parent_id"].notna()]
    columns = [c for c in manifest.columns if c not in ("face_box", "face_index")]

    def faces() -> Iterator[Face]:
        for row in kept.to_dict("records"):
            values = {c: row[c] for c in columns}
            image = row.get("image_url") if isinstance(row.get("image_url"), str) else row.get("image_path")
            crop, problem = _read(paths.root / row["face_path"])
            index = row.get("face_index")
            yield Face(str(image), "kept face" if crop is not None else problem, crop,
                       None if pd.isna(index) else int(index), row.get("face_box"), values)

    return faces(), columns


def classify(models: list[ensemble.Model], crops: list[Image.Image], device: torch.device,
             batch_size: int = INFERENCE_BATCH) -> np.ndarray:
    """Averaged class probabilities of the models for each crop, in order."""

    def batches(transform):
        return ((torch.stack([transform(c) for c in crops[start:start + batch_size]]), None)
                for start in range(0, len(crops), batch_size))

    return ensemble.average_probabilities(models, batches, device)


def predict_faces(models: list[ensemble.Model], classes: list[str], faces: Iterable[Face], device: torch.device,
                  chunk: int = 256, batch_size: int = INFERENCE_BATCH, crops: Path | None = None) -> pd.DataFrame:
    """One row per face (or per image without one): image, face_index, face_box, status, predicted,
    confidence, p_<class>, then the face's columns. Crops are classified `chunk` at a time.

    With `crops`, each classified crop is also saved there as PNG (column `crop`): the very
    pixels the model saw, to label by hand for `faceset evaluate` (a JPEG copy's artefacts
    alone can shift a model's error rates; docs/shares.md)."""
    if crops is not None:
        Path(crops).mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    pending: list[tuple[dict, Image.Image]] = []

    def flush() -> None:
        if pending:
            probs = classify(models, [crop for _, crop in pending], device, batch_size)
            for (row, _), p in zip(pending, probs):
                row.update(predicted=classes[int(p.argmax())], confidence=float(p.max()),
                           **{f"p_{c}": float(v) for c, v in zip(classes, p)})
            pending.clear()

    for face in faces:
        row = {"image": face.image, "face_index": face.face_index, "face_box": face.face_box, "status": face.status,
               "predicted": None, "confidence": np.nan, **{f"p_{c}": np.nan for c in classes}}
        row.update({k: v for k, v in face.columns.items() if k not in row})
        rows.append(row)
        if face.crop is not None:
            if crops is not None:
                row["crop"] = str(Path(crops) / f"face_{len(rows):06d}.png")
                face.crop.save(row["crop"])
            pending.append((row, face.crop))
            if len(pending) >= chunk:
                flush()
    flush()
    table = pd.DataFrame(rows, columns=None if rows else ["image", "face_index", "face_box", "status", "predicted",
                                                              "confidence", *[f"p_{c}" for c in classes]])
    table["face_index"] = table["face_index"].astype("Int64")
    table["predicted"] = table["predicted"].astype("string")
    return table


def _sources(images: Iterable[str | Path], checkpoint: dict, faces: str, cropper: Callable | None | str
             ) -> tuple[list[Iterable[Face]], set[str]]:
    """The faces to classify from each input (loose images first, then each dataset) and the
    columns they carry. An empty folder is an error; a missing file keeps a row saying so."""
    sources: list[Iterable[Face]] = []
    columns: set[str] = set()
    loose: list[Path] = []
    for item in map(Path, images):
        if item.is_dir() and is_dataset(item):
            found, names = dataset_faces(item)
            sources.append(found)
            columns.update(names)
            continue
        if item.is_dir() and not image_files([item]):
            raise FacesetError(f"{item} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})",
                               "give a folder with images in it, or a dataset folder 'faceset build' wrote")
        loose.append(item)
    if loose:
        sources.insert(0, image_faces(image_files(loose), checkpoint, faces, cropper))
        columns.add("folder")
    return sources, columns


def predict_images(model_dir: Path, images: Iterable[str | Path], *, device: str | None = None,
                   cropper: Callable | None | str = "auto", faces: str = "one", batch_size: int = INFERENCE_BATCH,
                   by: list[str] | None = None, log: Callable[[str], None] | None = print) -> pd.DataFrame:
    """One row per image (per face with `faces="each"`): predicted class, confidence, p_<class>
    columns, and what was classified. A built dataset given among `images` gives its kept faces
    with its manifest's columns; loose images carry `folder` (the folder they are in).

    Images that cannot be used (missing, not an image, no face) keep their row with
    empty predictions and the reason in `status`. Naming a `by` column no input has is an error.
    """
    return _predict(model_dir, images, device=device, cropper=cropper, faces=faces, batch_size=batch_size, by=by)[0]


def _predict(model_dir: Path, images: Iterable[str | Path], *, device: str | None, cropper: Callable | None | str,
             faces: str, batch_size: int, by: list[str] | None, crops: Path | None = None
             ) -> tuple[pd.DataFrame, list[str]]:
    """`predict_images`'s table and the model's classes."""
    models, checkpoint = load_models(Path(model_dir))
    sources, columns = _sources(images, checkpoint, faces, cropper)
    unknown = [c for c in by or [] if c not in columns]
    if unknown:
        raise FacesetError(f"--by {' '.join(unknown)}: no such column in the inputs",
                           f"choose among {', '.join(sorted(columns))}")
    chained = (face for source in sources for face in source)
    classes = list(checkpoint["classes"])
    return predict_faces(models, classes, chained, pick_device(device), batch_size=batch_size, crops=crops), classes


def apply_model(model_dir: Path, images: Iterable[str | Path], out_dir: Path, *, faces: str = "one",
                by: list[str] | None = None, evaluation: str | None = None, method: str | None = None,
                rounds: int = 1000, device: str | None = None, seed: int = 0, crops: Path | None = None) -> dict:
    """`faceset apply`: predictions.csv, then shares.csv and shares.html per group of `by`,
    adjusted with the model's measured errors (tasks/finetune/shares.py) when it has any.
    Returns what happened, in numbers and sentences."""
    from tasks.core.atomic import write_csv
    from tasks.finetune.shares import Adjuster, load_calibration, share_table
    from tasks.finetune.shares_page import write_shares

    by = list(by or [])
    table, classes = _predict(model_dir, images, device=device, cropper="auto", faces=faces,
                              batch_size=INFERENCE_BATCH, by=by, crops=crops)
    out_dir = Path(out_dir)
    write_csv(out_dir / "predictions.csv", table)
    calibration = load_calibration(Path(model_dir) if Path(model_dir).is_dir() else Path(model_dir).parent,
                                   classes, evaluation)
    if calibration is None:
        adjuster = None
        note = ("Adjusted shares are omitted: the model folder holds no measured errors (no evaluations/ from "
                "'faceset evaluate', no predictions.csv or confusion_matrix.json from 'faceset finetune'), "
                "so only the naive shares, which lean towards the classes the model over-predicts, are given.")
    else:
        adjuster = Adjuster(calibration, method, rounds=rounds, seed=seed)
        note = (f"Adjusted shares use {adjuster.method.upper()} with the errors measured on {calibration.source}: "
                f"{len(calibration)} labelled faces" + (f" (under {FEW_LABELLED}: the intervals are wide; label more "
                                                        f"with 'faceset evaluate')." if len(calibration) < FEW_LABELLED
                                                        else "."))
    shares = share_table(table, classes, by, adjuster)
    files = write_shares(out_dir, shares, by, model=str(model_dir), calibration=calibration.source if calibration else None,
                         note=note)
    return {"table": table, "shares": shares, "note": note, "files": {"predictions": out_dir / "predictions.csv", **files},
            "faces": int(table["predicted"].notna().sum()), "images": int(table["image"].nunique()),
            "calibration": calibration.source if calibration else None}

"""The search study of `faceset demo --study search`: group photos with a known share of women per query.

Each "search result" is a 1280x960 group photo of one to six real UTKFace faces pasted at
known places, so every face's box and gender are known. The queries' women shares are
chosen (a nurse query mostly women, an engineer query mostly men), and the study shows
what counting a classifier's labels does to them and what the adjustment recovers:

1. a small model is fine-tuned on other UTKFace faces (none of those in the photos);
2. `faceset evaluate` measures it on a "hand-labelled" set: faces found in a separate set of
   group photos, labelled from where they were pasted;
3. `faceset apply --faces each --by folder` classifies every face of every result photo and
   reports the naive and adjusted share of women per query, printed beside the truth.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageFilter

CANVAS = (1280, 960)
QUERIES = {"nurse": 0.85, "teacher": 0.7, "doctor": 0.45, "police officer": 0.25, "engineer": 0.15}


@dataclass
class Placed:
    """One face in a group photo: its box (x, y, w, h) in the photo's pixels and its gender."""

    box: tuple[int, int, int, int]
    gender: str
    file: str


def read_people(images_dir: Path) -> dict[str, list[Path]]:
    """UTKFace adults by gender ('female', 'male'), in the file order of labels.csv."""
    with open(images_dir / "labels.csv", encoding="utf-8", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if 18 <= int(r["age"]) <= 80 and (images_dir / r["file"]).is_file()]
    return {g: [images_dir / r["file"] for r in rows if r["gender"] == code] for g, code in (("female", "1"), ("male", "0"))}


def group_photo(faces: list[tuple[Path, str]], rng: random.Random,
                canvas: tuple[int, int] = CANVAS) -> tuple[Image.Image, list[Placed]]:
    """Up to six faces on a blurred backdrop, one per cell of a 3x2 grid, each scaled to
    120-260 px and jittered inside its cell, so no two overlap."""
    width, height = canvas
    cells = [(c, r) for r in range(2) for c in range(3)]
    rng.shuffle(cells)
    backdrop = Image.new("RGB", canvas, tuple(rng.randint(60, 200) for _ in range(3)))
    with Image.open(faces[0][0]) as first:
        backdrop = Image.blend(backdrop, first.convert("RGB").resize(canvas).filter(ImageFilter.GaussianBlur(40)), 0.4)
    placed = []
    cell_w, cell_h = width // 3, height // 2
    for (path, gender), (col, row) in zip(faces, cells):
        side = rng.randint(120, 260)
        with Image.open(path) as image:
            face = image.convert("RGB").resize((side, side))
        x = col * cell_w + rng.randint(0, cell_w - side)
        y = row * cell_h + rng.randint(0, cell_h - side)
        backdrop.paste(face, (x, y))
        placed.append(Placed((x, y, side, side), gender, path.name))
    return backdrop, placed


def draw_faces(people: dict[str, list[Path]], women: float, count: int, rng: random.Random) -> list[tuple[Path, str]]:
    """`count` faces, each a woman with probability `women`, taken (without reuse) from `people`."""
    chosen = []
    for _ in range(count):
        gender = "female" if rng.random() < women else "male"
        chosen.append((people[gender].pop(), gender))
    return chosen


def write_photos(folder: Path, people: dict[str, list[Path]], women: float, photos: int,
                 rng: random.Random) -> list[Placed]:
    """`photos` group photos of 1-6 faces into `folder`, and where their faces are (faces.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    record, placed_all = {}, []
    for number in range(photos):
        image, placed = group_photo(draw_faces(people, women, rng.randint(1, 6), rng), rng)
        name = f"result_{number:03d}.jpg"
        image.save(folder / name, quality=90)
        record[name] = [{"box": p.box, "gender": p.gender, "file": p.file} for p in placed]
        placed_all.extend(placed)
    (folder / "faces.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    return placed_all


def training_tree(people: dict[str, list[Path]], root: Path, per_class: dict[str, int], rng: random.Random) -> Path:
    """A train/val/test tree of faces taken from `people` (so never in a result photo), each pasted
    alone on a backdrop and cropped as apply crops faces: the model learns the crops it will see."""
    import numpy as np

    from tasks.core.recipe import FacesConfig
    from tasks.finetune.apply import every_face

    config = FacesConfig(each=True)
    for split, n in per_class.items():
        for gender, pool in people.items():
            (root / split / gender).mkdir(parents=True, exist_ok=True)
            for _ in range(n):
                path = pool.pop()
                image, _ = group_photo([(path, gender)], rng)
                found, _ = every_face(np.asarray(image), config)
                if found:
                    Image.fromarray(found[0]["crop"]).save((root / split / gender / path.name).with_suffix(".png"))
    return root


def labelled_faces(photos: Path, out: Path) -> int:
    """The "hand-labelled" set: every face found in the photos of `photos`, cropped as apply crops
    them, filed under the gender of the pasted face its centre falls in. Returns the count.

    Crops are kept as PNG: apply classifies its crops as they come out of the cropper, and a
    JPEG copy's artefacts alone moved a small model's error rates by several points."""
    import numpy as np

    from tasks.core.recipe import FacesConfig
    from tasks.finetune.apply import every_face

    config = FacesConfig(each=True)
    record = json.loads((photos / "faces.json").read_text(encoding="utf-8"))
    count = 0
    for name, faces in record.items():
        with Image.open(photos / name) as image:
            found, _ = every_face(np.asarray(image.convert("RGB")), config)
        for face in found:
            x, y, w, h = json.loads(face["face_box"])
            cx, cy = x + w / 2, y + h / 2
            owner = [f for f in faces if f["box"][0] <= cx <= f["box"][0] + f["box"][2]
                     and f["box"][1] <= cy <= f["box"][1] + f["box"][3]]
            if owner:
                (out / owner[0]["gender"]).mkdir(parents=True, exist_ok=True)
                Image.fromarray(face["crop"]).save(out / owner[0]["gender"] / f"{Path(name).stem}_{face['face_index']}.png")
                count += 1
    return count


def run_study(images_dir: Path, out: Path, *, photos: int = 30, epochs: int = 10, seed: int = 11,
              log: Callable[[str], None] = print) -> dict:
    """The whole study in `out`; returns the truth, naive and adjusted share of women per query."""
    import pandas as pd

    from tasks.core.recipe import FacesConfig, FinetuneConfig
    from tasks.finetune.apply import apply_model
    from tasks.finetune.evaluate import evaluate_folder
    from tasks.finetune.pipeline import finetune_tree

    rng = random.Random(seed)
    people = read_people(images_dir)
    for pool in people.values():
        rng.shuffle(pool)
    if out.exists():
        shutil.rmtree(out)
    truth = {}
    for query, women in QUERIES.items():
        placed = write_photos(out / "results" / query, people, women, photos, rng)
        truth[query] = sum(p.gender == "female" for p in placed) / len(placed)
    log(f"demo search: {len(QUERIES)} queries x {photos} group photos in {out / 'results'}")
    write_photos(out / "to_label", people, 0.5, 60, rng)
    tree = training_tree(people, out / "train_tree", {"train": 180, "val": 50, "test": 50}, rng)
    config = FinetuneConfig(model="tf_efficientnet_lite0", weights="lite0", freeze="head", features_from="blocks.3",
                            pool=6, eval_crop=1.0, image_size=128, epochs=epochs,
                            grid={"lr": [0.001, 0.005], "momentum": [0.9], "batch_size": [16],
                                  "weight_decay": [0.1, 0.3]})
    crop = FacesConfig(each=True).model_dump(mode="json")
    summary = finetune_tree(tree, out / "model", config, crop_faces=crop, log=log)
    labelled = labelled_faces(out / "to_label", out / "hand_labelled")
    evaluation = evaluate_folder(out / "model", out / "hand_labelled", name="hand_labelled")
    log(f"demo search: model test accuracy {summary['test']['accuracy']:.3f}; on {labelled} hand-labelled faces "
        f"of the site {evaluation['accuracy']:.3f}")
    result = apply_model(out / "model", [out / "results"], out / "applied", faces="each", by=["folder"])
    shares = result["shares"]
    women = shares[shares["class"] == "female"].set_index("folder")
    table = pd.DataFrame({"truth": pd.Series(truth), "naive": women["naive"], "adjusted": women["adjusted"],
                          "low": women["low"], "high": women["high"], "faces": women["faces"]})
    return {"table": table, "note": result["note"], "files": result["files"]}

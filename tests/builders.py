"""Builders shared by the tests and benchmarks: recipes, synthetic manifests, image trees.

Test files import these from here (tests/ is on sys.path through tests/conftest.py;
benchmarks add REPO/tests themselves), never from one another. No tests here.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from tasks.core import manifest as mf
from tasks.core.paths import DatasetPaths
from tasks.core.recipe import Recipe, parse_recipe

CONTACT = "data@example.org"

# ---------------------------------------------------------------- recipes


def recipe_data(name: str = "tiny", *, fields: Sequence[str] = ("name", "label", "gender", "age"),
                target: str = "label", attributes: Sequence[str] = (), sources: Sequence[str] = ("north",),
                base: str = "http://127.0.0.1", **sections: Any) -> dict[str, Any]:
    """A recipe as its YAML reads: one source per name, a selector per field, `sections` as top-level keys."""
    selectors = {field: "h1::text" if field == "name" else f"p.{field}::text" for field in fields}
    return {
        "name": name, "contact": CONTACT,
        "sources": [{"name": source, "start_urls": [f"{base}/"],
                     "item": {"image": "img::attr(src)", "fields": dict(selectors)}} for source in sources],
        "target": target, "attributes": list(attributes), **sections,
    }


def make_recipe(name: str = "tiny", **options: Any) -> Recipe:
    """A validated recipe from `recipe_data(name, **options)` (sections such as split=, faces=, crosscheck=)."""
    return parse_recipe(recipe_data(name, **options), Path(f"{name}.yaml"))


# ---------------------------------------------------------------- synthetic manifests

PEOPLE_FIELDS = ("name", "label", "gender", "age", "team")
PEOPLE_LABELS = {"cs": 0.5, "econ": 0.3, "law": 0.2}


def split_recipe(**split: Any) -> Recipe:
    """The recipe of `synthetic_people` rows (sources north and south, a `team` field) with this split section."""
    return make_recipe("synthetic", fields=PEOPLE_FIELDS, sources=("north", "south"), attributes=("gender", "age"),
                       split=split)


def synthetic_people(seed: int, people: int = 900) -> pd.DataFrame:
    """Kept rows: people with 1-4 photos each (person_group set for most, name only for some),
    near-copies sharing dup_group (some across people: chains), a `team` field, plus rows
    that are not kept. No images: the split only reads the manifest."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(people):
        label = rng.choice(list(PEOPLE_LABELS), p=list(PEOPLE_LABELS.values()))
        gender = rng.choice(["female", "male"], p=[0.35, 0.65] if label == "cs" else [0.55, 0.45])
        age = int(rng.integers(22, 75))
        source = rng.choice(["north", "south"])
        photos = int(rng.choice([1, 1, 1, 1, 2, 3, 4]))
        grouped = rng.random() < 0.7  # the face descriptor found this person; else only the name joins
        for k in range(photos):
            rows.append({
                "item_id": f"p{p}-{k}", "source": source, "page_url": f"http://x/{p}", "image_url": f"http://x/{p}/{k}.jpg",
                "name": f"Person {p}" if rng.random() < 0.9 or photos == 1 else pd.NA,
                "label": label, "gender": gender if rng.random() > 0.02 else pd.NA,
                "age": str(age + k), "team": f"team{p // 50}" if rng.random() < 0.05 else pd.NA,
                "person_group": f"person{p}" if grouped and photos > 1 else pd.NA,
                "dup_group": pd.NA, "status": "kept", "reason": pd.NA,
            })
    frame = pd.DataFrame(rows)
    # near-copies: pairs of random kept rows (a reposted photo joins two people: a chain)
    for g in range(len(frame) // 25):
        picks = rng.choice(len(frame), size=2, replace=False)
        frame.loc[picks, "dup_group"] = f"dup{g}"
    losers = rng.choice(len(frame), size=len(frame) // 10, replace=False)
    frame.loc[losers, "status"] = rng.choice(["duplicate", "quarantined", "failed", "excluded"], size=len(losers))
    frame.loc[losers, "reason"] = "not kept"
    return mf.conform(frame, list(PEOPLE_FIELDS))


DATASET_LABELS = ("Computer Science", "econ", "R&D/ops")  # a space and a slash: folder names must cope


def dataset_recipe(variants: Sequence[dict[str, Any]] = ()) -> Recipe:
    """The recipe of `build_dataset`: target label, attributes gender and age, split variants as given."""
    return make_recipe("tiny", description="Test portraits by department", license="research use only",
                       attributes=("gender", "age"),
                       split={"stratify": ["label", "gender"], "variants": list(variants)})


def build_dataset(root: Path, n: int = 60, seed: int = 0) -> tuple[pd.DataFrame, DatasetPaths]:
    """n candidates: most kept with a 32 px crop in faces/, every tenth duplicate, failed or quarantined."""
    paths = DatasetPaths.create(root)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        sha = f"{i:02d}" + "ab" * 31
        status = "kept" if i % 10 not in (7, 8, 9) else {7: "duplicate", 8: "failed", 9: "quarantined"}[i % 10]
        row = {"item_id": f"item{i:03d}", "source": "north", "page_url": f"http://127.0.0.1/p/{i}",
               "image_url": f"http://127.0.0.1/img/{i}.jpg", "crawled_at": "2026-11-20T10:00:00+00:00",
               "name": f"Person {i}", "label": DATASET_LABELS[i % 3], "gender": ["female", "male"][i % 2],
               "age": str(25 + i % 40), "status": status,
               "reason": {"duplicate": f"duplicate of item{i - 1:03d}", "failed": "download failed: 404",
                          "quarantined": "no face"}.get(status, pd.NA),
               "sha256": sha if status != "failed" else pd.NA,
               "crosscheck": ["agree", "agree", "disagree", "skipped"][i % 4] if status == "kept" else pd.NA,
               "crosscheck_reason": "autotagger says male (91%)" if i % 4 == 2 else pd.NA}
        if status in ("kept", "duplicate"):
            face = paths.faces / f"{sha}_cfg.jpg"
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(face)
            row["face_path"] = face.relative_to(paths.root).as_posix()
        rows.append(row)
    return mf.conform(pd.DataFrame(rows), ["name", "label", "gender", "age"]), paths


# ---------------------------------------------------------------- images and image trees


def picture(seed: int, size: int = 200) -> Image.Image:
    """A structured synthetic image (shapes on a gradient): distinct pHashes per seed."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, size, dtype=np.uint8)
    image = Image.fromarray(np.dstack([np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)),
                                       np.full((size, size), rng.integers(0, 255), np.uint8)]))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.integers(0, size - 40, 2)
        w, h = rng.integers(20, 90, 2)
        box = [int(x), int(y), int(x + w), int(y + h)]
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return image


UTKFACE_RACES = {"0": "White", "1": "Black", "2": "Asian", "3": "Indian", "4": "Others"}


def utk_sample(utkface_dir: Path, per_race: int, seed: int = 7) -> list[Path]:
    """Adult UTKFace faces, the same number from each of the five race groups."""
    labels = pd.read_csv(utkface_dir / "labels.csv")
    adults = labels[labels["age"] >= 18]
    picked = adults.groupby("race", group_keys=False).sample(per_race, random_state=seed)
    return [utkface_dir / f for f in picked["file"]]


def utkface_tree(utkface_dir: Path, root: Path, per_class: dict[str, int], *, seed: int = 0,
                 splits: tuple[str, ...] = ("train", "val", "test")) -> Path:
    """`per_class[split]` UTKFace images of each gender per split, copied, with metadata.jsonl (race, age)."""
    with open(utkface_dir / "labels.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    random.Random(seed).shuffle(rows)
    by_gender = {g: [r for r in rows if r["gender"] == g] for g in ("0", "1")}
    for split in splits:
        lines = []
        for gender, pool in by_gender.items():
            name = "female" if gender == "1" else "male"
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for row in [pool.pop() for _ in range(per_class[split])]:
                shutil.copyfile(utkface_dir / row["file"], folder / row["file"])
                lines.append(json.dumps({"file_name": f"{name}/{row['file']}", "label": name,
                                         "race": UTKFACE_RACES[row["race"]], "age": int(row["age"]),
                                         "item_id": row["file"]}))
        (root / split / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def stored_images(paths: DatasetPaths, files: dict[str, bytes], **columns: Any) -> list[dict[str, Any]]:
    """Rows as the fetch stage leaves them: each file stored under images/ by its sha256, kept,
    with `columns` (a value, or a function of the item id) added to every row."""
    rows = []
    for item, data in files.items():
        sha = hashlib.sha256(data).hexdigest()
        target = paths.image_file(sha, "jpg")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        extra = {k: v(item) if callable(v) else v for k, v in columns.items()}
        rows.append({"item_id": item, "status": "kept", "sha256": sha,
                     "image_path": target.relative_to(paths.root).as_posix(), **extra})
    return rows


def run_script(script: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Python code run as a fresh script from the repository root (its own process, so what
    it imports and forks is its own), output captured."""
    repo = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-c", script], cwd=repo, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(repo)})

"""Benchmarks of `faceset apply`'s shares; writes benchmarks/results/shares.json.

1. share error over many synthetic queries: a classifier with realistic, asymmetric errors
   (about 0.88 accurate: women read as men 19% of the time, men as women 5%; its
   probabilities over-confident), a labelled held-out set of 100, 300 or 1000 faces, queries
   of 50 or 200 faces with a true share of women drawn in 5-95%. For each: the naive share
   (classify and count, CC, and its probabilistic form PCC), QuaPy's ACC and PACC on the
   held-out outputs (what apply uses), and QuaPy's EMQ (SLD) on the held-out prevalence,
   as mean absolute error and bias in points; for ACC and PACC the coverage and width of
   apply's 95% interval (a bootstrap over the query's faces and the held-out rows), and
   of the same bootstrap over the query's faces only (the rates taken as exact). 100
   queries per setting, a new held-out set every 25, 500 bootstrap rounds (apply's
   default is 1000).
2. apply throughput, faces per second, against the plain model forward in the same run:
   a built dataset's face crops (files read, transformed, classified, written), and group
   photos with `--faces each` (detection and cropping too).

Usage: .venv/bin/python benchmarks/bench_shares.py [--quick] [--only error,throughput]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from quapy.method.aggregative import EMQ  # noqa: E402

from benchmarks.results_file import write_results  # noqa: E402
from tasks.finetune.shares import Adjuster, Calibration, naive_share  # noqa: E402

CORPUS = Path(os.environ.get("FACESET_CORPUS", REPO.parent / "shared" / "corpus"))
CLASSES = ["female", "male"]


class Classifier:
    """Scores by class: women centred below the 'male' threshold by 0.9 sd, men above by 1.65 sd
    (recall 0.81 and 0.95: 0.88 accurate on balanced faces), squashed over-confidently."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def __call__(self, classes: np.ndarray) -> np.ndarray:
        score = self.rng.normal(np.where(classes == 0, -0.9, 1.65), 1.0)
        male = 1 / (1 + np.exp(-2.5 * score))
        return np.c_[1 - male, male]


def share_error(evals: list[int], sizes: list[int], queries: int, rounds: int, seed: int = 0) -> dict:
    """Error of each estimate of the share of women over `queries` synthetic queries per setting."""
    rng = np.random.default_rng(seed)
    model = Classifier(rng)
    results = {}
    for n_eval in evals:
        for size in sizes:
            errors: dict[str, list[float]] = {m: [] for m in ("CC", "PCC", "ACC", "PACC", "EMQ")}
            cover = {k: [] for k in ("ACC", "PACC", "ACC faces only", "PACC faces only")}
            width = {k: [] for k in cover}
            started = time.perf_counter()
            for block in range(queries // 25):  # a new held-out set every 25 queries
                targets = rng.integers(0, 2, n_eval)
                probs = model(targets)
                held = Calibration(CLASSES, targets, probs.argmax(1), probs, "synthetic")
                adjusters = {m: Adjuster(held, m.lower(), rounds=rounds, seed=block) for m in ("ACC", "PACC")}
                exact = {m: _rates_exact(adjusters[m]) for m in ("ACC", "PACC")}
                held_prevalence = np.bincount(targets, minlength=2) / n_eval
                for _ in range(25):
                    women = rng.uniform(0.05, 0.95)
                    group = model((rng.random(size) >= women).astype(int))
                    errors["CC"].append(naive_share(group)[0] - women)
                    errors["PCC"].append(group[:, 0].mean() - women)
                    errors["EMQ"].append(EMQ.EM(held_prevalence, group)[0][0] - women)
                    for method, adjuster in adjusters.items():
                        estimate = adjuster.estimate(group)
                        errors[method].append(estimate["adjusted"][0] - women)
                        cover[method].append(estimate["low"][0] <= women <= estimate["high"][0])
                        width[method].append(estimate["high"][0] - estimate["low"][0])
                        faces_only = exact[method].estimate(group)
                        cover[f"{method} faces only"].append(faces_only["low"][0] <= women <= faces_only["high"][0])
                        width[f"{method} faces only"].append(faces_only["high"][0] - faces_only["low"][0])
            key = f"eval {n_eval}, query {size} faces"
            results[key] = {
                "mae_points": {m: round(100 * float(np.mean(np.abs(e))), 2) for m, e in errors.items()},
                "bias_points": {m: round(100 * float(np.mean(e)), 2) for m, e in errors.items()},
                "coverage_95": {m: round(float(np.mean(c)), 3) for m, c in cover.items()},
                "interval_width_points": {m: round(100 * float(np.mean(w)), 1) for m, w in width.items()},
                "queries": len(errors["CC"]), "seconds": round(time.perf_counter() - started, 1),
            }
            print(key, results[key], flush=True)
    return results


def _rates_exact(adjuster: Adjuster) -> Adjuster:
    """The same adjuster with every bootstrap round using the measured rates as they are."""
    copy = Adjuster.__new__(Adjuster)
    copy.__dict__.update(adjuster.__dict__)
    copy.resampled = [adjuster.rates] * len(adjuster.resampled)
    copy.rng = np.random.default_rng(1)
    return copy


def throughput(faces: int, photos: int) -> dict:
    """Faces per second: plain forward on ready tensors, apply on a dataset's crops, apply on group photos."""
    import pandas as pd
    import torch

    sys.path.insert(0, str(REPO / "tests"))
    from builders import utkface_tree
    from flows.demo_search import group_photo, read_people
    from tasks.core import manifest as mf
    from tasks.core.paths import DatasetPaths
    from tasks.core.recipe import FinetuneConfig
    from tasks.finetune import data
    from tasks.finetune.apply import apply_model, load_models
    from tasks.finetune.pipeline import finetune_tree
    from tasks.finetune.training import pick_device, predict

    utk = CORPUS / "utkface"
    out: dict = {"threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tree = utkface_tree(utk, root / "tree", {"train": 8, "val": 4, "test": 4}, seed=1)
        config = FinetuneConfig(model="tf_efficientnet_lite0", weights="lite0", freeze="head", epochs=1, image_size=160,
                                features_from="blocks.3", pool=6, eval_crop=1.0)
        finetune_tree(tree, root / "model", config, log=None)
        files = sorted(utk.glob("*.jpg"))[:faces]
        paths = DatasetPaths.create(root / "dataset")
        rows = []
        for number, path in enumerate(files):
            (paths.faces / path.name).symlink_to(path)
            rows.append({"item_id": f"f{number}", "image_url": f"http://x/{number}.jpg", "status": "kept",
                         "face_path": f"faces/{path.name}", "query": f"q{number % 5}"})
        mf.conform(pd.DataFrame(rows), ["query"]).to_parquet(paths.manifest)
        models, _ = load_models(root / "model")
        net, norm, trained = models[0]
        transform = data.eval_transform(trained.image_size, norm, trained.eval_crop)
        tensors = torch.stack([transform(data.Image.open(p).convert("RGB")) for p in files])
        device = pick_device("cpu")
        predict(net, [(tensors[:16], None)], device)  # warm-up
        started = time.perf_counter()
        predict(net, ((tensors[i:i + 16], None) for i in range(0, len(tensors), 16)), device)
        plain = time.perf_counter() - started
        started = time.perf_counter()
        apply_model(root / "model", [paths.root], root / "out", by=["query"], rounds=1000, device="cpu")
        dataset = time.perf_counter() - started
        out["plain_forward_faces_per_s"] = round(faces / plain, 1)
        out["apply_dataset_faces_per_s"] = round(faces / dataset, 1)
        out["apply_dataset_vs_plain"] = round(plain / dataset, 2)

        rng = random.Random(3)
        people = read_people(utk)
        (root / "photos").mkdir()
        placed = 0
        for number in range(photos):
            chosen = [(people[g].pop(), g) for g in rng.choices(["female", "male"], k=rng.randint(1, 6))]
            image, where = group_photo(chosen, rng)
            image.save(root / "photos" / f"p{number}.jpg", quality=90)
            placed += len(where)
        started = time.perf_counter()
        result = apply_model(root / "model", [root / "photos"], root / "out2", faces="each", rounds=1000, device="cpu")
        each = time.perf_counter() - started
        out.update(group_photos=photos, faces_placed=placed, faces_found=result["faces"],
                   apply_each_faces_per_s=round(result["faces"] / each, 1),
                   apply_each_photos_per_s=round(photos / each, 2), faces=faces)
    print(out, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer queries and rounds (a smoke run)")
    parser.add_argument("--only", default="error,throughput")
    args = parser.parse_args()
    parts = args.only.split(",")
    results: dict = {"quick": args.quick}
    if "error" in parts:
        results["share_error"] = share_error([100, 300, 1000], [50, 200], queries=50 if args.quick else 100,
                                             rounds=200 if args.quick else 500)
    if "throughput" in parts:
        results["throughput"] = throughput(faces=64 if args.quick else 512, photos=8 if args.quick else 40)
    write_results("shares", results)


if __name__ == "__main__":
    main()

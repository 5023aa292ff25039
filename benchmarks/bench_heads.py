"""Frozen face features and heads against the default, on four held-out UTKFace gender trees.

Issue #19 asks for 0.92 test accuracy with no race group below 0.85. This asks whether
more frozen features or a stronger head get there: every corpus face and its mirror is
embedded once by each network, then for each split seed (bench_finetune's 70/20/10 trees)
a head is fitted on the training faces, its settings chosen on validation, and read on test.

Features (each block standardised on the training faces and weighed alike, as the default's
logistic head does):
- `default`: what the plain `faceset finetune DIR` computes: Lite0's middle stages on 6x6
  grids and the age and gender networks' outputs (`face_features: [agegender]`);
- `wrn`: the IMDB-WIKI WideResNet's last map on 2x2 grids and its own outputs;
- `dlib`: dlib's 128-number face descriptor (the dedupe stage's describer).
Heads: `logistic` (the default's: C chosen on validation) and `svm` (an RBF support vector
machine on 512 whitened principal components, C and gamma chosen on validation). The row
`agegender output` is the gender network's own answer, no training. Test accuracy per race
group and per age band (0-9, 10-17, 18+): the bands show where the errors are.

Usage: .venv/bin/python benchmarks/bench_heads.py [--limit N] [--seeds 13,14,15,16] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from bench_finetune import CORPUS, RACES, utkface_tree
from results_file import write_results
from tasks.core.recipe import DEFAULT_FINETUNE, FACE_MODEL
from tasks.dedupe.identity import DlibDescriber
from tasks.finetune import data
from tasks.finetune import grid
from tasks.finetune.grid import LOGISTIC_C, LOGISTIC_ITERATIONS, LOGISTIC_TOLERANCE, then_flip
from tasks.finetune.training import embed
from tasks.vision.backbones import build_net

DEFAULT = ["lite0", "agegender"]  # the default body's two feature blocks
COMBOS = {"default": DEFAULT, "default+wrn": [*DEFAULT, "wrn"], "default+dlib": [*DEFAULT, "dlib"],
          "default+wrn+dlib": [*DEFAULT, "wrn", "dlib"]}
SVM_GRID = [(c, g) for c in (1.0, 3.0, 10.0) for g in (0.3, 1.0)]
AGE_BANDS = ((0, 9, "0-9"), (10, 17, "10-17"), (18, 200, "18+"))


def _torch_views(body: torch.nn.Module, transform: Callable, frame: pd.DataFrame) -> np.ndarray:
    """(faces, 2 views: image and mirror, features) from a torch body, as the grid caches them."""
    views = [embed(body, data.loader(frame, view, data.INFERENCE_BATCH, shuffle=False), torch.device("cpu"))[0]
             for view in (transform, then_flip(transform))]
    return torch.stack(views, 1).numpy()


def extract(name: str, files: list[Path]) -> np.ndarray:
    """One network's features of every face and its mirror."""
    frame = pd.DataFrame({"path": [str(f) for f in files], "target": 0})
    if name == "default":
        net, norm = build_net(DEFAULT_FINETUNE["model"], "lite0", 2, features_from=DEFAULT_FINETUNE["features_from"],
                              pool=DEFAULT_FINETUNE["pool"], face_features=DEFAULT_FINETUNE["face_features"])
        return _torch_views(net.body, data.eval_transform(DEFAULT_FINETUNE["image_size"], norm, 1.0), frame)
    if name == "wrn":
        net, norm = build_net(FACE_MODEL, "imdbwiki", 2, pool=2)
        return _torch_views(net.body, data.eval_transform(64, norm, 1.0), frame)
    describer, rows = DlibDescriber(), []
    for path in files:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        views = [describer(view).descriptor for view in (pixels, np.ascontiguousarray(pixels[:, ::-1]))]
        rows.append([v if v is not None else np.zeros(128, np.float32) for v in views])  # no face found: zeros
    return np.asarray(rows, np.float32)


def cached(name: str, files: list[Path], cache: Path) -> tuple[np.ndarray, float]:
    path = cache / f"{name}_{len(files)}.npy"
    if path.is_file():
        return np.load(path), 0.0
    started = time.perf_counter()
    features = extract(name, files)
    np.save(path, features)
    return features, time.perf_counter() - started


def split_rows(seed: int, limit: int | None, index: dict[str, int]) -> dict[str, np.ndarray]:
    """Row numbers of bench_finetune's train/val/test trees for this seed."""
    with tempfile.TemporaryDirectory() as folder:
        root = utkface_tree(Path(folder), limit=limit, seed=seed)
        return {part: np.array([index[json.loads(line)["file_name"].split("/", 1)[1]]
                                for line in (root / part / "metadata.jsonl").read_text().splitlines() if line])
                for part in ("train", "val", "test")}


def standardised(blocks: list[np.ndarray], train: np.ndarray) -> np.ndarray:
    """The blocks side by side, standardised on the training faces as the default's head does."""
    x = torch.from_numpy(np.concatenate(blocks, -1))
    with torch.no_grad():
        return grid.Standardize(x[train], [block.shape[-1] for block in blocks])(x).numpy()


def fit_head(head: str, x: np.ndarray, blocks: int, y: np.ndarray,
             rows: dict[str, np.ndarray]) -> tuple[Callable, object]:
    """The head whose settings score best on validation; returns (male score of rows, settings)."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    train = rows["train"]
    if head == "svm":
        pca = PCA(min(512, 2 * len(train) - 1), whiten=True, random_state=0).fit(x[train].reshape(-1, x.shape[-1]))
        x = pca.transform(x.reshape(-1, x.shape[-1])).reshape(len(x), 2, -1)
        candidates = [((c, g), SVC(C=c, gamma=g / x.shape[-1], class_weight="balanced")) for c, g in SVM_GRID]
    else:  # the default's strengths, for the default's two blocks; more blocks, more total variance
        candidates = [(c, LogisticRegression(C=c * blocks / 2, max_iter=LOGISTIC_ITERATIONS, tol=LOGISTIC_TOLERANCE,
                                             class_weight="balanced")) for c in LOGISTIC_C]
    best = None
    for settings, model in candidates:
        model.fit(x[train].reshape(-1, x.shape[-1]), np.repeat(y[train], 2))

        def score(part: np.ndarray, model=model) -> np.ndarray:  # mirror-averaged decision value
            return model.decision_function(x[part].reshape(-1, x.shape[-1])).reshape(-1, 2).mean(1)

        val = float(((score(rows["val"]) > 0) == y[rows["val"]]).mean())
        if best is None or val > best[0]:
            best = (val, score, settings)
    return best[1], best[2]


def accuracy(correct: np.ndarray, labels: pd.DataFrame) -> dict:
    races = {race: round(float(correct[labels["race_name"].to_numpy() == race].mean()), 3)
             for race in sorted(labels["race_name"].unique())}
    ages = labels["age"].astype(int).to_numpy()
    bands = {name: round(float(correct[(ages >= low) & (ages <= high)].mean()), 3)
             for low, high, name in AGE_BANDS if ((ages >= low) & (ages <= high)).any()}
    return {"test_acc": round(float(correct.mean()), 3), "per_race": races,
            "largest_race_gap": round(max(races.values()) - min(races.values()), 3), "per_age": bands}


def main() -> None:
    warnings.filterwarnings("ignore")  # sklearn's convergence chatter on the weaker settings
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="faces to use (all 3,102 by default)")
    parser.add_argument("--seeds", default="13,14,15,16")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "faceset-bench-heads")
    args = parser.parse_args()
    if args.limit and "," in args.seeds:
        parser.error("--limit samples the faces with the split seed: give one seed with it")
    torch.set_num_threads(2)
    args.cache.mkdir(parents=True, exist_ok=True)

    labels = pd.read_csv(CORPUS / "utkface" / "labels.csv", dtype=str)
    if args.limit:  # the faces utkface_tree samples with this seed
        labels = labels.sample(n=min(args.limit, len(labels)), random_state=int(args.seeds))
    labels = labels.reset_index(drop=True)
    labels["race_name"] = labels["race"].map(RACES)
    files = [CORPUS / "utkface" / name for name in labels["file"]]
    index = {name: i for i, name in enumerate(labels["file"])}
    male = (labels["gender"] == "0").to_numpy()  # UTKFace: 0 male, 1 female

    features, seconds = {}, {}
    for name in ("default", "wrn", "dlib"):
        features[name], took = cached(name, files, args.cache)
        seconds[name] = round(1000 * took / len(files), 1)
        print(f"features {name}: {features[name].shape[-1]} per view"
              + (f", {seconds[name]} ms a face and its mirror" if took else " (cached)"), flush=True)
    default = features.pop("default")
    features["lite0"], features["agegender"] = default[..., :-82], default[..., -82:]

    results: dict[str, dict[int, dict]] = {}
    seeds = [int(s) for s in args.seeds.split(",")]
    for seed in seeds:
        rows = split_rows(seed, args.limit, index)
        test = labels.iloc[rows["test"]]
        agegender = features["agegender"][:, :, 0].mean(1)  # the gender network's log-odds of male
        results.setdefault("agegender output", {})[seed] = accuracy((agegender[rows["test"]] > 0) == male[rows["test"]], test)
        for combo, names in COMBOS.items():
            x = standardised([features[n] for n in names], rows["train"])
            for head in ("logistic", "svm") if combo in ("default", "default+wrn+dlib") else ("logistic",):
                score, settings = fit_head(head, x, len(names), male, rows)
                key = f"{combo} {head}"
                results.setdefault(key, {})[seed] = {**accuracy((score(rows["test"]) > 0) == male[rows["test"]], test),
                                                     "chosen": settings}
                print(f"seed {seed} {key:28s} test {results[key][seed]['test_acc']:.3f} "
                      f"ages {results[key][seed]['per_age']} races {results[key][seed]['per_race']}", flush=True)

    summary = {}
    for key, by_seed in results.items():
        runs = list(by_seed.values())
        summary[key] = {"mean_test_acc": round(float(np.mean([r["test_acc"] for r in runs])), 3),
                        "per_race": {race: round(float(np.mean([r["per_race"][race] for r in runs])), 3)
                                     for race in runs[0]["per_race"]},
                        "per_age": {band: round(float(np.mean([r["per_age"][band] for r in runs])), 3)
                                    for band in runs[0]["per_age"]}}
    print(f"\nmeans over split seeds {seeds} (test accuracy; worst race group; per age band)")
    for key, row in summary.items():
        worst = min(row["per_race"], key=row["per_race"].get)
        print(f"  {key:28s} {row['mean_test_acc']:.3f}  {worst} {row['per_race'][worst]:.3f}  {row['per_age']}")
    write_results("heads", {"faces": len(files), "seeds": seeds, "feature_ms_per_face_and_mirror": seconds,
                            "summary": summary, "runs": results})


if __name__ == "__main__":
    main()

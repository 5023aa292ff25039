"""Dedupe benchmark: duplicate recall/precision by transformation, and hash-index search time.

1. Quality: adult UTKFace faces (the same number per race group) and five transformed
   copies of each (tasks.dedupe.evaluation). Our method (tasks.dedupe.run with the real dlib
   describer and the recipe defaults) against the baseline: imagehash pHash of the raw
   crop at distance 10, no mirror, all pairs.
2. Speed: the multi-index hash search (tasks.dedupe.hashindex) against brute force, as a
   self-join at the default radius (6) over 10^4, 10^5, 10^6 random 64-bit hashes (10 %
   near copies). Brute force is timed on a sample of queries and extrapolated beyond
   `--brute-max` hashes; the output says which figures are extrapolated.

    .venv/bin/python benchmarks/bench_dedupe.py [--quick] [--faces-per-race N]

Writes benchmarks/results/dedupe.json. Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tasks.dedupe import stage as dedupe  # noqa: E402
from tasks.dedupe.evaluation import TRANSFORMS, score_pairs  # noqa: E402
from tasks.dedupe.hashindex import HashIndex, brute_force  # noqa: E402
from tasks.core.manifest import conform  # noqa: E402
from tasks.core.parallel import serial_mapper  # noqa: E402
from tasks.core.paths import DatasetPaths  # noqa: E402
from tasks.core.recipe import parse_recipe  # noqa: E402
from results_file import write_results  # noqa: E402

CORPUS = Path(os.environ.get("FACESET_CORPUS", REPO.parent / "shared" / "corpus"))


def recipe():
    return parse_recipe({"name": "bench", "contact": "b@example.org", "target": "label",
                         "sources": [{"name": "s", "start_urls": ["https://example.org/"],
                                      "item": {"image": "img::attr(src)", "fields": {"label": "p"}}}]},
                        Path("bench.yaml"))


def quality(per_race: int, seed: int) -> dict:
    labels = pd.read_csv(CORPUS / "utkface" / "labels.csv")
    picked = labels[labels["age"] >= 18].groupby("race", group_keys=False).sample(per_race, random_state=seed)
    root = Path(tempfile.mkdtemp(prefix="bench-dedupe-"))
    paths = DatasetPaths.create(root)
    rows, family, kinds = [], {}, {}
    for n, name in enumerate(picked["file"]):
        original = Image.open(CORPUS / "utkface" / name).convert("RGB")
        for kind, image in [("original", original)] + [(k, t(original, n)) for k, t in TRANSFORMS.items()]:
            item = f"f{n:04d}" if kind == "original" else f"f{n:04d}-{kind}"
            target = paths.faces / f"{item}.jpg"
            image.save(target, "JPEG", quality=95)
            rows.append({"item_id": item, "status": "kept", "source": "s",
                         "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
                         "face_path": str(target.relative_to(root)), "image_width": image.width,
                         "image_height": image.height, "face_blur": 100.0 if kind == "original" else 50.0})
            family[item] = f"f{n:04d}"
            if kind != "original":
                kinds[(f"f{n:04d}", item)] = kind
    frame = conform(pd.DataFrame(rows), ["label"])
    started = time.perf_counter()
    out = dedupe.run(frame, recipe(), paths, mapper=serial_mapper)
    elapsed = time.perf_counter() - started
    ours = set()
    for _, items in out[out["dup_group"].notna()].groupby("dup_group")["item_id"]:
        ours |= set(itertools.combinations(sorted(items.astype(str)), 2))
    hashes = {r["item_id"]: imagehash.phash(Image.open(root / r["face_path"])) for r in rows}
    baseline = {p for p in itertools.combinations(sorted(hashes), 2) if hashes[p[0]] - hashes[p[1]] <= 10}
    return {
        "faces": len(picked), "images": len(rows), "per_race": per_race,
        "ours": score_pairs(ours, family, kinds),
        "baseline_raw_phash_d10_no_mirror": score_pairs(baseline, family, kinds),
        "ours_seconds": round(elapsed, 1),
        "ours_ms_per_image": round(1000 * elapsed / len(rows), 1),
    }


def random_hashes(n: int, rng: np.random.Generator) -> np.ndarray:
    base = rng.integers(0, 2**64 - 1, n - n // 10, dtype=np.uint64, endpoint=True)
    near = base[rng.integers(0, len(base), n // 10)].copy()
    for bit in range(3):  # up to 3 random bits flipped per near copy
        near ^= np.uint64(1) << rng.integers(0, 64, len(near)).astype(np.uint64)
    return np.concatenate([base, near])


def speed(sizes: list[int], radius: int, brute_max: int, sample: int) -> list[dict]:
    rng = np.random.default_rng(0)
    results = []
    for n in sizes:
        hashes = random_hashes(n, rng)
        started = time.perf_counter()
        index = HashIndex(hashes, radius)
        built = time.perf_counter() - started
        i, j, _ = index.pairs()
        joined = time.perf_counter() - started
        queries = hashes[rng.choice(n, min(sample, n), replace=False)] if n > brute_max else hashes
        started = time.perf_counter()
        brute_force(queries, hashes, radius)
        brute = (time.perf_counter() - started) * n / len(queries)
        results.append({"hashes": n, "radius": radius, "chunks": index.chunks, "pairs_found": int(len(i)),
                        "index_build_s": round(built, 3), "index_self_join_s": round(joined, 3),
                        "index_us_per_query": round(1e6 * (joined - built) / n, 1),
                        "brute_force_self_join_s": round(brute, 2),
                        "brute_force_extrapolated_from_queries": len(queries) if n > brute_max else None,
                        "speedup": round(brute / joined, 1)})
        print(results[-1], flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 faces per race, 10^4 and 10^5 hashes only")
    parser.add_argument("--faces-per-race", type=int, default=None)
    parser.add_argument("--sizes", type=int, nargs="*", default=None)
    parser.add_argument("--brute-max", type=int, default=20_000, help="larger sets: brute force is sampled")
    parser.add_argument("--sample", type=int, default=2000, help="queries timed for sampled brute force")
    args = parser.parse_args()
    per_race = args.faces_per_race or (10 if args.quick else 20)
    sizes = args.sizes or ([10**4, 10**5] if args.quick else [10**4, 10**5, 10**6])
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores shared with other jobs: timings are noisy"}
    result["index"] = speed(sizes, 6, args.brute_max, args.sample)
    if (CORPUS / "utkface").is_dir():
        result["quality"] = quality(per_race, seed=5)
        for method in ("ours", "baseline_raw_phash_d10_no_mirror"):
            scores = result["quality"][method]
            print(method, {k: round(v["recall"], 3) for k, v in scores.items() if k != "all"},
                  "precision", round(scores["all"]["precision"], 4), "false pairs", scores["all"]["false_pairs"])
    else:
        result["quality"] = f"skipped: no UTKFace corpus at {CORPUS / 'utkface'}"
    write_results("dedupe", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

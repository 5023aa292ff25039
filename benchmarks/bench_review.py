"""Review app benchmark: how long a page takes with 50,000 faces, against reading the manifest alone.

A synthetic 50,000-row manifest (four label fields, a tenth flagged by the cross-check
with a score, near-copy and identity groups, splits, some rows not kept) whose crops
are a few real UTKFace faces from ../shared/corpus, copied into a temporary dataset
and named by many rows. The review app is served on 127.0.0.1 in this process and
asked over HTTP, as a browser would:

- the first request after start and after the build replaced the manifest (a read,
  then each queue's order computed once);
- the median of 20 requests for the first page and for a deep page (page 1,000 of
  48 faces), as JSON (`/api/page`) and as the HTML page, for the flags queue, all
  faces, and a filter (field value and split);
- the plain baseline: `pandas.read_parquet` of the same manifest, median of 20, which
  any page would cost if the app read the manifest per request.

Figures are printed and written to benchmarks/results/review.json.

    .venv/bin/python benchmarks/bench_review.py [--rows N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the corpus sample is drawn by the tests' builders

from builders import utk_sample  # noqa: E402
from results_file import write_results  # noqa: E402

from tasks.core import manifest as mf  # noqa: E402
from tasks.core.paths import DatasetPaths  # noqa: E402
from tasks.review.app import make_server, url_of  # noqa: E402

CORPUS = Path(os.environ.get("FACESET_CORPUS", REPO.parent / "shared" / "corpus"))
FIELDS = ["name", "label", "gender", "age"]
REQUESTS = 20


def synthetic(paths: DatasetPaths, rows: int, crops: list[str], seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = [f"item{i:06d}" for i in range(rows)]
    status = rng.choice(["kept", "duplicate", "quarantined", "failed", "excluded"], rows, p=[0.8, 0.08, 0.06, 0.04, 0.02])
    flagged = (status == "kept") & (rng.random(rows) < 0.1)
    frame = pd.DataFrame({
        "item_id": ids, "source": "north", "page_url": [f"http://127.0.0.1/p/{i}" for i in range(rows)],
        "image_url": [f"http://127.0.0.1/img/{i}.jpg" for i in range(rows)], "crawled_at": "2026-11-20T10:00:00+00:00",
        "name": [f"Person {i // 3}" for i in range(rows)], "label": rng.choice(["cs", "econ", "law", "bio"], rows),
        "gender": rng.choice(["female", "male"], rows), "age": rng.integers(20, 80, rows).astype(str),
        "status": status, "reason": np.where(status == "kept", None, "not kept (synthetic)"),
        "face_path": [crops[i % len(crops)] for i in range(rows)],
        "dup_group": np.where(rng.random(rows) < 0.04, [f"dup{i % 700}" for i in range(rows)], None),
        "person_group": [f"person{i // 3}" if i % 5 else None for i in range(rows)],
        "autotag_gender": rng.choice(["female", "male"], rows), "autotag_gender_confidence": rng.uniform(50, 100, rows),
        "autotag_age": rng.uniform(18, 80, rows),
        "crosscheck": np.where(flagged, "disagree", np.where(status == "kept", "agree", None)),
        "crosscheck_reason": np.where(flagged, "gender: crawled female, tagger male (97%)", None),
        "crosscheck_score": np.where(flagged, rng.random(rows), np.nan),
        "split": np.where(status == "kept", rng.choice(["train", "val", "test"], rows, p=[0.7, 0.2, 0.1]), None),
    })
    return mf.conform(frame, FIELDS)


def median_ms(call, times: int = REQUESTS) -> float:
    spent = []
    for _ in range(times):
        started = time.perf_counter()
        call()
        spent.append(time.perf_counter() - started)
    return round(statistics.median(spent) * 1000, 2)


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as answer:
        return answer.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    args = parser.parse_args()
    utkface = CORPUS / "utkface"
    if not utkface.is_dir():
        sys.exit(f"the real-image corpus is not at {utkface}; put ../shared/corpus beside the repository")
    with tempfile.TemporaryDirectory() as tmp:
        paths = DatasetPaths.create(Path(tmp) / "bench")
        crops = []
        for photo in utk_sample(utkface, per_race=2):
            shutil.copyfile(photo, paths.faces / photo.name)
            crops.append(f"faces/{photo.name}")
        frame = synthetic(paths, args.rows, crops)
        mf.write(frame, paths.manifest, csv=False)
        baseline = median_ms(lambda: pd.read_parquet(paths.manifest))

        started = time.perf_counter()
        server, app = make_server(paths.root, port=0, sample=200, stratify="label")
        start_s = time.perf_counter() - started
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = url_of(server)
        deep = 1000
        try:
            started = time.perf_counter()
            fetch(base + "?queue=flags")
            first_html_ms = (time.perf_counter() - started) * 1000
            pages = {}
            for name, query in (("flags", "queue=flags"), ("all", "queue=all"),
                                ("filter label=econ split=val", "queue=all&field=label&value=econ&split=val")):
                total = json.loads(fetch(f"{base}api/page?{query}"))["pages"]
                far = min(deep, total)
                pages[name] = {
                    "pages_of_48": total, "deep_page": far,
                    "json_first_ms": median_ms(lambda q=query: fetch(f"{base}api/page?{q}&page=1")),
                    "json_deep_ms": median_ms(lambda q=query, p=far: fetch(f"{base}api/page?{q}&page={p}")),
                    "html_first_ms": median_ms(lambda q=query: fetch(f"{base}?{q}&page=1")),
                    "html_deep_ms": median_ms(lambda q=query, p=far: fetch(f"{base}?{q}&page={p}")),
                }
            groups = {q: median_ms(lambda q=q: fetch(f"{base}?queue={q}&page=5")) for q in ("duplicates", "identities")}
            mf.write(frame.assign(label=frame["label"].str.upper()), paths.manifest, csv=False)  # a build finished
            started = time.perf_counter()
            fetch(base + "?queue=flags")
            after_rewrite_ms = (time.perf_counter() - started) * 1000
        finally:
            server.shutdown()
            server.server_close()
    results = {
        "rows": args.rows, "page_size": 48, "requests_per_median": REQUESTS,
        "baseline_read_parquet_ms": baseline,
        "app_start_s": round(start_s, 2),
        "first_html_request_ms": round(first_html_ms, 1),
        "first_request_after_manifest_rewrite_ms": round(after_rewrite_ms, 1),
        "queues": pages, "group_queue_html_page5_ms": groups,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other work: timings are noisy)",
    }
    print(json.dumps(results, indent=2))
    write_results("review", results)


if __name__ == "__main__":
    main()

"""Orchestration costs of the build flow, measured against plain Python in the same run.

1. Overhead of Prefect on per-image work, for 1,000 and 10,000 images of a cheap fake
   function: a plain loop (baseline), batches as Prefect tasks, one Prefect task per image.
2. A full rebuild (`rebuild=True`) against a cached no-op re-run of the same build.
3. Resume: a build SIGKILLed in the middle of the per-image faces stage, then run again,
   against the same build uninterrupted.

Stages are the small fakes of tests/fakes/flow_stages.py (real files and manifests, no
models), so what is measured is the orchestration, not face detection.

    .venv/bin/python benchmarks/bench_orchestration.py [--quick]

Writes benchmarks/results/orchestration.json. Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("FACESET_WORKERS", "1")

import pandas as pd  # noqa: E402

BATCH = 250  # rows per batch in the batched variant


def cheap(rows: pd.DataFrame) -> pd.DataFrame:
    """The fake per-image work: hash each row's URL a few times (~0.05 ms a row)."""
    out = rows.copy()
    out["digest"] = [hashlib.sha256((u * 20).encode()).hexdigest() for u in out["image_url"]]
    return out


def frame(count: int) -> pd.DataFrame:
    return pd.DataFrame({"item_id": [f"{i:08d}" for i in range(count)],
                         "image_url": [f"http://site/img/{i}.jpg" for i in range(count)]})


def overhead(counts: list[int]) -> list[dict]:
    from prefect import flow

    from flows.runners import PrefectExecutor, SerialExecutor

    def run(executor, rows: pd.DataFrame, size: int) -> float:
        started = time.perf_counter()
        parts = [rows.iloc[i:i + size] for i in range(0, len(rows), size)]
        done = dict(executor.imap_unordered(cheap, parts))
        assert sum(len(p) for p in done.values()) == len(rows)
        return time.perf_counter() - started

    @flow(name="bench-orchestration", persist_result=False)
    def measure(count: int) -> dict:
        rows = frame(count)
        plain = run(SerialExecutor(), rows, len(rows))
        batched = run(PrefectExecutor(f"bench/{count}/batched"), rows, BATCH)
        per_image = run(PrefectExecutor(f"bench/{count}/per-image"), rows, 1)
        return {"images": count, "plain_s": round(plain, 3), "batched_s": round(batched, 3),
                "per_image_tasks_s": round(per_image, 3), "batch_size": BATCH,
                "overhead_share_batched": round(max(0.0, batched - plain) / batched, 3),
                "overhead_ms_per_task_batched": round(1000 * max(0.0, batched - plain) / -(-count // BATCH), 2),
                "overhead_ms_per_task_per_image": round(1000 * max(0.0, per_image - plain) / count, 2),
                "overhead_share_per_image": round(max(0.0, per_image - plain) / per_image, 3)}

    results = []
    for count in counts:
        result = measure(count)
        print(f"{count:>6} images: plain {result['plain_s']:.2f} s, batched {result['batched_s']:.2f} s "
              f"(overhead {result['overhead_share_batched']:.0%}), one task per image {result['per_image_tasks_s']:.2f} s "
              f"(overhead {result['overhead_share_per_image']:.0%})", flush=True)
        results.append(result)
    return results


def _setup(folder: Path, count: int) -> Path:
    from fakes import flow_stages as fakes

    folder.mkdir(parents=True, exist_ok=True)
    fakes.write_site(folder / "site.json", count)
    os.environ["FACESET_TEST_SITE"] = str(folder / "site.json")
    os.environ.pop("FACESET_TEST_LOG", None)
    return fakes.write_recipe(folder, "benchset")


def rebuild_vs_cached(folder: Path, count: int) -> dict:
    from flows.build import build

    recipe = _setup(folder, count)
    build(recipe, data_root=folder / "data", stages="fakes.flow_stages:stages")  # warm: caches exist
    started = time.perf_counter()
    build(recipe, data_root=folder / "data", stages="fakes.flow_stages:stages", rebuild=True)
    full = time.perf_counter() - started
    started = time.perf_counter()
    build(recipe, data_root=folder / "data", stages="fakes.flow_stages:stages")
    cached = time.perf_counter() - started
    print(f"{count} images: full rebuild {full:.2f} s, cached no-op re-run {cached:.2f} s", flush=True)
    return {"images": count, "full_rebuild_s": round(full, 3), "cached_rerun_s": round(cached, 3)}


DRIVER = """
import sys, time
import flows.build
flows.build.ROW_FLUSH_SECONDS = 1.0
started = time.perf_counter()
flows.build.build(sys.argv[1], data_root=sys.argv[2], stages="fakes.flow_stages:stages")
print("BUILD", time.perf_counter() - started, flush=True)
"""


def resume_after_kill(folder: Path, count: int, api_url: str) -> dict:
    recipe = _setup(folder, count)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]), PREFECT_API_URL=api_url,
               FACESET_TEST_SLEEP="0.01", FACESET_TEST_LOG=str(folder / "calls.log"))

    def timed(data: Path) -> float:
        out = subprocess.run([sys.executable, "-c", DRIVER, str(recipe), str(data)], env=env, cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=True).stdout
        return float(next(line for line in out.splitlines() if line.startswith("BUILD")).split()[1])

    uninterrupted = timed(folder / "reference")
    log = folder / "calls.log"
    log.unlink(missing_ok=True)
    process = subprocess.Popen([sys.executable, "-c", DRIVER, str(recipe), str(folder / "killed")], env=env, cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not log.exists() or log.read_text().count("faces-row") < count // 2:
        time.sleep(0.02)
    process.kill()
    process.wait()
    before = log.read_text().count("faces-row")
    resumed = timed(folder / "killed")
    redone = log.read_text().count("faces-row") - before
    print(f"{count} images: uninterrupted build {uninterrupted:.2f} s; killed at {before} faces rows, the resumed run "
          f"took {resumed:.2f} s and processed {redone} faces rows", flush=True)
    return {"images": count, "uninterrupted_build_s": round(uninterrupted, 3), "killed_after_faces_rows": before,
            "resumed_run_s": round(resumed, 3), "faces_rows_processed_on_resume": redone}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a couple of minutes)")
    parser.add_argument("--only", choices=("overhead", "rebuild", "resume"), help="run one part only")
    args = parser.parse_args()
    counts = [200, 1000] if args.quick else [1000, 10000]
    build_images = 200 if args.quick else 1000
    parts = [args.only] if args.only else ["overhead", "rebuild", "resume"]

    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    results: dict = {"machine": f"{os.cpu_count()} cores, shared with other jobs (noisy)", "quick": args.quick}
    with prefect_test_harness(server_startup_timeout=180), tempfile.TemporaryDirectory() as tmp:
        if "overhead" in parts:
            results["overhead"] = overhead(counts)
        if "rebuild" in parts:
            results["rebuild_vs_cached"] = rebuild_vs_cached(Path(tmp) / "rebuild", build_images)
        if "resume" in parts:
            results["resume"] = resume_after_kill(Path(tmp) / "resume", build_images, PREFECT_API_URL.value())
    target = REPO / "benchmarks" / "results" / "orchestration.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    saved = json.loads(target.read_text()) if target.is_file() and args.only else {}
    target.write_text(json.dumps({**saved, **results}, indent=2))
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

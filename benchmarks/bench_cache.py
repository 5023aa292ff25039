"""What an edit to faceset's code costs the next build, on the real demo, against a full rebuild.

In a copy of the repository (so the checkout is never touched) the demo is built once;
then each scenario edits one file of the copy, runs `faceset build` on the demo's recipe
again, and records the wall time and which stages ran (their cache records changed):

- unchanged: no edit (everything cached);
- report template: a comment in a report template (presentation only);
- dedupe module: a comment in tasks/dedupe/group.py (another stage's code);
- faces module: a comment in tasks/faces/stage.py (a stage's own code);
- full rebuild (`--rebuild`), the baseline: what every code edit cost before the
  re-layout, when a stage's key hashed everything it imported and the key before it.

    .venv/bin/python benchmarks/bench_cache.py [--limit 40]

Writes benchmarks/results/cache.json. Needs ../shared/corpus/utkface.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from results_file import write_results  # noqa: E402

STAGES = ("crawl", "fetch", "faces", "dedupe", "crosscheck", "split", "export", "finetune", "report")
EDITS = {
    "unchanged": None,
    "report template": "tasks/report/templates/page.html.j2",
    "dedupe module": "tasks/dedupe/group.py",
    "faces module": "tasks/faces/stage.py",
}


def faceset(copy: Path, *args: str) -> float:
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONPATH": str(copy)}
    env.pop("PREFECT_API_URL", None)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=copy, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def stamps(dataset: Path) -> dict[str, int]:
    """When each stage last finished (its cache record is rewritten only when it runs)."""
    cache = dataset / ".faceset" / "cache"
    return {s: (cache / f"{s}.json").stat().st_mtime_ns if (cache / f"{s}.json").is_file() else 0 for s in STAGES}


def edit(copy: Path, relative: str) -> None:
    target = copy / relative
    comment = "{# an edit #}\n" if target.suffix == ".j2" else "# an edit\n"
    target.write_text(target.read_text(encoding="utf-8") + comment, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=40, help="demo profiles (default 40)")
    args = parser.parse_args()
    corpus = REPO.parent / "shared" / "corpus" / "utkface"
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "faceset"
        shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(".venv", ".git", "data", "__pycache__", "results"))
        data = Path(tmp) / "data"
        first = faceset(copy, "demo", "--images", str(corpus), "--limit", str(args.limit), "--data-root", str(data),
                        "--epochs", "1", "--port", "0")
        dataset, recipe = data / "demo-staff", data / "recipes" / "demo-staff.yaml"
        results: dict[str, dict] = {"first build (demo)": {"seconds": round(first, 1), "ran": list(STAGES)}}
        for name, relative in [*EDITS.items(), ("full rebuild (baseline)", None)]:
            if relative:
                edit(copy, relative)
            before = stamps(dataset)
            extra = ["--rebuild"] if name.startswith("full rebuild") else []
            seconds = faceset(copy, "build", str(recipe), "--data-root", str(data), *extra)
            after = stamps(dataset)
            ran = [s for s in STAGES if before[s] != after[s]]
            results[name] = {"seconds": round(seconds, 1), "ran": ran}
            print(f"{name:26s} {seconds:7.1f} s   ran: {', '.join(ran) or 'nothing'}")
    write_results("cache", {"limit": args.limit, "scenarios": results})
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

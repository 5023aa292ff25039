"""Split benchmark: faceset's grouped, stratified split against the plain baseline.

On a synthetic manifest (tests/builders.py: people with 1-4 photos, near-copies that
chain people together, label x gender x age-bin strata) it measures, in one run:

- `tasks.split.run` (union-find groups, controlled rounding, greedy placement and
  refinement): seconds, largest stratum deviation where the stratum's size allows the
  2-point bound, and groups found in more than one split;
- the plain baseline: scikit-learn's StratifiedGroupKFold with 10 folds (7 train, 2 val,
  1 test) on the same groups and joint strata.

Figures are printed and written to benchmarks/results/split.json. `--quick` uses 4,000
people (about 7,500 rows) instead of 20,000 (about 37,000).

    .venv/bin/python benchmarks/bench_split.py [--quick] [--people N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the synthetic manifest is built by the tests' builders

from builders import split_recipe, synthetic_people  # noqa: E402

from tasks.split import stage as split  # noqa: E402
from tasks.core.paths import DatasetPaths  # noqa: E402

RATIOS = {"train": 0.7, "val": 0.2, "test": 0.1}


def quality(frame: pd.DataFrame, column: str, strata: pd.Series) -> dict:
    figures = split.achieved(frame[column], strata, RATIOS)
    leaks = split.leaks(frame, column, None)
    return {"largest_deviation_where_size_allows": figures["largest_deviation_where_size_allows"]["deviation"],
            "largest_deviation": figures["largest_deviation"]["deviation"],
            "share": figures["share"], "groups_in_two_splits": sum(leaks.values())}


def baseline(rows: pd.DataFrame, strata: pd.Series, seed: int) -> pd.Series:
    """StratifiedGroupKFold: 10 folds, 7 to train, 2 to val, 1 to test."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups = split.group_ids(rows)
    codes, _ = pd.factorize(strata)
    folds = np.zeros(len(rows), dtype=int)
    for fold, (_, test) in enumerate(StratifiedGroupKFold(n_splits=10, shuffle=True, random_state=seed).split(rows, codes, groups)):
        folds[test] = fold
    return pd.Series(np.select([folds < 7, folds < 9], ["train", "val"], "test"), index=rows.index)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--people", type=int, default=None)
    args = parser.parse_args()
    people = args.people or (4000 if args.quick else 20000)
    manifest = synthetic_people(1, people=people)
    recipe = split_recipe(stratify=["label", "gender", "age"], bins={"age": [35, 50, 65]})
    rows = manifest[manifest["status"] == "kept"]
    strata = split.strata_labels(rows, split.stratify_fields(recipe), recipe, reference=rows)
    with tempfile.TemporaryDirectory() as tmp:
        paths = DatasetPaths.create(Path(tmp) / "bench")
        started = time.perf_counter()
        out = split.run(manifest, recipe, paths)
        ours_s = time.perf_counter() - started
    started = time.perf_counter()
    base = rows.assign(split=baseline(rows, strata, 13))
    base_s = time.perf_counter() - started
    labelled = out.loc[rows.index]
    results = {
        "rows": len(manifest), "kept": len(rows), "strata": int(strata.nunique()),
        "faceset": {"seconds": round(ours_s, 2), **quality(labelled, "split", strata)},
        "baseline_stratified_group_kfold": {"seconds": round(base_s, 2), **quality(base, "split", strata)},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other work: timings are noisy)",
    }
    print(json.dumps(results, indent=2))
    out_dir = REPO / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "split.json").write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()

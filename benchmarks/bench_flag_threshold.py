"""How many reviewed faces the learned flag threshold needs before its recall is within 5 points of the asked one.

The flagger learns from decisions (tasks/crosscheck/calibration.py `learn_threshold`, the
code a build runs): reviewed faces (kept = right label, relabelled = error) set the score
threshold at which the flags find `crosscheck.target_recall` (0.9 here) of the errors.

Simulated, on real cross-check scores: UTKFace adults (../shared/corpus/utkface) tagged by
the local tagger (outputs cached in benchmarks/results/crosscheck_tags.csv, shared with
bench_crosscheck.py), 5% of genders flipped and 5% of ages moved by 15 to 25 years as in
bench_crosscheck.py, then `tasks.crosscheck.stage.flag` (calibrate: true, no face
descriptors) scores every face. Reviewing is simulated: a reviewer judges K faces drawn at
random (the validation sample) and always judges right; the threshold learned from them is
applied to the whole dataset and its recall of the planted errors measured. Repeated over
many draws per K. Two baselines in the same run: the plain rule's own flags (no learning),
and the threshold learned from the K faces the flags queue shows first (highest score
first), whose errors are all flagged ones, so its recall is overstated.

    .venv/bin/python benchmarks/bench_flag_threshold.py [--faces N] [--draws D] [--seeds S]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_crosscheck import CORPUS, RESULTS, recipe, tag_all, with_planted_errors  # noqa: E402
from results_file import write_results  # noqa: E402

from tasks.crosscheck import stage as crosscheck  # noqa: E402
from tasks.crosscheck.calibration import MIN_REVIEWED_ERRORS, learn_threshold  # noqa: E402

TARGET = 0.9
WITHIN = 0.05
SIZES = (100, 200, 300, 400, 600, 800, 1200)
ENOUGH = 0.8  # share of draws within 5 points for a size to count as enough


def scored(data: pd.DataFrame, faces: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per check: (score, planted error, flagged by the stage) for `faces` adults with planted errors."""
    _, manifest, flipped, moved = with_planted_errors(data, faces, seed)
    out = crosscheck.flag(crosscheck._typed(manifest), recipe(True))
    found = {}
    for check, truth in (("gender", flipped), ("age", moved)):
        score = out[f"crosscheck_{check}_score"].astype("Float64").to_numpy(float, na_value=0.0)
        found[check] = (score, truth, out[f"crosscheck_{check}"].eq("disagree").to_numpy(bool))
    return found


def recall_at(score: np.ndarray, truth: np.ndarray, threshold: float) -> float:
    return float((score[truth] >= threshold).mean())


def simulate(score: np.ndarray, truth: np.ndarray, size: int, draws: int, rng: np.random.Generator) -> dict:
    """Recall on the whole dataset of the threshold learned from `size` random reviewed faces."""
    recalls, precisions, missing = [], [], 0
    for _ in range(draws):
        seen = rng.choice(len(score), size, replace=False)
        if truth[seen].sum() < MIN_REVIEWED_ERRORS:
            missing += 1
            continue
        learned = learn_threshold(score[seen], truth[seen], TARGET)
        recalls.append(recall_at(score, truth, learned["threshold"]))
        flagged = score >= learned["threshold"]
        precisions.append(float(truth[flagged].mean()))
    recalls_arr = np.array(recalls)
    return {"reviewed": size, "draws": draws, "too_few_errors": missing,
            "within_5_points": round(float((np.abs(recalls_arr - TARGET) <= WITHIN).sum() / draws), 3),
            "median_recall": round(float(np.median(recalls_arr)), 3) if recalls else None,
            "recall_p10_p90": [round(float(np.quantile(recalls_arr, q)), 3) for q in (0.1, 0.9)] if recalls else None,
            "median_precision": round(float(np.median(precisions)), 3) if precisions else None}


def queue_first(score: np.ndarray, truth: np.ndarray, size: int) -> dict:
    """The threshold learned from the `size` faces the flags queue shows first."""
    seen = np.argsort(-score, kind="stable")[:size]
    if truth[seen].sum() < MIN_REVIEWED_ERRORS or truth[seen].all():
        return {"reviewed": size, "recall": None}
    learned = learn_threshold(score[seen], truth[seen], TARGET)
    return {"reviewed": size, "measured_recall_on_reviewed": round(learned["recall"], 3),
            "recall": round(recall_at(score, truth, learned["threshold"]), 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=1200, help="adult faces per dataset")
    parser.add_argument("--draws", type=int, default=200, help="simulated reviews per size and dataset")
    parser.add_argument("--seeds", type=int, default=3, help="datasets with planted errors")
    args = parser.parse_args()
    if not CORPUS.exists():
        print(f"UTKFace corpus not found at {CORPUS}")
        return 2
    labels = pd.read_csv(CORPUS / "labels.csv")
    pool = min(args.faces * 5 // 4, int((labels["age"] >= 18).sum()))  # each dataset draws its faces from this pool
    adults = labels[labels["age"] >= 18].sample(pool, random_state=0)
    tags, _ = tag_all(list(adults["file"]), RESULTS / "crosscheck_tags.csv", timing_sample=64)
    data = adults.reset_index(drop=True).assign(
        gender_true=np.where(adults["gender"].to_numpy() == 0, "male", "female"),
        race_name=adults["race"].astype(str).to_numpy(), gender_pred=tags["gender"].to_numpy(),
        confidence=tags["confidence"].to_numpy(float), age_pred=tags["age"].to_numpy(float))
    sizes = [s for s in SIZES if s <= args.faces]
    results: dict = {"target_recall": TARGET, "within": WITHIN, "faces": args.faces, "seeds": args.seeds,
                     "planted": "5% genders flipped, 5% ages moved 15-25 years", "checks": {}}
    datasets = [scored(data, args.faces, seed) for seed in range(args.seeds)]
    for check in ("gender", "age"):
        runs = {s: [] for s in sizes}
        plain, queue = [], {s: [] for s in sizes}
        for seed, found in enumerate(datasets):
            score, truth, flagged = found[check]
            plain.append(float(flagged[truth].mean()))
            rng = np.random.default_rng(100 + seed)
            for size in sizes:
                runs[size].append(simulate(score, truth, size, args.draws, rng))
                queue[size].append(queue_first(score, truth, size))
        table = []
        for size in sizes:
            rows = runs[size]
            medians = [r["median_recall"] for r in rows if r["median_recall"] is not None]
            queued = [q["recall"] for q in queue[size] if q["recall"] is not None]
            table.append({"reviewed": size, "within_5_points": round(float(np.mean([r["within_5_points"] for r in rows])), 3),
                          "too_few_errors": round(float(np.mean([r["too_few_errors"] / r["draws"] for r in rows])), 3),
                          "median_recall": round(float(np.mean(medians)), 3) if medians else None,
                          "recall_p10_p90": rows[0]["recall_p10_p90"],
                          "median_precision": round(float(np.mean([r["median_precision"] for r in rows
                                                                   if r["median_precision"] is not None])), 3) if medians else None,
                          "queue_first_recall": round(float(np.mean(queued)), 3) if queued else None})
        enough = next((row["reviewed"] for row in table if row["within_5_points"] >= ENOUGH), None)
        results["checks"][check] = {"plain_rule_recall": round(float(np.mean(plain)), 3), "by_reviewed": table,
                                    "reviewed_needed": enough}
        print(f"\n{check}: the plain rule's flags find {np.mean(plain):.1%} of planted errors (no learning)")
        print(f"{'reviewed':>9} {'within 5 pts':>12} {'too few err':>11} {'median recall':>13} {'p10-p90':>13} "
              f"{'precision':>9} {'queue-first recall':>18}")
        for row in table:
            band = row["recall_p10_p90"]
            print(f"{row['reviewed']:>9} {row['within_5_points']:>12.1%} {row['too_few_errors']:>11.1%} "
                  f"{(row['median_recall'] or 0):>13.3f} {str(band):>13} {(row['median_precision'] or 0):>9.3f} "
                  f"{str(row['queue_first_recall']):>18}")
        print(f"{check}: reviewed faces needed for {ENOUGH:.0%} of draws within {WITHIN:.0%} of recall {TARGET:.0%}: {enough}")
    write_results("flag_threshold", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

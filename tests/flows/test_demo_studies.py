"""End to end: `faceset demo --study athletes` and `--study validation` on a small demo site.

Each runs the real command in a subprocess (the demo site on 127.0.0.1, Scrapy, YuNet, the
local autotagger, the real backbones and Prefect's temporary server) and checks what the
study's figures rest on: the variants' composition, the evaluations, the alpha grid, the
validation tables against the gold labels, the ResNet-18 grid.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from flows.demo_site import build_site
from flows.demo_studies import AGE_BINS, ALPHAS, PAIRS, WRONG_GENDER, misstated

REPO = Path(__file__).resolve().parents[2]


def run_demo(study: str, root: Path, images: Path, limit: int) -> str:
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONUNBUFFERED": "1"}
    env.pop("PREFECT_API_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "demo", "--study", study, "--images", str(images), "--limit", str(limit),
         "--data-root", str(root), "--epochs", "2", "--port", "0"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1200,
    )
    output = result.stdout + "\n" + result.stderr
    assert result.returncode == 0, output[-6000:]
    return output


def closing_places(output: str) -> dict[str, Path]:
    """The `  name: path` lines printed after 'demo finished in'."""
    lines = output.split("demo finished in", 1)[1].splitlines()[1:]
    places = {}
    for line in lines:
        found = re.fullmatch(r" +([\w ()]+): +(\S.*)", line)
        if not found:
            break
        places[found[1]] = Path(found[2].strip())
    return places


def image_ids(tree: Path, split: str) -> set[str]:
    return {p.stem for p in (tree / split).glob("*/*.jpg")}


@pytest.mark.slow
def test_athletes_study(utkface_dir: Path, tmp_path: Path) -> None:
    output = run_demo("athletes", tmp_path, utkface_dir, limit=120)
    dataset = tmp_path / "demo-athletes"
    places = closing_places(output)
    assert places["dataset"] == dataset and places["report"].is_file(), output[-3000:]
    manifest = pd.read_parquet(dataset / "manifest.parquet")
    age = pd.to_numeric(manifest["age"], errors="coerce")

    # the biased variant: in train and val, about 90% of each class lies in its own age range
    trained = manifest["split_biased"].isin(["train", "val"])
    for gender, (low, high) in PAIRS.items():
        rows = trained & (manifest["gender"] == gender)
        inside = (age[rows] >= low) & (age[rows] <= high)
        assert rows.sum() >= 5 and abs(inside.mean() - 0.9) <= 0.1, (gender, inside.mean(), int(rows.sum()))
    tree = dataset / "variants" / "biased"
    assert image_ids(tree, "train") | image_ids(tree, "val") == set(manifest.loc[trained, "item_id"])

    # the balanced variant: as many women as men in every age bin it uses
    balanced = manifest[manifest["split_balanced"].notna()]
    bins = pd.cut(pd.to_numeric(balanced["age"]), AGE_BINS, right=False)
    counts = pd.crosstab(bins, balanced["gender"])
    assert len(counts) >= 3 and (counts["female"] == counts["male"]).all(), counts

    # both models evaluated on the balanced test split, with the file Table 1 rests on
    test_ids = image_ids(dataset / "variants" / "balanced", "test")
    accuracies = {}
    for name, model_dir in (("original", dataset / "models"), ("biased", dataset / "models-biased")):
        evaluation = json.loads((model_dir / "evaluations" / "balanced.json").read_text())
        assert places[f"evaluation ({name})"] == model_dir / "evaluations" / "balanced.json"
        assert evaluation["n"] == len(test_ids) and 0 <= evaluation["accuracy"] <= 1
        probabilities = pd.read_csv(evaluation["probabilities"])
        assert {Path(p).stem for p in probabilities["path"]} == test_ids
        assert evaluation["accuracy"] == pytest.approx((probabilities["class"] == probabilities["predicted"]).mean())
        accuracies[name] = evaluation["accuracy"]
    for name, accuracy in accuracies.items():
        assert re.search(rf"\n  {name} +\d+ +{accuracy:.3f}  \(n={len(test_ids)}\)", output), output[-3000:]

    # the alpha grid: no unlearning, then one probed and saved model per alpha
    unlearn = json.loads((dataset / "models" / "unlearn" / "unlearn.json").read_text())
    assert [row["alpha"] for row in unlearn["alpha_grid"]] == [0.0, *map(float, ALPHAS)]
    for row in unlearn["alpha_grid"]:
        assert 0 <= row["probe_accuracy"] <= 1
        assert row["alpha"] == 0 or Path(row["model"]).is_file()
        assert re.search(rf"\n +{row['alpha']:g} +{row['probe_accuracy']:.3f} +{row['target_accuracy']:.3f}\n", output)


@pytest.mark.slow
def test_validation_study(utkface_dir: Path, tmp_path: Path) -> None:
    output = run_demo("validation", tmp_path, utkface_dir, limit=60)
    dataset = tmp_path / "demo-validation"
    places = closing_places(output)
    assert places["validation"] == dataset / "reports" / "validation.json", output[-3000:]
    manifest = pd.read_parquet(dataset / "manifest.parquet").set_index("item_id")
    gold = pd.read_csv(places["gold"], dtype=str)
    gold = gold[gold["field"] == "gender"].set_index("item_id")["value"]
    assert len(gold) >= 30 and set(gold) == {"female", "male"}

    # the validation table's confusion matrices are the gold labels crossed with each source
    report = json.loads(places["validation"].read_text())["fields"]["gender"]
    assert report["faces"] == len(gold)
    for source, column in (("crawled", "gender"), ("tagger local", "autotag_gender")):
        said = manifest.loc[gold.index, column].fillna("(no answer)")
        expected = pd.crosstab(gold, said)
        confusion = report["sources"][source]["confusion"]
        for truth, row in confusion.items():
            for answer, count in row.items():
                assert count == (expected.at[truth, answer] if answer in expected.columns else 0), (source, truth, answer)
        correct = sum(confusion[g].get(g, 0) for g in confusion)
        assert report["sources"][source]["accuracy"] == pytest.approx(correct / len(gold), abs=1e-4)
    # the crawled labels' errors that gold reveals are the pages that state the wrong gender
    site = build_site(utkface_dir, limit=60, wrong_gender=WRONG_GENDER, distinct_names=True)
    planted = misstated(site)
    pages = manifest.loc[gold.index, "page_url"].str.rsplit("/", n=1).str[-1].str.removesuffix(".html")
    wrong = manifest.loc[gold.index, "gender"] != gold
    assert planted and set(pages[wrong]) == planted & set(pages)
    assert report["flags"]["errors"] <= int(wrong.sum())  # judged where the tagger answered

    # the ResNet-18 grid: every point of the book's grid, trained offline from random weights
    finetune = json.loads((dataset / "reports" / "finetune.json").read_text())
    assert finetune["weights"] == "none" and finetune["arch"].startswith("resnet18")
    points = finetune["grid"]["points"]
    assert sorted((p["lr"], p["momentum"], p["batch_size"]) for p in points) == sorted(
        (lr, m, b) for lr in (0.0005, 0.001, 0.005) for m in (0.7, 0.9) for b in (4, 16))
    metrics = json.loads(places["metrics"].read_text())
    assert 0 <= metrics["accuracy"] <= 1 and f"accuracy {metrics['accuracy']:.3f}" in output

"""Evaluation: metrics against hand-computed values, bootstrap intervals, subgroup gaps, galleries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tasks.finetune import evaluate


def test_metrics_match_hand_counts():
    targets = np.array([0, 0, 0, 1, 1, 2])
    probs = np.eye(3)[[0, 0, 1, 1, 0, 2]] * 0.8 + 0.2 / 3
    result = evaluate.metrics(targets, probs, ["a", "b", "c"])
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["confusion_matrix"]["matrix"] == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert result["per_class"]["a"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert result["per_class"]["b"]["precision"] == pytest.approx(0.5)
    assert result["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)
    assert result["distribution"]["a"] == {"real": 3, "predicted": 3}
    assert result["distribution"]["b"] == {"real": 2, "predicted": 2}


def test_bootstrap_interval_brackets_the_accuracy_and_narrows_with_more_data():
    small = np.array([1, 0] * 10, dtype=float)
    large = np.array([1, 0] * 500, dtype=float)
    low_s, high_s = evaluate.bootstrap_ci(small)
    low_l, high_l = evaluate.bootstrap_ci(large)
    assert low_s < 0.5 < high_s and low_l < 0.5 < high_l
    assert high_l - low_l < (high_s - low_s) / 3
    assert evaluate.bootstrap_ci(small) == (low_s, high_s)  # seeded


def test_per_group_bins_ages_and_reports_the_largest_gap():
    frame = pd.DataFrame({"age": [5, 8, 12, 25, 27, 50, 55, 70, 75, 80],
                          "race": ["A", "A", "B", "B", "B", "A", "A", "B", "B", "B"]})
    correct = np.array([1, 1, 1, 1, 0, 1, 0, 0, 0, 1], dtype=bool)
    report = evaluate.per_group(frame, correct, ["age", "race", "missing"], bins={"age": [18, 30, 45, 60]})
    assert set(report) == {"age", "race"}
    ages = report["age"]["groups"]
    assert list(ages) == ["<18", "18-30", "45-60", ">=60"]
    assert ages["<18"] == pytest.approx({"n": 3, "accuracy": 1.0, "ci_low": 1.0, "ci_high": 1.0, "too_few_to_judge": True})
    assert ages[">=60"]["accuracy"] == pytest.approx(1 / 3)
    # ten images: no group is large enough, so the gap spans them all and says so
    assert report["age"]["largest_gap"] == pytest.approx(
        {"gap": 2 / 3, "highest": "<18", "lowest": ">=60", "too_few_to_judge": True})
    assert report["race"]["groups"]["A"]["accuracy"] == pytest.approx(0.75)


def test_galleries_show_the_most_confident_mistakes(tmp_path):
    paths = []
    for index in range(4):
        path = tmp_path / f"{index}.png"
        Image.new("RGB", (20, 20), (index * 60, 0, 0)).save(path)
        paths.append(str(path))
    frame = pd.DataFrame({"path": paths, "target": [0, 0, 1, 1]})
    probs = np.array([[0.3, 0.7], [0.1, 0.9], [0.8, 0.2], [0.2, 0.8]])
    result = evaluate.galleries(frame, probs, ["cat", "dog"], tmp_path / "g")
    negatives = result["cat"]["false_negatives"]["images"]
    assert [item["path"] for item in negatives] == [paths[1], paths[0]]  # 0.9 before 0.7
    assert result["dog"]["false_positives"]["images"] == negatives
    assert [item["path"] for item in result["cat"]["false_positives"]["images"]] == [paths[2]]
    assert result["dog"]["false_negatives"]["images"][0]["confidence"] == pytest.approx(0.8)
    assert (tmp_path / "g" / "cat_false_negatives.png").is_file()

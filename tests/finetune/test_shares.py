"""Adjusted shares: a model with planted asymmetric errors, its measured confusion, many synthetic groups.

The fake classifier errs at known rates (women read as men far more often than the
reverse), so counting its labels is biased; the adjustment must remove most of that
bias, and the 95% intervals must cover the truth about 95% of the time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from quapy import functional as F

from tasks.finetune.shares import Adjuster, Calibration, adjust, error_rates, naive_share, share_table

CLASSES = ["female", "male"]


class PlantedModel:
    """Probabilities from a score whose mean depends on the class: a woman's score is
    lower and no wider, so 'male' wins for about 15% of women and 5% of men."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, classes: np.ndarray) -> np.ndarray:
        score = self.rng.normal(np.where(classes == 0, -1.0, 1.65), 1.0)
        male = 1 / (1 + np.exp(-1.3 * score))
        return np.c_[1 - male, male]

    def group(self, women: float, faces: int) -> tuple[np.ndarray, np.ndarray]:
        classes = (self.rng.random(faces) >= women).astype(int)
        return classes, self(classes)


def calibration(model: PlantedModel, n: int = 400) -> Calibration:
    targets = model.rng.integers(0, 2, n)
    probs = model(targets)
    return Calibration(CLASSES, targets, probs.argmax(1), probs, "planted")


@pytest.mark.parametrize("method", ["acc", "pacc"])
def test_the_adjustment_removes_most_of_the_naive_bias_and_covers_the_truth(method):
    model = PlantedModel(seed=1)
    naive_errors, adjusted_errors, covered = [], [], []
    for trial in range(4):  # a new held-out set each time: the rates' own error varies too
        adjuster = Adjuster(calibration(model), method, rounds=300, seed=trial)
        for women in np.linspace(0.55, 0.9, 20):  # mostly women: where the planted errors bite
            _, probs = model.group(women, faces=150)
            estimate = adjuster.estimate(probs)
            naive_errors.append(naive_share(probs)[0] - women)
            adjusted_errors.append(estimate["adjusted"][0] - women)
            covered.append(estimate["low"][0] <= women <= estimate["high"][0])
    naive_bias, adjusted_bias = np.mean(naive_errors), np.mean(adjusted_errors)
    assert naive_bias < -0.06  # counting labels: too few women, as planted
    assert abs(adjusted_bias) < 0.25 * abs(naive_bias)
    assert np.mean(np.abs(adjusted_errors)) < 0.6 * np.mean(np.abs(naive_errors))
    assert 0.88 <= np.mean(covered) <= 0.995


def test_the_two_class_adjustment_is_quapys_tpr_fpr_formula():
    model = PlantedModel(seed=2)
    held = calibration(model)
    _, probs = model.group(0.7, faces=300)
    rates = error_rates("acc", held.targets, held.predicted, 2)
    tpr, fpr = rates[0, 0], rates[0, 1]  # 'female' is the positive class
    expected = F.solve_adjustment_binary(naive_share(probs)[0], tpr, fpr)
    assert adjust("acc", probs.argmax(1), rates)[0] == pytest.approx(expected)
    soft = error_rates("pacc", held.targets, held.probs, 2)
    expected_soft = F.solve_adjustment_binary(probs[:, 0].mean(), soft[0, 0], soft[0, 1])
    assert adjust("pacc", probs, soft)[0] == pytest.approx(expected_soft)


def test_a_confusion_matrix_alone_gives_the_same_acc_rates_as_its_rows():
    model = PlantedModel(seed=3)
    held = calibration(model)
    matrix = pd.crosstab(held.targets, held.predicted).reindex(index=[0, 1], columns=[0, 1], fill_value=0)
    rebuilt = Calibration.from_confusion(matrix.to_numpy().tolist(), CLASSES, "counts")
    assert rebuilt.default_method() == "acc" and len(rebuilt) == len(held)
    assert np.allclose(error_rates("acc", rebuilt.targets, rebuilt.predicted, 2),
                       error_rates("acc", held.targets, held.predicted, 2))
    with pytest.raises(ValueError, match="PACC needs the held-out probabilities"):
        Adjuster(rebuilt, "pacc", rounds=10)


def test_three_classes_are_adjusted_on_the_simplex():
    rng = np.random.default_rng(4)
    confusion = np.array([[0.8, 0.1, 0.1], [0.15, 0.75, 0.1], [0.05, 0.15, 0.8]])  # rows: true class

    def label(classes):
        predicted = np.array([rng.choice(3, p=confusion[c]) for c in classes])
        return np.eye(3)[predicted] * 0.7 + 0.1

    targets = rng.integers(0, 3, 900)
    held = Calibration(["a", "b", "c"], targets, label(targets).argmax(1), label(targets), "planted")
    truth = np.array([0.6, 0.3, 0.1])
    group = label(rng.choice(3, size=2000, p=truth))
    estimate = Adjuster(held, "acc", rounds=50).estimate(group)
    assert estimate["adjusted"].sum() == pytest.approx(1.0)
    assert np.abs(estimate["adjusted"] - truth).max() < np.abs(naive_share(group) - truth).max()
    assert (estimate["low"] <= estimate["adjusted"] + 1e-9).all() and (estimate["adjusted"] <= estimate["high"] + 1e-9).all()


def test_the_share_table_counts_images_and_faces_per_group():
    model = PlantedModel(seed=5)
    rows = []
    for query, women in (("nurse", 0.85), ("engineer", 0.2)):
        _, probs = model.group(women, faces=60)
        for index, (female, male) in enumerate(probs):
            rows.append({"image": f"{query}-{index // 3}.jpg", "query": query, "p_female": female, "p_male": male})
    rows.append({"image": "nurse-noface.jpg", "query": "nurse", "p_female": np.nan, "p_male": np.nan})
    predictions = pd.DataFrame(rows)
    table = share_table(predictions, CLASSES, ["query"], Adjuster(calibration(model), rounds=100))
    nurse = table[(table["query"] == "nurse") & (table["class"] == "female")].iloc[0]
    assert (nurse["images"], nurse["faces"]) == (21, 60)  # the image without a face counts as an image only
    assert nurse["method"] == "PACC" and nurse["low"] <= nurse["adjusted"] <= nurse["high"]
    shares = table.groupby("query")[["naive", "adjusted"]].sum()
    assert np.allclose(shares.to_numpy(), 1.0)
    plain = share_table(predictions, CLASSES, [], None)
    assert list(plain["group"].unique()) == ["all"] and "adjusted" not in plain.columns
    assert plain["faces"].iloc[0] == 120 and plain["images"].iloc[0] == 41


def test_the_adjustment_equals_quapys_own_quantifiers_fed_the_held_out_outputs():
    """QuaPy's ACC and PACC objects, given a 'classifier' that returns the fixed model's outputs,
    fitted on the held-out faces, estimate exactly what apply estimates."""
    from quapy.method.aggregative import ACC, PACC
    from sklearn.base import BaseEstimator

    class Outputs(BaseEstimator):
        def __init__(self):
            self.classes_ = np.arange(2)

        def fit(self, X, y):
            return self

        def predict_proba(self, X):
            return X

        def predict(self, X):
            return X.argmax(1)

    model = PlantedModel(seed=6)
    held = calibration(model)
    _, group = model.group(0.75, faces=250)
    for name, quantifier in (("acc", ACC(Outputs(), fit_classifier=False, val_split=None, solver="exact-cc")),
                             ("pacc", PACC(Outputs(), fit_classifier=False, val_split=None, solver="exact-cc"))):
        outputs = held.probs if name == "pacc" else held.predicted
        quantifier.aggregation_fit(outputs, held.targets)
        expected = quantifier.aggregate(group if name == "pacc" else group.argmax(1))
        assert Adjuster(held, name, rounds=5).estimate(group)["adjusted"] == pytest.approx(expected)

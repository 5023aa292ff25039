"""Shares of each class per group: counted (naive) and adjusted for the model's measured errors.

Counting a classifier's labels pulls every share towards what the classifier confuses it
with: a model right 88% of the time turns a true 85% into about 76%. Adjusted classify
and count (ACC, Forman 2008) and its probabilistic form (PACC, Bella et al. 2010) undo
that with the model's error rates measured on labelled held-out faces: if q is the
counted share and M[i, j] the rate at which class j is labelled i, the true share p
solves q = M p. QuaPy's implementations are used as they are (`getPteCondEstim` for M,
`solve_adjustment`, `normalize_prevalence`), fed with the fixed model's held-out
outputs instead of a classifier it would train.

The 95% interval is a percentile bootstrap over both sources of error at once: each
round resamples the faces of the group (sampling error) and the held-out rows behind M
(the uncertainty of the error rates), as in Moreo and Salvati's aggregative bootstrap.
The adjustment assumes the faces of a group differ from the held-out ones only in their
class shares (prior shift): docs/shares.md says when to trust it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from quapy import functional as F
from quapy.method.aggregative import ACC, PACC

from tasks.core.atomic import read_json
from tasks.core.errors import FacesetError
from tasks.core.paths import ModelPaths
from tasks.core.storage import sha256_file

log = logging.getLogger(__name__)

METHODS = ("acc", "pacc")
NO_GROUP = "(none)"


@dataclass(frozen=True)
class Calibration:
    """Held-out evidence of the model's errors: the true class of each labelled face and
    what the model said (its probabilities, or only its label when just a confusion
    matrix survives), and a sentence naming where it comes from."""

    classes: list[str]
    targets: np.ndarray  # true class index per held-out face
    predicted: np.ndarray  # predicted class index per held-out face
    probs: np.ndarray | None  # class probabilities per held-out face, when saved
    source: str

    @classmethod
    def from_confusion(cls, matrix: list[list[int]], classes: list[str], source: str) -> "Calibration":
        """Rows rebuilt from a confusion matrix's counts (rows true, columns predicted): enough for ACC."""
        counts = np.asarray(matrix, dtype=int)
        pairs = [(i, j) for (i, j), n in np.ndenumerate(counts) for _ in range(n)]
        targets, predicted = (np.array(side, dtype=int) for side in zip(*pairs)) if pairs else (np.zeros(0, int),) * 2
        return cls(list(classes), targets, predicted, None, source)

    def __len__(self) -> int:
        return len(self.targets)

    def default_method(self) -> str:
        """PACC when probabilities were kept (it uses more of what the model says), else ACC."""
        return "pacc" if self.probs is not None else "acc"


def _from_rows(path: Path, classes: list[str], source: str) -> Calibration | None:
    """A calibration from a per-image table (`evaluate.probability_table`); None when it cannot serve."""
    table = pd.read_csv(path)
    if "class" not in table.columns or table.empty:
        return None
    table = table[table["class"].isin(classes)]
    targets = table["class"].map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=int)
    columns = [f"p_{c}" for c in classes]
    if set(columns) <= set(table.columns):
        probs = table[columns].to_numpy(dtype=float)
        return Calibration(classes, targets, probs.argmax(1), probs, source)
    if "predicted" not in table.columns:
        return None
    predicted = table["predicted"].map({c: i for i, c in enumerate(classes)})
    keep = predicted.notna().to_numpy()
    return Calibration(classes, targets[keep], predicted[keep].to_numpy(dtype=int), None, source)


def _stale(folder: ModelPaths, name: str) -> bool:
    """An evaluation of another model than the one in the folder now (a rebuild trained it
    again): its error rates are not this model's. Evaluations without the record count as current."""
    recorded = (read_json(folder.evaluation_json(name), "its model is not known") or {}).get("model_sha256")
    return recorded is not None and folder.model.is_file() and recorded != sha256_file(folder.model)


def load_calibration(model_dir: Path, classes: list[str], evaluation: str | None = None) -> Calibration | None:
    """The model's measured errors, the most independent first: an evaluation by `faceset
    evaluate` (the one named, else the newest), else the finetune's own held-out split, else
    its confusion matrix alone (ACC only). None when the model folder holds none of them."""
    folder = ModelPaths(Path(model_dir))
    if evaluation is not None:
        if not folder.evaluation_csv(evaluation).is_file():
            known = sorted(p.stem for p in folder.evaluations.glob("*.csv"))
            raise FacesetError(f"no evaluation named {evaluation!r} in {folder.evaluations}",
                               f"run 'faceset evaluate {model_dir} LABELLED_DIR --name {evaluation}' first"
                               + (f", or choose one of {', '.join(known)}" if known else ""))
        if _stale(folder, evaluation):
            raise FacesetError(f"the evaluation {evaluation!r} measured an earlier model than {folder.model}",
                               f"run 'faceset evaluate {model_dir} LABELLED_DIR --name {evaluation}' again")
        named = [folder.evaluation_csv(evaluation)]
    else:
        named = sorted(folder.evaluations.glob("*.csv"), key=lambda p: p.stat().st_mtime, reverse=True)
        for path in [p for p in named if _stale(folder, p.stem)]:
            log.warning("apply: the evaluation %r measured an earlier model (the model was trained again since); "
                        "it is not used: run 'faceset evaluate' again", path.stem)
            named.remove(path)
    for path in named:
        found = _from_rows(path, classes, f"the independent evaluation '{path.stem}' ({path})")
        if found is not None and len(found):
            return found
    metrics = read_json(folder.test_metrics, "the finetune's own held-out split is not used") or {}
    split = metrics.get("evaluated_on", "held-out")
    if folder.predictions.is_file():
        found = _from_rows(folder.predictions, classes, f"the finetune's {split} split ({folder.predictions})")
        if found is not None and len(found):
            return found
    matrix = read_json(folder.confusion_json, "no confusion matrix to adjust with")
    if matrix and matrix.get("labels") == classes:
        return Calibration.from_confusion(matrix["matrix"], classes,
                                          f"the finetune's {split} confusion matrix ({folder.confusion_json})")
    return None


def naive_share(probs: np.ndarray) -> np.ndarray:
    """Classify and count: the share of faces whose most probable class is each class."""
    k = probs.shape[1]
    return F.prevalence_from_labels(probs.argmax(1), classes=np.arange(k)) if len(probs) else np.full(k, np.nan)


def error_rates(method: str, targets: np.ndarray, outputs: np.ndarray, k: int) -> np.ndarray:
    """QuaPy's M[i, j] = P(labelled i | class j), from crisp labels (ACC) or probabilities (PACC)."""
    classes = np.arange(k)
    if method == "acc":
        return ACC.getPteCondEstim(classes, targets, outputs)
    return PACC.getPteCondEstim(classes, targets, outputs)


def _counted(method: str, outputs: np.ndarray, k: int) -> np.ndarray:
    """The unadjusted share: labels counted (ACC) or probabilities averaged (PACC)."""
    return F.prevalence_from_labels(outputs, classes=np.arange(k)) if method == "acc" else outputs.mean(0)


def adjust(method: str, outputs: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Solve q = M p for p with QuaPy (an exact solve for two classes, where it equals the
    constrained least squares; least squares on the simplex for more), clipped to shares."""
    k = rates.shape[0]
    solver = "exact-cc" if k == 2 else "minimize"
    estimate = ACC.solve_adjustment(rates, _counted(method, outputs, k), method="inversion", solver=solver)
    return F.normalize_prevalence(np.asarray(estimate, dtype=float), method="clip")


def _outputs(method: str, probs: np.ndarray) -> np.ndarray:
    return probs.argmax(1) if method == "acc" else probs


class Adjuster:
    """One calibration's error rates, and `rounds` bootstrap resamples of them, made once and
    shared by every group (so each group's interval carries the same rate uncertainty)."""

    def __init__(self, calibration: Calibration, method: str | None = None, rounds: int = 1000,
                 seed: int = 0, level: float = 0.95) -> None:
        self.method = method or calibration.default_method()
        if self.method not in METHODS:
            raise ValueError(f"unknown adjustment {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.method == "pacc" and calibration.probs is None:
            raise ValueError("PACC needs the held-out probabilities; this calibration has only a confusion matrix")
        self.calibration, self.rounds, self.level = calibration, rounds, level
        self.k = len(calibration.classes)
        held = calibration.probs if self.method == "pacc" else calibration.predicted
        self.rates = error_rates(self.method, calibration.targets, held, self.k)
        self.rng = np.random.default_rng(seed)
        n = len(calibration)
        picks = self.rng.integers(0, n, size=(rounds, n))
        self.resampled = [error_rates(self.method, calibration.targets[p], held[p], self.k) for p in picks]

    def estimate(self, probs: np.ndarray) -> dict[str, np.ndarray]:
        """Adjusted share of each class for one group's faces, with the interval's bounds."""
        if not len(probs):
            empty = np.full(self.k, np.nan)
            return {"adjusted": empty, "low": empty, "high": empty}
        outputs = _outputs(self.method, probs)
        samples = np.array([adjust(self.method, outputs[self.rng.integers(0, len(outputs), len(outputs))], rates)
                            for rates in self.resampled])
        tail = (1 - self.level) / 2 * 100
        low, high = np.percentile(samples, [tail, 100 - tail], axis=0)
        return {"adjusted": adjust(self.method, outputs, self.rates), "low": low, "high": high}


def _group_keys(frame: pd.DataFrame, by: list[str]) -> pd.Series:
    """One label per row: the values of the `by` columns (missing ones shown as NO_GROUP)."""
    if not by:
        return pd.Series("all", index=frame.index)
    parts = [frame[c].astype("string").fillna(NO_GROUP) for c in by]
    return parts[0] if len(parts) == 1 else pd.Series([" / ".join(v) for v in zip(*parts)], index=frame.index)


def share_table(predictions: pd.DataFrame, classes: list[str], by: list[str], adjuster: Adjuster | None,
                image_column: str = "image") -> pd.DataFrame:
    """One row per group and class: images and faces in the group, the naive share, and
    the adjusted share with its interval (empty without an adjuster).

    `predictions` has a `p_<class>` column per class; rows without probabilities (no face,
    unreadable) count as images but not as faces.
    """
    columns = [f"p_{c}" for c in classes]
    keys = _group_keys(predictions, by)
    rows = []
    for key in sorted(keys.unique(), key=str):
        group = predictions[keys == key]
        probs = group[columns].to_numpy(dtype=float)
        probs = probs[~np.isnan(probs).any(axis=1)]
        naive = naive_share(probs)
        fixed = {c: group[c].iloc[0] for c in by} if by else {"group": "all"}
        fixed.update(images=int(group[image_column].nunique()), faces=int(len(probs)))
        estimate = adjuster.estimate(probs) if adjuster is not None else None
        for index, name in enumerate(classes):
            row = {**fixed, "class": name, "naive": float(naive[index])}
            if estimate is not None:
                row.update(adjusted=float(estimate["adjusted"][index]), low=float(estimate["low"][index]),
                           high=float(estimate["high"][index]), method=adjuster.method.upper())
            rows.append(row)
    return pd.DataFrame(rows)

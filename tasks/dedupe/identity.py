"""Face descriptors (dlib) and grouping of faces of one person, without chaining.

The same person photographed twice is not a duplicate, but both photos must land in
one split. dlib's face-recognition ResNet (shipped by `face-recognition-models`, CC0)
gives a 128-d descriptor; two faces of one person are usually closer than 0.6.

That threshold is biased: on adult UTKFace faces, all different people, 0.6 joins a
large share of Asian and Indian pairs and few White ones, and 0.45 brings every group
down to a few percent at most (measured for issue 4: docs/benchmarks.md, 'dedupe'). With
union-find at 0.6 one "person" would swallow most Asian faces. So grouping here
(`group_people`)
- uses the strict threshold (recipe `dedupe.identity_threshold`, 0.45) by default;
- lets a shared name (recipe field `dedupe.name_field`) corroborate a pair up to the
  usual 0.6 (`dedupe.name_threshold`): a directory that names both photos the same;
- never chains: faces linked by close pairs are re-clustered by average linkage, so a
  group holds only faces whose mean distance to each other stays under the threshold;
- reports join rates per group of the recipe's attributes (`merge_rates`), and never
  removes an image: `person_group` only keeps one person's photos in one split.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from PIL import Image
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from tasks.core.errors import FacesetError

APART = 1e6  # the distance given to two faces of one photo: no average over a real cluster comes near the threshold
CHIP_SIZE = 80  # aligned face for hashing: tight (padding 0), 80 px, inner 64 px used
CNN_SIDE = 256  # crops are downscaled to this for the (slow) CNN face finder
MODELS_PACKAGE = "face_recognition_models"


@dataclass(frozen=True)
class FaceLook:
    """What the describer saw in one crop: the aligned face and its descriptor.

    `chip` is None when no face was found (the crop is then hashed whole);
    `descriptor` is None when it was not asked for or no face was found.
    """

    chip: np.ndarray | None
    descriptor: np.ndarray | None


class Describer(Protocol):
    """Looks at an RGB uint8 face crop; injected so tests can pass small fakes."""

    def __call__(self, image: np.ndarray, describe: bool = True) -> FaceLook: ...


def models_dir() -> Path:
    """The folder of dlib model files inside the installed face-recognition-models.

    Found by path: the package's __init__ imports pkg_resources, absent here.
    """
    import importlib.util

    spec = importlib.util.find_spec(MODELS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FacesetError(
            "the face descriptor model is not installed (package face-recognition-models)",
            "install it with: .venv/bin/pip install face-recognition-models==0.3.0, or set "
            "dedupe.identity: false in the recipe",
        )
    return Path(list(spec.submodule_search_locations)[0]) / "models"


_MODELS: dict[str, tuple] = {}
_MODELS_LOCK = threading.Lock()


class DlibDescriber:
    """dlib face finder (HOG, CNN fallback) + 5-point landmarks + ResNet descriptor, loaded once per process.

    Picklable (it holds only the model folder), so process pools can receive it.
    """

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = str(folder or models_dir())

    def _models(self) -> tuple:
        with _MODELS_LOCK:
            if self.folder not in _MODELS:
                import dlib

                files = {name: Path(self.folder) / name for name in (
                    "shape_predictor_5_face_landmarks.dat", "dlib_face_recognition_resnet_model_v1.dat")}
                missing = [str(p) for p in files.values() if not p.is_file()]
                if missing:
                    raise FacesetError(f"face model file missing: {', '.join(missing)}",
                                       "reinstall face-recognition-models, or set dedupe.identity: false")
                _MODELS[self.folder] = (
                    dlib.get_frontal_face_detector(),
                    dlib.shape_predictor(str(files["shape_predictor_5_face_landmarks.dat"])),
                    dlib.face_recognition_model_v1(str(files["dlib_face_recognition_resnet_model_v1.dat"])),
                )
            return _MODELS[self.folder]

    def _landmarks(self, image: np.ndarray):
        """The largest face's landmarks, or None.

        Crops are tight, and the HOG finder needs some context around a face, so a crop
        where nothing is found is tried again with a 25 % border of repeated edge pixels,
        then with the slower CNN finder (the faces stage found a face there).
        """
        import dlib

        detector, predictor, _ = self._models()
        pad = int(0.25 * min(image.shape[:2]))
        for border in (0, pad):
            padded = np.pad(image, ((border, border), (border, border), (0, 0)), mode="edge") if border else image
            for upsample in (0, 1):
                found = detector(padded, upsample)
                if len(found):
                    box = max(found, key=lambda b: b.area())
                    box = dlib.rectangle(box.left() - border, box.top() - border,
                                         box.right() - border, box.bottom() - border)
                    return predictor(image, box)
        scale = min(1.0, CNN_SIDE / max(image.shape[:2]))  # its cost grows with the pixels
        small = image if scale == 1 else np.asarray(Image.fromarray(image).resize(
            (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))))
        found = self._cnn()(small, 0)
        if len(found):
            r = max(found, key=lambda d: d.rect.area()).rect
            return predictor(image, dlib.rectangle(*(round(v / scale) for v in (r.left(), r.top(), r.right(), r.bottom()))))
        return None

    def _cnn(self):
        """dlib's CNN face finder (MMOD): about 1 s a crop on a CPU, so only a fallback."""
        key = self.folder + "#cnn"
        with _MODELS_LOCK:
            if key not in _MODELS:
                import dlib

                _MODELS[key] = dlib.cnn_face_detection_model_v1(str(Path(self.folder) / "mmod_human_face_detector.dat"))
            return _MODELS[key]

    def __call__(self, image: np.ndarray, describe: bool = True) -> FaceLook:
        import dlib

        image = np.ascontiguousarray(image, dtype=np.uint8)
        shape = self._landmarks(image)
        if shape is None:
            return FaceLook(None, None)
        chip = dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=0.0)
        descriptor = None
        if describe:
            descriptor = np.asarray(self._models()[2].compute_face_descriptor(image, shape), dtype=np.float32)
        return FaceLook(chip, descriptor)


_DEFAULT: DlibDescriber | None = None


def default_describer() -> DlibDescriber:
    """The real describer, created once per process."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = DlibDescriber()
    return _DEFAULT


def pairwise_within(descriptors: np.ndarray, radius: float, other: np.ndarray | None = None,
                    block: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i, j) with Euclidean distance <= radius: i < j within `descriptors`, or
    every (i, j) between `descriptors` and `other`. Rows with NaN never match.

    Exact and O(n * m) in time (fine for tens of thousands of faces), O(block * m) in memory.
    """
    x = np.asarray(descriptors, dtype=np.float32)
    y = x if other is None else np.asarray(other, dtype=np.float32)
    sx, sy = (x * x).sum(1), (y * y).sum(1)
    rows, cols, dists = [], [], []
    for start in range(0, len(x), block):
        part = x[start : start + block]
        dist = np.sqrt(np.maximum(sx[start : start + block, None] + sy[None, :] - 2 * part @ y.T, 0))
        i, j = np.nonzero(dist <= radius)
        keep = i + start < j if other is None else np.ones(len(i), dtype=bool)
        rows.append(i[keep] + start)
        cols.append(j[keep])
        dists.append(dist[i[keep], j[keep]])
    if not rows:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(dists)


def normalise_name(value: object) -> str | None:
    """A name for corroboration: case and spacing ignored, empty means none."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    text = " ".join(str(value).casefold().split())
    return text or None


def group_people(descriptors: np.ndarray, threshold: float, names: list[str | None] | None = None,
                 name_threshold: float = 0.6, apart: list[str | None] | None = None) -> np.ndarray:
    """A person label per face (0..k-1): average-linkage clusters under `threshold`.

    A pair whose faces carry the same name counts as closer by the factor
    threshold / name_threshold, so a named pair joins up to `name_threshold`.
    Faces with the same `apart` value (faces of one photo) are different people: such
    a pair never links and keeps any cluster holding both above the threshold.
    Components of the close-pair graph are clustered separately, so the cost follows
    the size of the components, not of the dataset.
    """
    n = len(descriptors)
    labels = np.arange(n)
    if n < 2:
        return labels
    codes = pd.factorize(pd.Series(names if names is not None else [None] * n, dtype="object"))[0]
    photos = pd.factorize(pd.Series(apart if apart is not None else [None] * n, dtype="object"))[0]
    scale = threshold / name_threshold
    i, j, d = pairwise_within(descriptors, max(threshold, name_threshold))
    effective = np.where((codes[i] >= 0) & (codes[i] == codes[j]), d * scale, d)
    close = (effective <= threshold) & ~((photos[i] >= 0) & (photos[i] == photos[j]))
    graph = coo_matrix((np.ones(int(close.sum())), (i[close], j[close])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    next_label = 0
    for comp in np.unique(component):
        members = np.flatnonzero(component == comp)
        if len(members) == 1:
            labels[members] = next_label
            next_label += 1
            continue
        x = descriptors[members].astype(np.float64)
        dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
        sub = codes[members]
        dist = np.where((sub[:, None] >= 0) & (sub[:, None] == sub[None, :]), dist * scale, dist)
        same_photo = photos[members]
        dist = np.where((same_photo[:, None] >= 0) & (same_photo[:, None] == same_photo[None, :]), APART, dist)
        np.fill_diagonal(dist, 0)
        condensed = dist[np.triu_indices(len(members), 1)]
        clusters = fcluster(linkage(condensed, method="average"), t=threshold, criterion="distance")
        labels[members] = clusters - 1 + next_label
        next_label += int(clusters.max())
    return labels


def join_rate(descriptors: np.ndarray, threshold: float, max_faces: int = 2000, seed: int = 0) -> float:
    """Share of pairs within `threshold` (over a sample of at most `max_faces` faces).

    Among different people this is the rate at which a plain threshold would wrongly
    merge them: the figure to compare across groups.
    """
    n = len(descriptors)
    if n < 2:
        return float("nan")
    if n > max_faces:
        descriptors = descriptors[np.random.default_rng(seed).choice(n, max_faces, replace=False)]
        n = max_faces
    i, _, _ = pairwise_within(descriptors, threshold)
    return len(i) / (n * (n - 1) / 2)


def merge_rates(descriptors: np.ndarray, labels: np.ndarray, groups: pd.Series, threshold: float) -> list[dict]:
    """Per group of an attribute: faces, person groups, share of faces merged with others.

    `faces_merged` is the share of a group's faces that share a person_group with another
    face; `pair_join_rate` the share of its face pairs within the threshold. Very
    different figures across groups point at a threshold that is biased for one group.
    """
    sizes = pd.Series(labels).value_counts()
    merged = pd.Series(labels).map(sizes).to_numpy() > 1
    rows = []
    values = groups.astype("string").fillna("(none)").to_numpy()
    for value in sorted(set(values)):
        mask = values == value
        rows.append({
            "group": value,
            "faces": int(mask.sum()),
            "person_groups": int(len(set(labels[mask]))),
            "faces_merged": float(merged[mask].mean()),
            "pair_join_rate": join_rate(descriptors[mask], threshold),
        })
    return rows

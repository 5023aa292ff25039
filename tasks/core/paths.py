"""Where a dataset's files live under the data root (README's 'What a build produces'), and a model's in its folder.

Stages receive a `DatasetPaths` instead of building paths themselves, so the layout
is defined once: every file name the build writes is here. It is always a local folder:
an `s3://` data root is mirrored to a local working copy by `tasks.core.storage` and
synced after each stage. `ModelPaths` is the layout of a trained model's folder
(`models/`, or wherever `faceset finetune` writes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPLITS: tuple[str, ...] = ("train", "val", "test")
METADATA = "metadata.jsonl"  # one JSON line per exported image, beside its folders
CLASSES = "classes.json"  # in each image tree, beside its split folders: one class numbering for every split
SHARE_CSV = "manifest_share.csv"  # the shareable manifest: URLs and labels, no images
SHARE_JSON = "manifest_share.json"  # what the shareable manifest's columns and folders mean
TAKEDOWNS = "takedowns.json"  # at the data root, beside the datasets: the removal list every build applies
HYDRATE_REPORT = "hydrate_report.json"  # in the folder `faceset hydrate` fills
SPLITS_FOLDER, VARIANTS_FOLDER = "splits", "variants"


def tree_folder(column: str) -> str:
    """The folder (relative to the dataset) of a split column's image tree: `split` -> splits,
    `split_<name>` -> variants/<name>, so a loader pointed at splits/ never mixes variants in."""
    return SPLITS_FOLDER if column == "split" else f"{VARIANTS_FOLDER}/{column.removeprefix('split_')}"


@dataclass(frozen=True)
class DatasetPaths:
    root: Path

    @classmethod
    def create(cls, root: str | Path) -> "DatasetPaths":
        paths = cls(Path(root).resolve())
        for folder in (paths.images, paths.faces, paths.quarantine, paths.reports, paths.models, paths.state):
            folder.mkdir(parents=True, exist_ok=True)
        return paths

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.parquet"

    @property
    def manifest_csv(self) -> Path:
        return self.root / "manifest.csv"

    @property
    def card(self) -> Path:
        return self.root / "DATASET_CARD.md"

    @property
    def images(self) -> Path:
        """Raw downloads, content-addressed: images/<sha[:2]>/<sha>.<ext>."""
        return self.root / "images"

    @property
    def faces(self) -> Path:
        return self.root / "faces"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def splits(self) -> Path:
        return self.root / SPLITS_FOLDER

    @property
    def variants(self) -> Path:
        """One image tree per recipe variant, beside splits/."""
        return self.root / VARIANTS_FOLDER

    def tree(self, column: str) -> Path:
        """The image tree of a split column (see `tree_folder`)."""
        return self.root / tree_folder(column)

    def class_map(self, column: str) -> Path:
        """The class numbering shared by every split of a split column's tree."""
        return self.tree(column) / CLASSES

    @property
    def share_csv(self) -> Path:
        return self.root / SHARE_CSV

    @property
    def share_json(self) -> Path:
        return self.root / SHARE_JSON

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def state(self) -> Path:
        """Internal state: crawl job dirs, per-stage manifests, caches. Not an output."""
        return self.root / ".faceset"

    def report_json(self, stage: str) -> Path:
        return self.reports / f"{stage}.json"

    @property
    def report_html(self) -> Path:
        return self.reports / "report.html"

    @property
    def review_html(self) -> Path:
        """The cross-check's contact sheet of faces the autotagger disagrees with."""
        return self.reports / "review.html"

    def state_folder(self, name: str) -> Path:
        """A folder of internal state under `state`: a stage's resume files, a cache."""
        return self.state / name

    def stage_manifest(self, stage: str) -> Path:
        """The manifest as a stage left it, for resume and `--from STAGE`."""
        return self.state / "stages" / f"{stage}.parquet"

    def image_file(self, sha256: str, ext: str) -> Path:
        return self.images / sha256[:2] / f"{sha256}.{ext}"


@dataclass(frozen=True)
class ModelPaths:
    """A trained model's folder: what `faceset apply`, the report and the card read back."""

    root: Path

    @property
    def model(self) -> Path:
        """Weights, class map and settings in one checkpoint."""
        return self.root / "model.pt"

    @property
    def class_map(self) -> Path:
        return self.root / "class_map.json"

    @property
    def settings(self) -> Path:
        """The finetune settings and face crop the model was trained with."""
        return self.root / "recipe.json"

    @property
    def grid_json(self) -> Path:
        return self.root / "grid.json"

    @property
    def grid_csv(self) -> Path:
        return self.root / "grid.csv"

    def grid_point(self, point: int) -> Path:
        """Accuracy per epoch of one grid point."""
        return self.root / "accuracy" / f"point_{point:02d}.json"

    @property
    def metrics_per_epoch(self) -> Path:
        return self.root / "metrics_per_epoch.json"

    @property
    def test_metrics(self) -> Path:
        return self.root / "test_metrics.json"

    @property
    def confusion_json(self) -> Path:
        return self.root / "confusion_matrix.json"

    @property
    def confusion_png(self) -> Path:
        return self.root / "confusion_matrix.png"

    @property
    def curves(self) -> Path:
        return self.root / "curves.png"

    @property
    def predictions(self) -> Path:
        """The held-out images' true class, predicted class and probability of each class
        (`p_<class>`): the measured errors `faceset apply` adjusts shares with."""
        return self.root / "predictions.csv"

    @property
    def evaluations(self) -> Path:
        """Evaluations by `faceset evaluate` on other labelled images, one pair of files each."""
        return self.root / "evaluations"

    def evaluation_json(self, name: str) -> Path:
        """An evaluation's metrics: accuracy, per class, per group, confusion."""
        return self.evaluations / f"{name}.json"

    def evaluation_csv(self, name: str) -> Path:
        """An evaluation's per-image rows, laid out as `predictions`."""
        return self.evaluations / f"{name}.csv"

    @property
    def galleries(self) -> Path:
        return self.root / "galleries"

    @property
    def unlearn(self) -> Path:
        """The joint learning and unlearning run: its figures and unlearn.json."""
        return self.root / "unlearn"

    @property
    def unlearn_json(self) -> Path:
        return self.unlearn / "unlearn.json"

    def member(self, number: int) -> "ModelPaths":
        """The folder of ensemble member `number` (1, 2, ...)."""
        return ModelPaths(self.root / "ensemble" / f"member_{number}")

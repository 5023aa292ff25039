"""Where a dataset's files live under the data root (DESIGN.md 'Outputs').

Stages receive a `DatasetPaths` instead of building paths themselves, so the layout
is defined once. It is always a local folder: an `s3://` data root is mirrored to a
local working copy by `tasks.storage` and synced after each stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPLITS: tuple[str, ...] = ("train", "val", "test")
METADATA = "metadata.jsonl"  # one JSON line per exported image, beside its folders
SHARE_CSV = "manifest_share.csv"  # the shareable manifest: URLs and labels, no images
SHARE_JSON = "manifest_share.json"  # what the shareable manifest's columns and folders mean

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
        return self.root / "splits"

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

    def stage_manifest(self, stage: str) -> Path:
        """The manifest as a stage left it, for resume and `--from STAGE`."""
        return self.state / "stages" / f"{stage}.parquet"

    def image_file(self, sha256: str, ext: str) -> Path:
        return self.images / sha256[:2] / f"{sha256}.{ext}"

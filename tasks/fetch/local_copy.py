"""Images of `folder:` sources: copied into the content-addressed store instead of downloaded.

Their rows name a file inside the source's folder (`local_file`); it is checked again
here (the manifest may have been edited, a file replaced by a link since the crawl), its
size held to `crawl.max_image_bytes`, its type sniffed from the bytes like a download's,
and it is stored at its sha256 as downloads are. Each row ends with a result in the
shape the download pipeline gives, so `apply_results` treats both alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from spiders.failures import TOO_LARGE
from spiders.pipelines import store_bytes
from spiders.sniff import image_type
from tasks.core import manifest as mf
from tasks.core.paths import DatasetPaths
from tasks.core.recipe import Recipe
from tasks.core.safepaths import UnsafePath, inside


def local_file(recipe: Recipe, source: str, relative: str) -> Path:
    """The file of a folder row, or UnsafePath when it is not inside its source's folder."""
    folder = next((s.folder for s in recipe.sources if s.name == source and s.folder), None)
    if folder is None:
        raise UnsafePath(f"source {source} is no longer a folder: source of the recipe", "build again from the crawl")
    root = recipe.local_path(folder)
    path = inside(root, relative, "file")
    if not path.resolve().is_relative_to(root.resolve()):
        raise UnsafePath(f"refused: {relative} is a link leading out of the folder", "put the file itself there")
    return path


def copy_one(recipe: Recipe, paths: DatasetPaths, source: str, relative: str) -> dict[str, Any]:
    """Store one folder image; the result as the download pipeline words it."""
    try:
        path = local_file(recipe, source, relative)
        if path.stat().st_size > recipe.crawl.max_image_bytes:
            return {"status": "failed", "reason": TOO_LARGE}
        data = path.read_bytes()
    except UnsafePath as exc:
        return {"status": "failed", "reason": exc.message}
    except OSError as exc:
        return {"status": "failed", "reason": f"cannot read {relative}: {exc.strerror or exc}"}
    ext = image_type(data)
    if ext is None:
        return {"status": "failed", "reason": "not an image" if data else "empty file"}
    digest, target = store_bytes(paths, data, ext)
    return {"status": "downloaded", "checksum": digest, "path": target.relative_to(paths.root).as_posix(),
            "bytes": len(data), "url": relative}


def copy_local(frame: pd.DataFrame, wanted: pd.Series, recipe: Recipe, paths: DatasetPaths) -> dict[str, dict[str, Any]]:
    """Results for the `wanted` rows that come from a folder (every time: hashing a local file is
    cheap, and a file changed under its name is stored anew)."""
    if mf.LOCAL_FILE not in frame.columns:
        return {}
    rows = frame[wanted & frame[mf.LOCAL_FILE].notna()]
    return {row.item_id: copy_one(recipe, paths, row.source, getattr(row, mf.LOCAL_FILE))
            for row in rows.itertuples(index=False)}

"""Decompression bombs among the stored images: a takedown must still run.

A 1-bit PNG of 20000 x 20000 pixels is about 50 KB on disk and 400 megapixels decoded;
Pillow refuses it with DecompressionBombError. Before the fix that error escaped the
takedown's image hashing, so every build after fetch failed once any image takedown existed.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import zlib
from pathlib import Path

import pandas as pd
import pytest
from builders import make_recipe, picture

from tasks.core import manifest as mf
from tasks.core import takedown
from tasks.core.errors import FacesetError
from tasks.core.paths import DatasetPaths

RECIPE = make_recipe("bombed", fields=("name", "label"))


def bomb_png(path: Path, side: int = 20_000) -> Path:
    """A valid 1-bit greyscale PNG of `side` x `side` black pixels, written without decoding it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + side // 8)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def _dataset(tmp_path: Path) -> tuple[pd.DataFrame, DatasetPaths]:
    paths = DatasetPaths.create(tmp_path / "data" / "bombed")
    rows = []
    for i, make in enumerate((lambda p: picture(1).save(p), bomb_png, lambda p: picture(2).save(p))):
        raw = make(paths.images / "tmp.png") or paths.images / "tmp.png"
        sha = hashlib.sha256(raw.read_bytes()).hexdigest()
        stored = paths.image_file(sha, "png")
        stored.parent.mkdir(parents=True, exist_ok=True)
        raw.replace(stored)
        rows.append({"item_id": f"item{i}", "source": "s", "page_url": f"http://127.0.0.1/p/{i}",
                     "image_url": f"http://127.0.0.1/i/{i}.png", "name": f"Person {i}", "label": "a",
                     "sha256": sha, "image_path": stored.relative_to(paths.root).as_posix(), "status": "kept"})
    return mf.conform(pd.DataFrame(rows), RECIPE.field_names), paths


def test_bomb_among_stored_images_does_not_stop_an_image_takedown(tmp_path, caplog):
    frame, paths = _dataset(tmp_path)
    assert (paths.root / frame.loc[1, "image_path"]).stat().st_size < 100_000
    wanted = tmp_path / "remove-me.png"
    picture(2).save(wanted)
    takedown.add(paths.root.parent, takedown.make_entry(str(wanted)))

    with caplog.at_level(logging.WARNING, logger="tasks.core.takedown"):
        out = takedown.apply(frame, paths)

    assert list(out["status"]) == ["kept", "kept", "excluded"]  # the bomb is skipped, the match still found
    assert any("cannot be compared" in r.getMessage() for r in caplog.records)


def test_a_bomb_given_as_the_takedown_image_is_explained(tmp_path):
    with pytest.raises(FacesetError, match="not an image that can be read"):
        takedown.make_entry(str(bomb_png(tmp_path / "bomb.png")))

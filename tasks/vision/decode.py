"""Safe decoding: the strict gate every downloaded file passes before any OpenCV call.

The web serves HTML error pages and SVG drawings under image URLs, truncated downloads,
decompression bombs (a few KB of PNG that inflate to gigapixels) and every colour mode
Pillow knows. OpenCV decodes corrupt files into silent garbage and decodes bombs, so
only Pillow looks at the bytes, with these rules, in this order:

1. empty file, then "is it an image at all" (HTML and SVG named as such);
2. the Images-as-Data rule: files under `min_bytes` are icons and placeholders;
3. the pixel limit, read from the header *before* any pixel is decoded;
4. minimum side and aspect ratio, also from the header;
5. decoding (truncated and corrupt files fail here), first frame only;
6. EXIF orientation, then any mode (CMYK, palette, alpha, 16-bit, greyscale) to 8-bit RGB.

Each rejection is a short reason a person understands; details go in parentheses so
reports can count reasons by the words before them (`reason_kind`).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tasks.core.recipe import FacesConfig

# Raster formats a web image can legitimately be. Everything else Pillow could open
# (EPS runs Ghostscript, PSD, ICO, FITS, ...) is refused: a smaller attack surface.
Image.init()  # register every plugin, so that the `formats=` filter below can name them
FORMATS: tuple[str, ...] = tuple(f for f in ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF", "PPM") if f in Image.OPEN)

ORIENTATION_TAG = 0x0112

NOT_AN_IMAGE = "not an image"
EMPTY = "empty file"
TOO_SMALL_FILE = "file too small"
TOO_LARGE = "image too large"
TOO_SMALL = "image too small"
ODD_ASPECT = "odd aspect ratio"
TRUNCATED = "truncated image"
CORRUPT = "corrupt image"


@dataclass(frozen=True)
class Decoded:
    """A decode outcome: `rgb` (H x W x 3 uint8) when accepted, else `reason`."""

    rgb: np.ndarray | None
    reason: str | None
    format: str | None = None
    pixel_sha256: str | None = None

    @property
    def ok(self) -> bool:
        return self.rgb is not None

    @property
    def width(self) -> int | None:
        return None if self.rgb is None else int(self.rgb.shape[1])

    @property
    def height(self) -> int | None:
        return None if self.rgb is None else int(self.rgb.shape[0])



def pixel_sha256(rgb: np.ndarray) -> str:
    """sha256 of the decoded pixels and their shape: equal for re-encoded copies that
    decode to the same pixels (PNG <-> lossless WebP, re-saved PNG, EXIF stripped)."""
    digest = hashlib.sha256(f"{rgb.shape[0]}x{rgb.shape[1]}x{rgb.shape[2] if rgb.ndim == 3 else 1}|".encode())
    digest.update(memoryview(np.ascontiguousarray(rgb)).cast("B"))  # no copy of the pixels
    return digest.hexdigest()


def _kb(size: int) -> str:
    return f"{size / 1000:.0f} KB" if size >= 1000 else f"{size} bytes"


def _sniff_text(data: bytes) -> str | None:
    """Name the markup that web servers most often send instead of an image."""
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:4096].lower()):
        return "SVG drawing"
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<!--")):
        return "HTML page"
    if head.startswith(b"<"):
        return "XML or HTML text"
    if head.startswith((b"{", b"[")):
        return "JSON text"
    return None


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode to 8-bit RGB: alpha composited on white, 16-bit scaled (not clipped)."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        if mode == "F":
            top = max(1.0, float(values.max(initial=1.0)))
        grey = np.clip(values * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (phones store portraits sideways); skip the copy when upright."""
    try:
        if image.getexif().get(ORIENTATION_TAG, 1) in (0, 1):
            return image
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, TypeError, KeyError):
        return image  # unreadable EXIF: keep the pixels as stored


def decode_bytes(data: bytes, config: FacesConfig) -> Decoded:
    """Decode `data` under the limits of `config`, or say why not (never raises for bad files)."""
    if not data:
        return Decoded(None, EMPTY)
    with warnings.catch_warnings():
        # Our own pixel limit (config.max_pixels) is checked explicitly below; Pillow's
        # warning would only be noise, and its hard error is caught as "image too large".
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=FORMATS)
        except Image.DecompressionBombError:
            return Decoded(None, TOO_LARGE)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            markup = _sniff_text(data)
            return Decoded(None, f"{NOT_AN_IMAGE} ({markup})" if markup else NOT_AN_IMAGE)
        with image:
            fmt = image.format
            if len(data) < config.min_bytes:
                return Decoded(None, f"{TOO_SMALL_FILE} ({_kb(len(data))} < {_kb(config.min_bytes)})", fmt)
            width, height = image.size
            if width * height > config.max_pixels:
                return Decoded(None, f"{TOO_LARGE} ({width}x{height} pixels)", fmt)
            if min(width, height) < config.min_side:
                return Decoded(None, f"{TOO_SMALL} ({width}x{height} < {config.min_side} px)", fmt)
            if max(width, height) / max(1, min(width, height)) > config.max_aspect:
                return Decoded(None, f"{ODD_ASPECT} ({width}x{height})", fmt)
            try:
                image.seek(0)  # animated GIF/WebP/PNG: the first frame only
                image.load()
            except Image.DecompressionBombError:
                return Decoded(None, TOO_LARGE, fmt)
            except (OSError, SyntaxError, ValueError, EOFError) as exc:
                truncated = "truncated" in str(exc).lower() or isinstance(exc, EOFError)
                return Decoded(None, TRUNCATED if truncated else CORRUPT, fmt)
            rgb = _to_rgb(_upright(image))
    if min(rgb.shape[:2]) < config.min_side:  # e.g. a bogus header size
        return Decoded(None, f"{TOO_SMALL} ({rgb.shape[1]}x{rgb.shape[0]} < {config.min_side} px)", fmt)
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    return Decoded(rgb, None, fmt, pixel_sha256(rgb))


def decode_file(path: str | Path, config: FacesConfig) -> Decoded:
    """`decode_bytes` on a file; the file is read once (the size rule needs its length)."""
    return decode_bytes(Path(path).read_bytes(), config)

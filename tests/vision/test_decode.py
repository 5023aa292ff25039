"""The safe-decoding gate on every hostile input class, each with the reason a person reads,
and the files the pipeline must keep (CMYK, 16-bit, rotated, animated GIF...) kept with
the right pixels. Inputs are built here with Pillow and numpy."""

from __future__ import annotations

import io
import re
import struct
import time
import zlib

import numpy as np
from PIL import Image

from tasks.core.reasons import reason_kind
from tasks.vision.decode import decode_bytes, decode_file, pixel_sha256
from tasks.core.recipe import FacesConfig

CONFIG = FacesConfig()


def noisy(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Random RGB pixels: they compress badly, so files stay above the 5 KB rule."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def halves(width: int, height: int) -> np.ndarray:
    """Left half red, right half blue, with a little noise (to stay above 5 KB)."""
    image = np.zeros((height, width, 3), dtype=np.int16)
    image[:, : width // 2] = (220, 30, 30)
    image[:, width // 2 :] = (30, 30, 220)
    image += np.random.default_rng(1).integers(-20, 20, image.shape, dtype=np.int16)
    return np.clip(image, 0, 255).astype(np.uint8)


def encode(image: Image.Image | np.ndarray, fmt: str, **options) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def with_png_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite a PNG's IHDR to claim another size (a decompression-bomb header), CRC fixed."""
    assert data[12:16] == b"IHDR"
    ihdr = struct.pack(">II", width, height) + data[24:29]
    chunk = b"IHDR" + ihdr
    return data[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]


def rejected(data: bytes, config: FacesConfig = CONFIG) -> str:
    decoded = decode_bytes(data, config)
    assert not decoded.ok and decoded.rgb is None, "expected a rejection"
    return decoded.reason


def kept(data: bytes, config: FacesConfig = CONFIG) -> np.ndarray:
    decoded = decode_bytes(data, config)
    assert decoded.ok, f"expected the image to be kept, got {decoded.reason!r}"
    assert decoded.rgb.dtype == np.uint8 and decoded.rgb.ndim == 3 and decoded.rgb.shape[2] == 3
    assert decoded.pixel_sha256 == pixel_sha256(decoded.rgb)
    return decoded.rgb


# ---------------------------------------------------------------- rejected


def test_zero_bytes_is_an_empty_file():
    assert rejected(b"") == "empty file"


def test_html_served_as_an_image():
    page = b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body>" + b"<p>gone</p>" * 800 + b"</body></html>"
    assert len(page) > CONFIG.min_bytes
    assert rejected(page) == "not an image (HTML page)"
    assert reason_kind(rejected(page)) == "not an image"


def test_svg_served_as_an_image():
    svg = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="500" height="500">'
           + b'<circle cx="250" cy="250" r="200" fill="red"/>' * 200 + b"</svg>")
    assert rejected(svg) == "not an image (SVG drawing)"


def test_random_bytes_and_unsupported_formats_are_not_images():
    assert rejected(np.random.default_rng(3).bytes(20_000)) == "not an image"
    # PCX is a real raster format Pillow reads, but not one the web serves: refused
    assert rejected(encode(noisy(200, 200), "PCX")) == "not an image"


def test_decompression_bomb_header_is_refused_before_decoding():
    small = encode(noisy(100, 100), "PNG")
    for width, height in [(8_000, 8_000), (30_000, 30_000), (100_000, 100_000)]:
        bomb = with_png_size(small, width, height)
        started = time.perf_counter()
        reason = rejected(bomb)
        assert reason_kind(reason) == "image too large", reason
        # decoding 64 to 10,000 megapixels would take seconds and gigabytes; the header alone is instant
        assert time.perf_counter() - started < 1.0


def test_pixel_limit_comes_from_the_recipe():
    data = encode(noisy(300, 200), "PNG")
    assert rejected(data, FacesConfig(max_pixels=50_000)) == "image too large (300x200 pixels)"
    kept(data, FacesConfig(max_pixels=60_000))


def test_truncated_jpeg_and_png():
    jpeg = encode(noisy(300, 300), "JPEG", quality=90)
    assert rejected(jpeg[: len(jpeg) // 2]) == "truncated image"
    png = encode(noisy(300, 300), "PNG")
    assert rejected(png[: len(png) // 2]) == "truncated image"


def test_corrupt_png_data():
    png = bytearray(encode(noisy(300, 300), "PNG"))
    png[len(png) // 2] ^= 0xFF  # one flipped byte inside the compressed pixels
    assert rejected(bytes(png)) == "corrupt image"


def test_files_under_5_kb_are_dropped_as_images_as_data_does():
    flat = np.full((100, 100, 3), 128, dtype=np.uint8)
    tiny = encode(flat, "JPEG", quality=90)
    assert len(tiny) < 5000
    assert re.fullmatch(r"file too small \((\d KB|\d+ bytes) < 5 KB\)", rejected(tiny)), rejected(tiny)
    assert reason_kind(rejected(tiny)) == "file too small"
    kept(tiny, FacesConfig(min_bytes=0))  # the threshold is the recipe's faces.min_bytes


def test_image_too_small_and_odd_aspect_ratio():
    assert rejected(encode(noisy(50, 60), "PNG")) == "image too small (50x60 < 64 px)"
    assert rejected(encode(noisy(1000, 120), "PNG")) == "odd aspect ratio (1000x120)"
    assert rejected(encode(noisy(120, 1000), "PNG")) == "odd aspect ratio (120x1000)"
    kept(encode(noisy(400, 120), "PNG"))  # 3.3:1, a banner-like but legitimate photo


def test_decode_never_raises_on_garbage_after_a_valid_header():
    png = encode(noisy(300, 300), "PNG")
    for cut in (40, 100, 1000, 5000, 20_000):
        assert not decode_bytes(png[:cut] + b"\0" * 10_000, CONFIG).ok


# ---------------------------------------------------------------- kept


def test_plain_rgb_jpeg_png_webp_bmp_tiff_are_kept():
    pixels = noisy(160, 120)
    for fmt in ("PNG", "BMP", "TIFF"):
        np.testing.assert_array_equal(kept(encode(pixels, fmt)), pixels)
    np.testing.assert_array_equal(kept(encode(pixels, "WEBP", lossless=True)), pixels)
    assert kept(encode(pixels, "JPEG", quality=95)).shape == (120, 160, 3)


def test_exif_rotated_jpeg_is_turned_upright():
    stored = halves(300, 200)  # 300 wide, red on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    rgb = kept(encode(stored, "JPEG", quality=95, exif=exif))
    assert rgb.shape == (300, 200, 3)  # now portrait
    top, bottom = rgb[:100].reshape(-1, 3).mean(axis=0), rgb[-100:].reshape(-1, 3).mean(axis=0)
    assert top[0] > 150 > top[2] and bottom[2] > 150 > bottom[0]  # the red left side is now on top


def test_cmyk_jpeg_is_kept_with_its_colours():
    source = halves(200, 160)
    rgb = kept(encode(Image.fromarray(source).convert("CMYK"), "JPEG", quality=95))
    left = rgb[:, :80].reshape(-1, 3).mean(axis=0)
    right = rgb[:, 120:].reshape(-1, 3).mean(axis=0)
    assert left[0] > 170 and left[2] < 80, left
    assert right[2] > 170 and right[0] < 80, right


def test_palette_png_with_and_without_transparency():
    source = Image.fromarray(halves(200, 160))
    palette = source.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    rgb = kept(encode(palette, "PNG"), FacesConfig(min_bytes=0))
    np.testing.assert_array_equal(rgb, np.asarray(palette.convert("RGB")))
    palette.info["transparency"] = int(np.asarray(palette)[0, 0])
    rgb = kept(encode(palette, "PNG", transparency=palette.info["transparency"]), FacesConfig(min_bytes=0))
    assert tuple(rgb[0, 0]) == (255, 255, 255)  # transparent pixels become white, not black


def test_rgba_and_grey_alpha_are_composited_on_white():
    rgba = np.dstack([noisy(200, 200), np.full((200, 200), 255, dtype=np.uint8)])
    rgba[:, :100, 3] = 0  # the left half fully transparent
    rgb = kept(encode(rgba, "PNG"))
    assert (rgb[:, :100] == 255).all()
    np.testing.assert_array_equal(rgb[:, 100:], rgba[:, 100:, :3])
    la = Image.fromarray(rgba).convert("LA")
    assert (kept(encode(la, "PNG"))[:, :100] == 255).all()


def test_16_bit_greyscale_png_is_scaled_not_clipped():
    ramp = np.tile(np.linspace(0, 65300, 256), (128, 1)).astype(np.uint16)
    ramp += np.random.default_rng(2).integers(0, 200, ramp.shape, dtype=np.uint16)  # stay above 5 KB
    image = Image.fromarray(ramp)
    assert image.mode == "I;16"
    rgb = kept(encode(image, "PNG"))
    grey = rgb[:, :, 0].astype(int)
    assert (rgb[:, :, 0] == rgb[:, :, 2]).all()
    assert grey[:, 0].mean() < 5 and grey[:, -1].mean() > 250 and 110 < grey[:, 128].mean() < 145
    # Pillow's own convert("RGB") would have clipped everything above 255 to white
    assert (np.asarray(image.convert("RGB"))[:, 128:] == 255).all()


def test_16_bit_rgb_png_is_kept():
    import cv2

    rgb16 = (noisy(160, 120).astype(np.uint16) * 257)[:, :, ::-1].copy()  # BGR for OpenCV
    ok, data = cv2.imencode(".png", rgb16)
    assert ok
    np.testing.assert_array_equal(kept(data.tobytes()), noisy(160, 120))


def test_greyscale_and_bilevel_become_three_equal_channels():
    grey = noisy(200, 150)[:, :, 0]
    rgb = kept(encode(grey, "PNG"))
    assert (rgb[:, :, 0] == grey).all() and (rgb[:, :, 1] == grey).all()
    bilevel = Image.fromarray(grey).convert("1")
    rgb = kept(encode(bilevel, "TIFF"), FacesConfig(min_bytes=0))
    assert set(np.unique(rgb)) <= {0, 255}


def test_animated_gif_keeps_its_first_frame():
    frames = [Image.fromarray(noisy(200, 150, seed)).convert("P", palette=Image.Palette.ADAPTIVE) for seed in (5, 6, 7)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    np.testing.assert_array_equal(kept(data), np.asarray(frames[0].convert("RGB")))


def test_animated_webp_keeps_its_first_frame():
    frames = [Image.fromarray(noisy(200, 150, seed)) for seed in (8, 9)]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    np.testing.assert_array_equal(kept(data), noisy(200, 150, 8))


# ---------------------------------------------------------------- pixel hash


def test_pixel_sha256_matches_reencoded_copies_and_tells_images_apart(tmp_path):
    pixels = noisy(180, 140)
    png = encode(pixels, "PNG", compress_level=9)
    png_other = encode(pixels, "PNG", compress_level=1, pnginfo=None)
    webp = encode(pixels, "WEBP", lossless=True)
    assert len({png, png_other, webp}) == 3  # different bytes...
    hashes = {decode_bytes(d, CONFIG).pixel_sha256 for d in (png, png_other, webp)}
    assert len(hashes) == 1  # ...same pixels
    other = decode_bytes(encode(noisy(180, 140, seed=1), "PNG"), CONFIG).pixel_sha256
    assert other not in hashes
    # the shape is part of the hash: the same bytes laid out differently differ
    assert pixel_sha256(pixels.reshape(140 * 2, 90, 3)) != pixel_sha256(pixels)
    path = tmp_path / "x.png"
    path.write_bytes(png)
    assert decode_file(path, CONFIG).pixel_sha256 in hashes

"""The type of a downloaded file, read from its first bytes.

Servers lie: error pages come back as `image/jpeg`, photos as `application/octet-stream`,
and URLs end in `.php`. Only the bytes decide whether a download is an image and which
extension its content-addressed file gets.
"""

from __future__ import annotations


def image_type(data: bytes) -> str | None:
    """The extension for an image format recognised from `data`'s signature, else None."""
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"BM") and len(data) > 26:
        return "bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tif"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis"):
        return "avif"
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"msf1"):
        return "heic"
    return None

"""Paths built from outside data stay inside their folder.

A shared manifest, a bucket listing or a web page names files and folders: a class, an
item id, a split folder, an S3 key. A value such as `../../x`, `/etc/x`, `C:\\x` or one
holding a NUL would make faceset write outside the folder it was given. Such paths are
built here only: `child` joins one name, `inside` a relative path of several names.
Both refuse, with `UnsafePath`, whose message is also the row's reason, anything that
is not plain names going down from the folder. The check is on the text (hostile data
names files but cannot make links), so it costs nothing per file.

`folder_name` turns a label into a folder name valid on Linux, macOS and Windows.
"""

from __future__ import annotations

import re
from pathlib import Path

from tasks.core.errors import FacesetError

_DRIVE = re.compile(r"^[A-Za-z]:")
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com\d|lpt\d)(\..*)?$", re.IGNORECASE)
MAX_NAME = 80  # characters of a folder name made from a label
MAX_NAME_BYTES = 255  # the longest file name Linux, macOS and Windows file systems take


class UnsafePath(FacesetError):
    """A name from outside data that would lead out of its folder; the message is a row reason."""


def name_problem(name: str) -> str | None:
    """Why `name` is not one plain file or folder name; None when it is."""
    if not name:
        return "it is empty"
    if "\x00" in name:
        return "it holds a NUL character"
    if "/" in name or "\\" in name:
        return "it holds a path separator"
    if name in (".", ".."):
        return f"'{name}' names a folder, not a name inside it"
    if _DRIVE.match(name):
        return "it starts with a drive letter"
    if len(name.encode("utf-8", errors="surrogatepass")) > MAX_NAME_BYTES:
        return f"it is longer than {MAX_NAME_BYTES} bytes, more than a file system takes"
    return None


def _refuse(what: str, value: str, problem: str) -> UnsafePath:
    return UnsafePath(f"refused: {what} {value!r} would leave its folder ({problem})",
                      "the file that gave this value is damaged or hostile; the other rows are written as usual")


def child(base: Path, name: str, what: str) -> Path:
    """`base / name`, or UnsafePath when `name` (a `what`, for the message) is not one plain name."""
    problem = name_problem(str(name))
    if problem:
        raise _refuse(what, str(name), problem)
    return base / name


def inside(base: Path, relative: str, what: str) -> Path:
    """`base / relative` for a relative path written with '/' ("variants/balanced", an S3 key),
    or UnsafePath when it is absolute or any of its parts is not a plain name."""
    text = str(relative)
    if text.startswith("/"):
        raise _refuse(what, text, "it is an absolute path")
    path = base
    for part in text.split("/"):
        problem = name_problem(part)
        if problem:
            raise _refuse(what, text, problem)
        path = path / part
    return path


def folder_name(value: str) -> str:
    """A readable folder name valid everywhere: 'Computer Science' stays, 'R&D/ops' becomes
    'R_D_ops', '..' becomes 'unnamed', and Windows' reserved names ('CON') get a '_'. Bin labels
    are spelled out ('<35' is 'under 35', '>=50' is '50 and over') rather than losing their sign."""
    spelled = re.sub(r"^<\s*(\S.*)$", r"under \1", re.sub(r"^>=\s*(\S.*)$", r"\1 and over", str(value)))
    cleaned = re.sub(r"[^\w .+-]+", "_", spelled, flags=re.UNICODE).strip(" ._")[:MAX_NAME].rstrip(" .")
    if _WINDOWS_RESERVED.match(cleaned):
        cleaned += "_"
    return cleaned or "unnamed"

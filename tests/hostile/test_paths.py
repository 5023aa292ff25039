"""Attack: a value from outside data (a manifest's class or item id, a split folder, an S3
key, a label) names a path that leaves its folder.

Every such path is built by tasks.core.safepaths; the hostile values below are each refused
with a message that is also the row's reason, and plain values pass unchanged. The stages
that use it are attacked end to end in test_shared_manifest.py (hydrate), test_bucket.py
(the S3 pull) and test_text.py (the export's class folders).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.core.safepaths import UnsafePath, child, folder_name, inside

BASE = Path("/data/out")
NAMES = {"..": "'..' names a folder", ".": "'.' names a folder", "": "it is empty",
         "../x": "path separator", "a/b": "path separator", "a\\b": "path separator", "..\\..\\x": "path separator",
         "/etc": "path separator", "C:x": "drive letter", "c:\\windows": "path separator", "x\x00.jpg": "NUL",
         # a name no file system takes: the write raised OSError and stopped a whole S3 pull (hostile_check)
         "n" * 256: "longer than 255 bytes", "é" * 128: "longer than 255 bytes"}
RELATIVE = {"../x": "'..' names a folder", "variants/../../x": "'..' names a folder", "/etc/x": "absolute path",
            "a//b": "it is empty", "a/": "it is empty", "C:/x": "drive letter", "a\\..\\..\\x": "path separator",
            "variants/\x00": "NUL", "./x": "'.' names a folder"}


@pytest.mark.parametrize("name, why", NAMES.items())
def test_a_name_that_is_not_one_plain_name_is_refused(name, why):
    with pytest.raises(UnsafePath) as caught:
        child(BASE, name, "class")
    assert caught.value.message.startswith(f"refused: class {name!r} would leave its folder (")
    assert why in caught.value.message


@pytest.mark.parametrize("relative, why", RELATIVE.items())
def test_a_relative_path_that_climbs_or_jumps_out_is_refused(relative, why):
    with pytest.raises(UnsafePath, match="would leave its folder") as caught:
        inside(BASE, relative, "S3 key")
    assert why in caught.value.message


def test_plain_names_pass_unchanged():
    assert child(BASE, "Computer Science", "class") == BASE / "Computer Science"
    assert child(BASE, ".NET", "class") == BASE / ".NET"
    assert child(BASE, "n" * 255, "item_id") == BASE / ("n" * 255)
    assert inside(BASE, "variants/balanced", "split folder") == BASE / "variants" / "balanced"
    assert inside(BASE, ".faceset/stages/crawl.parquet", "S3 key") == BASE / ".faceset" / "stages" / "crawl.parquet"


@pytest.mark.parametrize("label, name", [("..", "unnamed"), (".", "unnamed"), (".NET", "NET"), ("1.2.3", "1.2.3"),
                                         ("../../etc", "etc"), ("R&D/ops", "R_D_ops"), ("CON", "CON_"),
                                         ("nul.txt", "nul.txt_"), ("C:\\x", "C_x"), ("a\x00b", "a_b")])
def test_labels_become_folder_names_valid_everywhere(label, name):
    assert folder_name(label) == name
    assert child(BASE, folder_name(label), "class").parent == BASE

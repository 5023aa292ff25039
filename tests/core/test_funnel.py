"""One funnel and one set of distributions: reports/report.html and DATASET_CARD.md show
the same numbers for the same manifest, because both come from tasks.core.funnel."""

from __future__ import annotations

import re
from html import unescape

import pandas as pd
from builders import build_dataset, dataset_recipe

from tasks.core.funnel import distribution, funnel, reasons
from tasks.export import card
from tasks.report import stage as report
from tasks.split import stage as split

# (status, reason, downloaded): every status, quarantine for several reasons
PLAN = ([("failed", "download failed: 404", False)] * 4 + [("failed", "timeout", False)]
        + [("quarantined", "not an image (HTML page)", True)] * 2 + [("quarantined", "file too small (3 KB < 5 KB)", True)]
        + [("quarantined", "no face", True)] * 3 + [("quarantined", "2 faces", True)] * 2
        + [("quarantined", "face too blurry (12 < 40)", True)]
        + [("duplicate", "duplicate of item000", True)] * 5
        + [("excluded", "takedown", True)] * 2 + [("excluded", "autotagger disagrees: gender", True)] * 3)


def every_status(frame: pd.DataFrame) -> pd.DataFrame:
    """The first rows given the statuses of PLAN; the rest kept."""
    frame = frame.copy()
    frame["status"], frame["reason"] = "kept", pd.NA
    frame["sha256"] = frame["sha256"].fillna("cd" * 32)
    for i, (status, reason, downloaded) in enumerate(PLAN):
        frame.loc[i, ["status", "reason"]] = [status, reason]
        if not downloaded:
            frame.loc[i, "sha256"] = pd.NA
    return frame


def html_rows(html: str, after: str) -> list[list[str]]:
    """Cells of the first table after the text `after`."""
    table = html.split(after, 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]
    return [[unescape(cell) for cell in re.findall(r"<td[^>]*>([^<]*)</td>", row)] for row in rows]


def markdown_rows(text: str, header: str) -> list[list[str]]:
    """Cells of the first Markdown table whose header line starts with `header`."""
    table = text[text.index("\n" + header) + 1:].split("\n\n", 1)[0]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in table.splitlines()[2:]]


def test_card_and_report_show_the_same_funnel(tmp_path):
    frame, paths = build_dataset(tmp_path / "tiny", n=80)
    manifest = every_status(frame)
    recipe = dataset_recipe()
    manifest = split.run(manifest, recipe, paths)
    steps = funnel(manifest)
    assert [(s["step"], s["images"], s["dropped"]) for s in steps] == [
        ("found", 80, 0), ("removed on request", 78, 2), ("downloaded", 73, 5), ("decoded", 70, 3),
        ("one face", 64, 6), ("unique", 59, 5), ("agreed", 56, 3), ("kept", 56, 0)]
    assert (manifest["status"] == "kept").sum() == 56
    shown_in_card = markdown_rows(card.render(manifest, recipe, paths), "| step |")
    shown_in_report = html_rows(report.overview(manifest, recipe, paths), "<h2>Funnel</h2>")
    expected = [[s["step"], str(s["images"]), str(s["dropped"]), s["why"]] for s in steps]
    assert shown_in_card == expected
    assert shown_in_report == expected
    assert "no face (3); 2 faces (2); face too blurry (1)" in expected[4][3]


def test_card_and_report_show_the_same_distributions(tmp_path):
    frame, paths = build_dataset(tmp_path / "tiny", n=120)
    recipe = dataset_recipe()
    manifest = split.run(every_status(frame), recipe, paths)
    original = card.render(manifest, recipe, paths).split("### original", 1)[1]
    html = report.overview(manifest, recipe, paths)
    for field in ("label", "gender", "age"):
        rows = distribution(manifest, field, recipe)
        expected = [[str(r[field]), *(str(r[s]) for s in ("train", "val", "test", "all"))] for r in rows]
        assert markdown_rows(original, f"| {field} |") == expected, field
        assert html_rows(html, f"<h3>{field}</h3>") == expected, field
        assert sum(r["all"] for r in rows) == int(manifest["split"].notna().sum())


def test_reasons_fold_details_and_duplicates():
    manifest = pd.DataFrame({"status": ["quarantined", "quarantined", "duplicate", "duplicate", "failed", "kept"],
                             "reason": ["file too small (3 KB < 5 KB)", "file too small (1 KB < 5 KB)",
                                        "duplicate of a", "duplicate of b", None, None]})
    assert reasons(manifest) == [
        {"status": "duplicate", "reason": "duplicate of another image", "images": 2},
        {"status": "quarantined", "reason": "file too small", "images": 2},
        {"status": "failed", "reason": "(no reason given)", "images": 1},
    ]


def test_with_one_row_per_face_the_funnel_counts_images_then_faces():
    """Two group photos give 3 and 2 face rows, one photo has no face, one download failed; of
    the five faces one is a duplicate: 4 images found, then 5 faces, 4 kept."""
    rows = [
        {"item_id": "a", "sha256": "s1", "status": "excluded", "reason": "one row per face (3 faces)"},
        {"item_id": "b", "sha256": "s2", "status": "excluded", "reason": "one row per face (2 faces)"},
        {"item_id": "c", "sha256": "s3", "status": "quarantined", "reason": "no face"},
        {"item_id": "d", "sha256": None, "status": "failed", "reason": "download failed: 404"},
        *({"item_id": f"a{i}", "parent_id": "a", "sha256": "s1", "status": "kept", "reason": None} for i in range(3)),
        {"item_id": "b0", "parent_id": "b", "sha256": "s2", "status": "kept", "reason": None},
        {"item_id": "b1", "parent_id": "b", "sha256": "s2", "status": "duplicate", "reason": "duplicate of a0"},
    ]
    steps = {row["step"]: (row["images"], row["dropped"]) for row in funnel(pd.DataFrame(rows))}
    assert steps == {"found": (4, 0), "removed on request": (4, 0), "downloaded": (3, 1), "decoded": (3, 0),
                     "faces": (5, 1), "unique": (4, 1), "agreed": (4, 0), "kept": (4, 0)}

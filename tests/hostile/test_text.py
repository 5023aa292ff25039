"""Attack: scraped labels and reasons carry markup for the format they end up in.

The card (DATASET_CARD.md) and the Prefect artifacts used to take them raw, so an
`<img onerror=...>` label became HTML and `[x](javascript:...)` a link; the CSV files made
for people kept cells a spreadsheet runs as formulas (`=`, `+`, `-`, `@`); and labels such as
`.NET`, `1.2.3` or `..` crashed the export (read as numbers) on every rebuild. Now each
format gets its own escaping (tasks.core.text), the Parquet manifest keeps the raw values,
and faceset's readers of its CSV files get the raw values back.
"""

from __future__ import annotations

import json

import pandas as pd
from builders import build_dataset, dataset_recipe
from markdown_it import MarkdownIt

from flows.artifacts import summary_markdown
from tasks.core import manifest as mf
from tasks.core.text import read_spreadsheet_csv
from tasks.export import stage as export
from tasks.export.hydrate import read_share
from tasks.split import stage as split

HTML = '<img src=x onerror="alert(1)">'
LINK = "[click me](javascript:alert(1))"
FORMULA = '=HYPERLINK("http://127.0.0.1/x","open")'
LABELS = [HTML, LINK, ".NET", "1.2.3", "..", ".", FORMULA, "+1", "-2", "@SUM(A1)", "'=already"]


def rendered(markdown: str) -> str:
    """HTML as a permissive renderer makes it: raw HTML passed through, any link scheme kept."""
    md = MarkdownIt("commonmark", {"html": True}).enable("table")
    md.validateLink = lambda url: True
    return md.render(markdown)


def hostile_dataset(tmp_path):
    frame, paths = build_dataset(tmp_path / "tiny", n=len(LABELS) * 10)
    frame["label"] = [LABELS[i % len(LABELS)] for i in range(len(frame))]
    frame.loc[frame.index[:5], "reason"] = f"download failed: {HTML} {LINK}"
    frame.loc[frame.index[:5], "status"] = "failed"
    return frame, paths, dataset_recipe()


def test_hostile_labels_export_and_rebuild_with_a_card_that_shows_them_as_text(tmp_path):
    frame, paths, recipe = hostile_dataset(tmp_path)
    for _ in range(2):  # a rebuild does not crash either
        out = export.run(split.run(frame, recipe, paths), recipe, paths)
    card = paths.card.read_text()
    html = rendered(card)
    assert "<img" not in html and 'href="javascript' not in html and "&lt;img src=x onerror" in html
    assert "[click me](javascript:alert(1))" in html  # shown as the text it is
    assert ".NET" in html and "1.2.3" in html
    # labels stay text, every class has a folder inside splits/, and the map says which
    classes = json.loads(paths.report_json("export").read_text())["classes"]
    assert set(classes) == set(LABELS)
    assert classes[".."] != classes["."] and all(n not in (".", "..") and "/" not in n for n in classes.values())
    for path in paths.splits.rglob("*"):
        assert path.resolve().is_relative_to(paths.splits.resolve())
    exported = out[out["export_path"].notna()]
    assert set(exported["label"]) == set(LABELS)


def test_artifacts_show_scraped_text_as_text():
    summary = {"classes": {HTML: "x", "econ": LINK}, "errors": [{"url": "javascript:alert(1)", "reason": HTML}],
               LINK: 3}
    html = rendered(summary_markdown("tiny / crawl", summary))
    assert "<img" not in html and "<a " not in html
    assert html.count("&lt;img src=x onerror") == 2 and "[click me](javascript:alert(1))" in html


def test_csv_files_for_people_hold_no_formulas_and_read_back_raw(tmp_path):
    frame, paths, recipe = hostile_dataset(tmp_path)
    out = export.run(split.run(frame, recipe, paths), recipe, paths)
    mf.write(out, paths.manifest)
    raw = pd.read_csv(paths.manifest_csv, dtype=str, keep_default_na=False)  # as a spreadsheet reads the cells
    for column in raw.columns:
        assert not raw[column].str.match(r"[=+\-@\t\r]").any(), column
    assert set(raw["label"]) >= {"'" + FORMULA, "'+1", "'-2", "'@SUM(A1)", "''=already", ".NET"}
    assert mf.read(paths.manifest)["label"].tolist() == out["label"].tolist()  # Parquet: raw values
    assert read_spreadsheet_csv(paths.manifest_csv)["label"].tolist() == out["label"].tolist()
    shared = pd.read_csv(paths.share_csv, dtype=str, keep_default_na=False)
    assert not shared["label"].str.match(r"[=+\-@]").any() and "'" + FORMULA in set(shared["label"])
    table, _ = read_share(paths.share_csv)  # what hydrate reads
    assert set(table["label"]) == set(out.loc[out["split"].notna() & (out["status"] == "kept"), "label"])
    assert FORMULA in set(table["label"]) and "'=already" in set(table["label"])

"""DATASET_CARD.md: every number comes from the manifest; a reviewer finds the funnel with
reasons, distributions per split, cross-check agreement, gaps, license and removal steps."""

from __future__ import annotations

import json

import pandas as pd
from builders import build_dataset, dataset_recipe

from tasks.core.funnel import funnel
from tasks.export import stage as export
from tasks.split import stage as split


def planted_funnel(frame: pd.DataFrame) -> pd.DataFrame:
    """Overwrite statuses with a known funnel: 3 taken down, 5 not downloaded, 4 not decoded,
    6 without one usable face, 7 duplicates, 2 dropped by the cross-check."""
    frame = frame.copy()
    frame["status"], frame["reason"] = "kept", pd.NA
    frame["sha256"] = frame["sha256"].fillna("cd" * 32)
    plan = ([("excluded", "takedown", True)] * 3 + [("failed", "download failed: 404", False)] * 5
            + [("quarantined", "not an image (HTML page)", True)] * 2 + [("quarantined", "file too small (3 KB < 5 KB)", True)] * 2
            + [("quarantined", "no face", True)] * 3 + [("quarantined", "2 faces", True)] * 2
            + [("quarantined", "face too small (20 px < 48 px)", True)]
            + [("duplicate", "duplicate of item000", True)] * 7
            + [("excluded", "autotagger disagrees: gender", True)] * 2)
    for i, (status, reason, downloaded) in enumerate(plan, start=1):
        frame.loc[i, ["status", "reason"]] = [status, reason]
        if not downloaded:
            frame.loc[i, "sha256"] = pd.NA
        if reason.startswith("autotagger"):
            frame.loc[i, "crosscheck"] = "disagree"
    return frame


def test_funnel_counts_each_step_with_its_reasons(tmp_path):
    frame, _ = build_dataset(tmp_path / "tiny", n=60)
    steps = funnel(planted_funnel(frame))
    table = {row["step"]: (row["images"], row["dropped"], row["why"]) for row in steps}
    assert table["found"][:2] == (60, 0)
    assert table["removed on request"][:2] == (57, 3)
    assert table["downloaded"] == (52, 5, "download failed: 404 (5)")
    assert table["decoded"][:2] == (48, 4) and "file too small (2)" in table["decoded"][2]
    assert table["one face"][:2] == (42, 6) and "no face (3)" in table["one face"][2] and "face too small (1)" in table["one face"][2]
    assert table["unique"] == (35, 7, "duplicate of another image (7)")
    assert table["agreed"][:2] == (33, 2)
    assert table["kept"][0] == 33 == (planted_funnel(frame)["status"] == "kept").sum()


def test_card_reads_as_a_document_with_numbers_from_the_manifest(tmp_path):
    frame, paths = build_dataset(tmp_path / "tiny", n=90)
    frame = planted_funnel(frame)
    frame.loc[frame.index[frame["label"] == "econ"][-4:], "label"] = "tiny class"  # four kept images
    recipe = dataset_recipe(variants=[{"kind": "balanced", "by": ["gender"]}])
    paths.report_json("crosscheck").write_text(json.dumps({"compared": 51, "gender": {"agreement": 0.87}}))
    out = export.run(split.run(frame, recipe, paths), recipe, paths)
    text = paths.card.read_text()
    for heading in ("## Purpose", "## Sources and crawl dates", "## Funnel", "## Splits", "## Cross-check agreement",
                    "## Known gaps", "## License and contact", "## How to request removal", "## Recipe"):
        assert heading in text
    assert "Test portraits by department" in text and "research use only" in text and "data@example.org" in text
    assert "| north | http://127.0.0.1/ | 90 |" in text and "2026-11-20 to 2026-11-20" in text
    assert "Removed on request (takedown): **3** images" in text
    assert "| downloaded | 82 | 5 | download failed: 404 (5) |" in text
    # label distribution per split, as in the manifest
    kept = out[out["status"] == "kept"]
    for label, rows in kept.groupby("label"):
        counts = rows["split"].value_counts()
        line = f"| {label} | {counts.get('train', 0)} | {counts.get('val', 0)} | {counts.get('test', 0)} | {len(rows)} |"
        assert line in text, line
    assert "### balanced (`variants/balanced/`" in text
    # cross-check: agreement from the manifest, figures from reports/crosscheck.json
    agree, disagree = (out["crosscheck"] == "agree").sum(), (out["crosscheck"] == "disagree").sum()
    assert f"{agree} agree, {disagree} disagree" in text
    assert "| gender.agreement | 87.0% |" in text and "| compared | 51 |" in text
    # known gaps name the thin class; removal names the command and the list
    assert "class `tiny class` has only 4 kept images" in text
    assert "faceset takedown add" in text and "takedowns.json" in text
    assert "target: label" in text and "stratify:" in text
    # age bins in numeric order
    ages = [line.split("|")[1].strip() for line in text.split("| age |")[1].split("\n\n")[0].splitlines()[2:]]
    assert ages[0].startswith("<") and ages[-1].startswith(">=")


def test_the_card_says_where_each_source_came_from(tmp_path):
    """Start pages, search queries, a URL list or a local folder: the card names each."""
    from tasks.core.recipe import parse_recipe
    from tasks.export.card import sources
    (tmp_path / "list.csv").write_text("url,label\nhttp://127.0.0.1/a.jpg,cs\n")
    (tmp_path / "photos").mkdir()
    recipe = parse_recipe({"name": "mixed", "contact": "me@example.org", "target": "label", "sources": [
        {"name": "site", "start_urls": ["http://127.0.0.1/"], "item": {"image": "img", "fields": {"label": "h1"}}},
        {"name": "search", "start_urls": ["http://127.0.0.1/s?q={query}"], "queries": ["nurse", "engineer"],
         "item": {"image": "img", "fields": {"label": "h1"}}},
        {"name": "listed", "urls": "list.csv", "fields": ["label"]},
        {"name": "local", "folder": "photos"}]}, tmp_path / "mixed.yaml")
    origins = {row["source"]: row["from"] for row in sources(pd.DataFrame(columns=["source", "status", "crawled_at"]), recipe)}
    assert origins == {"site": "http://127.0.0.1/", "search": "http://127.0.0.1/s?q={query} (queries: nurse, engineer)",
                       "listed": "the URL list list.csv", "local": "the local folder photos"}

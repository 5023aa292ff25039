"""reports/report.html and reports/review.html come from Jinja2 templates kept in the
owning package: every value is escaped by default, a template that uses a name nobody
passed fails, and the templates are part of the stage's cache key."""

from __future__ import annotations

import json
import re

import jinja2
import numpy as np
import pytest
from builders import build_dataset, make_recipe

from flows.caching import code_files, module_files
from tasks.core.binning import MIN_GROUP
from tasks.core.paths import DatasetPaths
from tasks.core.templates import environment, render
from tasks.crosscheck import review
from tasks.report import stage as report
from tasks.report.finetune_section import report_section
from tasks.report.sections import crawl, crosscheck

HOSTILE = "<script>alert(1)</script>"


def test_report_page_has_every_section_and_escapes_what_it_quotes(tmp_path):
    frame, paths = build_dataset(tmp_path / "tiny", n=40)
    frame.loc[9, "reason"] = HOSTILE  # a quarantined row
    recipe = make_recipe("tiny", description=HOSTILE, attributes=("gender", "age"))
    paths.reports.mkdir(parents=True, exist_ok=True)
    paths.report_json("crawl").write_text(json.dumps({"pages": 3, "unmapped": {"gender": {HOSTILE: 2}}}))
    paths.report_json("fetch").write_text(json.dumps({"requested": 40, "failure_reasons": {"download failed: 404": 4}}))
    report.run(frame, recipe, paths)
    page = (paths.reports / "report.html").read_text()
    for text in ("id='overview'", "id='crawl'", "id='fetch'", "<h2>Funnel</h2>", "Why images were turned away",
                 "<h2>Samples</h2>", "download failed: 404", "<h3>age</h3>", "Contact: data@example.org"):
        assert text in page, text
    assert "id='dedupe'" not in page  # no reports/dedupe.json: no section
    assert HOSTILE not in page and page.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 4  # description, funnel, reasons, crawl value
    assert (paths.reports / "funnel.png").is_file() and (paths.reports / "dist_age.png").is_file()
    assert not list(paths.reports.glob("*.tmp"))


def test_sections_escape_and_show_too_few_to_judge(tmp_path):
    paths = DatasetPaths.create(tmp_path)
    fragment = crawl({"errors": [{"url": "http://x/?a=1&b=2", "reason": HOSTILE}]}, paths)
    assert "http://x/?a=1&amp;b=2" in fragment and "&lt;script&gt;" in fragment and HOSTILE not in fragment
    group = {"n": 4, "agree": 3, "disagree": 1, "skipped": 0, "accuracy": 0.75, "too_few_to_judge": True}
    big = {"n": 40, "agree": 30, "disagree": 10, "skipped": 0, "accuracy": 0.75, "too_few_to_judge": False}
    summary = {"fields": {"gender": {"all": big, "by_attribute": {"age": {"<30": group, ">=30": big}}}}}
    html = crosscheck(summary, paths)
    rows = html.split("<p>gender by age</p>", 1)[1].split("</table>", 1)[0]
    assert "<td>&lt;30</td><td class=n>4</td><td class=n>3</td><td class=n>1</td><td class=n>0</td><td></td>" in rows
    assert "too few to judge" in rows and "0.75" in rows.split("&gt;=30", 1)[1]
    assert f"fewer than {MIN_GROUP} faces" in html


def finetune_summary(groups: dict[str, tuple[int, float]], tmp_path) -> dict:
    """The parts of reports/finetune.json the report section reads, with subgroups as given."""
    per_group = {"age": {"groups": {g: {"n": n, "accuracy": a, "ci_low": a - 0.1, "ci_high": a + 0.1,
                                        "too_few_to_judge": n < MIN_GROUP} for g, (n, a) in groups.items()},
                         "largest_gap": {"gap": 0.2, "highest": "<30", "lowest": ">=30",
                                         "too_few_to_judge": sum(n >= MIN_GROUP for n, _ in groups.values()) < 2}}}
    point = {"point": 1, "lr": 0.01, "momentum": 0.9, "batch_size": 8, "best_epoch": 2, "epochs_run": 2,
             "val_loss": 0.5, "val_acc": 0.8, "seconds": 3.0}
    return {
        "arch": "lite0", "weights": "lite0", "freeze": "head", "device": "cpu", "images": {"train": 90, "test": 60},
        "model": str(tmp_path / "models" / "model.pt"),
        "grid": {"points": [point], "chosen": point, "cached_features": True, "seconds": 3.0},
        "figures": {"curves": str(tmp_path / "models" / "curves.png"), "confusion": None},
        "test": {"evaluated_on": "test", "accuracy": 0.8, "macro_f1": 0.79, "n": 60,
                 "per_class": {"cs": {"precision": 0.8, "recall": 0.8, "f1": 0.8, "support": 60}},
                 "distribution": {"cs": {"real": 60, "predicted": 58}}, "per_group": per_group},
        "galleries": {"cs": {"false_positives": {"png": None}, "false_negatives": {"png": None}}},
    }


def test_finetune_section_judges_only_groups_large_enough(tmp_path):
    paths = DatasetPaths.create(tmp_path)
    judged = report_section(finetune_summary({"<30": (30, 0.9), ">=30": (30, 0.7)}, tmp_path), paths)
    assert "Largest gap: <b>0.200</b> (&lt;30 vs &gt;=30)" in judged and "too few to judge" not in judged
    assert "src=\"../models/curves.png\"" in judged and "cs: most confident false positives: none." in judged
    small = report_section(finetune_summary({"<30": (30, 0.9), ">=30": (5, 0.2)}, tmp_path), paths)
    assert "Largest gap: too few to judge" in small and "<b>0.200</b>" not in small
    row = small.split("<td>&gt;=30</td>", 1)[1].split("</tr>", 1)[0]
    assert row == "<td class=n>5</td><td></td><td></td><td>too few to judge</td>"


def test_review_page_escapes_reasons_and_links(tmp_path):
    frame, paths = build_dataset(tmp_path / "tiny", n=10)
    rows = frame["status"] == "kept"
    frame = frame.assign(crosscheck=np.where(rows, "disagree", None), crosscheck_reason=HOSTILE,
                         crosscheck_score=np.linspace(0.1, 0.9, len(frame)), autotag_gender="male",
                         autotag_gender_confidence=91.0, autotag_age=np.nan)
    frame.loc[0, ["page_url", "gender"]] = ["http://x/?a=1&b='2'", "<b>"]
    recipe = make_recipe("tiny", crosscheck={"fields": {"gender": "gender"}})
    page = review.write(frame, recipe, paths).read_text()
    assert page.count("<figure>") == int(rows.sum()) and f"{int(rows.sum())} faces the tagger disagrees with" in page
    assert HOSTILE not in page and "crawled: gender: &lt;b&gt;<br>" in page
    assert "href='http://x/?a=1&amp;b=&#39;2&#39;'" in page
    ranks = [int(r) for r in re.findall(r"<span class='rank'>#(\d+)</span>", page)]
    assert ranks == list(range(1, int(rows.sum()) + 1))  # strongest disagreement first, no chance of error shown
    assert "chance that the crawled label is wrong" not in page
    assert "tagger: male (91%)" in page


def test_templates_escape_by_default_and_refuse_unknown_names():
    assert environment("tasks.report").autoescape is True
    assert render("tasks.report", "sections/finetune_skipped.html.j2", reason="<i>") == "<p>Skipped: &lt;i&gt;</p>"
    with pytest.raises(jinja2.UndefinedError, match="reason"):
        render("tasks.report", "sections/finetune_skipped.html.j2")


def test_templates_are_part_of_their_stage_cache_key():
    report_files = {p.name for p in code_files(module_files("tasks.report"), "report")}
    assert {"page.html.j2", "overview.html.j2", "macros.html.j2", "crosscheck.html.j2"} <= report_files
    crosscheck_files = {p.name for p in code_files(module_files("tasks.crosscheck"), "crosscheck")}
    assert "review.html.j2" in crosscheck_files and "page.html.j2" not in crosscheck_files

"""Each stage's section of reports/report.html, drawn from its reports/<stage>.json alone.

Presentation lives here and in templates/sections/, not in the stages, so restyling the
report re-runs the report only. Each function picks and shapes the figures; its template
lays them out.
"""

from __future__ import annotations

import json
from typing import Any

from markupsafe import Markup

from tasks.core.binning import MIN_GROUP, TOO_FEW
from tasks.core.paths import DatasetPaths, SHARE_CSV, SPLITS
from tasks.report.html import figures, render, rows, thumbnail

CRAWL_FIGURES = ["pages", "rendered_pages", "items", "rows_new", "rows_total", "error_count", "retries",
                 "elapsed_seconds", "pages_per_second", "finish_reason"]
FETCH_FIGURES = ["requested", "downloaded", "unchanged", "skipped_already_stored", "failed", "with_image", "bytes",
                 "elapsed_seconds", "images_per_second"]
LISTED = 50  # URLs listed per crawl problem
STRATA_SHOWN = 10  # strata of a split variant shown, furthest from the target shares first
CROSSCHECK_COLUMNS = {
    "gender": ["n", "agree", "disagree", "skipped", "accuracy", "precision_female", "recall_female",
               "precision_male", "recall_male"],
    "age": ["n", "agree", "disagree", "skipped", "mae", "mean_error", "within_margin", "within_5", "calibrated_mae"],
}
COUNTS = ("n", "agree", "disagree", "skipped")  # shown for every group; rates only for groups large enough


def crawl(summary: dict[str, Any], paths: DatasetPaths) -> Markup:
    """The crawl in reports/report.html: figures, then what the recipe author should look at."""
    unmapped = [{"field": f, "value": v, "pages": n} for f, values in summary.get("unmapped", {}).items()
                for v, n in values.items()]
    problems = {title: [{"url": u} for u in summary.get(key, [])[:LISTED]]
                for key, title in (("robots_blocked", "Blocked by robots.txt"),
                                   ("pages_without_image", "Item pages without an image"))}
    return render("sections/crawl.html.j2", figures=figures(summary, CRAWL_FIGURES), unmapped=unmapped,
                  problems=problems, errors=summary.get("errors", [])[:LISTED],
                  checks=[*summary.get("diagnosis", []), *_faceless(paths)], selectors=_selectors(summary))


def _faceless(paths: DatasetPaths) -> list[str]:
    """Images without a face, from the faces stage's report: an item image selector that picks
    logos or group banners shows here first."""
    report = paths.report_json("faces")
    data = json.loads(report.read_text(encoding="utf-8")) if report.is_file() else {}
    found = data.get("reasons", {}).get("no face") if isinstance(data, dict) else None
    if not found:
        return []
    return [f"{found} of {data.get('images', 0)} images had no face the detector could find: check that the item "
            "image selector picks portraits (see the faces section)"]


def _selectors(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each selector of each source and step: on how many pages (or blocks) it matched."""
    out = []
    for source, steps in summary.get("selectors", {}).items():
        for step, selectors in steps.items():
            for what, entry in selectors.items():
                out.append({"source": source, "step": step, "selector": f"{what}: {entry.get('selector', '')}",
                            "read": entry.get("reads", 0), "matched on": entry.get("matched", 0),
                            "matches": entry.get("matches", 0), "rendered page has": entry.get("rendered_matches", "")})
    return out


def fetch(summary: dict[str, Any], paths: DatasetPaths) -> Markup:
    """The downloads in reports/report.html: outcomes, then failures by reason."""
    return render("sections/fetch.html.j2", figures=figures(summary, FETCH_FIGURES),
                  reasons=rows(summary.get("failure_reasons") or {}, "reason", "images"))


def faces(summary: dict[str, Any], paths: DatasetPaths) -> Markup:
    """The faces section of report.html: why images were set aside, and samples of both."""
    samples = summary.get("samples", {})
    settings = summary.get("settings")
    return render(
        "sections/faces.html.j2", summary=summary,
        rate=summary.get("faces_per_second") or summary.get("per_worker_faces_per_second"),
        reasons=rows(summary.get("reasons", {}), "reason", "images"),
        face_counts=rows(summary.get("face_counts", {}), "faces", "images"),
        kept=[thumbnail(i["path"], i.get("item_id")) for i in samples.get("kept", [])],
        rejected=[thumbnail(i["path"], i.get("reason")) for i in samples.get("rejected", [])],
        settings=(rows(settings, "setting", "value") if isinstance(settings, dict)
                  else [{"setting": "faces", "value": "none (whole images)"}]),
    )


def dedupe(summary: dict[str, Any], paths: DatasetPaths) -> Markup:
    """The dedupe section of report.html: clusters with thumbnails, identity merge rates."""
    clusters = [[thumbnail(m.get("path"), m["item_id"], m.get("match")) for m in item["members"]]
                for item in summary.get("clusters", [])]
    return render("sections/dedupe.html.j2", summary=summary, clusters=clusters, identity=summary.get("identity"),
                  matches=rows(summary.get("duplicates_by_match", {}), "match", "images"))


def split(summary: dict[str, Any], paths: DatasetPaths) -> Markup:
    """The split in the HTML report: shares per variant, the worst strata, leaks, warnings."""
    variants = [{
        "name": name, "variant": variant, "leaks": sum(variant.get("leaks", {}).values()),
        "strata": sorted(variant.get("strata", {}).items(), key=lambda kv: -kv[1]["largest_deviation"])[:STRATA_SHOWN],
    } for name, variant in summary.get("variants", {}).items()]
    return render("sections/split.html.j2", summary=summary, variants=variants)


def export(summary: dict[str, Any], paths: DatasetPaths) -> Markup:
    """The export in the HTML report: images per tree, split and class, and where they are."""
    trees = [{
        "column": column, "tree": tree,
        "classes": sorted({c for per_split in tree.get("counts", {}).values() for c in per_split}),
        "splits": [s for s in SPLITS if s in tree.get("counts", {})],
    } for column, tree in summary.get("trees", {}).items()]
    return render("sections/export.html.j2", summary=summary, trees=trees, share_csv=SHARE_CSV, card=paths.card.name)


def _metric_rows(groups: dict[str, dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """One row per group; a group the cross-check marked too small shows its counts and a
    note, not rates that move by chance."""
    keys = CROSSCHECK_COLUMNS.get(name, list(COUNTS))
    noted = any(metrics.get("too_few_to_judge") for metrics in groups.values())
    out = []
    for group, metrics in groups.items():
        few = metrics.get("too_few_to_judge", False)
        row = {"group": group, **{k: "" if few and k not in COUNTS else metrics.get(k, "") for k in keys}}
        out.append({**row, "note": TOO_FEW if few else ""} if noted else row)
    return out


def crosscheck(summary: dict[str, Any], paths: DatasetPaths) -> Markup:
    """HTML for report.html: outcome counts, per-field tables, per-group tables, top disagreements."""
    fields = []
    for name, entry in summary.get("fields", {}).items():
        overall = entry.get("all", {})
        fields.append({
            "name": name,
            "sources": _metric_rows({"all": overall, **{f"source {k}": v for k, v in entry.get("by_source", {}).items()}},
                                    name),
            "confusion": [{"crawled": c, **row} for c, row in overall.get("confusion", {}).items()],
            "errors": rows(overall.get("errors", {}), "error", "faces"),
            "attributes": {a: _metric_rows(groups, name) for a, groups in entry.get("by_attribute", {}).items()},
        })
    few = any(row.get("note") for f in fields for table in [f["sources"], *f["attributes"].values()] for row in table)
    review = [thumbnail(r["face_path"], r["reason"]) for r in summary.get("review", [])]
    trust = summary.get("flag_trust", {})
    lines = [e["says"] for e in trust.values()] + [e["says"] for e in summary.get("threshold", {}).values()]
    checked = paths.report_json("validation")
    return render("sections/crosscheck.html.j2", summary=summary, outcomes=summary.get("outcomes", {}), fields=fields,
                  few=few, review=review, min_group=MIN_GROUP, trust=lines,
                  measured=bool(trust) and all(e.get("measured") for e in trust.values()),
                  validation=validation(json.loads(checked.read_text(encoding="utf-8")), paths) if checked.is_file() else "")


def _interval(ci: list[float] | None) -> str:
    return f"{ci[0]:.2f} to {ci[1]:.2f}" if ci else ""


def _score_rows(field: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per source of a field's values (crawled, each tagger) against gold; a source
    scored on too few faces shows its counts and says so."""
    out = []
    for name, s in field.get("sources", {}).items():
        few = s.get("too_few_to_judge")
        row = {"labels from": name, "gold faces": s.get("n"), "answered": s.get("answered", s.get("recognised"))}
        if field["kind"] == "numeric":
            row.update({"MAE": s.get("mae"), f"within {s.get('margin', 5):g}": s.get("within_margin"),
                        "95% interval": _interval(s.get("within_margin_ci"))})
        elif field["kind"] == "celebrity":
            row.update({"precision": s.get("precision"), "95% interval (p)": _interval(s.get("precision_ci")),
                        "recall": s.get("recall"), "95% interval (r)": _interval(s.get("recall_ci"))})
        else:
            row.update({"accuracy": s.get("accuracy"), "95% interval": _interval(s.get("accuracy_ci")), "kappa": s.get("kappa")})
        out.append({k: ("" if few and k not in ("labels from", "gold faces", "answered") else v) for k, v in row.items()}
                   | {"note": TOO_FEW if few else ""})
    return out


def _class_rows(source: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"class": name, "gold": c["support"], "said": c["predicted"], "precision": c["precision"],
             "95% interval (p)": _interval(c["precision_ci"]), "recall": c["recall"],
             "95% interval (r)": _interval(c["recall_ci"]), "F1": c["f1"], "95% interval (F1)": _interval(c["f1_ci"])}
            for name, c in source.get("classes", {}).items()]


def validation(summary: dict[str, Any], paths: DatasetPaths) -> Markup:
    """reports/validation.json in the report: every source of labels and the flags against gold."""
    fields = []
    for name, field in summary.get("fields", {}).items():
        fields.append({
            "name": name, "field": field, "scores": _score_rows(field),
            "details": [{"source": source, "classes": _class_rows(s),
                         "confusion": [{"gold": g, **row} for g, row in s.get("confusion", {}).items()]}
                        for source, s in field.get("sources", {}).items() if s.get("classes")],
            "flags": field.get("flags"), "agreement": field.get("agreement"),
            "disagreements": [{"item": d["item_id"], "labels": ", ".join(f"{k}: {v}" for k, v in d["labels"].items()),
                               "gold": d["gold"] if d["gold"] is not None else "tie: left out"}
                              for d in field.get("disagreements", [])],
        })
    return render("sections/validation.html.j2", summary=summary, fields=fields, min_group=MIN_GROUP)

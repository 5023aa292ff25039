"""Each stage's section of reports/report.html, drawn from its reports/<stage>.json alone.

Presentation lives here, not in the stages, so restyling the report re-runs the report only.
"""

from __future__ import annotations

import html
from html import escape
from typing import Any

from tasks.core.paths import DatasetPaths, SHARE_CSV, SPLITS
from tasks.report.html import table


def crawl(summary: dict[str, Any], paths: DatasetPaths) -> str:
    """The crawl in reports/report.html: figures, then what the recipe author should look at."""

    figures = ["pages", "rendered_pages", "items", "rows_new", "rows_total", "error_count", "retries",
               "elapsed_seconds", "pages_per_second", "finish_reason"]
    parts = [table([{"figure": k, "value": summary.get(k)} for k in figures if summary.get(k) is not None])]
    unmapped = [{"field": f, "value": v, "pages": n} for f, values in summary.get("unmapped", {}).items()
                for v, n in values.items()]
    if unmapped:
        parts += ["<h3>Values no <code>map</code> key knows (left empty)</h3>", table(unmapped)]
    for key, title in (("robots_blocked", "Blocked by robots.txt"), ("pages_without_image", "Item pages without an image")):
        if summary.get(key):
            parts += [f"<h3>{title}</h3>", table([{"url": u} for u in summary[key][:50]])]
    if summary.get("errors"):
        parts += ["<h3>Pages that failed</h3>", table(summary["errors"][:50], ["url", "reason"])]
    return "\n".join(parts)


def fetch(summary: dict[str, Any], paths: DatasetPaths) -> str:
    """The downloads in reports/report.html: outcomes, then failures by reason."""

    figures = ["requested", "downloaded", "unchanged", "skipped_already_stored", "failed", "with_image", "bytes",
               "elapsed_seconds", "images_per_second"]
    parts = [table([{"figure": k, "value": summary.get(k)} for k in figures if summary.get(k) is not None])]
    reasons = summary.get("failure_reasons") or {}
    if reasons:
        parts += ["<h3>Failed downloads by reason</h3>", table([{"reason": r, "images": n} for r, n in reasons.items()])]
    return "\n".join(parts)


def faces(summary: dict[str, Any], paths: DatasetPaths) -> str:
    """The faces section of report.html: why images were set aside, and samples of both."""

    def grid(items: list[dict[str, Any]], caption: str) -> str:
        figures = [f"<figure><img src='../{html.escape(str(i['path']))}' loading='lazy'>"
                   f"<figcaption>{html.escape(str(i.get(caption) or ''))}</figcaption></figure>" for i in items]
        return f"<div class='grid'>{''.join(figures)}</div>" if figures else "<p><em>none</em></p>"

    rate = summary.get("faces_per_second") or summary.get("per_worker_faces_per_second")
    parts = [
        f"<p>{summary.get('images', 0)} images checked: {summary.get('kept', 0)} kept, "
        f"{summary.get('quarantined', 0)} quarantined, {summary.get('failed', 0)} missing"
        + (f"; {rate} images/s" if rate else "") + ".</p>",
        "<h3>Why images were quarantined</h3>",
        table([{"reason": r, "images": n} for r, n in summary.get("reasons", {}).items()], ["reason", "images"]),
        "<h3>Faces found per image</h3>",
        table([{"faces": f, "images": n} for f, n in summary.get("face_counts", {}).items()], ["faces", "images"]),
        "<h3>Kept faces (sample)</h3>", grid(summary.get("samples", {}).get("kept", []), "item_id"),
        "<h3>Quarantined images (sample)</h3>", grid(summary.get("samples", {}).get("rejected", []), "reason"),
        "<h3>Settings</h3>",
        table([{"setting": k, "value": v} for k, v in (summary.get("settings") or {}).items()]
              if isinstance(summary.get("settings"), dict) else [{"setting": "faces", "value": "none (whole images)"}]),
    ]
    return "".join(parts)


def dedupe(summary: dict[str, Any], paths: DatasetPaths) -> str:
    """The dedupe section of report.html: clusters with thumbnails, identity merge rates."""

    def figure(member: dict[str, Any]) -> str:
        image = f"<img src='../{html.escape(member['path'])}' loading='lazy'>" if member.get("path") else ""
        return (f"<figure>{image}<figcaption>{html.escape(member['item_id'])}<br>"
                f"{html.escape(member.get('match') or '')}</figcaption></figure>")

    parts = [
        f"<p>{summary.get('rows_compared', 0)} images compared: {summary.get('duplicates', 0)} duplicates in "
        f"{summary.get('duplicate_clusters', 0)} clusters (largest {summary.get('largest_cluster', 0)}), "
        f"{summary.get('blank', 0)} blank images set aside, {summary.get('in_reference_sets', 0)} found in "
        f"reference test splits. Keeper: {html.escape(summary.get('keeper_rule', ''))}.</p>",
        "<h3>How duplicates matched</h3>",
        table([{"match": k, "images": v} for k, v in summary.get("duplicates_by_match", {}).items()], ["match", "images"]),
        "<h3>Duplicate clusters</h3>",
    ]
    for item in summary.get("clusters", []):
        parts.append(f"<div class='grid'>{''.join(figure(m) for m in item['members'])}</div>")
    if not summary.get("clusters"):
        parts.append("<p><em>none</em></p>")
    ident = summary.get("identity")
    if ident:
        parts.append(
            f"<h3>Identity</h3><p>{ident['faces']} kept faces in {ident['person_groups']} person groups; "
            f"{ident['faces_in_shared_groups']} faces share a group (largest {ident['largest_person_group']}). "
            f"Threshold {ident['threshold']}"
            + (f", {ident['name_threshold']} when the names agree" if ident.get("name_threshold") else "")
            + ". Person groups only keep one person's photos in one split; no image is removed for identity. "
            "Merge rates that differ much between groups mean the threshold treats them differently.</p>")
        for column, rows in ident.get("merge_rates", {}).items():
            parts.append(f"<h4>Merge rates by {html.escape(column)}</h4>")
            parts.append(table([{**r, "faces_merged": f"{r['faces_merged']:.1%}",
                                 "pair_join_rate": "" if r["pair_join_rate"] != r["pair_join_rate"]
                                 else f"{r['pair_join_rate']:.2%}"} for r in rows],
                               ["group", "faces", "person_groups", "faces_merged", "pair_join_rate"]))
    return "".join(parts)


def split(summary: dict[str, Any], paths: DatasetPaths) -> str:
    """The split in the HTML report: shares per variant, the worst strata, leaks, warnings."""

    parts = [f"<p>Seed {summary.get('seed')}, stratified on {escape(', '.join(summary.get('stratify', [])))}; "
             f"{summary.get('groups', {}).get('groups', 0)} groups (images of one person or near-copies "
             f"always share a split).</p>"]
    for name, variant in summary.get("variants", {}).items():
        counts = variant.get("counts", {})
        shares = variant.get("share", {})
        target = variant.get("target", {})
        cells = "".join(
            f"<tr><td>{escape(s)}</td><td class=n>{counts.get(s, 0)}</td><td class=n>{shares.get(s, 0):.1%}</td>"
            f"<td class=n>{target.get(s, 0):.0%}</td></tr>" for s in counts
        )
        worst = variant.get("largest_deviation", {})
        leak_total = sum(variant.get("leaks", {}).values())
        parts.append(
            f"<h3>{escape(name)} <small>({escape(variant.get('folder', ''))})</small></h3>"
            f"<table><tr><th>split</th><th>images</th><th>share</th><th>target</th></tr>{cells}</table>"
            f"<p>Largest deviation of a stratum from the target share: {worst.get('deviation', 0):.1%}"
            f" ({escape(str(worst.get('stratum')))}, {escape(str(worst.get('split')))}). "
            f"Groups found in more than one split: {leak_total}.</p>"
        )
        strata = sorted(variant.get("strata", {}).items(), key=lambda kv: -kv[1]["largest_deviation"])[:10]
        if strata:
            rows = "".join(
                f"<tr><td>{escape(k)}</td><td class=n>{v['images']}</td>"
                + "".join(f"<td class=n>{v['share'][s]:.1%}</td>" for s in counts)
                + f"<td class=n>{v['largest_deviation']:.1%}</td></tr>"
                for k, v in strata
            )
            head = "".join(f"<th>{escape(s)}</th>" for s in counts)
            parts.append(f"<table><tr><th>stratum (10 furthest off)</th><th>images</th>{head}<th>deviation</th></tr>{rows}</table>")
    if summary.get("warnings"):
        parts.append("<ul>" + "".join(f"<li>{escape(w)}</li>" for w in summary["warnings"]) + "</ul>")
    return "\n".join(parts)


def export(summary: dict[str, Any], paths: DatasetPaths) -> str:
    """The export in the HTML report: images per tree, split and class, and where they are."""

    parts = []
    for column, tree in summary.get("trees", {}).items():
        counts = tree.get("counts", {})
        classes = sorted({c for per_split in counts.values() for c in per_split})
        head = "".join(f"<th>{escape(c)}</th>" for c in classes)
        rows = "".join(
            f"<tr><td>{escape(split)}</td>" + "".join(f"<td class=n>{counts[split].get(c, 0)}</td>" for c in classes) + "</tr>"
            for split in SPLITS if split in counts
        )
        files = tree.get("files", {})
        missing = len(tree.get("missing_files", []))
        parts.append(
            f"<h3>{escape(tree.get('folder', column))}/ <small>(column {escape(column)})</small></h3>"
            f"<table><tr><th>split</th>{head}</tr>{rows}</table>"
            f"<p>{files.get('linked', 0)} files linked, {files.get('copied', 0)} copied, {files.get('kept', 0)} already in place"
            + (f"; <strong>{missing} kept images had no file to export</strong>" if missing else "") + ".</p>"
        )
    parts.append(
        f"<p>{summary.get('removed_stale_files', 0)} files of images no longer in the dataset were removed. "
        f"The shareable manifest (<code>{SHARE_CSV}</code>, no images) lists {summary.get('shared_rows', 0)} images. "
        f"See <a href=\"../{paths.card.name}\">{paths.card.name}</a>.</p>"
    )
    return "\n".join(parts)


def _metric_rows(groups: dict[str, dict[str, Any]], name: str) -> list[dict[str, Any]]:
    keys = (["n", "agree", "disagree", "skipped", "accuracy", "precision_female", "recall_female",
             "precision_male", "recall_male"] if name == "gender" else
            ["n", "agree", "disagree", "skipped", "mae", "mean_error", "within_margin", "within_5", "calibrated_mae"]
            if name == "age" else ["n", "agree", "disagree", "skipped"])
    return [{"group": group, **{k: metrics.get(k, "") for k in keys}} for group, metrics in groups.items()]


def crosscheck(summary: dict[str, Any], paths: DatasetPaths) -> str:
    """HTML for report.html: outcome counts, per-field tables, per-group tables, top disagreements."""

    out = summary.get("outcomes", {})
    parts = [
        f"<p>Autotagger <b>{html.escape(str(summary.get('autotagger')))}</b> on {summary.get('tagged', 0)} faces: "
        f"{out.get('agree', 0)} agree, {out.get('disagree', 0)} disagree, {out.get('skipped', 0)} skipped; "
        f"decisions: {html.escape(str(summary.get('calibration', 'plain rules')))}. "
        f"Disagreeing faces are {'quarantined' if summary.get('on_disagreement') == 'drop' else 'kept and flagged'}; "
        "see <a href='review.html'>the review page</a>.</p>"
    ]
    for name, entry in summary.get("fields", {}).items():
        overall = entry.get("all", {})
        parts.append(f"<h3>{html.escape(name)}</h3>")
        parts.append(table(_metric_rows({"all": overall, **{f"source {k}": v for k, v in entry.get("by_source", {}).items()}}, name)))
        if "confusion" in overall:
            parts.append("<p>Confusion (rows: crawled, columns: tagger)</p>")
            parts.append(table([{"crawled": c, **row} for c, row in overall["confusion"].items()]))
        if "errors" in overall:
            parts.append("<p>Age error, tagger minus crawled (years)</p>")
            parts.append(table([{"error": k, "faces": v} for k, v in overall["errors"].items()]))
        for attribute, groups in entry.get("by_attribute", {}).items():
            parts.append(f"<p>{html.escape(name)} by {html.escape(attribute)}</p>")
            parts.append(table(_metric_rows(groups, name)))
    figures = [f"<figure><img src='../{html.escape(r['face_path'])}' loading='lazy'>"
               f"<figcaption>{html.escape(r['reason'])}</figcaption></figure>" for r in summary.get("review", [])]
    if figures:
        parts.append(f"<h3>Most likely label errors</h3><div class='grid'>{''.join(figures)}</div>")
    return "".join(parts)

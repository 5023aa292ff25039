"""The report stage: `reports/report.html`, one page a reader can judge the dataset by.

It opens with what every dataset needs (the funnel from found to kept, why images were
turned away, class and attribute distributions, samples of kept and rejected faces),
then one section per stage drawn from its `reports/<stage>.json` alone (`sections.py`),
so presentation never lives in a stage and restyling re-runs the report only.
"""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (the backend must be chosen first)
import pandas as pd  # noqa: E402

from tasks.core.manifest import DUPLICATE, EXCLUDED, FAILED, KEPT, QUARANTINED  # noqa: E402
from tasks.core.paths import DatasetPaths  # noqa: E402
from tasks.core.recipe import STAGES, Recipe  # noqa: E402
from tasks.report.finetune_section import report_section as finetune_section  # noqa: E402
from tasks.report.html import table  # noqa: E402
from tasks.report import sections  # noqa: E402

SAMPLES = 24
SECTIONS = {"crawl": sections.crawl, "fetch": sections.fetch, "faces": sections.faces, "dedupe": sections.dedupe,
            "crosscheck": sections.crosscheck, "split": sections.split, "export": sections.export, "finetune": finetune_section}
STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:0} .sub{color:#666;margin-top:.2em}
table{border-collapse:collapse;margin:.6em 0} td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3} td.n{text-align:right} section{margin:2em 0;border-top:2px solid #eee}
.grid{display:flex;flex-wrap:wrap;gap:6px} .grid figure{margin:0;width:120px;font-size:11px}
.grid img{width:120px;height:120px;object-fit:cover;display:block} img.plot{max-width:100%}
nav a{margin-right:.8em}
"""



def funnel(manifest: pd.DataFrame) -> list[dict[str, Any]]:
    """How many candidates survived each step, from found to kept."""
    status = manifest["status"]
    steps = [
        ("found", len(manifest)),
        ("downloaded", int(manifest["sha256"].notna().sum())),
        ("one usable face", int(manifest["face_path"].notna().sum())),
        ("unique", int((manifest["face_path"].notna() & (status != DUPLICATE)).sum())),
        ("not excluded", int((manifest["face_path"].notna() & ~status.isin([DUPLICATE, EXCLUDED])).sum())),
        ("kept", int((status == KEPT).sum())),
    ]
    return [{"step": name, "images": count} for name, count in steps]


def reasons(manifest: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows not kept, counted by status and reason ('duplicate of X' folded together)."""
    dropped = manifest[manifest["status"] != KEPT]
    folded = dropped["reason"].fillna("(no reason given)").str.replace(r"^duplicate of .*", "duplicate of another image", regex=True)
    counts = folded.groupby([dropped["status"], folded]).size().sort_values(ascending=False)
    return [{"status": s, "reason": r, "images": int(n)} for (s, r), n in counts.items()]


def _bar_plot(series: pd.Series, title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, max(1.6, 0.32 * len(series) + 0.8)))
    ax.barh([str(i) for i in series.index][::-1], list(series.values)[::-1], color="#4c78a8")
    ax.set_title(title)
    ax.set_xlabel("images")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def distribution(manifest: pd.DataFrame, column: str) -> pd.DataFrame:
    """Counts of a label among kept rows, per split when splits exist; numbers binned by decade."""
    rows = manifest[manifest["status"] == KEPT]
    values = rows[column].astype("string")
    numbers = pd.to_numeric(values, errors="coerce")
    if len(values) and numbers.notna().mean() > 0.9:
        values = (numbers // 10 * 10).astype("Int64").astype("string") + "s"
    values = values.fillna("(missing)")
    split = rows["split"].fillna("(no split)") if "split" in rows else pd.Series("(no split)", index=rows.index)
    return pd.crosstab(values, split)


def samples(manifest: pd.DataFrame, paths: DatasetPaths) -> str:
    """Thumbnails of kept faces and of rejected images with their reasons."""
    def figure(row: pd.Series, path_column: str) -> str:
        caption = html.escape(str(row["reason"]) if row["status"] != KEPT else str(row.get("item_id")))
        return f"<figure><img src='../{html.escape(str(row[path_column]))}' loading='lazy'><figcaption>{caption}</figcaption></figure>"

    kept = manifest[(manifest["status"] == KEPT) & manifest["face_path"].notna()].head(SAMPLES)
    out = ["<h3>Kept faces</h3><div class='grid'>", *(figure(r, "face_path") for _, r in kept.iterrows()), "</div>"]
    column = "quarantine_path" if "quarantine_path" in manifest else "image_path"
    rejected = manifest[manifest["status"].isin([QUARANTINED, DUPLICATE]) & manifest[column].notna()]
    if "image_width" in rejected:  # only files that decoded: an HTML page makes no thumbnail
        rejected = rejected[rejected["image_width"].notna()]
    rejected = rejected.groupby("reason", dropna=False).head(3).head(SAMPLES)
    out += ["<h3>Rejected images</h3><div class='grid'>", *(figure(r, column) for _, r in rejected.iterrows()), "</div>"]
    failed = int((manifest["status"] == FAILED).sum())
    if failed:
        out.append(f"<p>{failed} candidates could not be downloaded; see the reasons table.</p>")
    return "".join(out)


def stage_section(stage: str, summary: dict[str, Any], paths: DatasetPaths) -> str:
    """A stage's own presentation, or a table of its top-level figures."""
    renderer = SECTIONS.get(stage)
    if renderer is not None:
        return renderer(summary, paths)
    scalars = [{"figure": k, "value": v} for k, v in summary.items() if isinstance(v, (int, float, str, bool))]
    return table(scalars)


def overview(manifest: pd.DataFrame, recipe: Recipe, paths: DatasetPaths) -> str:
    """The opening sections: funnel, reasons, distributions, samples."""
    parts = ["<section id='overview'><h2>Funnel</h2>", table(funnel(manifest))]
    steps = pd.Series({r["step"]: r["images"] for r in funnel(manifest)})
    _bar_plot(steps, "From found to kept", paths.reports / "funnel.png")
    parts.append("<img class='plot' src='funnel.png' alt='funnel'>")
    parts += ["<h2>Why images were turned away</h2>", table(reasons(manifest)), "</section>"]
    parts.append("<section id='distributions'><h2>Class and attribute distributions (kept images)</h2>")
    for column in [recipe.target, *recipe.attributes]:
        if column not in manifest:
            continue
        counts = distribution(manifest, column)
        parts.append(f"<h3>{html.escape(column)}</h3>")
        parts.append(table([{column: idx, **{str(c): int(v) for c, v in row.items()}} for idx, row in counts.iterrows()]))
        if len(counts):
            _bar_plot(counts.sum(axis=1), f"{column} (kept)", paths.reports / f"dist_{column}.png")
            parts.append(f"<img class='plot' src='dist_{html.escape(column)}.png' alt='{html.escape(column)}'>")
    parts.append("</section><section id='samples'><h2>Samples</h2>")
    parts.append(samples(manifest, paths))
    parts.append("</section>")
    return "".join(parts)


def render(manifest: pd.DataFrame, recipe: Recipe, paths: DatasetPaths) -> str:
    """The whole report page."""
    stages = []
    for stage in STAGES:
        report = paths.report_json(stage)
        if stage == "report" or not report.is_file():
            continue
        summary = json.loads(report.read_text(encoding="utf-8"))
        stages.append((stage, stage_section(stage, summary, paths)))
    nav = "".join(f"<a href='#{s}'>{s}</a>" for s, _ in stages)
    built = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [
        f"<h1>{html.escape(recipe.name)}</h1><p class='sub'>{html.escape(recipe.description)} — built {built}</p>",
        f"<nav><a href='#overview'>overview</a><a href='#distributions'>distributions</a><a href='#samples'>samples</a>{nav}</nav>",
        overview(manifest, recipe, paths),
        *(f"<section id='{s}'><h2>Stage: {s}</h2>{fragment}</section>" for s, fragment in stages),
        f"<footer><p>License: {html.escape(recipe.license)}. Contact: {html.escape(recipe.contact)}.</p></footer>",
    ]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(recipe.name)} — faceset report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>")


def run(manifest: pd.DataFrame, recipe: Recipe, paths: DatasetPaths) -> pd.DataFrame:
    """Write reports/report.html (atomically) and return the manifest unchanged."""
    paths.reports.mkdir(parents=True, exist_ok=True)
    page = render(manifest, recipe, paths)
    target = paths.reports / "report.html"
    tmp = target.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(target)
    return manifest

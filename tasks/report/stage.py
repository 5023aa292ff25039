"""The report stage: `reports/report.html`, one page a reader can judge the dataset by.

It opens with what every dataset needs (the funnel from found to kept, why images were
turned away, class and attribute distributions, samples of kept and rejected faces),
then one section per stage drawn from its `reports/<stage>.json` alone (`sections.py`),
so presentation never lives in a stage and restyling re-runs the report only. The
funnel and distributions are the dataset card's (tasks.core.funnel); the markup is in
templates/.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (the backend must be chosen first)
import pandas as pd  # noqa: E402
from markupsafe import Markup  # noqa: E402

from tasks.core.atomic import write_figure, write_text  # noqa: E402
from tasks.core.binning import MIN_GROUP  # noqa: E402
from tasks.core.funnel import distribution, funnel, reasons, thin  # noqa: E402
from tasks.core.manifest import DUPLICATE, FAILED, KEPT, QUARANTINED  # noqa: E402
from tasks.core.paths import DatasetPaths  # noqa: E402
from tasks.core.recipe import STAGES, Recipe  # noqa: E402
from tasks.report import sections  # noqa: E402
from tasks.report.finetune_section import report_section as finetune_section  # noqa: E402
from tasks.report.html import render, thumbnail  # noqa: E402

SAMPLES = 24
REJECTED_PER_REASON = 3
SECTIONS: dict[str, Callable[[dict[str, Any], DatasetPaths], Markup]] = {
    "crawl": sections.crawl, "fetch": sections.fetch, "faces": sections.faces, "dedupe": sections.dedupe,
    "crosscheck": sections.crosscheck, "split": sections.split, "export": sections.export, "finetune": finetune_section,
}


def _bar_plot(series: pd.Series, title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, max(1.6, 0.32 * len(series) + 0.8)))
    ax.barh([str(i) for i in series.index][::-1], list(series.values)[::-1], color="#4c78a8")
    ax.set_title(title)
    ax.set_xlabel("images")
    fig.tight_layout()
    write_figure(path, fig, dpi=80)
    plt.close(fig)


def samples(manifest: pd.DataFrame) -> dict[str, Any]:
    """Thumbnails of kept faces and of rejected images (a few per reason), and how many
    candidates never downloaded."""
    kept = manifest[(manifest["status"] == KEPT) & manifest["face_path"].notna()].head(SAMPLES)
    column = "quarantine_path" if "quarantine_path" in manifest else "image_path"
    rejected = manifest[manifest["status"].isin([QUARANTINED, DUPLICATE]) & manifest[column].notna()]
    if "image_width" in rejected:  # only files that decoded: an HTML page makes no thumbnail
        rejected = rejected[rejected["image_width"].notna()]
    rejected = rejected.groupby("reason", dropna=False).head(REJECTED_PER_REASON).head(SAMPLES)
    return {"kept": [thumbnail(r.face_path, r.item_id) for r in kept.itertuples()],
            "rejected": [thumbnail(path, reason) for path, reason in zip(rejected[column], rejected["reason"])],
            "failed": int((manifest["status"] == FAILED).sum())}


def overview(manifest: pd.DataFrame, recipe: Recipe, paths: DatasetPaths) -> Markup:
    """The opening sections: funnel, reasons, distributions (with their plots), samples."""
    steps = funnel(manifest)
    _bar_plot(pd.Series({r["step"]: r["images"] for r in steps}), "From found to kept", paths.reports / "funnel.png")
    distributions = []
    for field in dict.fromkeys([recipe.target, *recipe.attributes]):
        if field not in manifest:
            continue
        rows = distribution(manifest, field, recipe)
        plot = None
        if rows:
            plot = f"dist_{field}.png"
            _bar_plot(pd.Series({r[field]: r["all"] for r in rows}), f"{field} (kept)", paths.reports / plot)
        distributions.append({"field": field, "rows": rows, "few": thin(rows, field), "plot": plot})
    return render("overview.html.j2", steps=steps, reasons=reasons(manifest), distributions=distributions,
                  samples=samples(manifest), min_group=MIN_GROUP)


def render_page(manifest: pd.DataFrame, recipe: Recipe, paths: DatasetPaths) -> Markup:
    """The whole report page: the overview, then each stage that left a report."""
    stages = []
    for stage in STAGES:
        report = paths.report_json(stage)
        if stage in SECTIONS and report.is_file():
            stages.append((stage, SECTIONS[stage](json.loads(report.read_text(encoding="utf-8")), paths)))
    return render("page.html.j2", recipe=recipe, stages=stages, overview=overview(manifest, recipe, paths),
                  built=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def run(manifest: pd.DataFrame, recipe: Recipe, paths: DatasetPaths) -> pd.DataFrame:
    """Write reports/report.html (atomically) and return the manifest unchanged."""
    paths.reports.mkdir(parents=True, exist_ok=True)
    write_text(paths.report_html, render_page(manifest, recipe, paths))
    return manifest

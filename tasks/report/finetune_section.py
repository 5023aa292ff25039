"""The finetune part of reports/report.html: grid, curves, test metrics, subgroups, galleries.

Drawn from reports/finetune.json alone; the layout is templates/sections/finetune.html.j2.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from markupsafe import Markup

from tasks.core.binning import MIN_GROUP, TOO_FEW
from tasks.core.paths import DatasetPaths
from tasks.report.html import render

GRID_COLUMNS = ["point", "lr", "momentum", "batch_size", "best_epoch", "epochs_run", "val_loss", "val_acc", "seconds"]


def _link(path: str | None, paths: DatasetPaths) -> str | None:
    """A path relative to reports/report.html, so the report folder can be opened anywhere."""
    return os.path.relpath(Path(path), paths.reports) if path else None


def _subgroups(per_group: dict[str, Any]) -> list[dict[str, Any]]:
    """Per attribute: its groups (a group too small is shown without figures) and the largest gap."""
    return [{"attribute": attribute, "groups": entry["groups"], "gap": entry["largest_gap"],
             "gap_judged": not entry["largest_gap"].get("too_few_to_judge", False)}
            for attribute, entry in per_group.items()]


def _galleries(galleries: dict[str, Any], paths: DatasetPaths) -> list[dict[str, Any]]:
    return [{"label": f"{name}: most confident {kind.replace('_', ' ')}", "src": _link(entry[kind]["png"], paths)}
            for name, entry in galleries.items() for kind in ("false_positives", "false_negatives")]


def _ensemble(ensemble: dict[str, Any] | None, main_val_acc: float) -> list[dict[str, Any]]:
    if not ensemble:
        return []
    rows = [{"model": "main", "image size": "", "pool": "", "features from": "", "validation accuracy": main_val_acc}]
    for n, member in enumerate(ensemble["members"], 1):
        layers = member["features_from"]
        rows.append({"model": f"member {n}" + (f" ({member['arch']})" if member.get("arch") else ""),
                     "image size": member["image_size"], "pool": member["pool"],
                     "features from": ", ".join([layers] if isinstance(layers, str) else layers or ["last layer"]),
                     "validation accuracy": member["val_acc"]})
    return rows


def _unlearn_rows(unlearn: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not unlearn:
        return []
    return [{"model": title, "alpha": run["alpha"], f"linear probe accuracy of {unlearn['attribute']}": run["probe_accuracy"],
             "target accuracy": run["target_accuracy"], "saved in": run.get("model", "")}
            for title, run in unlearn["runs"].items()]


def report_section(summary: dict[str, Any], paths: DatasetPaths) -> Markup:
    """HTML fragment for the report stage."""
    if not summary or summary.get("skipped"):
        return render("sections/finetune_skipped.html.j2", reason=(summary or {}).get("reason", "the stage did not run"))
    test = summary["test"]
    unlearn = summary.get("unlearn")
    return render(
        "sections/finetune.html.j2", summary=summary, test=test, model=_link(summary["model"], paths),
        curves=_link(summary["figures"]["curves"], paths), confusion=_link(summary["figures"]["confusion"], paths),
        grid_columns=GRID_COLUMNS, grid_rows=summary["grid"]["points"],
        per_class=[{"class": c, "precision": r["precision"], "recall": r["recall"], "F1": r["f1"], "support": r["support"],
                    "real count": test["distribution"][c]["real"], "predicted count": test["distribution"][c]["predicted"]}
                   for c, r in test["per_class"].items()],
        subgroups=_subgroups(test["per_group"]), galleries=_galleries(summary["galleries"], paths),
        ensemble=_ensemble(summary.get("ensemble"), summary["grid"]["chosen"]["val_acc"]),
        unlearn=unlearn, unlearn_rows=_unlearn_rows(unlearn),
        unlearn_alphas=", ".join(f"{a:g}" for a in (unlearn["alpha"] if isinstance(unlearn["alpha"], list) else [unlearn["alpha"]]))
        if unlearn else "",
        unlearn_plot=_link(unlearn["plot"], paths) if unlearn else None, min_group=MIN_GROUP, too_few=TOO_FEW,
    )

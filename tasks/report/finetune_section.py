"""The finetune part of reports/report.html: grid, curves, test metrics, subgroups, galleries."""

from __future__ import annotations

import os
from html import escape
from pathlib import Path

from tasks.core.paths import DatasetPaths


def _link(path: str | None, paths: DatasetPaths) -> str:
    """A path relative to reports/report.html, so the report folder can be opened anywhere."""
    return escape(os.path.relpath(Path(path), paths.reports)) if path else ""


def _img(path: str | None, paths: DatasetPaths, alt: str, width: int | None = None) -> str:
    if not path:
        return ""
    size = f' width="{width}"' if width else ""
    return f'<img src="{_link(path, paths)}" alt="{escape(alt)}"{size}>'


def _table(header: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _grid(summary: dict) -> str:
    grid = summary["grid"]
    keys = ["point", "lr", "momentum", "batch_size", "best_epoch", "epochs_run", "val_loss", "val_acc", "seconds"]
    rows = [[p[k] for k in keys] for p in grid["points"]]
    chosen = grid["chosen"]
    how = ("frozen layers computed once and cached; each point trained from the cache"
           if grid["cached_features"] else "each point trained from the images")
    return (f"<h3>Grid ({len(rows)} points, {grid['seconds']:.0f} s; {how})</h3>" + _table(keys, rows)
            + f"<p>Chosen on validation: point {chosen['point']} (lr {chosen['lr']:g}, momentum {chosen['momentum']:g}, "
              f"batch size {chosen['batch_size']}), validation accuracy {chosen['val_acc']:.3f}.</p>")


def _subgroups(per_group: dict) -> str:
    parts = []
    for attribute, entry in per_group.items():
        rows = [[g, r["n"], r["accuracy"], f"{r['ci_low']:.3f} – {r['ci_high']:.3f}"] for g, r in entry["groups"].items()]
        gap = entry["largest_gap"]
        parts.append(f"<h4>{escape(attribute)}</h4>" + _table(["group", "n", "accuracy", "95% bootstrap CI"], rows)
                     + f"<p>Largest gap: <b>{gap['gap']:.3f}</b> ({escape(str(gap['highest']))} vs "
                       f"{escape(str(gap['lowest']))}).</p>")
    return "".join(parts) or "<p>No attributes in metadata.jsonl: no subgroup report.</p>"


def _galleries(galleries: dict, paths: DatasetPaths) -> str:
    parts = []
    for name, entry in galleries.items():
        for kind in ("false_positives", "false_negatives"):
            picture = entry[kind]["png"]
            label = f"{name}: most confident {kind.replace('_', ' ')}"
            parts.append(f"<figure>{_img(picture, paths, label)}<figcaption>{escape(label)}</figcaption></figure>"
                         if picture else f"<p>{escape(label)}: none.</p>")
    return "".join(parts)


def _ensemble(ensemble: dict | None, main_val_acc: float) -> str:
    if not ensemble:
        return ""
    rows = [["main", "", "", "", main_val_acc]] + [
        [f"member {n}", m["image_size"], m["pool"], ", ".join([m["features_from"]] if isinstance(m["features_from"], str)
                                                              else m["features_from"] or ["last layer"]), m["val_acc"]]
        for n, m in enumerate(ensemble["members"], 1)]
    return ("<h3>Ensemble (probabilities averaged)</h3>"
            + _table(["model", "image size", "pool", "features from", "validation accuracy"], rows)
            + f"<p>Averaged: validation accuracy <b>{ensemble['val_accuracy']:.3f}</b>. The evaluation below is the "
              "averaged model's.</p>")


def _unlearn(unlearn: dict | None, paths: DatasetPaths) -> str:
    if not unlearn:
        return ""
    rows = [[title, run["probe_accuracy"], run["target_accuracy"]] for title, run in unlearn["runs"].items()]
    return (f"<h3>Unlearning {escape(unlearn['attribute'])} (joint learning and unlearning, alpha {unlearn['alpha']:g})</h3>"
            + _table(["model", f"linear probe accuracy of {unlearn['attribute']}", "target accuracy"], rows)
            + f"<p>A probe that always guesses the most common value scores {unlearn['probe_majority_baseline']:.3f} "
              f"({escape(unlearn['evaluated_on'])} split).</p>" + _img(unlearn["plot"], paths, "2-D embedding plot"))


def report_section(summary: dict, paths: DatasetPaths) -> str:
    """HTML fragment for the report stage."""
    if not summary or summary.get("skipped"):
        reason = (summary or {}).get("reason", "the stage did not run")
        return f"<section id='finetune'><h2>Fine-tuning</h2><p>Skipped: {escape(reason)}</p></section>"
    test = summary["test"]
    per_class = [[c, r["precision"], r["recall"], r["f1"], r["support"],
                  test["distribution"][c]["real"], test["distribution"][c]["predicted"]] for c, r in test["per_class"].items()]
    return (
        "<section id='finetune'><h2>Fine-tuning</h2>"
        f"<p>{escape(summary['arch'])}, weights {escape(summary['weights'])}, freeze {escape(summary['freeze'])}, "
        f"on {escape(summary['device'])}; images: "
        + ", ".join(f"{k} {v}" for k, v in summary["images"].items())
        + f". Model: <code>{_link(summary['model'], paths)}</code></p>"
        + _grid(summary)
        + _img(summary["figures"]["curves"], paths, "loss and accuracy per epoch")
        + _ensemble(summary.get("ensemble"), summary["grid"]["chosen"]["val_acc"])
        + f"<h3>Evaluation on {escape(test['evaluated_on'])} (once, by the chosen model)</h3>"
        f"<p>Accuracy <b>{test['accuracy']:.3f}</b>, macro F1 {test['macro_f1']:.3f}, n = {test['n']}.</p>"
        + _table(["class", "precision", "recall", "F1", "support", "real count", "predicted count"], per_class)
        + _img(summary["figures"]["confusion"], paths, "confusion matrix", 360)
        + "<h3>Accuracy per subgroup</h3>" + _subgroups(test["per_group"])
        + "<h3>Most confident mistakes</h3>" + _galleries(summary["galleries"], paths)
        + _unlearn(summary.get("unlearn"), paths)
        + "</section>"
    )

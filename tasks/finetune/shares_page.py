"""shares.csv and shares.html: the share of each class per group, naive and adjusted, as a table and a plot.

The page is one self-contained file (the plot inlined), so it can be mailed or archived
beside the CSV; its layout is templates/shares.html.j2.
"""

from __future__ import annotations

import base64
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from tasks.core.atomic import write_csv, write_figure, write_text  # noqa: E402
from tasks.core.templates import render  # noqa: E402

SHARES_CSV, SHARES_HTML, SHARES_PNG = "shares.csv", "shares.html", "shares.png"


def _label(table: pd.DataFrame, by: list[str]) -> pd.Series:
    return table[by].astype("string").fillna("(none)").agg(" / ".join, axis=1) if by else table["group"]


def plot_shares(table: pd.DataFrame, by: list[str], path: Path) -> Path:
    """One panel per class: each group's naive share (open circle) and adjusted share with its 95% interval."""
    classes = list(dict.fromkeys(table["class"]))
    labels = list(dict.fromkeys(_label(table, by)))
    fig, axes = plt.subplots(1, len(classes), figsize=(3.6 * len(classes), 1.8 + 0.4 * len(labels)),
                             squeeze=False, sharey=True)
    for ax, name in zip(axes[0], classes):
        rows = table[table["class"] == name]
        y = [labels.index(v) for v in _label(rows, by)]
        ax.scatter(rows["naive"], y, facecolors="none", edgecolors="grey", label="naive (classify and count)", zorder=3)
        if "adjusted" in rows.columns:
            ax.errorbar(rows["adjusted"], y, xerr=[rows["adjusted"] - rows["low"], rows["high"] - rows["adjusted"]],
                        fmt="o", color="tab:blue", capsize=3, label="adjusted, 95% interval", zorder=2)
        ax.set_xlim(0, 1)
        ax.set_title(f"share of {name}")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(labels)), labels)
    axes[0][0].set_ylim(len(labels) - 0.5, -0.5)
    axes[0][-1].legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    write_figure(path, fig)
    plt.close(fig)
    return path


def write_shares(out_dir: Path, table: pd.DataFrame, by: list[str], *, model: str, calibration: str | None,
                 note: str) -> dict[str, Path]:
    """shares.csv, shares.png and shares.html (the plot inlined) in `out_dir`."""
    out_dir = Path(out_dir)
    files = {"csv": out_dir / SHARES_CSV, "png": out_dir / SHARES_PNG, "html": out_dir / SHARES_HTML}
    write_csv(files["csv"], table)
    picture = None
    if len(table):
        plot_shares(table, by, files["png"])
        picture = base64.b64encode(files["png"].read_bytes()).decode()
    columns = [*(by or ["group"]), "images", "faces", "class", "naive", *(["adjusted", "low", "high", "method"]
                                                                       if "adjusted" in table.columns else [])]
    html = render("tasks.finetune", "shares.html.j2", rows=table[columns].to_dict("records") if len(table) else [],
                  columns=columns, model=model, calibration=calibration, note=note, picture=picture)
    write_text(files["html"], str(html))
    return files

"""What the Prefect UI shows for a build: one markdown artifact per stage, progress, the report link.

Each stage writes its figures to `reports/<stage>.json`; this module turns any such JSON
into markdown tables (numbers as a two-column table, counts by reason or class as tables,
lists of records as tables), so a stage that adds figures shows them in the UI without a
change here. Reports hold text from the web (labels, reasons, URLs): every key and value
goes in as literal text (tasks.core.text.md_text), so no HTML or link in it is rendered.
Artifacts are only created inside a Prefect run; outside one they are skipped.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tasks.core.paths import DatasetPaths
from tasks.core.text import md_text

MAX_ROWS = 50  # longer tables are cut (the full figures stay in the JSON and report.html)


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", "-".join(parts).lower())).strip("-")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        text = json.dumps(value, default=str)
        return md_text(text if len(text) <= 80 else text[:77] + "...")
    return md_text(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(map(md_text, header)) + " |", "|" + "---|" * len(header)]
    for row in rows[:MAX_ROWS]:
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    if len(rows) > MAX_ROWS:
        lines.append(f"\n_{len(rows) - MAX_ROWS} more rows in the JSON report_")
    return "\n".join(lines)


def _section(key: Any, table: str) -> str:
    return f"## {md_text(key)}\n\n{table}"


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def summary_markdown(title: str, summary: dict[str, Any]) -> str:
    """Markdown for one stage's report JSON: scalars first, then one table per nested part."""
    parts = [f"# {md_text(title)}"]
    scalars = [[k, v] for k, v in summary.items() if _is_scalar(v)]
    if scalars:
        parts.append(_table(["figure", "value"], scalars))
    for key, value in summary.items():
        if isinstance(value, dict) and value:
            if all(_is_scalar(v) for v in value.values()):
                parts.append(_section(key, _table([key, "value"], [[k, v] for k, v in value.items()])))
            elif all(isinstance(v, dict) for v in value.values()):
                columns = sorted({c for v in value.values() for c in v})
                rows = [[k, *(v.get(c, "") for c in columns)] for k, v in value.items()]
                parts.append(_section(key, _table([key, *columns], rows)))
            else:
                parts.append(_section(key, _table([key, "value"], [[k, v] for k, v in value.items()])))
        elif isinstance(value, list) and value:
            if all(isinstance(v, dict) for v in value):
                columns = list(dict.fromkeys(c for v in value for c in v))
                parts.append(_section(key, _table(columns, [[v.get(c, "") for c in columns] for v in value])))
            else:
                parts.append(_section(key, _table([key], [[v] for v in value])))
    return "\n\n".join(parts)


def _in_prefect_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def publish_stage(dataset: str, stage: str, paths: DatasetPaths, counts: dict[str, int], cached: bool) -> None:
    """The stage's markdown artifact: status counts of the manifest and its report figures."""
    if not _in_prefect_run():
        return
    from prefect.artifacts import create_markdown_artifact

    report = paths.report_json(stage)
    summary: dict[str, Any] = {}
    if report.is_file():
        try:
            summary = json.loads(report.read_text())
        except ValueError:
            summary = {"report": f"{report} is not valid JSON"}
    if not isinstance(summary, dict):
        summary = {"report": summary}
    title = f"{dataset} / {stage}" + (" (cached: unchanged since the last build)" if cached else "")
    markdown = summary_markdown(title, {"manifest status": counts, **summary})
    create_markdown_artifact(markdown, key=artifact_key(dataset, stage), description=f"{stage} stage of {dataset}")


def publish_report_link(dataset: str, report_url: str) -> None:
    if not _in_prefect_run():
        return
    from prefect.artifacts import create_link_artifact

    create_link_artifact(report_url, link_text=f"{dataset}: report.html", key=artifact_key(dataset, "report-link"),
                         description="the build's report: figures and plots of every stage")


class ProgressArtifact:
    """A Prefect progress artifact for one long stage, updated as its batches finish."""

    def __init__(self, dataset: str, stage: str) -> None:
        self.id = None
        if _in_prefect_run():
            from prefect.artifacts import create_progress_artifact

            self.id = create_progress_artifact(0.0, key=artifact_key(dataset, stage, "progress"),
                                               description=f"{stage}: share of new images processed")

    def update(self, done: int, total: int) -> None:
        if self.id is None or total <= 0:
            return
        from prefect.artifacts import update_progress_artifact

        update_progress_artifact(self.id, 100.0 * done / total)


def report_url(paths: DatasetPaths, remote_root: str | None) -> str:
    """Where report.html can be opened: its S3 URL when the data root is remote, else a file URL."""
    if remote_root and remote_root.startswith("s3://"):
        return remote_root.rstrip("/") + "/" + paths.report_html.relative_to(paths.root).as_posix()
    return paths.report_html.resolve().as_uri()

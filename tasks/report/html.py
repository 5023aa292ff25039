"""Rendering the report's templates (tasks/report/templates/), and the row shapes they take.

Python decides what is shown (which figures, in what order); the templates decide how.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from markupsafe import Markup

from tasks.core import templates

PACKAGE = "tasks.report"


def render(template: str, **context: Any) -> Markup:
    """A template of the report, escaped by default."""
    return templates.render(PACKAGE, template, **context)


def rows(mapping: Mapping[str, Any], key: str, value: str) -> list[dict[str, Any]]:
    """{'a': 1} -> [{key: 'a', value: 1}]: a mapping as table rows."""
    return [{key: k, value: v} for k, v in mapping.items()]


def figures(summary: Mapping[str, Any], names: list[str]) -> list[dict[str, Any]]:
    """The named figures of a stage report that it has, as figure/value rows."""
    return [{"figure": name, "value": summary[name]} for name in names if summary.get(name) is not None]


def thumbnail(path: str | None, *lines: Any) -> dict[str, Any]:
    """A grid figure of a file under the dataset folder (the report sits in reports/)."""
    return {"src": f"../{path}" if path else None, "lines": [str(line) if line is not None else "" for line in lines]}

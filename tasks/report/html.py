"""HTML pieces shared by the report's sections."""

from __future__ import annotations

import html
from typing import Any


def table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A plain HTML table; numbers right-aligned."""
    if not rows:
        return "<p><em>nothing to show</em></p>"
    columns = columns or list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column, "")
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            shown = f"{value:.3g}" if isinstance(value, float) else str(value)
            cells.append(f"<td{' class=n' if numeric else ''}>{html.escape(shown)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"

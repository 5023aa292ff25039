"""Text from the web, escaped for the format it goes into.

Labels, names, reasons and URLs come from pages faceset does not control, and each
output format has its own way of turning text into something active:

- Markdown (DATASET_CARD.md, Prefect artifacts): raw HTML (`<img onerror=...>`), links
  (`[x](javascript:...)`), code, emphasis, table cells and math. `md_text`
  backslash-escapes each character that starts one of them (a tag's `<`, an entity's
  `&`, `[`, a backtick, `*`, `_`, `|`, ...), which CommonMark renders as the character
  itself, and joins the lines; `md_code` puts a value in a code span no backtick in it
  can close.
- CSV files meant for people (manifest.csv, manifest_share.csv): a spreadsheet runs a cell
  starting with `=`, `+`, `-`, `@`, a tab or a carriage return as a formula. As OWASP
  recommends, such a cell is written with a leading apostrophe (`'=1+1`), which
  spreadsheets show as text. A value that already starts with apostrophes before one of
  those characters gets one more, so `read_spreadsheet_csv` gives back exactly the value
  written: faceset's own readers of these files use it. The Parquet manifest keeps the
  raw values.
- HTML pages are autoescaped by Jinja2 (tasks.core.templates).
- A terminal: `terminal` shows control characters as escapes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.core.atomic import atomic_write

# what starts links, code, emphasis, table cells or math; '<' where it starts HTML or an
# autolink ('<32', a bin, stays); '&' where it starts an entity
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~${}]|<(?=[A-Za-z/!?])|&(?=#?\w+;))")
_FORMULA = re.compile(r"^'*[=+\-@\t\r]")  # what a spreadsheet would run, behind any apostrophes
_ESCAPED = re.compile(r"^'+[=+\-@\t\r]")


def md_text(value: Any) -> str:
    """`value` as literal Markdown text: no HTML, link or formatting; one line."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(value).split()))


def md_code(value: Any) -> str:
    """`value` in a Markdown code span, fenced by more backticks than it contains in a row."""
    text = " ".join(str(value).split())
    runs = re.findall("`+", text)
    if not runs:
        return f"`{text}`"
    fence = "`" * (max(map(len, runs)) + 1)
    return f"{fence} {text} {fence}"


def md_block(text: str, language: str = "") -> str:
    """`text` in a fenced code block that no line of it can close."""
    fence = "`" * max(3, max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    return f"{fence}{language}\n{text if text.endswith(chr(10)) else text + chr(10)}{fence}\n"


def terminal(value: Any) -> str:
    """`value` for printing: control characters (a terminal's escape sequences, new lines)
    shown as Python escapes, so a scraped value cannot rewrite the user's screen."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(value))


def spreadsheet_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text (see the module's convention); non-text unchanged."""
    return f"'{value}" if isinstance(value, str) and _FORMULA.match(value) else value


def plain_cell(value: Any) -> Any:
    """The value `spreadsheet_cell` was given."""
    return value[1:] if isinstance(value, str) and _ESCAPED.match(value) else value


def _text_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if pd.api.types.is_object_dtype(frame[c]) or pd.api.types.is_string_dtype(frame[c])]


def write_spreadsheet_csv(path: Path, frame: pd.DataFrame) -> None:
    """A CSV for people, written atomically: text cells through `spreadsheet_cell`, and RFC 4180
    line ends, so that a value holding a carriage return is quoted and reads back whole."""
    safe = frame.copy()
    for column in _text_columns(safe):
        safe[column] = safe[column].map(spreadsheet_cell, na_action="ignore")
    atomic_write(path, lambda tmp: safe.to_csv(tmp, index=False, lineterminator="\r\n"))


def read_spreadsheet_csv(path: Path) -> pd.DataFrame:
    """A CSV written by `write_spreadsheet_csv`, every column as text (an empty cell is missing,
    while 'NA' or 'null' stay text), with the values as they were before escaping."""
    frame = pd.read_csv(path, dtype="string", keep_default_na=False, na_values=[""])
    for column in frame.columns:
        frame[column] = frame[column].map(plain_cell, na_action="ignore").astype("string")
    return frame

"""Review decisions: `<dataset>/decisions.csv`, what people decided about faces, which the next build honours.

The file is append-only, one row per decision, with exactly the columns of `COLUMNS`
(docs/review.md). Nothing in faceset rewrites or shortens it: a later decision about the
same item and field supersedes an earlier one (`latest`), and a malformed row or a
decision about an unknown item is reported with its row number, never dropped, so a
reviewer's work is never lost to a typo or a rebuild.

Every writer (the review app, `faceset review --import`) goes through `append`, which
holds a lock while it rewrites the whole file through a temporary file and a rename: a
build or a review page reading it at the same moment sees the file before or after the
new rows, never half a row, and two writers never interleave.

Cells are written and read with the spreadsheet policy of `tasks.core.text` (a note
starting with `=` is stored as `'=`), since reviewers open this file in spreadsheets.
Label Studio is the other way in and out: `export_label_studio` writes its tasks, and
`import_file` reads its JSON export back as decisions.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Iterable
from dataclasses import astuple, dataclass, field, fields as dataclass_fields
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from tasks.core.atomic import write_text
from tasks.core.errors import FacesetError
from tasks.core.locks import file_lock
from tasks.core.text import plain_cell, spreadsheet_cell

FILE = "decisions.csv"  # in the dataset's folder, beside manifest.parquet
LOCK = "decisions.lock"  # in the dataset's state folder (.faceset/)
KEEP, DROP, RELABEL, NOT_FACE, SAME_PERSON, DIFFERENT_PERSON = (
    "keep", "drop", "relabel", "not_face", "same_person", "different_person")
ACTIONS: tuple[str, ...] = (KEEP, DROP, RELABEL, NOT_FACE, SAME_PERSON, DIFFERENT_PERSON)
IDENTITY: tuple[str, ...] = (SAME_PERSON, DIFFERENT_PERSON)  # `value` holds the other item_id
REVIEWER_REASON = "reviewer: "  # + the note: the reason of a row a reviewer dropped
PERSON_KEY = "person:"  # the `field` part of an identity decision's key: + the other item_id


@dataclass(frozen=True)
class Decision:
    item_id: str
    action: str
    field: str  # the label field of a relabel (or of a keep that confirms one label); else ""
    value: str  # the new label of a relabel; the other item_id of same/different_person; else ""
    reviewer: str
    decided_at: str  # ISO 8601, e.g. 2026-12-03T16:30:00+00:00
    note: str = ""

    def key(self) -> tuple[str, str]:
        """What a later decision supersedes: (item, field); identity decisions by their pair
        of items, in either order (A same as B, then B different from A: the latter holds)."""
        if self.action in IDENTITY:
            first, second = sorted((self.item_id, self.value))
            return first, PERSON_KEY + second
        return self.item_id, self.field


COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclass_fields(Decision))


@dataclass
class ImportResult:
    """What `import_file` did: rows added, rows already in the file, and every problem found."""

    source: str  # "csv" or "label studio"
    added: int = 0
    already: int = 0  # identical to a row already in decisions.csv, so not added again
    problems: list[str] = field(default_factory=list)  # unreadable rows: not added
    warnings: list[str] = field(default_factory=list)  # added, but the build will report them (unknown item, ...)


def path_of(dataset_dir: Path) -> Path:
    return Path(dataset_dir) / FILE


def now() -> str:
    """The time stamp `decided_at` gets: UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; one without a zone is taken as UTC (so any two compare)."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


# ---------------------------------------------------------------- the CSV format


def _row_problem(decision: Decision) -> str | None:
    """Why a decision cannot stand in the file (its shape only; `validate` checks it against a dataset)."""
    if not decision.item_id:
        return "item_id is empty"
    if decision.action not in ACTIONS:
        return f"action {decision.action!r} is not one of {', '.join(ACTIONS)}"
    if not decision.reviewer:
        return "reviewer is empty: every decision names who made it"
    try:
        parse_time(decision.decided_at)
    except ValueError:
        return f"decided_at {decision.decided_at!r} is not an ISO 8601 time like 2026-12-03T16:30:00+00:00"
    if decision.action == RELABEL and not (decision.field and decision.value):
        return "relabel needs the field and its new value"
    if decision.action in IDENTITY:
        if decision.field:
            return f"{decision.action} takes no field (value holds the other item_id)"
        if not decision.value:
            return f"{decision.action} needs the other face's item_id in value"
        if decision.value == decision.item_id:
            return f"{decision.action} names the same item twice"
    if decision.action in (DROP, NOT_FACE) and decision.field:
        return f"{decision.action} applies to the whole face and takes no field"
    return None


def _parse(text: str, where: str) -> tuple[list[Decision], list[str]]:
    """Decisions in CSV text with the columns of COLUMNS in any order, and one message per bad row."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        return [], []
    header = [h.strip().lstrip("\ufeff") for h in header]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        return [], [f"{where}: the header lacks {', '.join(missing)}; a decisions file has the columns "
                    f"{', '.join(COLUMNS)} (docs/review.md); nothing was read from it"]
    problems = [f"{where}: column {c!r} is not part of the format and is ignored" for c in header if c not in COLUMNS]
    at = {c: header.index(c) for c in COLUMNS}
    decisions: list[Decision] = []
    for number, cells in enumerate(reader, start=2):  # the header is row 1, as in a spreadsheet
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(header):
            problems.append(f"{where} row {number}: {len(cells)} cells where the header has {len(header)}: "
                            f"{','.join(cells)[:120]!r}; fix the row (quote cells holding commas)")
            continue
        values = {c: str(plain_cell(cells[i])).strip() for c, i in at.items()}
        decision = Decision(**values)
        problem = _row_problem(decision)
        if problem:
            problems.append(f"{where} row {number}: {problem}")
            continue
        decisions.append(decision)
    return decisions, problems


def _csv_lines(decisions: Iterable[Decision]) -> str:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    for decision in decisions:
        writer.writerow([spreadsheet_cell(v) for v in astuple(decision)])
    return out.getvalue()


def _text_of(path: Path) -> str:
    """A CSV file's text with its line ends as they are (a note may hold a carriage return)."""
    with open(path, encoding="utf-8", newline="") as handle:
        return handle.read()


def read(dataset_dir: Path) -> tuple[list[Decision], list[str]]:
    """The dataset's decisions in file order, and one message per row that could not be read
    (none when there is no file yet). The file itself is left as it is."""
    target = path_of(dataset_dir)
    if not target.is_file():
        return [], []
    try:
        text = _text_of(target)
    except (OSError, UnicodeDecodeError) as exc:
        return [], [f"{target} cannot be read ({exc}); it was left as it is"]
    return _parse(text, FILE)


def append(dataset_dir: Path, decisions: Iterable[Decision]) -> int:
    """Add decisions at the end of decisions.csv; returns how many. Raises a FacesetError on a
    decision that could not be read back, so nothing unreadable enters the file."""
    rows = list(decisions)
    for decision in rows:
        problem = _row_problem(decision)
        if problem:
            raise FacesetError(f"decision about {decision.item_id!r} not recorded: {problem}",
                               "see docs/review.md for the decisions format")
    if not rows:
        return 0
    target = path_of(dataset_dir)
    with file_lock(Path(dataset_dir) / ".faceset" / LOCK):
        before = _text_of(target) if target.is_file() else ""
        if before and not before.endswith(("\n", "\r")):
            before += "\r\n"  # a file ended by hand without a line end
        write_text(target, (before or ",".join(COLUMNS) + "\r\n") + _csv_lines(rows))
    return len(rows)


# ---------------------------------------------------------------- meaning


def latest(decisions: Iterable[Decision]) -> dict[tuple[str, str], Decision]:
    """The decision that holds for each key (`Decision.key`): the latest `decided_at`, and of
    two at the same time the later in the file."""
    return {decision.key(): decision for decision in _in_time_order(decisions)}


def _in_time_order(decisions: Iterable[Decision]) -> list[Decision]:
    """By `decided_at`, and in file order at the same time (the sort is stable)."""
    return sorted(decisions, key=lambda decision: parse_time(decision.decided_at))


def manifest_fields(manifest: pd.DataFrame) -> set[str]:
    """The recipe's label fields of a built manifest: the columns between `crawled_at` and `sha256`
    (tasks.core.manifest.conform puts them there)."""
    columns = list(manifest.columns)
    if "crawled_at" not in columns or "sha256" not in columns:
        return set()
    return set(columns[columns.index("crawled_at") + 1:columns.index("sha256")])


def _numeric(series: pd.Series) -> bool:
    present = series.dropna()
    return len(present) > 0 and bool(pd.to_numeric(present, errors="coerce").notna().all())


def validate(decisions: list[Decision], manifest: pd.DataFrame, fields: set[str]) -> list[str]:
    """What the build cannot honour, one message each: an unknown item, an unknown field, a value
    unlike the field's, and two reviewers whose latest decisions on one item and field disagree.
    The decisions themselves stay in the file: an item may come back in a later crawl."""
    known = set(manifest["item_id"].astype(str)) if "item_id" in manifest else set()
    numeric = {f for f in fields if f in manifest and _numeric(manifest[f])}
    problems = []
    for decision in decisions:
        what = f"{decision.action} of {decision.item_id} by {decision.reviewer} at {decision.decided_at}"
        if decision.item_id not in known:
            problems.append(f"{what}: no item {decision.item_id} in this dataset")
        if decision.action in IDENTITY and decision.value not in known:
            problems.append(f"{what}: no item {decision.value} in this dataset (the other face)")
        if decision.field and decision.field not in fields:
            problems.append(f"{what}: {decision.field!r} is not a label field of this dataset "
                            f"(fields: {', '.join(sorted(fields)) or 'none'})")
        elif decision.action == RELABEL and decision.field in numeric:
            try:
                if not math.isfinite(float(decision.value)):
                    raise ValueError(decision.value)
            except ValueError:
                problems.append(f"{what}: {decision.field} is a number, and {decision.value!r} is not")
    by_reviewer: dict[tuple[str, str], dict[str, Decision]] = {}
    for decision in latest_per_reviewer(decisions):
        by_reviewer.setdefault(decision.key(), {})[decision.reviewer] = decision
    for key, views in by_reviewer.items():
        if len({(d.action, d.value) for d in views.values()}) > 1:
            held = latest(views.values())[key]
            said = "; ".join(f"{r}: {_said(d)}" for r, d in sorted(views.items()))
            target = f"{key[0]} {key[1]}".strip() if key[1] else key[0]
            problems.append(f"reviewers disagree on {target}: {said}; the latest ({held.reviewer}) holds")
    return problems


def latest_per_reviewer(decisions: Iterable[Decision]) -> list[Decision]:
    """Each reviewer's own latest decision per key: what each reviewer thinks now."""
    result: dict[tuple[str, tuple[str, str]], Decision] = {}
    for decision in _in_time_order(decisions):
        result[(decision.reviewer, decision.key())] = decision
    return list(result.values())


def _said(decision: Decision) -> str:
    if decision.action == RELABEL:
        return f"relabel {decision.field}={decision.value}"
    return f"{decision.action} {decision.value}".strip()


def fingerprint(decisions: Iterable[Decision], actions: Iterable[str] = ACTIONS) -> str:
    """A hash of the decisions that hold with one of `actions`, for the cache key of the stage
    that applies them: the same decision made again, or one another stage applies, re-runs nothing."""
    wanted = set(actions)
    held = sorted((d.item_id, d.action, d.field, d.value, d.reviewer, d.note)
                  for d in latest(decisions).values() if d.action in wanted)
    return hashlib.sha256(json.dumps(held).encode()).hexdigest() if held else ""

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
from typing import Any

import pandas as pd

from tasks.core.atomic import write_json, write_text
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
    """A hash of the decisions with one of `actions`, for the cache key of the stage that applies
    them ("" when there are none, as before the first decision): a row that only repeats one
    already in the file re-runs nothing."""
    wanted = set(actions)
    rows = sorted({astuple(d) for d in decisions if d.action in wanted})
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest() if rows else ""


def state(dataset_dir: Path) -> str:
    """The fingerprint of a dataset's decisions file as the build reads it: its decisions and
    its unreadable rows (which the cross-check's report lists)."""
    decisions, problems = read(dataset_dir)
    held = fingerprint(decisions)
    return held + hashlib.sha256("\n".join(problems).encode()).hexdigest()[:16] if problems else held


# ---------------------------------------------------------------- import


def _existing(dataset_dir: Path) -> set[Decision]:
    return set(read(dataset_dir)[0])


def _manifest_of(dataset_dir: Path) -> pd.DataFrame | None:
    target = Path(dataset_dir) / "manifest.parquet"
    return pd.read_parquet(target) if target.is_file() else None


def import_file(dataset_dir: Path, path: Path) -> ImportResult:
    """Add the decisions of a file to decisions.csv: our CSV format (written by any tool), or
    Label Studio's JSON export of tasks that `export_label_studio` wrote. Unreadable rows are
    listed in `problems` and not added; readable ones about unknown items or fields are added
    and listed in `warnings` (the build reports them too); rows already in the file are not
    added twice, so importing a file again changes nothing."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise FacesetError(f"{path} cannot be read: {exc}", "give a decisions CSV or a Label Studio JSON export") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{")):
        result = ImportResult("label studio")
        decisions, result.problems = from_label_studio(text, path.name)
    else:
        result = ImportResult("csv")
        decisions, result.problems = _parse(text.replace("\r\n", "\n"), path.name)
    present = _existing(dataset_dir)
    new = [d for d in dict.fromkeys(decisions) if d not in present]
    result.already = len(decisions) - len(new)
    manifest = _manifest_of(dataset_dir)
    if manifest is not None:
        result.warnings = validate(new, manifest, manifest_fields(manifest))
    result.added = append(dataset_dir, new)
    return result


def _reviewer(annotation: dict[str, Any]) -> str:
    """Label Studio's `completed_by`: a user id, or (in some exports) the user's record."""
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("username") or who.get("id")
    return f"label-studio:{who}" if who not in (None, "") else ""


def _chosen(result: dict[str, Any]) -> str | None:
    """The value of one Label Studio result: a choice, a number or a text."""
    value = result.get("value") or {}
    for key in ("choices", "text", "taxonomy"):
        if value.get(key):
            first = value[key][0]
            return str(first[-1] if isinstance(first, list) else first).strip()
    if value.get("number") is not None:
        number = value["number"]
        return str(int(number)) if float(number).is_integer() else str(number)
    return None


def _same(crawled: Any, chosen: str) -> bool:
    if crawled is None or str(crawled).strip() == "":
        return False
    try:
        return float(crawled) == float(chosen)
    except (TypeError, ValueError):
        return str(crawled).strip().casefold() == chosen.casefold()


def from_label_studio(text: str, where: str) -> tuple[list[Decision], list[str]]:
    """Decisions from Label Studio's JSON export (a list of tasks with `annotations`).

    Per annotation: the `action` choice (keep, drop, not_face) is a decision about the face;
    a result named after a label field is `keep` of that field when it equals the crawled
    value the task carries, else `relabel`; the `note` text goes with each of them. A
    cancelled (skipped) annotation is no decision and is listed."""
    try:
        tasks = json.loads(text)
    except ValueError as exc:
        return [], [f"{where}: not JSON ({exc}); export from Label Studio with the JSON format"]
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list):
        return [], [f"{where}: a Label Studio export is a list of tasks"]
    decisions: list[Decision] = []
    problems: list[str] = []
    for number, task in enumerate(tasks, start=1):
        data = task.get("data") if isinstance(task, dict) else None
        item = str((data or {}).get("item_id") or "").strip()
        label = f"{where} task {number}" + (f" (id {task.get('id')})" if isinstance(task, dict) and task.get("id") else "")
        if not item:
            problems.append(f"{label}: no data.item_id; only tasks written by faceset review --export-label-studio "
                            f"can be imported")
            continue
        for annotation in task.get("annotations") or []:
            if annotation.get("was_cancelled"):
                problems.append(f"{label}: an annotation was skipped in Label Studio; no decision taken from it")
                continue
            reviewer = _reviewer(annotation)
            decided_at = str(annotation.get("updated_at") or annotation.get("created_at") or "")
            results = annotation.get("result") or []
            note = next((_chosen(r) or "" for r in results if r.get("from_name") == "note"), "")
            for result in results:
                name, chosen = str(result.get("from_name") or ""), _chosen(result)
                if name == "note":
                    continue
                if chosen is None:
                    problems.append(f"{label}: result {name!r} has no value")
                    continue
                if name == "action":
                    decision = Decision(item, chosen, "", "", reviewer, decided_at, note)
                elif name in (data.get(FIELDS_KEY) or []):
                    action = KEEP if _same(data.get(name), chosen) else RELABEL
                    decision = Decision(item, action, name, chosen, reviewer, decided_at, note)
                else:
                    problems.append(f"{label}: result {name!r} is neither 'action', 'note' nor a label field of the task")
                    continue
                problem = _row_problem(decision)
                if problem:
                    problems.append(f"{label}: {problem}")
                else:
                    decisions.append(decision)
    return decisions, problems


# ---------------------------------------------------------------- export


MAX_CHOICES = 60  # a field with more distinct values is labelled as text in Label Studio
LS_ACTIONS = (KEEP, DROP, NOT_FACE)  # what a Label Studio annotator decides about the face
FIELDS_KEY = "faceset_fields"  # in a task's data: which of its values are label fields


def _cell(value: Any) -> Any:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    return str(value) if not isinstance(value, (int, bool)) else value


def _prediction(row: dict[str, Any], checks: dict[str, str], fields: set[str]) -> dict[str, Any] | None:
    """The autotagger's opinion of one face as Label Studio results, named like the fields they check."""
    results = []
    for check, column in (("gender", "autotag_gender"), ("age", "autotag_age"), ("celebrity", "autotag_celebrity")):
        name = checks.get(check)
        opinion = _cell(row.get(column))
        if name not in fields or opinion is None:
            continue
        kind = "number" if check == "age" else "choices"
        value = {"number": round(float(opinion))} if kind == "number" else {"choices": [str(opinion)]}
        results.append({"from_name": name, "to_name": "image", "type": kind, "value": value})
    if not results:
        return None
    confidence = _cell(row.get("autotag_gender_confidence"))
    prediction: dict[str, Any] = {"model_version": str(_cell(row.get("autotag_source")) or "autotagger"),
                                  "result": results}
    if confidence is not None:
        prediction["score"] = round(float(confidence) / 100, 4)
    return prediction


def label_config(manifest: pd.DataFrame, fields: list[str]) -> str:
    """A Label Studio labelling interface for the exported tasks: the face, the decision about it,
    one control per label field (choices of the values seen, or a number or a text) and a note."""
    from xml.sax.saxutils import quoteattr

    lines = ['<View>', '  <Image name="image" value="$image"/>',
             '  <Text name="crawled" value="$crawled"/>',
             '  <Choices name="action" toName="image" choice="single" showInLine="true">',
             *[f'    <Choice value="{a}"/>' for a in LS_ACTIONS], '  </Choices>']
    for name in fields:
        values = sorted(manifest[name].dropna().astype(str).unique()) if name in manifest else []
        if values and _numeric(manifest[name]):
            lines.append(f'  <Number name={quoteattr(name)} toName="image"/>')
        elif 0 < len(values) <= MAX_CHOICES:
            lines += [f'  <Choices name={quoteattr(name)} toName="image" choice="single" showInLine="true">',
                      *[f'    <Choice value={quoteattr(v)}/>' for v in values], '  </Choices>']
        else:
            lines.append(f'  <TextArea name={quoteattr(name)} toName="image" maxSubmissions="1"/>')
    lines += ['  <TextArea name="note" toName="image" maxSubmissions="1"/>', '</View>']
    return "\n".join(lines) + "\n"


def export_label_studio(dataset_dir: Path, path: Path, checks: dict[str, str] | None = None,
                        image_root: str | None = None) -> int:
    """Write Label Studio tasks for every face with a crop to `path`, and their labelling interface
    beside it (`<name>.label_config.xml`); returns the number of tasks.

    Each task's `data` has the image (`image_root` + the crop's path when given, e.g. a URL
    where the dataset is served; else the original image URL), `item_id`, the page and
    the crawled labels; `predictions` hold the autotagger's opinion, `model_version` naming
    it. `checks` maps a tagger output (gender, age, celebrity) to the field it checks; by
    default it is read from the cross-check's report (else fields named gender, age, celebrity)."""
    manifest = _manifest_of(dataset_dir)
    if manifest is None:
        raise FacesetError(f"{dataset_dir} has no manifest.parquet", "build the dataset first (faceset build RECIPE)")
    if checks is None:
        report = Path(dataset_dir) / "reports" / "crosscheck.json"
        checks = (json.loads(report.read_text(encoding="utf-8")).get("checks") or {}) if report.is_file() else {}
        checks = checks or {check: check for check in ("gender", "age", "celebrity")}  # fields named like the checks
    fields = [c for c in manifest.columns if c in manifest_fields(manifest)]
    faces = manifest[manifest["face_path"].notna()] if "face_path" in manifest else manifest.iloc[:0]
    tasks = []
    for row in faces.to_dict("records"):
        crop = str(row["face_path"])
        image = f"{image_root.rstrip('/')}/{crop}" if image_root else _cell(row.get("image_url"))
        data = {"image": image, "item_id": str(row["item_id"]), "face_path": crop,
                **{c: _cell(row.get(c)) for c in ("image_url", "page_url", "status", "reason", "crosscheck_reason")},
                **{name: _cell(row.get(name)) for name in fields}, FIELDS_KEY: fields,
                "crawled": ", ".join(f"{name}: {row.get(name)}" for name in fields if _cell(row.get(name)) is not None)}
        task: dict[str, Any] = {"data": data}
        prediction = _prediction(row, checks, set(fields))
        if prediction:
            task["predictions"] = [prediction]
        tasks.append(task)
    write_json(Path(path), tasks)
    write_text(config_path(path), label_config(manifest, fields))
    return len(tasks)


def config_path(tasks_path: Path) -> Path:
    """Where `export_label_studio` writes the labelling interface: beside the tasks."""
    tasks_path = Path(tasks_path)
    return tasks_path.with_name(tasks_path.stem + ".label_config.xml")

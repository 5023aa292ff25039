"""Gold labels: the values people vouch for, against which taggers, crawled labels and flags are scored.

Two kinds, read as one table (`labels`):

- labels imported from a CSV (`faceset labels import DATASET_DIR FILE.csv`), stored in
  `<dataset>/gold.csv`, append-only, one row per (item, field) label with columns
  `item_id, field, value, labeller, labelled_at, source`; cells are written with
  tasks.core.text's spreadsheet escaping, since a labeller's file is outside data;
- decisions a reviewer made on the review app's validation sample (`sample_path`, the
  item ids the app drew, one per line): `keep` vouches for every crawled label of the
  face (or the one field it names), `relabel FIELD=VALUE` for VALUE. Faces reviewed
  outside the sample are not gold: the flags queue shows likely errors first, and
  figures on it would describe the queue, not the dataset.

Import rows are matched to manifest rows by `item_id`, `sha256`, `page_url` or image
file name, in that order; a row matching none, or several rows, is listed with why.
"""

from __future__ import annotations

from dataclasses import dataclass, field as dataclass_field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from tasks.core.locks import file_lock
from tasks.core.paths import DatasetPaths
from tasks.core.text import read_spreadsheet_csv, write_spreadsheet_csv

GOLD_CSV = "gold.csv"
LOCK = "gold.lock"  # in the dataset's state folder (.faceset/)
COLUMNS = ("item_id", "field", "value", "labeller", "labelled_at", "source")
SAMPLE_SOURCE = "review sample"  # `source` of the gold labels that come from validation-sample decisions
KEYS = ("item_id", "sha256", "page_url", "file")  # how an imported row names its face, tried in this order
META = {*KEYS, "file_name", "filename", "labeller", "labelled_at", "field", "value"}


def gold_path(paths: DatasetPaths) -> Path:
    return paths.root / GOLD_CSV


def sample_path(paths: DatasetPaths) -> Path:
    """The review app's validation sample: a CSV with an `item_id` column (and any others it keeps)."""
    return paths.state_folder("review") / "validation_sample.csv"


def inputs(paths: DatasetPaths) -> list[Path]:
    """The files gold labels come from besides decisions.csv (for a stage's cache key)."""
    return [gold_path(paths), sample_path(paths)]


def read(paths: DatasetPaths) -> pd.DataFrame:
    """gold.csv as written (every column text); empty with COLUMNS when there is none."""
    path = gold_path(paths)
    if not path.is_file():
        return pd.DataFrame({c: pd.Series(dtype="string") for c in COLUMNS})
    return read_spreadsheet_csv(path)


def append(paths: DatasetPaths, rows: pd.DataFrame) -> None:
    """Add labels to gold.csv (earlier rows are never changed; the latest label of a
    labeller for an item and field is the one that counts). Under a lock, and written
    whole through a rename: two imports never lose each other's rows, and a build reading
    meanwhile sees the file before or after, never half of it."""
    new = rows.reindex(columns=list(COLUMNS)).astype("string")
    with file_lock(paths.state / LOCK):
        write_spreadsheet_csv(gold_path(paths), pd.concat([read(paths), new], ignore_index=True))


def read_sample(paths: DatasetPaths) -> set[str]:
    path = sample_path(paths)
    if not path.is_file():
        return set()
    return set(read_spreadsheet_csv(path)["item_id"].dropna().astype(str))


def write_sample(paths: DatasetPaths, item_ids: Iterable[str], **columns: Iterable[Any]) -> Path:
    """Record a drawn validation sample (the review app calls this); replaces an earlier draw."""
    path = sample_path(paths)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"item_id": list(item_ids), **{k: list(v) for k, v in columns.items()}})
    write_spreadsheet_csv(path, frame)
    return path


# ---------------------------------------------------------------- import


@dataclass
class Imported:
    """What an import did: labels added, and the rows that could not be used, with why."""

    labels: pd.DataFrame
    unmatched: list[dict[str, Any]] = dataclass_field(default_factory=list)
    matched_by: dict[str, int] = dataclass_field(default_factory=dict)


def _clean(value: Any) -> str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    text = " ".join(str(value).split())
    return text or None


def _file_names(manifest: pd.DataFrame) -> pd.DataFrame:
    """(name, item_id) pairs: the image's name on the site, its stored file, its crop, its exported file."""
    pairs = []
    for column in ("image_url", "image_path", "face_path"):
        if column in manifest:
            names = manifest[column].astype("string").str.split("?").str[0].str.rsplit("/").str[-1]
            pairs.append(pd.DataFrame({"name": names, "item_id": manifest["item_id"]}))
    pairs.append(pd.DataFrame({"name": manifest["item_id"].astype("string") + ".jpg", "item_id": manifest["item_id"]}))
    found = pd.concat(pairs).dropna()
    return found.drop_duplicates()


def _lookup(manifest: pd.DataFrame) -> dict[str, dict[str, list[str]]]:
    tables: dict[str, pd.DataFrame] = {}
    for key in ("item_id", "sha256", "page_url"):
        if key in manifest:
            tables[key] = pd.DataFrame({"name": manifest[key].astype("string"), "item_id": manifest["item_id"]}).dropna()
    tables["file"] = _file_names(manifest)
    return {key: table.groupby("name")["item_id"].agg(lambda ids: sorted(set(map(str, ids)))).to_dict()
            for key, table in tables.items()}


def match(row: dict[str, Any], lookup: dict[str, dict[str, list[str]]]) -> tuple[str | None, str]:
    """(item_id, key it was matched by) or (None, why not)."""
    tried = []
    for key in KEYS:
        value = _clean(row.get(key))
        if value is None:
            continue
        found = lookup.get(key, {}).get(value if key != "file" else value.replace("\\", "/").rsplit("/")[-1], [])
        if len(found) == 1:
            return found[0], key
        tried.append(f"{key} {value!r} " + (f"matches {len(found)} faces" if found else "matches no face"))
    if not tried:
        return None, f"no {', '.join(KEYS[:-1])} or file name given"
    return None, "; ".join(tried)


def _normalise(table: pd.DataFrame) -> pd.DataFrame:
    renamed = {c: c.strip().lower() for c in table.columns}
    table = table.rename(columns=renamed)
    for alias in ("file_name", "filename"):
        if alias in table and "file" not in table:
            table = table.rename(columns={alias: "file"})
    return table


def import_table(table: pd.DataFrame, manifest: pd.DataFrame, fields: list[str], *, labeller: str,
                 source: str, now: str | None = None) -> Imported:
    """Gold label rows from a labeller's table, matched to the manifest.

    Wide tables hold one column per field (`item_id,gender,age`); long ones a `field`
    and a `value` column. A `labeller` column overrides `labeller`; unknown fields,
    empty values and unmatched rows are listed in `unmatched`, never dropped silently."""
    table = _normalise(table)
    now = now or datetime.now(timezone.utc).isoformat(timespec="seconds")
    long = "field" in table and "value" in table
    unknown = [] if long else [c for c in table.columns if c not in META and c not in fields]
    lookup = _lookup(manifest)
    out, unmatched, by = [], [], {}
    for number, row in enumerate(table.to_dict("records"), start=2):  # line 1 is the header
        item, how = match(row, lookup)
        if item is None:
            unmatched.append({"line": number, "reason": how, "row": {k: v for k, v in row.items() if not pd.isna(v)}})
            continue
        pairs = [(_clean(row.get("field")), _clean(row.get("value")))] if long else [(f, _clean(row.get(f))) for f in fields if f in row]
        who = _clean(row.get("labeller")) or labeller
        when = _clean(row.get("labelled_at")) or now
        shown = {k: v for k, v in row.items() if not pd.isna(v)}
        used = [(n, v) for n, v in pairs if n in fields and v is not None]
        if long and pairs[0][0] not in fields:
            unmatched.append({"line": number, "reason": f"unknown field {pairs[0][0]!r}: the recipe's fields are "
                              f"{', '.join(fields)}", "row": shown})
            continue
        if not used:
            unmatched.append({"line": number, "reason": "no label in the row (its value cells are empty)", "row": shown})
            continue
        by[how] = by.get(how, 0) + 1
        out += [{"item_id": item, "field": n, "value": v, "labeller": who, "labelled_at": when, "source": source}
                for n, v in used]
    if unknown:
        unmatched.insert(0, {"line": 1, "reason": f"columns that are not fields of the recipe, ignored: {', '.join(unknown)} "
                             f"(the recipe's fields are {', '.join(fields)})", "row": {}})
    return Imported(pd.DataFrame(out, columns=list(COLUMNS)).astype("string"), unmatched, by)


# ---------------------------------------------------------------- the gold table


def decision_table(dataset_dir: Path) -> pd.DataFrame:
    """The decisions that hold (tasks.core.decisions.latest), one row each with the decisions.csv
    columns; rows the file could not read are left out here (the build reports them)."""
    from dataclasses import astuple

    from tasks.core import decisions

    found, _ = decisions.read(dataset_dir)
    held = [astuple(d) for d in decisions.latest(found).values()]
    return pd.DataFrame(held, columns=list(decisions.COLUMNS)).astype("string")


def from_decisions(decisions: pd.DataFrame, sample: set[str], manifest: pd.DataFrame, fields: list[str]) -> pd.DataFrame:
    """Gold labels implied by the decisions that hold on validation-sample faces.

    A relabel vouches for its value; a keep for the crawled value (`<field>_crawled`
    where a relabel replaced it) of the field it names, or of every field without a
    relabel when it names none."""
    rows = decisions[decisions["item_id"].astype(str).isin(sample)] if len(decisions) else decisions
    crawled = manifest.set_index(manifest["item_id"].astype(str))
    found: dict[tuple[str, str], dict[str, Any]] = {}
    ordered = sorted(rows.to_dict("records"), key=lambda d: d.get("action") != "relabel")  # relabels first
    for d in ordered:
        item, action, name = str(d["item_id"]), d.get("action"), _clean(d.get("field"))
        base = {"item_id": item, "labeller": _clean(d.get("reviewer")) or "", "labelled_at": _clean(d.get("decided_at")) or "",
                "source": SAMPLE_SOURCE}
        if action == "relabel" and name in fields and _clean(d.get("value")) is not None:
            found[item, name] = {**base, "field": name, "value": _clean(d.get("value"))}
        elif action == "keep" and item in crawled.index:
            for f in ([name] if name in fields else fields if name is None else []):
                column = f"{f}_crawled" if f"{f}_crawled" in crawled and _clean(crawled.at[item, f"{f}_crawled"]) else f
                value = _clean(crawled.at[item, column]) if column in crawled else None
                if value is not None and (item, f) not in found:
                    found[item, f] = {**base, "field": f, "value": value}
    return pd.DataFrame(list(found.values()), columns=list(COLUMNS)).astype("string")


def labels(paths: DatasetPaths, manifest: pd.DataFrame, fields: list[str], decisions: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every gold label: gold.csv's, then the validation sample's decisions (`decision_table`);
    one row per (item, field, labeller), that labeller's latest."""
    parts = [read(paths)]
    if decisions is not None and len(decisions):
        parts.append(from_decisions(decisions, read_sample(paths), manifest, fields))
    table = pd.concat(parts, ignore_index=True)
    table = table[table["field"].isin(fields) & table["item_id"].isin(manifest["item_id"].astype(str))]
    return table.drop_duplicates(["item_id", "field", "labeller"], keep="last").reset_index(drop=True)

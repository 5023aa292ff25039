"""The build cache: what decides that a stage (or one image of a stage) need not run again.

A stage's output is fully determined by its code, its recipe section and its inputs, so
its cache key hashes exactly those: the files of the stage's package and of the `core/`
and `vision/` modules it imports (never another stage's, never the report's templates),
`recipe.section(stage)`, the content hash of the input manifest, a fingerprint of the
files that manifest points to, and of the files the stage declares it reads
(`DECLARED_INPUTS`). A stage whose input comes out the same as last time stays cached
even when an earlier stage re-ran: editing the report re-runs the report alone.

The cache is a few small files under the dataset's state folder (`.faceset/cache/`),
not Prefect's result storage: it travels with the data root (local disk or S3), every
file is written atomically, and a record is written only after the stage's output
manifest is safely on disk, so a build killed at any moment finds either a complete
stage or none.

Per-image stages (faces, crosscheck) also keep a *row cache*: output rows keyed by the
stage's code, recipe section and the content of the input row, so a re-crawl that adds
10 images processes those 10 only. The row cache grows in part files during the stage,
which is what lets a build killed in the middle of `faces` resume without redoing the
batches it had finished.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.core import gold
from tasks.core import manifest as mf
from tasks.core.atomic import read_json, read_or_absent, write_json, write_parquet
from tasks.core.paths import DatasetPaths

REPO = Path(__file__).resolve().parents[1]
# Packages whose modules count as "the stage's code" when a stage imports them.
PROJECT_PACKAGES = ("tasks", "spiders", "flows")
# Besides its Python files, a package's templates are its code too.
PACKAGE_FILES = ("*.py", "*.j2")
# Code a stage runs without importing it (Scrapy runs the spiders in a subprocess).
EXTRA_SOURCES: dict[str, tuple[str, ...]] = {"crawl": ("spiders",), "fetch": ("spiders",)}
# Manifest columns holding paths to files a later stage reads.
FILE_COLUMNS = ("image_path", "face_path")
# Files a stage reads besides its manifest: another stage's declared outputs (files, or folders read whole).
DECLARED_INPUTS: dict[str, Callable[[DatasetPaths], list[Path]]] = {
    # imported gold labels and the validation sample (decisions.csv: flows/build.py DECISION_STAGES): a new
    # label re-runs the cross-check on (its row cache spares the tagging), never crawl, fetch or faces
    "crosscheck": lambda paths: gold.inputs(paths),
    "export": lambda paths: [paths.report_json("crosscheck"), paths.report_json("split"),
                             paths.report_json("validation")],  # the card quotes them
    "finetune": lambda paths: [paths.splits],
    "report": lambda paths: [*sorted(paths.reports.glob("*.json")), paths.models],
}
ROW_KEY = "_faceset_row_key"
VOLATILE_COLUMNS = ("last_seen",)  # changes on every re-crawl without changing the image


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- code version


def module_files(name: str, whole_package: bool = True) -> list[Path]:
    """The source files of project module `name`, found without importing it.

    For a package: every .py file in it, or only its `__init__.py` when it is merely the
    base of an import (`from tasks.core import paths` depends on tasks/core/paths.py and
    tasks/core/__init__.py, not on all of tasks/core/).
    """
    if name.split(".")[0] not in PROJECT_PACKAGES:
        return []
    base = REPO.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return sorted({f for pattern in PACKAGE_FILES for f in base.rglob(pattern)}) if whole_package else [base / "__init__.py"]
    file = base.with_suffix(".py")
    return [file] if file.is_file() else []


def _imported_names(path: Path) -> set[str]:
    """Project modules a source file imports, anywhere in it (also inside functions)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return set()
    package = ".".join(path.resolve().relative_to(REPO).with_suffix("").parts[:-1]) if path.resolve().is_relative_to(REPO) else ""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1] if package else []
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from tasks import faces`
    return {n for n in names if n and n.split(".")[0] in PROJECT_PACKAGES}


def code_files(roots: list[Path], stage: str) -> set[Path]:
    """`roots` and every project source file they import, transitively (no module is imported)."""
    files: set[Path] = set()
    pending = list(roots)
    for package in EXTRA_SOURCES.get(stage, ()):
        pending.extend(module_files(package))
    while pending:
        path = pending.pop()
        if path in files or not path.is_file():
            continue
        files.add(path)
        for name in _imported_names(path):
            pending.extend(f for f in module_files(name, whole_package=False) if f not in files)
    return files


def code_version(stage: str, roots: list[Path]) -> str:
    """Hash of the source files that make up a stage: its module(s) and what they import from the project."""
    digest = hashlib.sha256()
    for path in sorted(code_files(roots, stage)):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def source_files(impl: Any) -> list[Path]:
    """The files defining a stage implementation given as an object (a module or a namespace of functions)."""
    files = []
    for obj in (impl, *(getattr(impl, n, None) for n in ("run", "process_batch", "summarize"))):
        if obj is None:
            continue
        try:
            file = inspect.getsourcefile(obj)
        except TypeError:
            continue
        if file and Path(file) not in files:
            files.append(Path(file))
    return files


# ---------------------------------------------------------------- stage keys


def files_fingerprint(frame: pd.DataFrame, paths: DatasetPaths) -> str:
    """Which referenced files exist and their sizes: a deleted or replaced file invalidates the cache.

    Sizes, not contents: downloads are content-addressed by sha256 (already in the
    manifest), and hashing every image on every run would cost more than some stages.
    """
    digest = hashlib.sha256()
    for column in FILE_COLUMNS:
        if column not in frame.columns:
            continue
        for value in sorted(frame[column].dropna().astype(str)):
            path = Path(value) if os.path.isabs(value) else paths.root / value
            try:
                size = path.stat().st_size
            except OSError:
                size = -1
            digest.update(f"{value}\0{size}\n".encode())
    return digest.hexdigest()


def declared_inputs(stage: str, paths: DatasetPaths) -> str:
    """A fingerprint of the files a stage declares it reads: a folder's files by size (images: sizes, as for
    FILE_COLUMNS), a file (small figures) by content."""
    digest = hashlib.sha256()
    for entry in DECLARED_INPUTS[stage](paths) if stage in DECLARED_INPUTS else []:
        folder = entry.is_dir()
        for path in sorted(entry.rglob("*")) if folder else [entry]:
            if not path.is_file() or path.name.endswith(".tmp"):
                continue
            state = str(path.stat().st_size) if folder else _file_sha256(path)
            digest.update(f"{path.relative_to(paths.root).as_posix()}\0{state}\n".encode())
    return digest.hexdigest()


def stage_key(stage: str, code: str, section: dict[str, Any], manifest_in: pd.DataFrame | None,
              paths: DatasetPaths, declared: str = "", extra: str = "") -> str:
    """The cache key of one stage run. `manifest_in=None` leaves the input out (crawl: its input is its own past).

    `declared` fingerprints the files the stage reads besides its manifest; `extra` is
    anything else the output depends on (the takedown list, for the stages that apply it).
    """
    parts = {
        "extra": extra,
        "stage": stage,
        "code": code,
        "section": section,
        "input": None if manifest_in is None else mf.content_hash(manifest_in),
        "files": None if manifest_in is None else files_fingerprint(manifest_in, paths),
        "declared": declared,
    }
    return _sha256(json.dumps(parts, sort_keys=True, default=str).encode())


class StageCache:
    """One JSON record per stage: the key it ran with and the hash of the manifest file it wrote."""

    def __init__(self, paths: DatasetPaths) -> None:
        self.paths = paths
        self.folder = paths.state_folder("cache")

    def _record(self, stage: str) -> Path:
        return self.folder / f"{stage}.json"

    def holds(self, stage: str, key: str) -> bool:
        """True if the stage last ran with this key and the manifest it wrote is intact
        (an absent or damaged record, or output, runs the stage again)."""
        entry = read_json(self._record(stage), f"stage {stage} runs again")
        output = self.paths.stage_manifest(stage)
        return (isinstance(entry, dict) and entry.get("key") == key and output.is_file()
                and _file_sha256(output) == entry.get("output"))

    def store(self, stage: str, key: str, output: Path) -> None:
        """Record a finished stage; call only after its output manifest is written."""
        write_json(self._record(stage), {"stage": stage, "key": key, "output": _file_sha256(output)}, indent=1)


def _file_sha256(path: Path) -> str:
    return _sha256(path.read_bytes())


# ---------------------------------------------------------------- row cache


def row_keys(rows: pd.DataFrame, salt: str) -> pd.Series:
    """One key per input row: the stage's code and section (`salt`) and the row's content.

    When the row was last seen by the crawler is left out: a weekly re-crawl touches it on
    every row, and no per-image stage looks at it.
    """
    if rows.empty:
        return pd.Series([], index=rows.index, dtype="string")
    columns = sorted(c for c in rows.columns if c != ROW_KEY and c not in VOLATILE_COLUMNS)
    hashed = pd.util.hash_pandas_object(rows[columns].astype("string"), index=False)
    prefix = _sha256((salt + "|" + ",".join(columns)).encode())[:16]
    return pd.Series([f"{prefix}-{h:016x}" for h in hashed.to_numpy()], index=rows.index, dtype="string")


class RowCache:
    """Output rows of a per-image stage, keyed by input row; written in parts as batches finish."""

    def __init__(self, paths: DatasetPaths, stage: str) -> None:
        self.folder = paths.state_folder("rows") / stage

    def _parts(self) -> list[Path]:
        return sorted(self.folder.glob("*.parquet")) if self.folder.is_dir() else []

    def load(self) -> pd.DataFrame:
        """Every cached row (the last one written wins for a key)."""
        frames = []
        for part in self._parts():
            rows = read_or_absent(part, pd.read_parquet, "its rows are processed again")
            if rows is not None:  # a damaged part is only lost work, never wrong output
                frames.append(rows)
        if not frames:
            return pd.DataFrame({ROW_KEY: pd.Series([], dtype="string")})
        rows = pd.concat(frames, ignore_index=True)
        return rows.drop_duplicates(ROW_KEY, keep="last").set_index(ROW_KEY, drop=False)

    def add(self, rows: pd.DataFrame) -> None:
        """Persist finished rows (with their ROW_KEY column) as a new part file."""
        if rows.empty:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        number = len(self._parts())
        target = self.folder / f"part-{number:06d}-{os.getpid()}.parquet"
        write_parquet(target, rows)

    def compact(self, keep: pd.DataFrame) -> None:
        """Replace all parts by one holding `keep` (the rows of the finished stage)."""
        old = self._parts()
        write_parquet(self.folder / "all.parquet", keep)
        for part in old:
            if part.name != "all.parquet":
                part.unlink(missing_ok=True)

    def clear(self) -> None:
        for part in self._parts():
            part.unlink(missing_ok=True)



def _files_present(rows: pd.DataFrame, root: Path) -> pd.Series:
    """Rows whose output files (crops) still exist: a cached row pointing at a deleted file is redone."""
    present = pd.Series(True, index=rows.index)
    for column in FILE_COLUMNS:
        if column in rows.columns:
            values = rows[column].astype("string")
            present &= values.isna() | values.map(lambda v: pd.isna(v) or (root / str(v)).exists()).astype(bool)
    return present


class CachingMapper:
    """A mapper for per-image stages that skips rows already processed and saves new ones as they finish.

    The stage calls it like any mapper (`mapper(fn, batches)`, see tasks/core/parallel.py) and
    gets every batch back with its index, but only rows whose key (stage code, recipe
    section, the function, the input row) is not in the row cache reach `fn`. Finished
    batches are saved every `flush_rows` rows or `flush_seconds`, so a killed stage resumes from there.
    """

    def __init__(self, executor: Any, cache: RowCache, salt: str, root: Path,
                 on_progress: Any = None, flush_rows: int = 512, flush_seconds: float = 10.0) -> None:
        self.executor, self.cache, self.salt, self.root = executor, cache, salt, root
        self.on_progress = on_progress or (lambda done, total: None)
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self.used: list[pd.DataFrame] = []  # rows of this run, for `compact`
        self.processed = 0  # rows that went through `fn` (the rest came from the cache)

    def __call__(self, fn: Any, items: list[Any]) -> list[Any]:
        if not items or not all(isinstance(b, pd.DataFrame) and "item_id" in b.columns for b in items):
            results = dict(self.executor.imap_unordered(fn, items))
            return [results[i] for i in range(len(items))]
        name = getattr(getattr(fn, "func", fn), "__qualname__", type(fn).__name__)
        frame = pd.concat(items)
        keys = pd.Series(row_keys(frame, f"{self.salt}|{name}").to_numpy(), index=frame["item_id"].to_numpy())
        saved = self.cache.load()
        known = saved[saved[ROW_KEY].isin(keys.to_numpy())] if len(saved) else saved
        known = known[_files_present(known, self.root)] if len(known) else known
        hit = keys.isin(known.index)
        reused = known.loc[keys[hit].to_numpy()].copy()
        reused["item_id"] = keys[hit].index.to_numpy()
        todo = frame[~frame["item_id"].isin(keys[hit].index)]
        size = max(len(b) for b in items)
        finished: list[pd.DataFrame] = [reused] if len(reused) else []
        pending: list[pd.DataFrame] = []
        flushed_at = time.monotonic()
        done, total = len(reused), len(frame)
        self.on_progress(done, total)
        try:
            for _, rows in self.executor.imap_unordered(fn, [todo.iloc[i:i + size] for i in range(0, len(todo), size)]):
                rows = rows.copy()
                rows[ROW_KEY] = rows["item_id"].map(keys).astype("string")
                pending.append(rows)
                done += len(rows)
                self.processed += len(rows)
                if sum(len(p) for p in pending) >= self.flush_rows or time.monotonic() - flushed_at >= self.flush_seconds:
                    self.cache.add(pd.concat(pending))
                    finished.extend(pending)
                    pending, flushed_at = [], time.monotonic()
                self.on_progress(done, total)
        finally:  # on failure too: what finished is kept for the next run
            if pending:
                self.cache.add(pd.concat(pending))
                finished.extend(pending)
        rows = pd.concat(finished).drop_duplicates("item_id", keep="last").set_index("item_id", drop=False)
        self.used.append(rows)
        out = []
        for batch in items:
            part = rows.loc[batch["item_id"].to_numpy()].drop(columns=[ROW_KEY])
            part.index = batch.index
            out.append(part)
        return out

    def compact(self) -> None:
        """Keep only the rows of this run in the cache (after the stage succeeded)."""
        if self.used:
            self.cache.compact(pd.concat(self.used).reset_index(drop=True))

"""The build flow: every stage of a recipe, in order, as one Prefect flow `build-<name>`.

One Prefect task per stage (task runs named `<dataset>/<stage>`). Stages are plain
functions from `tasks/` (`run(manifest, recipe, paths, **deps)`); this module adds what
Prefect is for: caching and resume (flows/caching.py), retries with backoff on the stages
that talk to the network, failures that name the stage and the item, artifacts for the UI
(flows/artifacts.py), progress bars, S3 data roots (tasks/storage.py) and scale-out of
per-image batches on Dask.

After every stage the manifest is checked (no row lost), written atomically to the
stage's own file and to `manifest.parquet`, and only then is the stage recorded as done;
a build killed at any moment and started again therefore continues from the last
finished stage, and inside a per-image stage from the last finished chunk of batches.
"""

from __future__ import annotations

import fcntl
import functools
import importlib
import inspect
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Prefect reads these when first imported. Its temporary local server (used when no
# PREFECT_API_URL is set) can take over 20 s to start on a busy machine.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

import pandas as pd  # noqa: E402
from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.tasks import exponential_backoff  # noqa: E402

from flows import artifacts, progress, runners  # noqa: E402
from flows.caching import CachingMapper, RowCache, StageCache, code_version, module_files, source_files, stage_key  # noqa: E402
from tasks import manifest as mf  # noqa: E402
from tasks.errors import FacesetError  # noqa: E402
from tasks.paths import DatasetPaths  # noqa: E402
from tasks.recipe import STAGES, Recipe, load_recipe  # noqa: E402
from tasks.storage import DataRoot, open_root  # noqa: E402

RUNNERS = ("default", "dask")
RETRIES = 3  # network stages: attempts after the first
RETRY_BACKOFF = 10.0  # seconds; waits grow 10, 20, 40 (exponential_backoff)
TAKEDOWN_STAGES = ("crawl", "fetch", "faces")
DRY_RUN_LAST = "dedupe"  # --dry-run stops here, before any paid API call
ROW_FLUSH_SECONDS = 10.0  # per-image stages save finished rows at least this often (resume granularity)


class StageFailed(FacesetError):
    """A stage failed; the message names the stage (and item) and the hint what to do.

    Pickles with its hint, so it survives the trip back from a worker process or Dask.
    """

    def __reduce__(self):
        return (type(self), (self.message, self.hint))


def _network_stage(stage: str, recipe: Recipe) -> bool:
    return stage in ("crawl", "fetch") or (stage == "crosscheck" and recipe.crosscheck.autotagger == "rekognition")


class StageRegistry(Mapping):
    """Stage name -> the object with its `run` (and `process_batch`/`summarize`).

    Stages given in `overrides` (tests, experiments) win; the others are the modules
    `tasks.<stage>`, imported only when the build reaches them.
    """

    def __init__(self, overrides: Mapping[str, Any] | None = None) -> None:
        self.overrides = dict(overrides or {})

    def __getitem__(self, stage: str) -> Any:
        if stage in self.overrides:
            return self.overrides[stage]
        if stage not in STAGES:
            raise KeyError(stage)
        try:
            return importlib.import_module(f"tasks.{stage}")
        except ModuleNotFoundError as exc:
            if exc.name != f"tasks.{stage}":
                raise
            raise FacesetError(f"the {stage} stage is not installed (no module tasks/{stage}.py)",
                               "update faceset (git pull, then scripts/setup.sh) and run the build again") from None

    def __iter__(self):
        return iter(STAGES)

    def __len__(self) -> int:
        return len(STAGES)

    def sources(self, stage: str) -> list[Path]:
        """The stage's own source files, found without importing it (a cached stage never imports torch)."""
        if stage in self.overrides:
            return source_files(self.overrides[stage])
        return module_files(f"tasks.{stage}")


@dataclass
class Plan:
    """Everything one build needs, decided before the flow starts."""

    recipe: Recipe
    root: DataRoot
    stages: StageRegistry  # stage name -> module (or object) with run / process_batch / summarize
    order: list[str]
    forced: set[str]  # stages that run even with a valid cache
    fresh_rows: set[str]  # per-image stages that ignore their row cache
    runner: str
    deps: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    inputs: dict[str, pd.DataFrame] = field(default_factory=dict)  # the manifest handed to the next stage

    @functools.cached_property
    def paths(self) -> DatasetPaths:
        return DatasetPaths.create(self.root.local)

    @functools.cached_property
    def cache(self) -> StageCache:
        return StageCache(self.paths)


# The plan reaches the flow and its stage tasks through a context variable, not a parameter or a closure:
# Prefect ships the flow to Dask workers by pickling, and the plan (stage modules, an S3
# client) should not travel, nor show up as a parameter in the UI.
_plan: ContextVar[Plan] = ContextVar("faceset_build_plan")


# ---------------------------------------------------------------- per-image batches


@dataclass(frozen=True)
class NamedFailure:
    """Wraps a stage's batch function so a failure names the item that failed.

    Module-level and a dataclass so it pickles to process pools and Dask workers.
    """

    fn: Callable[[Any], Any]
    stage: str

    def __call__(self, rows: Any) -> Any:
        try:
            return self.fn(rows)
        except FacesetError as exc:
            raise StageFailed(exc.message, exc.hint) from None
        except Exception as exc:  # noqa: BLE001 - turned into a message naming the item
            raise self._blame(rows, exc) from None

    def _blame(self, rows: Any, exc: Exception) -> StageFailed:
        """Run the batch's rows one by one to find the item that fails."""
        culprit, error = None, exc
        if isinstance(rows, pd.DataFrame) and len(rows) > 1:
            for position in range(len(rows)):
                try:
                    self.fn(rows.iloc[position:position + 1])
                except Exception as single:  # noqa: BLE001
                    culprit, error = rows.iloc[position], single
                    break
        elif isinstance(rows, pd.DataFrame) and len(rows) == 1:
            culprit = rows.iloc[0]
        where = "a batch of items"
        if culprit is not None:
            url = culprit.get("image_url")
            where = f"item {culprit.get('item_id')}" + (f" ({url})" if isinstance(url, str) and url else "")
        return StageFailed(
            f"stage '{self.stage}' failed on {where}: {type(error).__name__}: {error}",
            "if this image is broken, add it to the takedown list (faceset takedown add URL); otherwise fix the "
            "cause and run the same command again: the build resumes where it stopped",
        )


def _executor(plan: Plan, stage: str) -> runners.Executor:
    if plan.runner == "dask":
        return runners.PrefectExecutor(f"{plan.recipe.name}/{stage}")
    if _network_stage(stage, plan.recipe):
        return runners.SerialExecutor()  # one API client keeps rate limits and budgets exact
    return runners.ProcessExecutor()


def _is_per_image(impl: Any) -> bool:
    """Per-image stages declare it by exposing `process_batch` and `summarize` (pure per row)."""
    return callable(getattr(impl, "process_batch", None)) and callable(getattr(impl, "summarize", None))


def _run(stage: str, impl: Any, frame: pd.DataFrame, salt: str, plan: Plan) -> pd.DataFrame:
    """Call the stage's `run`; per-image stages get a mapper that skips rows done before."""
    run = getattr(impl, "run", impl)
    kwargs = dict(plan.deps.get(stage, {}))
    per_image = _is_per_image(impl)
    if "mapper" not in inspect.signature(run).parameters or "mapper" in kwargs or not (per_image or plan.runner == "dask"):
        return run(frame, plan.recipe, plan.paths, **kwargs)
    executor = _Blaming(_executor(plan, stage), stage)
    try:
        if not per_image:
            return run(frame, plan.recipe, plan.paths, mapper=runners.mapper_of(executor), **kwargs)
        rows = RowCache(plan.paths, stage)
        if stage in plan.fresh_rows:
            rows.clear()
        bar, artifact = progress.current(), artifacts.ProgressArtifact(plan.recipe.name, stage)

        def report(done: int, total: int) -> None:
            bar.advance(stage, done, total)
            artifact.update(done, total)

        mapper = CachingMapper(executor, rows, salt, plan.paths.root, report, flush_seconds=ROW_FLUSH_SECONDS)
        out = run(frame, plan.recipe, plan.paths, mapper=mapper, **kwargs)
        mapper.compact()
        return out
    finally:
        executor.close()


@dataclass
class _Blaming:
    """An executor whose functions name the failing item (see NamedFailure)."""

    executor: runners.Executor
    stage: str

    def imap_unordered(self, fn: Callable[[Any], Any], items: Any):
        return self.executor.imap_unordered(NamedFailure(fn, self.stage), items)

    def close(self) -> None:
        self.executor.close()


def _takedown():
    """tasks/takedown.py, or None while it is not installed."""
    try:
        return importlib.import_module("tasks.takedown")
    except ModuleNotFoundError:
        return None


def _apply_takedown(frame: pd.DataFrame, plan: Plan) -> pd.DataFrame:
    """Exclude items on the takedown list (`<data_root>/takedowns.json`) and delete their files."""
    takedown = _takedown()
    return frame if takedown is None else takedown.apply(frame, plan.paths)


def _takedown_fingerprint(plan: Plan) -> str:
    """Part of the cache key of the stages that apply the list: a new entry re-runs them."""
    takedown = _takedown()
    return "" if takedown is None else takedown.fingerprint(plan.paths.root.parent)


# ---------------------------------------------------------------- one stage


def execute_stage(stage: str, upstream_key: str) -> tuple[pd.DataFrame, str]:
    """Run one stage (or take it from the cache); returns its output manifest and cache key.

    Its parameters are two short strings on purpose: Prefect copies a task's parameters
    into every batch it submits from inside it (to Dask), so the manifest and the plan
    come from the build's context (`_plan`) instead.
    """
    from prefect.logging import get_run_logger

    plan = _plan.get()
    frame = plan.inputs[stage]  # not popped: a retried network stage reads it again

    try:
        log = get_run_logger()
    except Exception:  # noqa: BLE001 - outside a Prefect run (direct calls in tests)
        log = logging.getLogger("faceset.build")
    recipe, paths = plan.recipe, plan.paths
    code = code_version(stage, plan.stages.sources(stage))
    section = recipe.section(stage)
    extra = _takedown_fingerprint(plan) if stage in TAKEDOWN_STAGES else ""
    key = stage_key(stage, code, section, upstream_key, None if stage == "crawl" else frame, paths, extra)
    bar = progress.current()
    if stage not in plan.forced:
        cached = plan.cache.lookup(stage, key)
        if cached is not None:
            log.info("%s: unchanged since the last build, reusing its output (%d rows)", stage, len(cached))
            bar.finish(stage, "cached")
            return cached, key
    impl = plan.stages[stage]
    bar.start(stage, int(mf.kept(frame).sum()) if len(frame) else None)
    log.info("%s: running on %d rows", stage, len(frame))
    try:
        out = _run(stage, impl, frame, code + json.dumps(section, sort_keys=True), plan)
        if stage in TAKEDOWN_STAGES:
            out = _apply_takedown(out, plan)
    except StageFailed:
        raise
    except FacesetError as exc:
        raise StageFailed(f"stage '{stage}' of {recipe.name}: {exc.message}", exc.hint) from exc
    except Exception as exc:  # noqa: BLE001 - reported with the stage and what to do
        raise StageFailed(
            f"stage '{stage}' of {recipe.name} failed: {type(exc).__name__}: {exc}",
            "fix the cause above and run the same command again: finished stages are not redone",
        ) from exc
    mf.check_invariants(frame, out, stage)
    mf.write(out, paths.stage_manifest(stage), csv=False)
    out = mf.read(paths.stage_manifest(stage))  # continue from exactly what a resumed build would read
    mf.write(out, paths.manifest)
    plan.cache.store(stage, key, out)
    plan.root.push()
    counts = {str(k): int(v) for k, v in out["status"].value_counts().items()}
    artifacts.publish_stage(recipe.name, stage, paths, counts, cached=False)
    bar.finish(stage, "done")
    return out, key


def _stage_task(stage: str, plan: Plan):
    network = _network_stage(stage, plan.recipe)
    return task(
        execute_stage,
        name=stage,
        task_run_name=f"{plan.recipe.name}/{stage}",
        cache_policy=NO_CACHE,
        persist_result=False,
        retries=RETRIES if network else 0,
        retry_delay_seconds=exponential_backoff(RETRY_BACKOFF) if network else 0,
    )


def _previous_crawl(plan: Plan) -> pd.DataFrame:
    """What the crawl found last time (it crawls incrementally), or an empty manifest."""
    saved = plan.paths.stage_manifest("crawl")
    return mf.read(saved) if saved.is_file() else mf.empty(plan.recipe.field_names)


def remove_partial_files(root: Path) -> int:
    """Delete temporary files a killed build left behind (atomic writes go through `*.tmp`)."""
    removed = 0
    for leftover in root.rglob("*.tmp"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed


@contextmanager
def exclusive(paths: DatasetPaths) -> Iterator[None]:
    """One build per dataset at a time on this machine (the OS drops the lock if the build is killed)."""
    lock = paths.state / "build.lock"
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FacesetError(f"another build of {paths.root.name} is running ({lock} is locked)",
                               "wait for it to finish, or stop it; then run this command again") from None
        yield


def run_stages(plan: Plan) -> pd.DataFrame:
    """The body of the flow: the stages in order, each fed the previous one's output."""
    plan.root.pull()
    with exclusive(plan.paths):
        remove_partial_files(plan.paths.root)
        frame, key = None, ""
        for stage in plan.order:
            stage_input = _previous_crawl(plan) if stage == "crawl" else frame
            plan.inputs[stage] = stage_input
            frame, key = _stage_task(stage, plan)(stage, key)
    if "report" in plan.order:
        artifacts.publish_report_link(plan.recipe.name, artifacts.report_url(plan.paths, plan.root.url))
    return frame


# ---------------------------------------------------------------- the flow


def make_plan(recipe: Recipe, data_root: str | Path, rebuild: bool, from_stage: str | None, runner: str,
              recrawl: bool, dry_run: bool, stages: Mapping[str, Any] | None,
              deps: Mapping[str, dict[str, Any]] | None) -> Plan:
    if from_stage is not None and from_stage not in STAGES:
        raise FacesetError(f"--from {from_stage!r} is not a stage", f"use one of: {', '.join(STAGES)}")
    if runner not in RUNNERS:
        raise FacesetError(f"--runner {runner!r} is not known", f"use one of: {', '.join(RUNNERS)}")
    order = list(STAGES[: STAGES.index(DRY_RUN_LAST) + 1] if dry_run else STAGES)
    if rebuild:
        forced, fresh = set(STAGES), set(STAGES)
    elif from_stage:
        forced = fresh = set(STAGES[STAGES.index(from_stage):])
    else:
        forced, fresh = set(), set()
    if recrawl:
        forced = forced | {"crawl"}
    return Plan(recipe=recipe, root=open_root(data_root, recipe.name), stages=StageRegistry(stages), order=order,
                forced=forced, fresh_rows=fresh, runner=runner, deps=deps or {})


def build(recipe_path: str | Path, data_root: str | Path = "data", rebuild: bool = False,
          from_stage: str | None = None, runner: str = "default", dask_address: str | None = None, *,
          recrawl: bool = False, dry_run: bool = False, stages: Mapping[str, Any] | None = None,
          deps: Mapping[str, dict[str, Any]] | None = None) -> Path:
    """Build the dataset of a recipe; returns the local dataset folder (`<data_root>/<name>`).

    For an `s3://` data root the returned folder is the local mirror the build worked in;
    everything in it has been uploaded to `s3://.../<name>/`.

    `recrawl` crawls the sites again even if the crawl is cached (scheduled runs do this);
    later stages then redo only what changed. `stages` replaces stage modules (tests),
    `deps` passes keyword arguments (e.g. small models) to a stage's functions.
    """
    recipe = load_recipe(recipe_path)
    plan = make_plan(recipe, data_root, rebuild, from_stage, runner, recrawl, dry_run, stages, deps)
    named = build_flow.with_options(name=f"build-{recipe.name}", task_runner=runners.task_runner(runner, dask_address))
    token = _plan.set(plan)
    try:
        named(str(recipe_path), str(data_root), rebuild, from_stage, runner, recrawl, dry_run)
    finally:
        _plan.reset(token)
    if dry_run:
        print(estimate(plan))
    return plan.paths.root


def _build_flow(recipe_path: str, data_root: str, rebuild: bool, from_stage: str | None, runner: str,
                recrawl: bool, dry_run: bool) -> str:
    """The flow `build-<name>` (renamed per recipe by `build`); its parameters are shown in the UI."""
    plan = _plan.get()
    run_stages(plan)
    return str(plan.paths.root)


# Decorated under another name, so that pickling (to Dask) finds `_build_flow` by reference.
build_flow = flow(name="build", persist_result=False, validate_parameters=False, log_prints=True)(_build_flow)


def estimate(plan: Plan) -> str:
    """What the cross-check would cost, from the manifest after dedupe (no paid call is made)."""
    crosscheck = importlib.import_module("tasks.crosscheck")
    frame = mf.read(plan.paths.stage_manifest(DRY_RUN_LAST))
    cost = crosscheck.estimate_cost(frame, plan.recipe, plan.paths)
    lines = [f"dry run of {plan.recipe.name}: stages up to {DRY_RUN_LAST} done; the cross-check would make:"]
    lines += [f"  {key}: {value}" for key, value in cost.items()]
    return "\n".join(lines)

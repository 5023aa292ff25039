"""The build flow: every stage of a recipe, in order, as one Prefect flow `build-<name>`.

The data path is what you read here: the flow takes its parameters (shown in the Prefect
UI) and hands each stage task the path of its input manifest; the task returns the path
of the manifest it wrote, which is the next stage's input. A stage is a plain package of
`tasks/` (`run(manifest, recipe, paths, **deps)`); this module adds what Prefect is for:
caching and resume (flows/caching.py), retries with backoff on the stages that talk to
the network, failures that name the stage and the item, artifacts for the UI, progress
bars, S3 data roots (tasks/core/storage.py) and scale-out of per-image batches on Dask.

A stage's output is checked (no row lost) and written atomically to its own file and to
`manifest.parquet` before the stage is recorded as done, so a build killed at any moment
continues from the last finished stage, and inside a per-image stage from the last
finished chunk of batches.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
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

from flows import artifacts, preflight, progress, runners  # noqa: E402
from flows.caching import CachingMapper, RowCache, StageCache, code_version, declared_inputs, module_files, source_files, stage_key  # noqa: E402
from tasks.core import decisions  # noqa: E402
from tasks.core import locks  # noqa: E402
from tasks.core import manifest as mf  # noqa: E402
from tasks.core import takedown  # noqa: E402
from tasks.core.errors import FacesetError  # noqa: E402
from tasks.core.paths import DatasetPaths  # noqa: E402
from tasks.core.recipe import STAGES, Recipe, load_recipe  # noqa: E402
from tasks.core.storage import DataRoot, S3Root, open_root  # noqa: E402

RUNNERS = ("default", "dask")
RETRIES = 3  # network stages: attempts after the first
RETRY_BACKOFF = 10.0  # seconds; waits grow 10, 20, 40 (exponential_backoff)
TAKEDOWN_STAGES = ("crawl", "fetch", "faces")
DECISION_STAGES = ("crosscheck",)  # applies <dataset>/decisions.csv; the split sees it through the manifest
DRY_RUN_LAST = "dedupe"  # --dry-run stops here, before any paid API call
ROW_FLUSH_SECONDS = 10.0  # per-image stages save finished rows at least this often (resume granularity)


class StageFailed(FacesetError):
    """A stage failed; the message names the stage (and item) and the hint what to do.

    `retry` is False for what the user must fix (a FacesetError of the stage: a crawl that
    found nothing, missing weights): the network stages' retries would only delay that
    message by minutes. Pickles with its hint, so it survives the trip back from a worker
    process or Dask.
    """

    def __init__(self, message: str, hint: str = "", retry: bool = True) -> None:
        super().__init__(message, hint)
        self.retry = retry

    def __reduce__(self):
        return (type(self), (self.message, self.hint, self.retry))


def _worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry condition: not for a StageFailed the user must fix."""
    failure = state.result(raise_on_failure=False)
    return not (isinstance(failure, StageFailed) and not failure.retry)


def _network_stage(stage: str, recipe: Recipe) -> bool:
    return stage in ("crawl", "fetch") or (stage == "crosscheck" and recipe.crosscheck.autotagger == "rekognition")


def load_stages(spec: str | None) -> dict[str, Any]:
    """Stage implementations named by `spec` ("module:function" returning {stage: object}), or none.

    This is how tests and experiments swap stages: a name, so it travels to Dask workers
    and deployments as text, and no module global is patched.
    """
    if not spec:
        return {}
    module, _, function = spec.partition(":")
    try:
        return dict(getattr(importlib.import_module(module), function)())
    except (ImportError, AttributeError) as exc:
        raise FacesetError(f"stages {spec!r} could not be loaded ({exc})",
                           "give them as 'module:function', where the function returns {stage: implementation}") from None


class StageRegistry(Mapping):
    """Stage name -> the object with its `run` (and `process_batch`/`summarize`).

    Stages given in `overrides` (tests, experiments) win; the others are the packages
    `tasks.<stage>`, imported only when the build reaches them.
    """

    def __init__(self, overrides: Mapping[str, Any] | None = None) -> None:
        self.overrides = dict(overrides or {})

    def __getitem__(self, stage: str) -> Any:
        if stage in self.overrides:
            return self.overrides[stage]
        if stage not in STAGES:
            raise KeyError(stage)
        return importlib.import_module(f"tasks.{stage}")

    def __iter__(self):
        return iter(STAGES)

    def __len__(self) -> int:
        return len(STAGES)

    def sources(self, stage: str) -> list[Path]:
        """The stage's own source files, found without importing it (a cached stage never imports torch)."""
        if stage in self.overrides:
            return source_files(self.overrides[stage])
        return module_files(f"tasks.{stage}")


@dataclass(frozen=True)
class Options:
    """The flow's parameters: everything a build is decided by, as plain values."""

    recipe_path: str
    data_root: str = "data"
    rebuild: bool = False
    from_stage: str | None = None
    runner: str = "default"
    recrawl: bool = False
    dry_run: bool = False
    stages: str | None = None  # "module:function" returning {stage: implementation}
    until: str | None = None  # the last stage to run (--until)

    def check(self) -> None:
        for flag, stage in (("--from", self.from_stage), ("--until", self.until)):
            if stage is not None and stage not in STAGES:
                raise FacesetError(f"{flag} {stage!r} is not a stage", f"use one of: {', '.join(STAGES)}")
        if self.from_stage and self.until and STAGES.index(self.until) < STAGES.index(self.from_stage):
            raise FacesetError(f"--until {self.until} comes before --from {self.from_stage}",
                               f"stages run in this order: {', '.join(STAGES)}")
        if self.runner not in RUNNERS:
            raise FacesetError(f"--runner {self.runner!r} is not known", f"use one of: {', '.join(RUNNERS)}")

    @property
    def order(self) -> list[str]:
        """The stages this build runs: all, or up to --until, or (--dry-run) up to dedupe at most."""
        last = min(STAGES.index(stage) for stage in (self.until or STAGES[-1], DRY_RUN_LAST if self.dry_run else STAGES[-1]))
        return list(STAGES[: last + 1])

    @property
    def fresh(self) -> set[str]:
        """Stages that ignore their cache, stage and row cache alike."""
        if self.rebuild:
            return set(STAGES)
        return set(STAGES[STAGES.index(self.from_stage):]) if self.from_stage else set()

    @property
    def forced(self) -> set[str]:
        """Stages that run even with a valid stage cache (a scheduled build re-crawls)."""
        return self.fresh | ({"crawl"} if self.recrawl else set())


@dataclass
class Plan:
    """What one build works with, made from its Options (in the flow, and again in each stage task)."""

    options: Options
    recipe: Recipe
    root: DataRoot
    stages: StageRegistry

    @classmethod
    def of(cls, options: Options) -> "Plan":
        options.check()
        recipe = load_recipe(options.recipe_path)
        return cls(options, recipe, open_root(options.data_root, recipe.name), StageRegistry(load_stages(options.stages)))

    @functools.cached_property
    def paths(self) -> DatasetPaths:
        return DatasetPaths.create(self.root.local)

    @functools.cached_property
    def cache(self) -> StageCache:
        return StageCache(self.paths)


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
            raise StageFailed(exc.message, exc.hint, retry=False) from None
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
    if plan.options.runner == "dask":
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
    per_image = _is_per_image(impl)
    if "mapper" not in inspect.signature(run).parameters or not (per_image or plan.options.runner == "dask"):
        return run(frame, plan.recipe, plan.paths)
    executor = _Blaming(_executor(plan, stage), stage)
    try:
        if not per_image:
            return run(frame, plan.recipe, plan.paths, mapper=runners.mapper_of(executor))
        rows = RowCache(plan.paths, stage)
        if stage in plan.options.fresh:
            rows.clear()
        bar, artifact = progress.current(), artifacts.ProgressArtifact(plan.recipe.name, stage)

        def report(done: int, total: int) -> None:
            bar.advance(stage, done, total)
            artifact.update(done, total)

        mapper = CachingMapper(executor, rows, salt, plan.paths.root, report, flush_seconds=ROW_FLUSH_SECONDS)
        out = run(frame, plan.recipe, plan.paths, mapper=mapper)
        mapper.compact()
        return out
    except BaseException as exc:
        if not isinstance(exc, Exception):  # Ctrl-C or SIGTERM: stop now, not after the batches in flight
            _stop_workers()
        raise
    finally:
        executor.close()


def _stop_workers() -> None:
    """Terminate this process's worker processes: closing their pool would wait for the batches
    they are running, and the build must stop within seconds (a resumed build redoes those batches)."""
    for child in multiprocessing.active_children():
        child.terminate()


@dataclass
class _Blaming:
    """An executor whose functions name the failing item (see NamedFailure)."""

    executor: runners.Executor
    stage: str

    def imap_unordered(self, fn: Callable[[Any], Any], items: Any):
        return self.executor.imap_unordered(NamedFailure(fn, self.stage), items)

    def close(self) -> None:
        self.executor.close()


# ---------------------------------------------------------------- one stage


def _logger() -> logging.Logger | logging.LoggerAdapter:
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a Prefect run (direct calls in tests)
        return logging.getLogger("faceset.build")


def run_stage(stage: str, manifest_in: str | None, options: Options) -> str:
    """Run one stage on the manifest at `manifest_in` (or take it from the cache); returns the path it wrote.

    Its parameters are short and plain on purpose: Prefect shows them in the UI and copies
    them into every batch the stage submits (to Dask), so no manifest or model travels.
    """
    plan = Plan.of(options)
    recipe, paths, log = plan.recipe, plan.paths, _logger()
    frame = mf.read(manifest_in) if manifest_in else mf.empty(recipe.field_names)
    code = code_version(stage, plan.stages.sources(stage))
    section = recipe.section(stage)
    extra = takedown.fingerprint(paths.root.parent) if stage in TAKEDOWN_STAGES else ""
    extra += decisions.state(paths.root) if stage in DECISION_STAGES else ""
    key = stage_key(stage, code, section, None if stage == "crawl" else frame, paths, declared_inputs(stage, paths), extra)
    output = paths.stage_manifest(stage)
    bar = progress.current()
    if stage not in options.forced and plan.cache.holds(stage, key):
        log.info("%s: unchanged since the last build, reusing its output", stage)
        bar.finish(stage, "cached")
        return str(output)
    impl = plan.stages[stage]
    bar.start(stage, len(frame), int(mf.kept(frame).sum()) if len(frame) else None)
    log.info("%s: running on %d rows", stage, len(frame))
    try:
        out = _run(stage, impl, frame, code + json.dumps(section, sort_keys=True), plan)
        if stage in TAKEDOWN_STAGES:
            out = takedown.apply(out, paths)
        else:  # whatever a stage wrote into a taken-down row is blanked again
            takedown.scrub(out, takedown.taken_down(out))
    except StageFailed:
        raise
    except FacesetError as exc:
        raise StageFailed(f"stage '{stage}' of {recipe.name}: {exc.message}", exc.hint, retry=False) from exc
    except Exception as exc:  # noqa: BLE001 - reported with the stage and what to do
        raise StageFailed(
            f"stage '{stage}' of {recipe.name} failed: {type(exc).__name__}: {exc}",
            "fix the cause above and run the same command again: finished stages are not redone",
        ) from exc
    mf.check_invariants(frame, out, stage)
    mf.write(out, output, csv=False)
    mf.write(out, paths.manifest)
    plan.cache.store(stage, key, output)
    plan.root.push()
    counts = {str(k): int(v) for k, v in out["status"].value_counts().items()}
    artifacts.publish_stage(recipe.name, stage, paths, counts, cached=False)
    bar.finish(stage, "done", progress.counts(out))
    return str(output)


def _stage_task(stage: str, recipe: Recipe):
    network = _network_stage(stage, recipe)
    return task(
        run_stage,
        name=stage,
        task_run_name=f"{recipe.name}/{stage}",
        cache_policy=NO_CACHE,
        persist_result=False,
        retries=RETRIES if network else 0,
        retry_delay_seconds=exponential_backoff(RETRY_BACKOFF) if network else 0,
        retry_condition_fn=_worth_retrying,
    )


def remove_partial_files(root: Path) -> int:
    """Delete temporary files a killed build left behind (atomic writes go through `*.tmp`)."""
    removed = 0
    for leftover in root.rglob("*.tmp"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed


@contextmanager
def exclusive(plan: Plan) -> Iterator[Callable[[], None]]:
    """One build per dataset at a time, taken before anything is pulled: an OS lock on this
    machine (`takedown add` waits for it) and, for an s3:// data root, a lease in the bucket
    that builds on other machines see (tasks/core/locks.py). Yields a check that raises once
    another machine has taken the lease over."""
    with locks.build_lock(plan.paths):
        if not isinstance(plan.root, S3Root):
            yield lambda: None
            return
        with locks.Lease(plan.root.client, plan.root.bucket, locks.lease_key(plan.root.prefix), plan.recipe.name) as lease:
            yield lease.check


# ---------------------------------------------------------------- the flow


def _run_stages(plan: Plan, options: Options, still_ours: Callable[[], None]) -> None:
    """Every stage in order, each fed the manifest the one before wrote (crawl: its own last one)."""
    previous_crawl = plan.paths.stage_manifest("crawl")
    manifest = str(previous_crawl) if previous_crawl.is_file() else None
    for stage in options.order:
        still_ours()
        manifest = _stage_task(stage, plan.recipe)(stage, manifest, options)


def _build_flow(recipe_path: str, data_root: str = "data", rebuild: bool = False, from_stage: str | None = None,
                runner: str = "default", recrawl: bool = False, dry_run: bool = False, stages: str | None = None,
                until: str | None = None) -> str:
    """The flow `build-<name>` (renamed per recipe by `build`): the stages in order, each fed the last one's output.

    Returns the local dataset folder. The crawl's input is what it found last time (it
    crawls incrementally); every later stage's input is the manifest the stage before wrote.
    """
    options = Options(recipe_path, data_root, rebuild, from_stage, runner, recrawl, dry_run, stages, until)
    plan = Plan.of(options)
    with exclusive(plan) as still_ours:
        plan.root.pull()
        remove_partial_files(plan.paths.root)
        while True:
            requested = takedown.requests(plan.paths.root.parent)
            _run_stages(plan, options, still_ours)
            plan.root.pull_shared()
            if takedown.requests(plan.paths.root.parent) == requested:
                break
            # A takedown was added while the stages ran: the stages that apply the list run again (it is
            # in their cache keys) and every later stage redoes what changed, so no output keeps the person.
            _logger().warning("the takedown list changed during the build: applying it to every output")
            options = replace(options, rebuild=False, from_stage=None, recrawl=False)
    if "report" in options.order:
        artifacts.publish_report_link(plan.recipe.name, artifacts.report_url(plan.paths, plan.root.url))
    return str(plan.paths.root)


# Decorated under another name, so that pickling (to Dask) finds `_build_flow` by reference.
build_flow = flow(name="build", persist_result=False, log_prints=True)(_build_flow)


def build(recipe_path: str | Path, data_root: str | Path = "data", rebuild: bool = False,
          from_stage: str | None = None, runner: str = "default", dask_address: str | None = None, *,
          recrawl: bool = False, dry_run: bool = False, stages: str | None = None, until: str | None = None) -> Path:
    """Build the dataset of a recipe; returns the local dataset folder (`<data_root>/<name>`).

    For an `s3://` data root the returned folder is the local mirror the build worked in;
    everything in it has been uploaded to `s3://.../<name>/`.

    `recrawl` crawls the sites again even if the crawl is cached (scheduled runs do this);
    later stages then redo only what changed. `stages` ("module:function") swaps stage
    implementations (tests, experiments); `until` names the last stage to run. Before the flow
    starts, flows/preflight.py checks what the stages to run will need (weights, credentials,
    disk space) and fails in seconds when something is missing.
    """
    options = Options(str(recipe_path), str(data_root), rebuild, from_stage, runner, recrawl, dry_run, stages, until)
    options.check()
    recipe = load_recipe(recipe_path)
    preflight.check(recipe, [s for s in options.order if s not in load_stages(stages)], str(data_root))
    from flows.server_watch import watch_temporary_server

    watch_temporary_server()  # Prefect's temporary server, if any, must not outlive a killed build
    named = build_flow.with_options(name=f"build-{recipe.name}", task_runner=runners.task_runner(runner, dask_address))
    root = Path(named(**asdict(options)))
    if dry_run:
        print(estimate(recipe, DatasetPaths(root)))
    return root


def estimate(recipe: Recipe, paths: DatasetPaths) -> str:
    """What the cross-check would cost, from the manifest after dedupe (no paid call is made)."""
    from tasks.crosscheck.stage import estimate_cost

    frame = mf.read(paths.stage_manifest(DRY_RUN_LAST))
    cost = estimate_cost(frame, recipe, paths)
    lines = [f"dry run of {recipe.name}: stages up to {DRY_RUN_LAST} done; the cross-check would make:"]
    lines += [f"  {key}: {value}" for key, value in cost.items()]
    return "\n".join(lines)

"""The folders are the architecture: read every import (ast) and hold the layering rule.

`tasks/core` imports nothing else of the project; `tasks/vision` only the core; a stage
package only the core, vision and itself (crawl and fetch also `spiders/`, which Scrapy
runs); a tool package (`tasks/review/`, the review app) likewise only the core, vision
and itself; `spiders/` only the core; nothing under `tasks/` or `spiders/` imports `flows/`.
And no module takes part in an import cycle, at module level or inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROJECT = ("tasks", "spiders", "flows")
STAGES = ("crawl", "fetch", "faces", "dedupe", "crosscheck", "split", "export", "finetune", "report")
TOOLS = ("review",)  # packages under tasks/ that are not stages: the same rule, no run() contract
SHARED = ("tasks.core", "tasks.vision")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    found = {}
    for top in PROJECT:
        for path in sorted((REPO / top).rglob("*.py")):
            found[module_name(path)] = path
    return found


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """Project modules `path` imports, anywhere in the file, resolved to modules that exist."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names)
    resolved = set()
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name.split(".")[0] in PROJECT:
            resolved.add(name)
    return resolved - {module_name(path)}


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def allowed(importer: str, imported: str) -> bool:
    """The layering rule, as the module docstring states it."""
    if within(importer, "flows"):
        return True  # the orchestration may use anything
    if within(imported, "flows"):
        return False
    if imported == "tasks" or within(imported, "tasks.core"):
        return True
    if within(importer, "tasks.core"):
        return False
    if within(imported, "tasks.vision"):
        return within(importer, "tasks")
    if within(importer, "tasks.vision"):
        return False
    for tool in TOOLS:
        if within(importer, f"tasks.{tool}"):
            return within(imported, f"tasks.{tool}")
    for stage in STAGES:
        if within(importer, f"tasks.{stage}"):
            return within(imported, f"tasks.{stage}") or (within(imported, "spiders") and stage in ("crawl", "fetch"))
    return within(importer, "spiders") and within(imported, "spiders")


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, known) for name, path in known.items()}


def test_every_stage_is_a_package_exposing_its_contract():
    for stage in STAGES:
        init = REPO / "tasks" / stage / "__init__.py"
        assert init.is_file(), f"tasks/{stage}/ is not a package"
        assert "def " not in init.read_text(), f"tasks/{stage}/__init__.py holds code"


def test_no_stage_imports_another_stage_and_the_core_imports_no_stage():
    edges = graph()
    wrong = sorted(f"{a} -> {b}" for a, targets in edges.items() for b in targets if not allowed(a, b))
    assert not wrong, "imports that break the layering rule:\n" + "\n".join(wrong)


def test_the_check_would_catch_a_stage_importing_another():
    assert not allowed("tasks.fetch.stage", "tasks.crawl.stage")
    assert not allowed("tasks.core.card", "tasks.split.assign")
    assert not allowed("tasks.vision.detector", "tasks.faces.stage")
    assert not allowed("spiders.extract", "tasks.crawl.stage")
    assert not allowed("tasks.review.app", "tasks.crosscheck.review") and allowed("tasks.review.app", "tasks.review.index")
    assert allowed("tasks.crawl.stage", "spiders.launch") and allowed("tasks.split.stage", "tasks.split.assign")


def test_no_import_cycles():
    edges = graph()
    done: set[str] = set()
    cycles: list[str] = []

    def visit(node: str, trail: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt in trail:
                cycles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]))
            elif nxt not in done:
                visit(nxt, [*trail, nxt])
        done.add(node)

    for name in sorted(edges):
        if name not in done:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles)))


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_reads_another_stage_only_through_files(stage):
    """What a stage needs of another comes through the manifest or a declared file (flows/caching.py)."""
    edges = graph()
    own = [name for name in edges if name == f"tasks.{stage}" or name.startswith(f"tasks.{stage}.")]
    assert own
    for name in own:
        others = {t for t in edges[name] if t.startswith("tasks.") and t.split(".")[1] in STAGES and t.split(".")[1] != stage}
        assert not others, f"{name} imports {sorted(others)}"

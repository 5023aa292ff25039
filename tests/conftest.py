"""Shared fixtures: the real-image corpus beside the repository, and one Prefect server.

The corpus (../shared/corpus) is never copied into the repository; tests that need it
skip with a message saying where it was looked for.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("FACESET_CORPUS", REPO.parent / "shared" / "corpus"))


def corpus_dir(*parts: str) -> Path:
    """A folder of the shared corpus, or skip the test saying where it was expected."""
    path = CORPUS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real-image corpus not found at {path}; put ../shared/corpus beside the repository (or set FACESET_CORPUS)")
    return path


@pytest.fixture(scope="session")
def utkface_dir() -> Path:
    return corpus_dir("utkface")


@pytest.fixture(scope="session")
def photos_dir() -> Path:
    return corpus_dir("photos")


@pytest.fixture(scope="session")
def dedup_dir() -> Path:
    return corpus_dir("dedup")


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server for the whole session (it takes 5 to 10 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield

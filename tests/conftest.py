"""Shared fixtures: the real-image corpus beside the repository, and one Prefect server.

tests/ is put on sys.path here, so every test file imports shared helpers from
tests/builders.py and tests/fakes/ (never from another test file).

The corpus (../shared/corpus) is never copied into the repository; tests that need it
skip with a message saying where it was looked for.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

REPO = Path(__file__).resolve().parents[1]
TESTS = str(REPO / "tests")
if TESTS not in sys.path:  # shared helpers: `from builders import ...`, `from fakes.taggers import ...`
    sys.path.insert(0, TESTS)
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint():
    """A real moto S3 server process on 127.0.0.1 (not an in-process mock)."""
    port = _free_port()
    process = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail("moto_server did not start")
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def s3(moto_endpoint, monkeypatch, tmp_path):
    monkeypatch.setenv("FACESET_S3_ENDPOINT", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("FACESET_MIRROR", str(tmp_path / "mirror"))
    from tasks.core.storage import s3_client

    client = s3_client()
    bucket = f"faceset-{tmp_path.name.lower().replace('_', '-')[-40:]}"
    client.create_bucket(Bucket=bucket)
    return client, bucket


@pytest.fixture
def chromium():
    """A real headless Chromium driven by Selenium, with faceset's own flags, for pages faceset
    serves (the review app, preview.html); skips saying why when Chromium is missing."""
    import shutil
    import tempfile

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from spiders import browser
    from tasks.core.errors import FacesetError

    try:
        chromium_path, driver_path = browser.require_browser()
    except FacesetError as exc:
        pytest.skip(str(exc))
    profile = tempfile.mkdtemp(prefix="faceset-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium_path
    for flag in browser.CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)

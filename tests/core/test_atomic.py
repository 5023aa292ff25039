"""The one atomic writer, and the reader that takes a damaged state file for an absent one."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.core.atomic import atomic_write, read_json, read_or_absent, write_json, write_parquet, write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "state.json"
    write_text(target, "old")

    def half_then_crash(tmp: str) -> None:
        Path(tmp).write_text("ne")
        raise KeyboardInterrupt  # a build stopped in the middle of writing

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_crash)
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]


def test_json_keeps_numpy_numbers_as_numbers(tmp_path: Path) -> None:
    write_json(tmp_path / "r.json", {"n": np.int64(3), "x": np.float32(0.5), "nan": np.float32("nan"),
                                      "ok": np.bool_(True), "when": pd.Timestamp("2026-01-02"), "name": "Zoë"})
    text = (tmp_path / "r.json").read_text(encoding="utf-8")
    assert json.loads(text) == {"n": 3, "x": 0.5, "nan": None, "ok": True, "when": "2026-01-02 00:00:00", "name": "Zoë"}


def test_absent_is_none_quietly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert read_json(tmp_path / "missing.json", "it is made again") is None
    assert caplog.records == []


@pytest.mark.parametrize("kind", ["json", "parquet"])
def test_a_truncated_file_reads_as_absent_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                         kind: str) -> None:
    target = tmp_path / f"state.{kind}"
    if kind == "json":
        write_json(target, {"key": "a" * 200})
        read = lambda path: json.loads(path.read_text(encoding="utf-8"))  # noqa: E731
    else:
        write_parquet(target, pd.DataFrame({"item_id": [f"i{n}" for n in range(500)], "split": "train"}))
        read = pd.read_parquet
    assert read_or_absent(target, read, "made again") is not None
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING):
        assert read_or_absent(target, read, "it is made again") is None
    assert any(str(target) in r.getMessage() and "it is made again" in r.getMessage() for r in caplog.records)

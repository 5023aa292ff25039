"""The manifest: columns, round trip, atomic writes and the never-drop-a-row invariant."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from tasks.core import manifest as mf

FIELDS = ["name", "label", "gender", "age"]


def sample(n: int = 5) -> pd.DataFrame:
    rows = [{
        "item_id": mf.item_id(f"http://x.org/p{i}", f"http://x.org/i{i}.jpg"),
        "source": "x", "page_url": f"http://x.org/p{i}", "image_url": f"http://x.org/i{i}.jpg",
        "crawled_at": "2026-11-25T00:00:00Z", "name": f"Person {i}", "label": "cs", "gender": "female",
        "age": str(30 + i), "status": mf.KEPT, "face_score": 0.9 if i % 2 else None,
    } for i in range(n)]
    return mf.conform(pd.DataFrame(rows), FIELDS)


def test_item_id_is_stable_and_depends_on_page_and_image() -> None:
    a = mf.item_id("http://x.org/p", "http://x.org/i.jpg")
    assert a == mf.item_id("http://x.org/p", "http://x.org/i.jpg")
    assert a != mf.item_id("http://x.org/q", "http://x.org/i.jpg")
    assert a != mf.item_id("http://x.org/p", "http://x.org/j.jpg")
    assert len(a) == 16


def test_conform_has_design_columns_in_order() -> None:
    frame = mf.empty(FIELDS)
    columns = list(frame.columns)
    for column in ["item_id", "source", "page_url", "image_url", "crawled_at", "sha256", "status", "reason",
                   "face_path", "face_box", "face_score", "phash", "dup_group", "person_group", "autotag_gender",
                   "autotag_age", "crosscheck", "crosscheck_reason", "split", *FIELDS]:
        assert column in columns
    assert columns.index("crawled_at") + 1 == columns.index("name")
    assert columns[:4] == ["item_id", "source", "page_url", "image_url"]


def test_round_trip_keeps_values_and_dtypes(tmp_path: Path) -> None:
    frame = sample()
    frame["extra_stage_column"] = [1.5, 2.5, None, 4.0, 5.0]
    path = mf.write(frame, tmp_path / "manifest.parquet")
    back = mf.read(path)
    pd.testing.assert_frame_equal(back, frame.reset_index(drop=True))
    csv = pd.read_csv(tmp_path / "manifest.csv", dtype=str)
    assert list(csv.columns) == list(frame.columns)
    assert csv["name"].tolist() == frame["name"].tolist()


def test_failed_write_leaves_old_manifest_and_no_temp_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = mf.write(sample(3), tmp_path / "manifest.parquet")
    before = path.read_bytes()

    def broken(self: pd.DataFrame, target: str, **kwargs: object) -> None:
        Path(target).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(OSError, match="disk full"):
        mf.write(sample(5), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.csv", "manifest.parquet"]


def test_killed_writer_never_leaves_a_half_written_manifest(tmp_path: Path) -> None:
    """SIGKILL a process that rewrites a large manifest in a loop; the file stays whole."""
    path = tmp_path / "manifest.parquet"
    script = textwrap.dedent(f"""
        import pandas as pd, sys
        from tasks.core import manifest as mf
        frame = mf.conform(pd.DataFrame({{"item_id": [str(i) for i in range(200_000)], "status": "kept",
                                          "reason": "x" * 40}}))
        mf.write(frame, {str(path)!r}, csv=False)
        print("ready", flush=True)
        while True:
            mf.write(frame, {str(path)!r}, csv=False)
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for delay in (0.05, 0.2, 0.45):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        frame = mf.read(path)
        assert len(frame) == 200_000 and frame["item_id"].iloc[-1] == "199999"


def test_invariants_catch_dropped_rows() -> None:
    before = sample()
    with pytest.raises(mf.ManifestError, match="stage 'faces' dropped 1 manifest rows"):
        mf.check_invariants(before, before.iloc[1:], "faces")


def test_invariants_catch_duplicate_ids_and_bad_status() -> None:
    before = sample()
    doubled = pd.concat([before, before.iloc[:1]])
    with pytest.raises(mf.ManifestError, match="twice"):
        mf.check_invariants(before, doubled, "dedupe")
    odd = before.copy()
    odd.loc[0, "status"] = "lost"
    with pytest.raises(mf.ManifestError, match="unknown status"):
        mf.check_invariants(before, odd, "dedupe")
    blank = before.copy()
    blank.loc[0, "status"] = pd.NA
    with pytest.raises(mf.ManifestError, match="no status"):
        mf.check_invariants(before, blank, "dedupe")


def test_invariants_allow_new_rows_and_status_changes() -> None:
    before = sample(3)
    after = pd.concat([before, sample(5).iloc[3:]])
    mf.set_status(after, after["item_id"] == after["item_id"].iloc[0], mf.QUARANTINED, "no face")
    mf.check_invariants(before, after, "faces")
    assert after.loc[after["status"] == mf.QUARANTINED, "reason"].tolist() == ["no face"]


def test_content_hash_ignores_row_order_but_not_content() -> None:
    frame = sample()
    assert mf.content_hash(frame) == mf.content_hash(frame.iloc[::-1])
    changed = frame.copy()
    changed.loc[2, "label"] = "econ"
    assert mf.content_hash(changed) != mf.content_hash(frame)
    assert mf.content_hash(frame.assign(new=1)) != mf.content_hash(frame)

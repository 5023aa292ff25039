"""decisions.csv: its format read back exactly, bad rows named by number and never lost, the latest
decision winning, validation against a manifest, appends racing a reader, and the exchange with
other tools: a CSV written elsewhere and Label Studio's JSON export of the tasks faceset wrote."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from flows.cli import main as cli
from tasks.core import decisions as d
from tasks.core import manifest as mf
from tasks.core.errors import FacesetError

REPO = Path(__file__).resolve().parents[2]
T0, T1, T2 = "2026-12-01T10:00:00+00:00", "2026-12-01T11:00:00+00:00", "2026-12-01T12:00:00Z"


def dataset(folder: Path) -> Path:
    """A built dataset as far as decisions care: a manifest with two label fields and the tagger's opinion."""
    frame = mf.conform(pd.DataFrame({
        "item_id": ["a1", "b2", "c3", "d4"], "status": ["kept", "kept", "kept", "duplicate"],
        "face_path": ["faces/a1.jpg", "faces/b2.jpg", "faces/c3.jpg", None],
        "image_url": [f"http://site/{i}.jpg" for i in "abcd"], "page_url": [f"http://site/{i}" for i in "abcd"],
        "gender": ["female", "male", "male", "female"], "age": ["30", "41", "25", "50"],
        "autotag_gender": ["male", "male", "female", None], "autotag_gender_confidence": [97.0, 88.0, 91.5, None],
        "autotag_age": [33.4, 40.0, 26.0, None], "autotag_source": ["local", "local", "local", None],
    }), ["gender", "age"])
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(folder / "manifest.parquet")
    return folder


def test_cells_come_back_exactly_whatever_they_hold(tmp_path: Path) -> None:
    notes = ["=HYPERLINK(\"http://x\")", "'=already quoted", "a, b; \"c\"", "two\r\nlines", "+1", ""]
    written = [d.Decision("a1", d.DROP, "", "", "ann", T0, note) for note in notes]
    assert d.append(tmp_path, written) == len(notes)
    assert d.read(tmp_path) == (written, [])
    text = d.path_of(tmp_path).read_text(encoding="utf-8")
    assert text.splitlines()[0] == ",".join(d.COLUMNS)
    assert "'=HYPERLINK" in text  # a spreadsheet shows it as text, never runs it


def test_append_refuses_what_could_not_be_read_back(tmp_path: Path) -> None:
    for bad, why in [(d.Decision("a1", "delete", "", "", "ann", T0), "not one of"),
                     (d.Decision("a1", d.RELABEL, "gender", "", "ann", T0), "needs the field and its new value"),
                     (d.Decision("a1", d.KEEP, "", "", "", T0), "reviewer is empty"),
                     (d.Decision("a1", d.KEEP, "", "", "ann", "yesterday"), "ISO 8601"),
                     (d.Decision("a1", d.SAME_PERSON, "", "a1", "ann", T0), "same item twice")]:
        with pytest.raises(FacesetError, match=why):
            d.append(tmp_path, [bad])
    assert not d.path_of(tmp_path).exists()


def test_malformed_rows_are_named_by_row_number_and_the_file_is_left_alone(tmp_path: Path) -> None:
    d.append(tmp_path, [d.Decision("a1", d.KEEP, "", "", "ann", T0)])
    target = d.path_of(tmp_path)
    broken = target.read_text(encoding="utf-8") + (
        "b2,keep\r\n"                                   # row 3: too few cells
        "c3,zap,,,ann,2026-12-01T10:00:00,\r\n"         # row 4: unknown action
        "c3,relabel,gender,,ann,2026-12-01T10:00:00,\r\n"  # row 5: no value
        "c3,drop,,,ann,last tuesday,\r\n"               # row 6: no time
        "c3,drop,,,bob,2026-12-01T10:00:00,fine\r\n")   # row 7: good
    target.write_text(broken, encoding="utf-8", newline="")
    decisions, problems = d.read(tmp_path)
    assert [x.reviewer for x in decisions] == ["ann", "bob"]
    assert [p.split(":")[0] for p in problems] == [f"decisions.csv row {n}" for n in (3, 4, 5, 6)]
    assert "2 cells where the header has 7" in problems[0] and "'zap' is not one of" in problems[1]
    assert target.read_bytes() == broken.encode()
    d.append(tmp_path, [d.Decision("d4", d.KEEP, "", "", "cy", T1)])  # appending keeps the bad rows too
    assert len(d.read(tmp_path)[1]) == 4 and len(d.read(tmp_path)[0]) == 3


def test_a_header_without_the_columns_says_which_are_missing(tmp_path: Path) -> None:
    d.path_of(tmp_path).write_text("item,action\na1,keep\n", encoding="utf-8")
    assert d.read(tmp_path) == ([], ["decisions.csv: the header lacks item_id, field, value, reviewer, decided_at, "
                                     "note; a decisions file has the columns item_id, action, field, value, reviewer, "
                                     "decided_at, note (docs/review.md); nothing was read from it"])


def test_the_latest_decision_per_item_and_field_wins() -> None:
    rows = [d.Decision("a1", d.RELABEL, "gender", "male", "ann", T1),
            d.Decision("a1", d.KEEP, "gender", "", "bob", T0),        # earlier, although later in the file
            d.Decision("a1", d.DROP, "", "", "ann", T0),
            d.Decision("a1", d.KEEP, "", "", "bob", T0),               # same time: the later row wins
            d.Decision("a1", d.SAME_PERSON, "", "b2", "ann", T0),
            d.Decision("b2", d.DIFFERENT_PERSON, "", "a1", "bob", T2)]  # the same pair, the other way round
    held = d.latest(rows)
    assert held[("a1", "gender")].action == d.RELABEL
    assert held[("a1", "")].action == d.KEEP and held[("a1", "")].reviewer == "bob"
    assert [x.action for k, x in held.items() if k[1].startswith(d.PERSON_KEY)] == [d.DIFFERENT_PERSON]


def test_validation_names_unknown_items_fields_bad_values_and_disagreeing_reviewers(tmp_path: Path) -> None:
    manifest = pd.read_parquet(dataset(tmp_path) / "manifest.parquet")
    rows = [d.Decision("zz", d.DROP, "", "", "ann", T0),
            d.Decision("a1", d.RELABEL, "hair", "red", "ann", T0),
            d.Decision("a1", d.RELABEL, "age", "thirty", "ann", T0),
            d.Decision("b2", d.SAME_PERSON, "", "yy", "ann", T0),
            d.Decision("c3", d.RELABEL, "gender", "female", "ann", T0),
            d.Decision("c3", d.KEEP, "gender", "", "bob", T1),
            d.Decision("b2", d.RELABEL, "gender", "female", "ann", T0),
            d.Decision("b2", d.RELABEL, "gender", "female", "bob", T1)]  # agree: not listed
    problems = d.validate(rows, manifest, d.manifest_fields(manifest))
    assert problems == [
        f"drop of zz by ann at {T0}: no item zz in this dataset",
        f"relabel of a1 by ann at {T0}: 'hair' is not a label field of this dataset (fields: age, gender)",
        f"relabel of a1 by ann at {T0}: age is a number, and 'thirty' is not",
        f"same_person of b2 by ann at {T0}: no item yy in this dataset (the other face)",
        "reviewers disagree on c3 gender: ann: relabel gender=female; bob: keep; the latest (bob) holds",
    ]


WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from tasks.core import decisions as d
    for n in range(int(sys.argv[4])):
        d.append(Path(sys.argv[2]), [d.Decision(f"{sys.argv[3]}{n}", "keep", "", "", sys.argv[3], d.now(), "x" * 300)])
""")


def test_appends_from_two_processes_while_reading_lose_nothing_and_show_no_half_row(tmp_path: Path) -> None:
    each = 60
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(REPO), str(tmp_path), name, str(each)])
               for name in ("ann", "bob")]
    reads = 0
    while any(w.poll() is None for w in writers):
        decisions, problems = d.read(tmp_path)
        assert problems == []  # a reader never sees half a row
        reads += 1
    assert all(w.returncode == 0 for w in writers)
    decisions, problems = d.read(tmp_path)
    assert problems == [] and reads > 1
    assert sorted(x.item_id for x in decisions) == sorted(f"{who}{n}" for who in ("ann", "bob") for n in range(each))


def test_a_csv_from_another_tool_imports_once_with_its_bad_rows_listed(tmp_path: Path, capsys) -> None:
    folder = dataset(tmp_path / "ds")
    other = tmp_path / "from_sheet.csv"
    other.write_text("\ufeffreviewer,item_id,action,field,value,decided_at,note,extra\r\n"
                     "ann,a1,relabel,gender,male,2026-12-01T10:00:00,'=looks male,x\r\n"
                     "ann,zz,drop,,,2026-12-01T10:00:00,,x\r\n"
                     "ann,b2,explode,,,2026-12-01T10:00:00,,x\r\n", encoding="utf-8")
    assert cli(["review", str(folder), "--import", str(other)]) == 0
    out = capsys.readouterr().out
    assert "2 decisions added" in out and "0 already there" in out
    assert "from_sheet.csv row 4: action 'explode'" in out and "column 'extra' is not part of the format" in out
    assert "no item zz in this dataset" in out
    held = d.read(folder)[0]
    assert held[0] == d.Decision("a1", d.RELABEL, "gender", "male", "ann", "2026-12-01T10:00:00", "=looks male")
    again = d.import_file(folder, other)
    assert (again.added, again.already) == (0, 2) and len(d.read(folder)[0]) == 2


def annotated(tasks: list[dict], answers: dict[str, list[dict]]) -> list[dict]:
    """The tasks as Label Studio exports them once annotated: ids, and an annotation per answered task."""
    out = []
    for number, task in enumerate(tasks, start=1):
        task = {**task, "id": number, "project": 7}
        results = answers.get(task["data"]["item_id"])
        task["annotations"] = [] if results is None else [{
            "id": 100 + number, "completed_by": {"id": 3, "email": "ann@lab.org"}, "was_cancelled": results == [],
            "result": [{"id": f"r{i}", "from_name": r["from_name"], "to_name": "image", "origin": "manual",
                        "type": r["type"], "value": r["value"]} for i, r in enumerate(results)],
            "created_at": "2026-12-02T09:00:00.000000Z", "updated_at": "2026-12-02T09:05:00.123456Z",
            "lead_time": 4.2, "task": number, "ground_truth": False}]
        out.append(task)
    return out


def test_label_studio_round_trip(tmp_path: Path, capsys) -> None:
    folder = dataset(tmp_path / "ds")
    tasks_file = tmp_path / "tasks.json"
    assert cli(["review", str(folder), "--export-label-studio", str(tasks_file)]) == 0
    assert "3 Label Studio tasks written" in capsys.readouterr().out  # the duplicate without a crop is not a task
    tasks = json.loads(tasks_file.read_text())
    first = tasks[0]
    assert first["data"]["item_id"] == "a1" and first["data"]["gender"] == "female" and first["data"]["age"] == "30"
    assert first["data"]["image"] == "http://site/a.jpg" and first["data"]["face_path"] == "faces/a1.jpg"
    assert first["predictions"] == [{"model_version": "local", "score": 0.97, "result": [
        {"from_name": "gender", "to_name": "image", "type": "choices", "value": {"choices": ["male"]}},
        {"from_name": "age", "to_name": "image", "type": "number", "value": {"number": 33}}]}]
    config = d.config_path(tasks_file).read_text()
    assert '<Choices name="gender"' in config and '<Number name="age"' in config and 'value="not_face"' in config

    def choice(name: str, value: str) -> dict:
        return {"from_name": name, "type": "choices", "value": {"choices": [value]}}

    export = annotated(tasks, {
        "a1": [choice("gender", "male"), {"from_name": "age", "type": "number", "value": {"number": 34}},
               {"from_name": "note", "type": "textarea", "value": {"text": ["tagger was right"]}}],
        "b2": [choice("gender", "male"), choice("action", "drop")],
        "c3": []})  # skipped in Label Studio
    export.append({"id": 99, "data": {"image": "x.jpg"}, "annotations": []})  # a task faceset did not write
    (tmp_path / "export.json").write_text(json.dumps(export))
    result = d.import_file(folder, tmp_path / "export.json")
    when, who = "2026-12-02T09:05:00.123456Z", "label-studio:ann@lab.org"
    assert d.read(folder) == ([
        d.Decision("a1", d.RELABEL, "gender", "male", who, when, "tagger was right"),
        d.Decision("a1", d.RELABEL, "age", "34", who, when, "tagger was right"),
        d.Decision("b2", d.KEEP, "gender", "male", who, when, ""),
        d.Decision("b2", d.DROP, "", "", who, when, ""),
    ], [])
    assert result.added == 4 and result.warnings == []
    assert result.problems == ["export.json task 3 (id 3): an annotation was skipped in Label Studio; no decision "
                               "taken from it",
                               "export.json task 4 (id 99): no data.item_id; only tasks written by faceset review "
                               "--export-label-studio can be imported"]

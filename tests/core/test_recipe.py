"""The recipe loader: DESIGN.md's example loads, and every error names file, key and what is allowed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tasks.core.recipe import STAGES, RecipeError, load_recipe, parse_recipe

REPO = Path(__file__).resolve().parents[2]
DESIGN = REPO.parent / "shared" / "DESIGN.md"

BASE = {
    "name": "staff-majors",
    "contact": "data-team@example.edu",
    "sources": [{
        "name": "northfield",
        "start_urls": ["https://www.example.edu/index.html"],
        "follow": [{"links": "ul.departments a"}, {"links": "table.directory a.staff", "next_page": "a.pager-next"}],
        "item": {
            "image": "img.portrait::attr(src)",
            "fields": {
                "name": "h1.name::text",
                "label": {"css": "p.dept::text", "regex": "Department of (.+)", "map": {"Economics": "econ"}},
                "gender": {"css": "p.bio::text", "parse": "pronoun"},
                "age": {"css": "dd.born::text", "parse": "birthdate"},
            },
        },
    }],
    "target": "label",
    "attributes": ["gender", "age"],
}


def write(tmp_path: Path, data: object, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


def with_change(path: tuple, value: object) -> dict:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
    node[path[-1]] = value
    return data


def test_design_example_loads(tmp_path: Path) -> None:
    if not DESIGN.is_file():
        pytest.skip(f"../shared/DESIGN.md not found at {DESIGN}")
    text = DESIGN.read_text(encoding="utf-8").split("```yaml", 1)[1].split("```", 1)[0]
    recipe = load_recipe(write(tmp_path, text))
    assert recipe.name == "staff-majors"
    assert recipe.field_names == ["name", "label", "gender", "age"]
    assert recipe.crosscheck.fields["gender"].field == "gender"
    assert recipe.crosscheck.fields["age"].margin == 5
    assert recipe.sources[0].follow[1].next_page == "a.pager-next"
    assert recipe.sources[0].item.fields["name"].css == "h1.name::text"
    assert recipe.finetune is not None and recipe.finetune.grid["lr"] == [0.0005, 0.001, 0.005]
    assert recipe.schedule == "0 4 * * 1"


def test_defaults_fill_missing_sections(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, BASE))
    assert (recipe.split.train, recipe.split.val, recipe.split.test) == (0.7, 0.2, 0.1)
    assert recipe.crawl.obey_robots is True
    assert recipe.faces is not None and recipe.faces.face_limit == 1  # one face per image unless faces.each
    assert recipe.crosscheck.autotagger == "local"


def test_faces_none_turns_cropping_off(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, with_change(("faces",), "none")))
    assert recipe.faces is None


def test_section_covers_every_stage() -> None:
    recipe = parse_recipe(BASE, Path("r.yaml"))
    for stage in STAGES:
        assert isinstance(recipe.section(stage), dict) and recipe.section(stage)
    # a stage's section changes with the settings it reads, and only with those
    resized = parse_recipe(with_change(("faces", "size"), 160), Path("r.yaml"))
    changed = {stage for stage in STAGES if resized.section(stage) != recipe.section(stage)}
    assert {"faces", "dedupe"} <= changed and not changed & {"crawl", "fetch", "crosscheck", "split", "finetune", "report"}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ((("faces", "sizee"), 3), r"key 'faces\.sizee' is not known \(allowed here: .*min_face_px.*size"),
        ((("sources", 0, "item", "fields", "gender", "parse"), "gender"), r"sources\.0\.item\.fields\.gender\.parse.*'pronoun'.*'birthdate'.*'age'"),
        ((("faces",), {"size": "big"}), r"key 'faces\.size'.*integer.*got 'big'"),
        ((("split",), {"train": 0.8, "val": 0.3, "test": 0.1}), r"key 'split'.*add up to 1.*1\.2"),
        ((("target",), "department"), r"target 'department' is not a field.*label"),
        ((("attributes",), ["height"]), r"attribute 'height' is not a field"),
        ((("sources", 0, "start_urls"), ["ftp://x.org/"]), r"start_urls.*must begin with http"),
        ((("sources", 0, "start_urls"), []), r"exactly one of 'start_urls'.*none of them"),
        ((("sources", 0, "item", "fields", "label", "regex"), "Department of (.+"), r"not a valid regular expression"),
        ((("sources", 0, "item", "fields", "name"), {"css": "h1", "xpath": "//h1"}), r"exactly one of 'css', 'xpath' or 'value'"),
        ((("sources", 0, "follow", 0), {"next_page": "a.next"}), r"exactly one of 'links'"),
        ((("crosscheck",), {"autotagger": "aws"}), r"crosscheck\.autotagger.*'local'.*'rekognition'.*'none'"),
        ((("crosscheck",), {"fields": {"gender": "sex"}}), r"crosscheck\.fields\.gender names 'sex'"),
        ((("finetune",), {"grid": {"dropout": [0.1]}}), r"grid key 'dropout' is not one of.*weight_decay"),
        ((("finetune",), {"crop_ratio": [1.2, 0.8]}), r"crop_ratio \[1\.2, 0\.8\] must be two positive numbers, the lower first"),
        ((("finetune",), {"eval_crop": 1.5}), r"key 'finetune\.eval_crop'.*less than or equal to 1"),
        ((("finetune",), {"ensemble": [{"image_size": 224}, {}]}), r"finetune\.ensemble\.1.*needs image_size, pool or features_from"),
        ((("name",), "bad name!"), r"key 'name'.*pattern"),
        ((("crawl",), {"delay": -1}), r"key 'crawl\.delay'.*greater than or equal to 0"),
    ],
)
def test_errors_name_the_key_and_what_is_allowed(tmp_path: Path, change: tuple, expected: str) -> None:
    path = write(tmp_path, with_change(*change))
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert message.startswith(f"{path}: the recipe is not valid:")
    assert re.search(expected, message, re.S), message
    assert "Traceback" not in message and "pydantic" not in message


def test_ensemble_members_are_the_main_settings_with_their_changes(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, with_change(("finetune",), {
        "model": "tf_efficientnet_lite0", "weights": "lite0", "image_size": 160, "pool": 6, "tta": True,
        "features_from": ["blocks.2", "blocks.3"], "ensemble": [{"image_size": 224, "pool": 7}, {"features_from": "blocks.4"}]})))
    main, first, second = recipe.finetune.members()
    assert main is recipe.finetune
    assert (first.image_size, first.pool, first.features_from, first.tta) == (224, 7, ["blocks.2", "blocks.3"], True)
    assert (second.image_size, second.pool, second.features_from) == (160, 6, "blocks.4")
    assert first.ensemble == [] and second.ensemble == []


def test_missing_required_keys(tmp_path: Path) -> None:
    data = dict(BASE)
    del data["contact"], data["target"]
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, data))
    assert "key 'contact' is required but missing" in str(info.value)
    assert "key 'target' is required but missing" in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"no such recipe file.*datasets/\*\.yaml"):
        load_recipe(tmp_path / "nope.yaml")


def test_bad_yaml_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nsources: [\n  - a: b\n")
    with pytest.raises(RecipeError, match=r"not valid YAML at line \d+, column \d+"):
        load_recipe(path)


def test_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="must be a YAML mapping"):
        load_recipe(write(tmp_path, "- just\n- a list\n"))


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(RecipeError, match="not UTF-8"):
        load_recipe(path)


def test_duplicate_source_names(tmp_path: Path) -> None:
    data = with_change(("sources",), [BASE["sources"][0], BASE["sources"][0]])
    with pytest.raises(RecipeError, match="two sources share a name"):
        load_recipe(write(tmp_path, data))


def test_recipes_in_datasets_folder_load() -> None:
    recipes = sorted((REPO / "datasets").glob("*.yaml"))
    assert recipes, "no recipe in datasets/"
    names = [load_recipe(path).name for path in recipes]  # raises RecipeError, naming the file, if one is invalid
    assert len(set(names)) == len(names), f"two recipes would build into one dataset folder: {names}"


def test_committed_schema_matches_the_model() -> None:
    from tasks.core.schema import SCHEMA_PATH, schema_text

    assert SCHEMA_PATH.read_text(encoding="utf-8") == schema_text(), "run: .venv/bin/python -m tasks.core.schema"


@pytest.mark.parametrize(
    ("split", "expected"),
    [
        ({"group_by": "team"}, r"split\.group_by names 'team'"),
        ({"variants": [{"kind": "balanced", "by": ["sex"]}]}, r"split\.variants\.balanced names 'sex'"),
        ({"variants": [{"kind": "biased", "attribute": "skin"}]}, r"split\.variants\.biased names 'skin'"),
    ],
)
def test_split_names_must_be_fields(tmp_path: Path, split: dict, expected: str) -> None:
    with pytest.raises(RecipeError, match=expected):
        load_recipe(write(tmp_path, with_change(("split",), split)))

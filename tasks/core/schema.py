"""The recipe's JSON Schema, written to datasets/recipe.schema.json for editors.

Editors such as VS Code (YAML extension) use it to complete and check recipes as they
are typed; `python -m tasks.core.schema` rewrites it after the recipe model changes, and a
test fails when the committed file is stale.
"""

from __future__ import annotations

import json
from pathlib import Path

from tasks.core.atomic import write_text
from tasks.core.recipe import Recipe

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "datasets" / "recipe.schema.json"


def schema_text() -> str:
    schema = Recipe.model_json_schema()
    schema["title"] = "faceset recipe"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    write_text(SCHEMA_PATH, schema_text())
    print(f"wrote {SCHEMA_PATH}")

"""Where benchmark figures go: benchmarks/results/<area>.json (gitignored), one writer for all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(area: str, results: dict[str, Any]) -> Path:
    """Write `results` as benchmarks/results/<area>.json and say where."""
    out = RESULTS / f"{area}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(f"wrote {out}")
    return out

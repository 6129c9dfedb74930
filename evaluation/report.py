"""Small helpers shared by the benchmarks: percentiles and writing a result as JSON plus a markdown table."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def write_report(out_dir: str | os.PathLike, name: str, result: Any, table: str) -> list[Path]:
    """``name.json`` (the result) and ``name.md`` (the table) in ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.json", out / f"{name}.md"]
    paths[0].write_text(json.dumps(result, indent=2))
    paths[1].write_text(table + "\n")
    return paths

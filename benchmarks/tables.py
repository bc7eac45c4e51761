"""What the benchmark scripts share: reading JSONL data, printing aligned tables, and where
the default model is converted once for them."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def model_cache() -> Path:
    """The folder the benchmarks resolve the default model into: $TAILOR_HOME/models, or one
    kept in the temporary folder, so the fp32 conversion is made once across runs."""
    return Path(os.environ.get("TAILOR_HOME", tempfile.gettempdir() + "/tailor-bench")) / "models"


def load_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def table(title: str, header: list[str], rows: list[list]) -> None:
    cells = [[str(c) for c in header]] + [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(cells[0], widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells[1:]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))

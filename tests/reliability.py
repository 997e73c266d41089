"""Rows of the reliability page's table (``docs/reliability.md``), recorded by the tests that try to break the service.

Each such test, once its assertions have passed, calls ``record``: what it tried, how much of it, what was
lost, and the figures it measured. Rows land in ``build/reliability/<row>.json`` (``SEQTAG_RELIABILITY_DIR``
elsewhere); ``python -m benchmarks.reliability_table --page docs/reliability.md`` writes the table from them, so the
page shows what the suite did, not what someone remembers. A failed test records nothing: its row keeps
its previous run, dated, or stays missing.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rows_dir() -> Path:
    return Path(os.environ.get("SEQTAG_RELIABILITY_DIR", REPO / "build" / "reliability"))


def record(row: str, order: int, tried: str, amount: str, lost: str, measured: str = "") -> Path:
    """Write one row; ``order`` places it in the table. Returns the file written."""
    folder = rows_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{row}.json"
    path.write_text(json.dumps({"row": row, "order": order, "tried": tried, "amount": amount, "lost": lost,
                                "measured": measured, "date": time.strftime("%Y-%m-%d"),
                                "machine": f"{os.cpu_count()} cores, {platform.machine()}",
                                "ci": bool(os.environ.get("CI"))}, indent=1), encoding="utf-8")
    return path


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else float("nan")

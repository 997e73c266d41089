"""The reliability page's table (``docs/reliability.md``), written from the rows the reliability tests recorded.

    .venv/bin/python -m benchmarks.reliability_table                              # print the table
    .venv/bin/python -m benchmarks.reliability_table --page docs/reliability.md   # replace the page's table

The rows are ``build/reliability/*.json`` (see ``tests/reliability.py``), written by ``make test`` or
``make reliability``. In the page the table sits between two markers, and only that block is rewritten.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

logger = logging.getLogger("benchmarks.reliability_table")

START = "<!-- reliability-table:start (written by python -m benchmarks.reliability_table) -->"
END = "<!-- reliability-table:end -->"
COLUMNS = ("What was tried", "How much", "Lost", "Measured")


def load_rows(folder: Path) -> list[dict]:
    rows = [json.loads(path.read_text(encoding="utf-8")) for path in sorted(folder.glob("*.json"))]
    return sorted(rows, key=lambda row: (row["order"], row["row"]))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row[key]) for key in ("tried", "amount", "lost", "measured")) + " |")
    dates = sorted({row["date"] for row in rows})
    machines = sorted({row["machine"] for row in rows})
    lines.append("")
    lines.append(f"Recorded by the test suite on {', '.join(dates)} ({'; '.join(machines)}).")
    return "\n".join(lines)


def replace_block(text: str, table: str) -> str:
    if START not in text or END not in text:
        raise ValueError(f"the markers {START!r} and {END!r} are not both there")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}\n{END}{tail}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=Path, default=Path("build/reliability"), help="the recorded rows")
    parser.add_argument("--page", type=Path, help="rewrite the table in this Markdown file (docs/reliability.md) "
                                                  "instead of printing it")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = load_rows(args.rows)
    if not rows:
        logger.error("no rows under %s: run the reliability tests first (make reliability)", args.rows)
        return 1
    table = render(rows)
    if args.page is None:
        sys.stdout.write(table + "\n")
        return 0
    try:
        args.page.write_text(replace_block(args.page.read_text(encoding="utf-8"), table), encoding="utf-8")
    except ValueError as error:
        logger.error("%s: %s", args.page, error)
        return 1
    logger.info("%s: %d rows written", args.page, len(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Reading UTF-8 data files line by line, so that every error names the file and its line: plain lines, and
JSON Lines (one object a line) for the SGD and user formats of both wings.

Files are read as bytes and decoded one line at a time, so that a UTF-8 error names its exact line and so that
only ``\\n`` ends a line (``str.splitlines`` would also split on U+2028 and friends, which do occur inside
transcribed text).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from training.common.errors import DataFormatError


def lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, text without the line ending) for every line of a UTF-8 file."""
    try:
        handle = path.open("rb")
    except OSError as error:
        raise DataFormatError(str(path), None, f"cannot open: {error.strerror or error}") from error
    with handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataFormatError(str(path), number, f"not valid UTF-8: {error.reason}") from error
            if number == 1 and line.startswith("\ufeff"):
                # A byte-order mark from Windows editors is not part of the data (and json rejects it).
                line = line[1:]
            yield number, line.rstrip("\r\n")


def json_objects(path: Path, what: str = "dialogs") -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; the file must hold at least one (``what`` names them)."""
    path = Path(path)
    if path.is_dir():
        raise DataFormatError(str(path), None, "is a directory, expected a .jsonl file")
    count = 0
    for number, line in lines(path):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except (ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
            raise DataFormatError(str(path), number, f"not valid JSON: {error}") from error
        if not isinstance(value, dict):
            raise DataFormatError(str(path), number, f"expected a JSON object, found {kind_of(value)}")
        count += 1
        yield number, value
    if not count:
        raise DataFormatError(str(path), None, f"no {what} in the file")


def kind_of(value: Any) -> str:
    """A JSON type name for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string" if value else "an empty string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__

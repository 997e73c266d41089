"""Runs the shell examples of the documentation as a user would type them, and checks their shown answers.

A page's examples are its ```` ```console ```` blocks: a line starting with ``$ `` is a command (a trailing
backslash continues it on the next line), and the lines up to the next command are what it prints on stdout.
The blocks of the pages given are run in order, in one ``bash`` (so ``ID=$(...)`` in one block is ``$ID`` in the
next, and ``make serve &`` keeps serving until the session closes), each page in a fresh working directory that
holds the checkout's ``.venv``, ``Makefile``, ``pyproject.toml``, ``models`` and ``docs`` (so what a command
writes, ``my-models/``, stays out of the checkout). ``localhost:8000`` is the session's own port.

A shown answer is compared with what the command printed:

- JSON against JSON, as values: ``…`` (U+2026) stands for any value, ``{"a": 1, …}`` for an object with at least
  these keys, ``[1, 2, …]`` for a list that starts so, a string containing ``…`` for any text in its place; a
  number matches to the decimals shown (``0.53`` is 0.525 to 0.535); anything else must be equal;
- other text line by line, ``…`` within a line standing for any text, a line that is only ``…`` for any lines;
- a command shown without output must print nothing.

Blocks of other languages (``sh``: set-up commands, sketches with placeholders) are not run. Sybil's Markdown
lexer finds the blocks, so a page's fences are read as Markdown reads them.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sybil import Document
from sybil.parsers.markdown.lexers import FencedCodeBlockLexer

ELLIPSIS = "\u2026"
DOCUMENTED_PORT = "8000"


@dataclass
class Example:
    path: Path
    line: int  # 1-based line of the command in its page
    command: str  # as typed, continuation lines joined with their backslashes
    expected: str  # the shown output ("" when none is shown)

    def where(self) -> str:
        return f"{self.path}:{self.line}"


def console_examples(path: Path) -> list[Example]:
    """The commands of a page's ```console blocks, in page order, with the output shown under each."""
    text = path.read_text(encoding="utf-8")
    document = Document(text, str(path))
    examples: list[Example] = []
    for region in FencedCodeBlockLexer("console")(document):
        source = region.lexemes["source"]
        first_line = text.count("\n", 0, region.start) + 2  # the fence's line, then the block's first line
        current: Example | None = None
        continued = False
        output: list[str] = []
        for offset, line in enumerate(str(source).splitlines()):
            if continued:
                current.command += "\n" + line
                continued = line.endswith("\\")
            elif line.startswith("$ "):
                if current is not None:
                    current.expected = "\n".join(output)
                    examples.append(current)
                current, output = Example(path, first_line + offset, line[2:], ""), []
                continued = line.endswith("\\")
            elif current is not None:
                output.append(line)
        if current is not None:
            current.expected = "\n".join(output)
            examples.append(current)
    return examples


# --- comparing a shown answer with the real one -------------------------------------------------------------------

def _quote_ellipses(text: str) -> str:
    """JSON text with bare ``…`` turned into strings, and ``…`` in an object's place of a member into a member."""
    out, in_string, escaped = [], False, False
    for char in text:
        if in_string:
            out.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
            out.append(char)
        elif char == ELLIPSIS:
            out.append(f'"{ELLIPSIS}"')
        else:
            out.append(char)
    quoted = "".join(out)
    return re.sub(rf'([{{,]\s*)"{ELLIPSIS}"(\s*}})', rf'\1"{ELLIPSIS}": "{ELLIPSIS}"\2', quoted)


class ShownFloat(float):
    """A number as the page writes it: ``decimals`` says how closely it must match."""
    decimals: int


def _shown_float(source: str) -> ShownFloat:
    value = ShownFloat(source)
    mantissa = source.lower().split("e", 1)[0]
    value.decimals = len(mantissa.split(".", 1)[1]) if "." in mantissa and "e" not in source.lower() else 12
    return value


def parse_shown(text: str) -> Any:
    """The shown answer as a JSON value (``…`` as the string "…", floats as ShownFloat), or raise ValueError."""
    stripped = text.strip()
    if not stripped or stripped[0] not in "{[":
        raise ValueError("not JSON")
    return json.loads(_quote_ellipses(stripped), parse_float=_shown_float)


def compare_json(expected: Any, actual: Any, where: str = "$") -> str | None:
    """None when ``actual`` is what ``expected`` shows, else where and how they differ."""
    if expected == ELLIPSIS:
        return None
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{where}: expected an object, got {json.dumps(actual)[:80]}"
        keys = [key for key in expected if key != ELLIPSIS]
        missing = [key for key in keys if key not in actual]
        if missing:
            return f"{where}: missing keys {missing}"
        extra = sorted(set(actual) - set(keys))
        if extra and ELLIPSIS not in expected:
            return f"{where}: keys not shown {extra} (end the object with … to leave them out)"
        for key in keys:
            problem = compare_json(expected[key], actual[key], f"{where}.{key}")
            if problem:
                return problem
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return f"{where}: expected a list, got {json.dumps(actual)[:80]}"
        open_ended = bool(expected) and expected[-1] == ELLIPSIS
        shown = expected[:-1] if open_ended else expected
        if len(actual) < len(shown) or (not open_ended and len(actual) != len(shown)):
            return f"{where}: {len(actual)} items, {len(shown)}{' or more' if open_ended else ''} shown"
        for index, item in enumerate(shown):
            problem = compare_json(item, actual[index], f"{where}[{index}]")
            if problem:
                return problem
        return None
    if isinstance(expected, str):
        if not isinstance(actual, str):
            return f"{where}: expected {expected!r}, got {json.dumps(actual)}"
        if ELLIPSIS in expected:
            pattern = ".*".join(re.escape(part) for part in expected.split(ELLIPSIS))
            return None if re.fullmatch(pattern, actual, re.S) else f"{where}: {actual!r} is not {expected!r}"
        return None if expected == actual else f"{where}: expected {expected!r}, got {actual!r}"
    if isinstance(expected, bool) or expected is None:
        return None if expected is actual else f"{where}: expected {expected!r}, got {json.dumps(actual)}"
    if isinstance(actual, bool) or not isinstance(actual, (int, float)):
        return f"{where}: expected {expected!r}, got {json.dumps(actual)}"
    if isinstance(expected, ShownFloat):
        tolerance = 0.5 * 10.0 ** -expected.decimals + 1e-12
        return None if abs(float(expected) - actual) <= tolerance else \
            f"{where}: expected {float(expected)} (to the {expected.decimals} decimals shown), got {actual}"
    return None if expected == actual and isinstance(actual, int) else f"{where}: expected {expected}, got {actual}"


def compare_text(expected: str, actual: str) -> str | None:
    """Line by line; ``…`` in a line is any text, a line that is only ``…`` any lines."""
    pattern = ""
    for line in expected.rstrip().splitlines():
        if line.strip() == ELLIPSIS:
            pattern += r"(?:[^\n]*\n)*?"
        else:
            pattern += "[^\n]*".join(re.escape(part) for part in line.rstrip().split(ELLIPSIS)) + "\n"
    printed = "".join(line.rstrip() + "\n" for line in actual.rstrip().splitlines())
    if re.fullmatch(pattern, printed):
        return None
    return f"printed:\n{actual.rstrip()}\nshown:\n{expected.rstrip()}"


def check_output(expected: str, actual: str) -> str | None:
    """None when the command printed what the page shows, else a message."""
    if not expected.strip():
        return None if not actual.strip() else f"the page shows no output, the command printed:\n{actual.rstrip()}"
    try:
        shown = parse_shown(expected)
    except ValueError:
        return compare_text(expected, actual)
    try:
        printed = json.loads(actual)
    except ValueError:
        return f"the page shows JSON, the command printed:\n{actual.rstrip()}"
    problem = compare_json(shown, printed)
    return None if problem is None else f"{problem}\nprinted: {actual.strip()[:2000]}"


# --- running the commands -----------------------------------------------------------------------------------------

class ShellSession:
    """One ``bash`` fed commands on stdin, as a terminal would; stderr goes to a log file, stdout is read back.

    A command ending in ``&`` runs in the background with its output sent to the log (in a terminal it would
    print among the prompts). Closing the session ends its process group: the servers it started too.
    """

    def __init__(self, cwd: Path, env: dict[str, str], log: Path):
        self.log_path = log
        self._log = open(log, "ab")
        self.proc = subprocess.Popen(["bash", "--noprofile", "--norc"], cwd=cwd, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, start_new_session=True)
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in iter(self.proc.stdout.readline, b""):
            self._lines.put(line)
        self._lines.put(None)

    def run(self, command: str, timeout: float) -> tuple[int, str]:
        """(exit status, stdout without its final newlines) of one command; TimeoutError past ``timeout`` s."""
        marker = f"__doc_example_{uuid.uuid4().hex}__"
        if re.search(r"(?<!&)&\s*(#.*)?$", command):  # "cmd &": its output goes to the log, not between prompts
            command = re.sub(r"&\s*(#.*)?$", "", command).rstrip() + f" >> {self.log_path} 2>&1 &"
        self.proc.stdin.write(f"{command}\nprintf '\\n{marker} %s\\n' \"$?\"\n".encode())
        self.proc.stdin.flush()
        out: list[bytes] = []
        end = time.monotonic() + timeout
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no end after {timeout:.0f} s; printed so far: {b''.join(out)[-2000:]!r}")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"the shell exited; printed: {b''.join(out)[-2000:]!r}")
            text = line.decode("utf-8", "replace")
            if text.startswith(marker):
                # Without its final newlines (and the one printf put before the marker), as a terminal shows it.
                printed = b"".join(out).decode("utf-8", "replace").rstrip("\n")
                return int(text.split()[1]), printed
            out.append(line)

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()


def working_directory(checkout: Path, folder: Path) -> Path:
    """``folder`` made to look like the checkout to the documented commands, with links to what they read."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in (".venv", "Makefile", "pyproject.toml", "models", "docs"):
        link = folder / name
        if not link.exists():
            link.symlink_to(checkout / name)
    return folder


def at_port(command: str, port: int) -> str:
    """The command with the documented port replaced by the session's."""
    return re.sub(rf"\blocalhost:{DOCUMENTED_PORT}\b", f"localhost:{port}", command)

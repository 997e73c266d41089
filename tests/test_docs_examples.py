"""The README's and the getting-started page's commands, run as a user would type them, against a real server.

``docs/getting-started.md`` starts the server itself (``make serve &``, the README's set-up command, on a free
port) and its examples run against it; then the README's examples are checked against that same server, each
page in a fresh working directory (a README step that getting started already ran word for word is checked
against that run's output). Every command must exit 0 and print what the page shows (``tests/doc_examples.py``
says how an answer is compared). The parsing and comparing rules are tested here too, so a checker that
passes everything cannot hide behind the real run.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from doc_examples import (ShellSession, at_port, check_output, console_examples, parse_shown,
                          working_directory)

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "docs" / "getting-started.md", REPO / "README.md"]  # in this order: the first starts the server
DATA = REPO.parent / "shared" / "data"

# Seconds a command may take: the first `make serve` may install, a training run loads TensorFlow and exports.
SLOW_COMMANDS = {"seqtag train": 300, "seqtag evaluate": 300, "readyz": 300, "make ": 600}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def timeout_for(command: str) -> float:
    return max([limit for key, limit in SLOW_COMMANDS.items() if key in command], default=60)


# --- the rules, on inline samples ---------------------------------------------------------------------------------

def test_console_blocks_are_split_into_commands_and_their_output(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("Text.\n\n```console\n$ echo one \\\n    two\none two\n$ true\n```\n\n"
                    "```sh\nnot run\n```\n\n- a list item:\n\n    ```console\n    $ echo three\n    three\n    ```\n",
                    encoding="utf-8")
    examples = console_examples(page)
    assert [(e.line, e.command, e.expected) for e in examples] == [
        (4, "echo one \\\n    two", "one two"), (7, "true", ""), (17, "echo three", "three")]


@pytest.mark.parametrize("shown, printed", [
    ('{"a": 1, "b": [0.53, …], …}', '{"a": 1, "b": [0.530701, 2, 3], "c": 4}'),
    ('{"id": "…", "n": 0}', '{"id": "QNZTFP0czDpxDhEII6szbUnJasck0BFB", "n": 0}'),
    ('{"scores": {"qy": 0.99, …}}', '{"scores": {"qy": 0.987078, "sd": 0.000454}}'),
    ('{"path": "my-models/…/1"}', '{"path": "my-models/pos/1"}'),
    ("my-models/pos/1", "my-models/pos/1\n"),
    ("first\n…\nlast …", "first\nsecond\nthird\nlast line"),
    ("", ""),
])
def test_shown_answers_that_match(shown, printed):
    assert check_output(shown, printed) is None


@pytest.mark.parametrize("shown, printed, reason", [
    ('{"a": 1}', '{"a": 1, "b": 2}', "keys not shown ['b']"),
    ('{"a": 1, "b": 2}', '{"a": 1}', "missing keys ['b']"),
    ('{"a": [1, 2]}', '{"a": [1, 2, 3]}', "3 items, 2 shown"),
    ('{"a": 0.53}', '{"a": 0.5401}', "to the 2 decimals shown"),
    ('{"a": 1.0}', '{"a": 0.94}', "to the 1 decimals shown"),
    ('{"a": "VERB"}', '{"a": "NOUN"}', "expected 'VERB'"),
    ('{"a": 4}', '{"a": 4.5}', "expected 4"),
    ('{"a": null}', '{"a": 0}', "expected None"),
    ('{"a": 1}', "not JSON at all", "the page shows JSON"),
    ("my-models/pos/1", "my-models/pos/2", "printed:"),
    ("", "something", "shows no output"),
])
def test_shown_answers_that_do_not_match(shown, printed, reason):
    problem = check_output(shown, printed)
    assert problem is not None and reason in problem


def test_an_ellipsis_inside_a_string_is_text_not_a_wildcard_for_json():
    assert parse_shown('{"text": "wait…", "rest": …}') == {"text": "wait…", "rest": "…"}


def test_the_shell_keeps_variables_and_reports_failures(tmp_path):
    shell = ShellSession(tmp_path, dict(os.environ), tmp_path / "log")
    try:
        assert shell.run("X=$(echo 42)", 10) == (0, "")
        assert shell.run("echo $X", 10) == (0, "42")
        assert shell.run("printf 'no newline'", 10) == (0, "no newline")
        assert shell.run("false", 10)[0] == 1
        assert shell.run("sleep 30 &", 10) == (0, "")  # in the background, output to the log
        with pytest.raises(TimeoutError):
            shell.run("sleep 5", 0.5)
    finally:
        shell.close()


# --- the pages, for real ------------------------------------------------------------------------------------------

def test_the_pages_have_examples_that_start_and_use_a_server():
    first = console_examples(PAGES[0])
    assert first[0].command == "make serve &"  # the README's set-up command, as the page's first step
    assert any("readyz" in example.command for example in first[:2])
    for page in PAGES:
        commands = " ".join(example.command for example in console_examples(page))
        assert "localhost:8000/v1/models/pos:tag" in commands, page
        assert "localhost:8000/v1/dialogs" in commands, page
        assert "seqtag train" in commands, page


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed (.ci/ensure-tools installs it)")
def test_the_readme_and_getting_started_examples_run_and_answer_as_shown(tmp_path, shipped_pos_fast_path):
    """Getting started runs first, whole, and starts the server. The README repeats some of its steps word for
    word (the same request, the same training command) in the same order: each of those is checked against what
    that very command printed in getting started's run, instead of a second training and a second session. The
    README's other commands run after it, in a working directory of their own, against the same server."""
    if not DATA.is_dir():
        pytest.skip(f"{DATA} not found (the evaluate example reads UD English EWT dev)")
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SEQTAG_", "PYTEST_"))}
    env["PORT"] = str(port)
    env["SEQTAG_CACHE_DIR"] = os.environ["SEQTAG_CACHE_DIR"]  # the run's checked fast paths, not ~/.cache
    log = tmp_path / "shell.log"
    shell = ShellSession(tmp_path, env, log)
    failures: list[str] = []
    (tmp_path / "shared").symlink_to(DATA.parent)  # ../shared/data from each page's working directory
    ran: list[tuple[str, int, str]] = []  # getting started's (command, status, printed), in order

    def run(example) -> tuple[int, str] | None:
        try:
            return shell.run(at_port(example.command, port), timeout_for(example.command))
        except TimeoutError as error:
            failures.append(f"{example.where()}: {example.command}\n  {error}")
            return None

    def check(example, status: int, printed: str) -> None:
        if status != 0:
            failures.append(f"{example.where()}: {example.command}\n  exit status {status}; printed:\n{printed}")
            return
        problem = check_output(example.expected, printed)
        if problem:
            failures.append(f"{example.where()}: {example.command}\n  {problem}")

    try:
        assert shell.run(f"cd {working_directory(REPO, tmp_path / 'getting-started')}", 10)[0] == 0
        for example in console_examples(PAGES[0]):
            result = run(example)
            if result is None:
                break
            ran.append((example.command, *result))
            check(example, *result)
        assert shell.run(f"cd {working_directory(REPO, tmp_path / 'readme')}", 10)[0] == 0
        position, repeated = 0, 0
        for example in console_examples(PAGES[1]):
            match = next((i for i in range(position, len(ran)) if ran[i][0] == example.command), None)
            if match is not None:  # the same command, at its place in getting started's sequence
                position, repeated = match + 1, repeated + 1
                check(example, ran[match][1], ran[match][2])
                continue
            result = run(example)
            if result is None:
                break
            check(example, *result)
        assert repeated >= 3, "the README's examples are meant to be getting started's first steps"
    finally:
        shell.close()
    if failures:
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        pytest.fail("\n\n".join(failures) + f"\n\nthe shell's stderr (last lines):\n{tail}")

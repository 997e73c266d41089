"""The reliability page's table is written from the rows the tests record, between its markers only."""

from __future__ import annotations

import shutil

from benchmarks.reliability_table import END, START, main
from reliability import REPO, record


def test_rows_become_the_pages_table(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQTAG_RELIABILITY_DIR", str(tmp_path / "rows"))
    record("b-row", 2, "Second | with a pipe", "2 things", "nothing", "fast")
    record("a-row", 1, "First", "1 thing", "nothing")
    readme = tmp_path / "reliability.md"
    shutil.copy(REPO / "docs" / "reliability.md", readme)
    before = readme.read_text()
    assert main(["--rows", str(tmp_path / "rows"), "--page", str(readme)]) == 0
    after = readme.read_text()
    table = after.split(START)[1].split(END)[0]
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert lines[1:] == ["| First | 1 thing | nothing |  |", "| Second \\| with a pipe | 2 things | nothing | fast |"]
    # Only the block between the markers changed.
    assert after.split(START)[0] == before.split(START)[0] and after.split(END)[1] == before.split(END)[1]
    assert main(["--rows", str(tmp_path / "rows"), "--page", str(readme)]) == 0 and readme.read_text() == after


def test_no_rows_or_no_markers_is_an_error(tmp_path, monkeypatch):
    assert main(["--rows", str(tmp_path / "empty")]) == 1
    monkeypatch.setenv("SEQTAG_RELIABILITY_DIR", str(tmp_path / "rows"))
    record("row", 1, "x", "y", "z")
    plain = tmp_path / "plain.md"
    plain.write_text("# no markers here\n")
    assert main(["--rows", str(tmp_path / "rows"), "--page", str(plain)]) == 1
    assert plain.read_text() == "# no markers here\n"

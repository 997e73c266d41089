"""What ``seqtag tag`` reads: input arguments -> sources -> shards.

Arguments are files, globs (``corpus/**/*.txt``), directories (every file below them that is not hidden, sorted;
for CoNLL-U and JSONL only ``*.conllu`` / ``*.jsonl``, ``.gz`` or not) or ``-`` for stdin (spooled to a temporary
file first, so it is read like any file). A ``.gz`` file (by its name or its magic bytes) is read decompressed.

Each source is read twice, both times streaming: ``plan_shards`` checks every line (UTF-8, no NUL byte, the
format's own rules) and records where shards start and end, so that a bad file is refused, with its name and line,
before any of its shards is tagged; ``read_shards`` then reads those byte ranges in order. Shards end at a
boundary of the format, once they hold ``SHARD_CHARS`` characters: after a blank line in text (a paragraph
ends), after a blank line in CoNLL-U (a sentence ends), after any line in JSONL (one document a line). A shard
carries what its output needs from before it (the paragraph count and the character offset in its document), so
its output depends on nothing else: one process, a pool or a Ray cluster write the same bytes.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from training.common.errors import ConfigError, DataFormatError

INPUT_FORMATS = ("text", "conllu", "jsonl")
SUFFIXES = {"conllu": (".conllu", ".conll"), "jsonl": (".jsonl", ".json")}
SHARD_CHARS = 1 << 15  # a shard's size: some 6k words, enough to fill the tagger's batches
GZIP_MAGIC = b"\x1f\x8b"
_CONLLU_ID = re.compile(r"^(?:[1-9]\d*|[1-9]\d*-[1-9]\d*|\d+\.[1-9]\d*)$")


@dataclass(frozen=True)
class Source:
    """One input: ``path`` is read; ``name`` is what errors and ``# newdoc id`` call it (``stdin`` for ``-``)."""

    path: Path
    name: str
    compressed: bool
    relative: str = ""  # its output's name under -o DIR: the path below a directory argument, else the file's name


@dataclass(frozen=True)
class Shard:
    """A piece of one source, at a boundary of its format. ``text`` is its content once read (``read_shards``);
    without it, a worker reads ``[byte_start, byte_end)`` of the decompressed ``path`` itself (``read_range``)."""

    index: int  # order among all shards of the run
    source: str  # Source.name
    path: str
    compressed: bool
    input_format: str
    byte_start: int
    byte_end: int
    first_line: int  # 1-based line of the source where the shard starts
    paragraphs_before: int  # text: paragraphs of the document before the shard
    char_start: int  # text: characters of the document before the shard
    text: str | None = None

    @property
    def starts_document(self) -> bool:
        return self.byte_start == 0


def _is_gzip(path: Path) -> bool:
    if path.name.endswith(".gz"):
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(2) == GZIP_MAGIC
    except OSError:
        return False


def _source(path: Path, name: str, relative: str | None = None) -> Source:
    return Source(path.resolve(), name, _is_gzip(path), relative or path.name)


def spool_stdin(folder: Path) -> Source:
    """stdin copied to a file in ``folder`` (read twice, like any file, and by worker processes)."""
    target = folder / "stdin"
    with open(target, "wb") as out:
        shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
    return _source(target, "stdin", "stdin")


def _wanted(path: Path, input_format: str) -> bool:
    if any(part.startswith(".") for part in path.parts):
        return False
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return input_format not in SUFFIXES or name.endswith(SUFFIXES[input_format])


def expand_inputs(arguments: list[str], input_format: str, spool_folder: Path) -> list[Source]:
    """Every source the arguments name, in order (a directory's files and a glob's matches sorted); ``-`` (or no
    argument) is stdin. ConfigError for an argument that names nothing."""
    sources: list[Source] = []
    for argument in arguments or ["-"]:
        if argument == "-":
            sources.append(spool_stdin(spool_folder))
            continue
        path = Path(argument)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _wanted(p.relative_to(path), input_format))
            if not found:
                raise ConfigError(f"{argument}: a directory with no {input_format} files")
            sources += [_source(p, str(p), p.relative_to(path).as_posix()) for p in found]
        elif path.is_file():
            sources.append(_source(path, argument))
        else:
            matches = sorted(m for m in glob.glob(argument, recursive=True) if os.path.isfile(m))
            if not matches:
                raise ConfigError(f"{argument}: no such file, directory or matching file")
            sources += [_source(Path(m), m) for m in matches]
    return sources


def open_binary(source_path: str | Path, compressed: bool) -> BinaryIO:
    return gzip.open(source_path, "rb") if compressed else open(source_path, "rb")


def _decode(line: bytes, source: Source, number: int) -> str:
    if b"\0" in line:
        raise DataFormatError(source.name, number, "a NUL byte: a binary file, not text")
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataFormatError(source.name, number, f"invalid UTF-8 (byte 0x{line[error.start]:02x} at column "
                                                   f"{len(line[:error.start].decode('utf-8', 'replace')) + 1})") from None


class _ConlluChecker:
    """CoNLL-U's backbone, line by line: comments, ten tab-separated columns, IDs counting up from 1 in each sentence
    (multiword ranges and empty nodes allowed), a non-empty FORM."""

    def __init__(self):
        self.expected = 1

    def check(self, line: str) -> str | None:
        line = line.rstrip("\r\n")
        if not line.strip():
            self.expected = 1
            return None
        if line.startswith("#"):
            return None
        columns = line.split("\t")
        if len(columns) != 10:
            return f"malformed CoNLL-U line: {len(columns)} tab-separated columns, expected 10"
        identifier = columns[0]
        if not _CONLLU_ID.match(identifier):
            return f"malformed CoNLL-U line: ID {identifier!r} is not a word number, a range or an empty node"
        if not columns[1]:
            return "malformed CoNLL-U line: empty FORM"
        if identifier.isdigit():
            if int(identifier) != self.expected:
                return f"malformed CoNLL-U line: word {identifier} where word {self.expected} was expected"
            self.expected += 1
        return None


def _check_jsonl(line: str) -> str | None:
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        return f"not JSON: {error.msg} (column {error.colno})"
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        return 'each line must be a JSON object with a "text" string'
    if "id" in record and not isinstance(record["id"], (str, int)):
        return '"id" must be a string or an integer'
    return None


def plan_shards(source: Source, input_format: str, first_index: int = 0) -> list[Shard]:
    """Check every line of ``source`` and cut it into shards (without their text). DataFormatError names the file
    and the first bad line; the file is read to its end first, so nothing of a bad file is tagged."""
    shards: list[Shard] = []
    conllu = _ConlluChecker() if input_format == "conllu" else None
    start_byte = start_line = 0
    position = chars = shard_chars = paragraphs = start_paragraphs = start_chars = 0
    previous_blank = True
    number = 0
    with open_binary(source.path, source.compressed) as handle:
        try:
            head = handle.read(8192)
            if b"\0" in head:  # what file(1) and git call binary: a NUL byte near the start
                line = head[:head.index(b"\0")].count(b"\n") + 1
                raise DataFormatError(source.name, line, "a NUL byte: a binary file, not text")
            handle.seek(0)
            for number, raw in enumerate(handle, 1):
                line = _decode(raw, source, number)
                if conllu is not None:
                    problem = conllu.check(line)
                elif input_format == "jsonl":
                    problem = _check_jsonl(line)
                else:
                    problem = None
                if problem:
                    raise DataFormatError(source.name, number, problem)
                blank = not line.strip()
                if input_format == "text" and previous_blank and not blank:
                    paragraphs += 1
                previous_blank = blank
                position += len(raw)
                chars += len(line)
                shard_chars += len(line)
                boundary = blank if input_format != "jsonl" else True
                if boundary and shard_chars >= SHARD_CHARS:
                    shards.append(Shard(first_index + len(shards), source.name, str(source.path), source.compressed,
                                        input_format, start_byte, position, start_line + 1, start_paragraphs, start_chars))
                    start_byte, start_line, start_paragraphs, start_chars, shard_chars = position, number, paragraphs, chars, 0
        except (OSError, EOFError, gzip.BadGzipFile) as error:  # a truncated or corrupt .gz
            raise DataFormatError(source.name, number + 1, f"cannot read: {error}") from None
    if position > start_byte:
        shards.append(Shard(first_index + len(shards), source.name, str(source.path), source.compressed, input_format,
                            start_byte, position, start_line + 1, start_paragraphs, start_chars))
    return shards


def read_shards(shards: list[Shard]) -> Iterator[Shard]:
    """The shards of one source with their text, read in order from one handle (a .gz file is decompressed once)."""
    if not shards:
        return
    first = shards[0]
    with open_binary(first.path, first.compressed) as handle:
        for shard in shards:
            data = handle.read(shard.byte_end - shard.byte_start)
            yield dataclasses.replace(shard, text=data.decode("utf-8"))


def read_range(shard: Shard) -> str:
    """One shard's text, read by whoever tags it (a Ray worker): a seek in a plain file, a decompression from the
    start of a .gz one."""
    with open_binary(shard.path, shard.compressed) as handle:
        handle.seek(shard.byte_start)
        return handle.read(shard.byte_end - shard.byte_start).decode("utf-8")


def iter_documents_json(text: str, first_line: int) -> Iterator[tuple[int, dict]]:
    """A JSONL shard's records with their line numbers (blank lines skipped)."""
    for offset, line in enumerate(text.splitlines()):
        if line.strip():
            yield first_line + offset, json.loads(line)


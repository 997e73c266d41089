"""CoNLL-U reading for tagging: FORM and UPOS (or XPOS) of the syntactic words of each sentence.

Fields are parsed by the ``conllu`` library, one line at a time, so that every error can name the
file and the line. Multiword-token lines (``3-4``) and empty nodes (``8.1``) are skipped: the
tagger labels the syntactic words, as UD evaluation does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from conllu.exceptions import ParseException
from conllu.parser import DEFAULT_FIELDS, parse_line

from training.common.errors import DataFormatError

logger = logging.getLogger(__name__)

N_COLUMNS = len(DEFAULT_FIELDS)  # 10: ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC


@dataclass(frozen=True)
class TaggedSentence:
    words: tuple[str, ...]
    tags: tuple[str, ...]


def read_conllu(path: str | Path, tag_column: str = "upos") -> list[TaggedSentence]:
    """Read every sentence of a CoNLL-U file; raise DataFormatError naming file and line."""
    return list(iter_conllu(path, tag_column))


def iter_conllu(path: str | Path, tag_column: str = "upos") -> Iterator[TaggedSentence]:
    if tag_column not in ("upos", "xpos"):
        raise ValueError(f"tag_column must be 'upos' or 'xpos', not {tag_column!r}")
    path = Path(path)
    try:
        handle = path.open(encoding="utf-8")
    except OSError as error:
        raise DataFormatError(str(path), None, f"cannot open: {error.strerror or error}") from error
    with handle:
        words: list[str] = []
        tags: list[str] = []
        expected_id = 1
        line_number = 0
        try:
            for line_number, raw in enumerate(handle, start=1):
                line = raw.rstrip("\r\n")
                if not line.strip():
                    if words:
                        yield TaggedSentence(tuple(words), tuple(tags))
                    words, tags, expected_id = [], [], 1
                    continue
                if line.startswith("#"):
                    continue
                columns = line.split("\t")
                if len(columns) != N_COLUMNS:
                    raise DataFormatError(str(path), line_number,
                                          f"expected {N_COLUMNS} tab-separated columns, found {len(columns)}")
                try:
                    token = parse_line(line, fields=DEFAULT_FIELDS)
                except ParseException as error:
                    raise DataFormatError(str(path), line_number, str(error)) from error
                token_id = token["id"]
                if isinstance(token_id, tuple):  # "3-4" multiword token or "8.1" empty node
                    continue
                if token_id != expected_id:
                    raise DataFormatError(str(path), line_number,
                                          f"word ID {token_id} out of sequence, expected {expected_id}")
                expected_id += 1
                form, tag = token["form"], token[tag_column]
                if not form:
                    raise DataFormatError(str(path), line_number, "empty FORM")
                if not tag or tag == "_":
                    raise DataFormatError(str(path), line_number, f"missing {tag_column.upper()}")
                words.append(form)
                tags.append(tag)
        except UnicodeDecodeError as error:
            raise DataFormatError(str(path), line_number + 1, f"not valid UTF-8: {error.reason}") from error
        if words:
            yield TaggedSentence(tuple(words), tuple(tags))

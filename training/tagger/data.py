"""CoNLL-U reading for tagging: FORM and UPOS (or XPOS) of the syntactic words of each sentence.

Fields are parsed by the ``conllu`` library, one line at a time, so that every error can name the
file and the line. Empty nodes (``8.1``) are skipped, and so are multiword-token lines (``3-4``) as
far as the words go: the tagger labels the syntactic words, as UD evaluation does. For scoring on raw
text, each sentence also keeps its ``# text`` and where every word lies in it (a multiword token's
words split its characters: ``don't`` = ``do`` + ``n't``), and whether a ``# newpar`` or ``# newdoc``
starts a paragraph there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from training.common.errors import DataFormatError

logger = logging.getLogger(__name__)

N_COLUMNS = 10  # ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC (conllu's DEFAULT_FIELDS)


@dataclass(frozen=True)
class TaggedSentence:
    words: tuple[str, ...]
    tags: tuple[str, ...]
    text: str | None = None  # the sentence's ``# text``, if given
    # [start, end) of each word in ``text``; None without a text, or where the tokens do not follow it
    word_spans: tuple[tuple[int, int], ...] | None = None
    new_paragraph: bool = False  # a ``# newpar`` or ``# newdoc`` comment comes before it
    condition: str | None = None  # what the sentence is about, for a model conditioned on it (an SGD service)


def word_spans(text: str, tokens: list[tuple[str, list[str]]]) -> tuple[tuple[int, int], ...] | None:
    """Where each word lies in ``text``, given the sentence's tokens in order, each with its words (a multiword
    token has several, any other token one: itself). None when a token is not found in order with only
    whitespace between, or a multiword token's words do not spell it."""
    spans: list[tuple[int, int]] = []
    position = 0
    for form, words in tokens:
        start = text.find(form, position)
        if start < 0 or text[position:start].strip():
            return None
        if len(words) == 1:
            spans.append((start, start + len(form)))
        else:
            if "".join(words).lower() != form.lower():
                return None
            offset = start
            for word in words:
                spans.append((offset, offset + len(word)))
                offset += len(word)
        position = start + len(form)
    return tuple(spans)


def read_conllu(path: str | Path, tag_column: str = "upos") -> list[TaggedSentence]:
    """Read every sentence of a CoNLL-U file; raise DataFormatError naming file and line."""
    return list(iter_conllu(path, tag_column))


def iter_conllu(path: str | Path, tag_column: str = "upos") -> Iterator[TaggedSentence]:
    # conllu (the train extra) only where files are read: serving imports TaggedSentence through span decoding
    from conllu.exceptions import ParseException
    from conllu.parser import DEFAULT_FIELDS, parse_line

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
        tokens: list[tuple[str, list[str]]] = []  # surface tokens with their words, for word_spans
        multiword_end = 0  # last word ID of the multiword token being read (0: none)
        text: str | None = None
        new_paragraph = False
        expected_id = 1
        line_number = 0

        def sentence() -> TaggedSentence:
            spans = word_spans(text, tokens) if text is not None else None
            return TaggedSentence(tuple(words), tuple(tags), text, spans, new_paragraph)

        try:
            for line_number, raw in enumerate(handle, start=1):
                line = raw.rstrip("\r\n")
                if not line.strip():
                    if words:
                        yield sentence()
                        text, new_paragraph = None, False
                    words, tags, tokens, multiword_end, expected_id = [], [], [], 0, 1
                    continue
                if line.startswith("#"):
                    if line.startswith("# text = "):
                        text = line[len("# text = "):]
                    elif line.startswith(("# newpar", "# newdoc")):
                        new_paragraph = True
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
                if isinstance(token_id, tuple):
                    if token_id[1] == "-":  # "3-4": a multiword token; its words follow
                        tokens.append((token["form"], []))
                        multiword_end = token_id[2]
                    continue  # "8.1": an empty node
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
                if token_id <= multiword_end:
                    tokens[-1][1].append(form)
                else:
                    tokens.append((form, [form]))
        except UnicodeDecodeError as error:
            raise DataFormatError(str(path), line_number + 1, f"not valid UTF-8: {error.reason}") from error
        if words:
            yield sentence()

"""Span tagging data: BIO / BIOES tags, the spans they spell, the transitions a decoder may take, and readers.

A span is (label, first token, end token) with ``end`` exclusive. Two tag schemes:

- ``bio``: ``B-x`` begins a span, ``I-x`` continues it, ``O`` is outside (IOB2: every span starts with ``B``);
- ``bioes``: also ``E-x`` ends a span of two or more tokens and ``S-x`` is a one-token span.

Readers, both raising ``DataFormatError`` with the file and line:

- ``read_sgd_spans``: Schema-Guided Dialogue JSONL (``../shared/data/sgd``), every turn (user and system), its
  slot ``spans`` (character offsets) turned into tags over the tokens of the project's tokenizer. A span whose
  ends do not fall on token boundaries is never moved: its turn is left out, and counted (``SpanReadReport``).
  Each sentence carries the turn's ``service`` as its condition.
- ``read_conll_columns``: the column format users have for NER and chunking (CoNLL-2003): one token a line,
  whitespace-separated columns with the tag in the last one, blank lines between sentences, ``-DOCSTART-``
  lines skipped. The original CoNLL-2003 files are IOB1 (``I-x`` may start a span); such sentences are read
  into the scheme's own form (``B-x`` first), which spells the same spans.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from training.common.errors import DataFormatError
from training.common.jsonl import json_objects, kind_of, lines
from training.common.tokenizer import get_tokenizer
from training.tagger.data import TaggedSentence

logger = logging.getLogger(__name__)

SCHEMES = ("bio", "bioes")
OUTSIDE = "O"
_PREFIXES = {"bio": ("B", "I"), "bioes": ("B", "I", "E", "S")}


def parse_tag(tag: str, scheme: str) -> tuple[str, str]:
    """``B-city`` -> ("B", "city"); ``O`` -> ("O", ""). ValueError for a tag the scheme does not have."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    prefix, _, label = tag.partition("-")
    if prefix not in _PREFIXES[scheme] or not label:
        raise ValueError(f"{tag!r} is not a {scheme.upper()} tag (O, or {'/'.join(_PREFIXES[scheme])}-label)")
    return prefix, label


def spans_to_tags(length: int, spans: Sequence[tuple[str, int, int]], scheme: str) -> list[str]:
    """Spans (label, first, end) over ``length`` tokens -> one tag per token."""
    tags = [OUTSIDE] * length
    for label, first, end in spans:
        if scheme == "bioes" and end - first == 1:
            tags[first] = f"S-{label}"
            continue
        tags[first] = f"B-{label}"
        for i in range(first + 1, end):
            tags[i] = f"I-{label}"
        if scheme == "bioes":
            tags[end - 1] = f"E-{label}"
    return tags


def tags_to_spans(tags: Sequence[str], scheme: str) -> list[tuple[str, int, int]]:
    """Tags -> spans, reading ill-formed sequences leniently (an ``I-x`` that continues nothing starts a span, as
    seqeval's default mode reads it); a constrained decoder never produces one."""
    spans: list[tuple[str, int, int]] = []
    label, first = None, 0
    for i, tag in enumerate([*tags, OUTSIDE]):
        prefix, name = parse_tag(tag, scheme) if tag != OUTSIDE else (OUTSIDE, "")
        continues = label is not None and name == label and prefix in ("I", "E")
        if label is not None and not continues:
            spans.append((label, first, i))
            label = None
        if prefix in ("B", "S") or (prefix in ("I", "E") and label is None):
            label, first = name, i
        if prefix in ("E", "S") and label is not None:
            spans.append((label, first, i + 1))
            label = None
    return spans


def transition_constraints(tags: Sequence[str], scheme: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(allowed [K, K]: tag i may be followed by tag j, may start [K], may end [K]) for the tags of a model: the
    sequences a constrained decoder may return are exactly the well-formed ones."""
    parsed = [parse_tag(tag, scheme) for tag in tags]
    k = len(tags)
    allowed = np.zeros((k, k), bool)
    for i, (prev, prev_label) in enumerate(parsed):
        for j, (nxt, label) in enumerate(parsed):
            inside = nxt in ("I", "E")
            if scheme == "bio":
                allowed[i, j] = not inside or (prev in ("B", "I") and prev_label == label)
            else:  # after B or I the span must go on (I or E of its label); after O, E, S it must not
                if prev in ("B", "I"):
                    allowed[i, j] = inside and prev_label == label
                else:
                    allowed[i, j] = not inside
    start = np.array([p not in ("I", "E") for p, _ in parsed])
    end = np.array([scheme == "bio" or p not in ("B", "I") for p, _ in parsed])
    return allowed, start, end


def constrained_viterbi(probabilities: np.ndarray, allowed: np.ndarray, start: np.ndarray, end: np.ndarray) -> list[int]:
    """The most probable well-formed tag sequence of one sentence, ``probabilities [T, K]`` -> tag ids ``[T]``.
    NumPy twin of the exported graph's decoder (``training.tagger.serving_graph.constrained_viterbi``)."""
    if len(probabilities) == 0:
        return []
    log_p = np.log(np.maximum(probabilities, 1e-30))
    transitions = np.where(allowed, 0.0, -1e9)
    score = log_p[0] + np.where(start, 0.0, -1e9)
    back = []
    for t in range(1, len(log_p)):
        candidates = score[:, None] + transitions  # [K prev, K next]
        back.append(candidates.argmax(axis=0))
        score = candidates.max(axis=0) + log_p[t]
    best = [int(np.argmax(score + np.where(end, 0.0, -1e9)))]
    for pointers in reversed(back):
        best.append(int(pointers[best[-1]]))
    return best[::-1]


class SpanDecoder:
    """NumPy twin of the exported graph's decoding of one sentence (``serving_graph.constrained_viterbi``, then
    ``spans_of``): the most probable well-formed tags, each one's probability, and the spans they spell, each with
    the mean probability of its tags. The serving fast path decodes with it (``SavedTagger``)."""

    def __init__(self, tags: Sequence[str], scheme: str):
        self.allowed, self.start, self.end = transition_constraints(tags, scheme)
        parsed = [parse_tag(tag, scheme) for tag in tags]
        self.begins = [prefix in ("B", "S") for prefix, _ in parsed]
        self.insides = [prefix != OUTSIDE for prefix, _ in parsed]
        self.labels = [label for _, label in parsed]

    def decode(self, probabilities: np.ndarray) -> tuple[list[int], np.ndarray, list[tuple[str, int, int, float]]]:
        """``[T, K]`` -> (tag ids, their probabilities ``[T]``, spans as (label, first, end, score))."""
        best = constrained_viterbi(probabilities, self.allowed, self.start, self.end)
        chosen = probabilities[np.arange(len(best)), best] if best else np.zeros(0, np.float32)
        spans, members = [], []
        for t, k in enumerate([*best, None]):  # None closes the last span
            if members and (k is None or self.begins[k] or not self.insides[k]):
                spans.append((self.labels[best[members[0]]], members[0], members[-1] + 1,
                              float(np.mean(chosen[members], dtype=np.float32))))
                members = []
            if k is not None and self.insides[k]:
                members.append(t)
        return best, chosen, spans


@dataclass
class SpanReadReport:
    """What a span reader kept and left out."""

    sentences: int = 0
    spans: int = 0
    misaligned_spans: int = 0  # spans whose ends are not token boundaries
    overlapping_spans: int = 0  # spans that overlap another span of their turn (BIO tags cannot say both)
    left_out_sentences: int = 0  # the sentences holding either, not used
    examples: list[str] = field(default_factory=list)  # a few misaligned spans, for the log

    def to_dict(self) -> dict:
        return {"sentences": self.sentences, "spans": self.spans, "misaligned_spans": self.misaligned_spans,
                "overlapping_spans": self.overlapping_spans, "left_out_sentences": self.left_out_sentences,
                "misaligned_share": round(self.misaligned_spans / max(self.spans + self.misaligned_spans, 1), 5),
                "examples": self.examples[:10]}


def read_sgd_spans(path: str | Path, scheme: str = "bio", tokenizer: str = "ud-english") -> tuple[list[TaggedSentence], SpanReadReport]:
    """Every SGD turn with its slot spans as tags over the tokenizer's tokens; its ``service`` as the condition."""
    path = Path(path)
    cut = get_tokenizer(tokenizer)
    report = SpanReadReport()
    sentences: list[TaggedSentence] = []
    for number, record in json_objects(path, "dialogues"):
        turns = record.get("turns")
        if not isinstance(turns, list) or not turns:
            raise DataFormatError(str(path), number, f"'turns' must be a non-empty list, found {kind_of(turns)}")
        for index, turn in enumerate(turns):
            if not isinstance(turn, dict):
                raise DataFormatError(str(path), number, f"turn {index} is {kind_of(turn)}, expected an object")
            text, service = turn.get("utterance"), turn.get("service", "")
            if not isinstance(text, str):
                raise DataFormatError(str(path), number, f"turn {index}: 'utterance' must be a string, found {kind_of(text)}")
            if not isinstance(service, str):
                raise DataFormatError(str(path), number, f"turn {index}: 'service' must be a string, found {kind_of(service)}")
            spans = turn.get("spans", [])
            if not isinstance(spans, list):
                raise DataFormatError(str(path), number, f"turn {index}: 'spans' must be a list, found {kind_of(spans)}")
            tokens = cut.tokenize(text)
            if not tokens:
                continue
            starts = {t.start: i for i, t in enumerate(tokens)}
            ends = {t.end: i + 1 for i, t in enumerate(tokens)}
            token_spans, misaligned = [], 0
            for span in spans:
                if (not isinstance(span, list) or len(span) != 3 or not isinstance(span[0], str) or not span[0]
                        or not all(isinstance(v, int) and not isinstance(v, bool) for v in span[1:])
                        or not 0 <= span[1] < span[2] <= len(text)):
                    raise DataFormatError(str(path), number, f"turn {index}: each span must be [slot, start, end] "
                                                             f"within the utterance, found {str(span)[:80]}")
                slot, start, end = span
                if start in starts and end in ends:
                    token_spans.append((slot, starts[start], ends[end]))
                else:
                    misaligned += 1
                    report.examples.append(f"{path.name}:{number} turn {index}: {slot}={text[start:end]!r} in {text!r}")
            if misaligned:
                report.misaligned_spans += misaligned
                report.left_out_sentences += 1
                continue
            token_spans.sort(key=lambda s: (s[1], s[2]))
            overlapping = sum(a[2] > b[1] for a, b in zip(token_spans, token_spans[1:]))
            if overlapping:
                report.overlapping_spans += overlapping + 1
                report.left_out_sentences += 1
                continue
            report.spans += len(token_spans)
            words = tuple(t.text for t in tokens)
            sentences.append(TaggedSentence(words, tuple(spans_to_tags(len(words), token_spans, scheme)), text,
                                            tuple((t.start, t.end) for t in tokens), condition=service))
    report.sentences = len(sentences)
    if report.overlapping_spans:
        logger.warning("%s: %d spans overlap another span of their turn; those turns are left out", path,
                       report.overlapping_spans)
    if report.misaligned_spans:
        logger.warning("%s: %d of %d spans do not fall on token boundaries; their %d turns are left out (e.g. %s)",
                       path, report.misaligned_spans, report.spans + report.misaligned_spans,
                       report.left_out_sentences, report.examples[0])
    return sentences, report


_DOCSTART = re.compile(r"-DOCSTART-")


def read_conll_columns(path: str | Path, scheme: str = "bio") -> list[TaggedSentence]:
    """CoNLL-2003-style column files: the token in the first column, the tag in the last."""
    path = Path(path)
    sentences: list[TaggedSentence] = []
    words: list[str] = []
    tags: list[str] = []

    rewritten = 0

    def close() -> None:
        nonlocal rewritten
        if words:
            well_formed = spans_to_tags(len(tags), tags_to_spans(tags, scheme), scheme)  # the same spans
            rewritten += well_formed != tags
            sentences.append(TaggedSentence(tuple(words), tuple(well_formed)))
        words.clear()
        tags.clear()

    for number, line in lines(path):
        columns = line.split()
        if not columns:
            close()
            continue
        if _DOCSTART.match(columns[0]):
            close()
            continue
        if len(columns) < 2:
            raise DataFormatError(str(path), number, "expected a token and its tag (and any columns between)")
        try:
            parse_tag(columns[-1], scheme)
        except ValueError as error:
            raise DataFormatError(str(path), number, str(error)) from None
        words.append(columns[0])
        tags.append(columns[-1])
    close()
    if not sentences:
        raise DataFormatError(str(path), None, "no sentences in the file")
    if rewritten:
        logger.info("%s: %d sentences had spans begun by I- (IOB1) or left open; read as %s", path, rewritten,
                    scheme.upper())
    return sentences

"""Annotated sentences -> CoNLL-U (as UD writes it) or JSONL (one sentence a line, with character offsets).

CoNLL-U: ``# newdoc id``, ``# newpar``, ``# sent_id`` and ``# text`` comments; UPOS from the POS model; every other
model's tag in MISC as ``name=TAG`` (span models: only the B- and I- tags); ``SpaceAfter=No`` where the text had
no space. Clitic contractions are written as EWT writes them, a multiword token line (``1-2 don't``) over its
words (``do``, ``n't``), with ``SpaceAfter`` on the token line. LEMMA, XPOS, FEATS, HEAD, DEPREL and DEPS are
``_``: no model here predicts them, and a made-up tree would be worse than none. CoNLL-U input keeps its own
lines; only UPOS and MISC change.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

OUTPUT_FORMATS = ("conllu", "jsonl")
# A piece of a whitespace-delimited chunk that EWT joins to the word before it as one multiword token: a clitic
# ("n't", "'s", "'ll"), or any letters cut from letters ("gon|na", "can|not", "i|m", "do|nt").
_CLITIC = re.compile(r"(?i)^(?:n['’`]t|['’`](?:s|re|ve|ll|d|m))$")


@dataclass
class Word:
    form: str
    start: int | None = None  # character offsets in the document (None for CoNLL-U input)
    end: int | None = None
    space_after: bool = True
    tags: dict[str, str] = field(default_factory=dict)  # model name -> tag


@dataclass
class SentenceSpan:
    model: str
    label: str
    first: int  # first word (0-based)
    end: int  # one past the last word
    score: float


@dataclass
class Sentence:
    document: str
    sent_id: str | None
    words: list[Word]
    new_document: bool = False
    new_paragraph: bool = False
    paragraph: int | None = None
    multiwords: list[tuple[int, int]] = field(default_factory=list)  # (first, last) words of each multiword token
    lines: list[str] | None = None  # CoNLL-U input: its lines as read
    spans: list[SentenceSpan] = field(default_factory=list)
    text: str | None = None


def multiword_tokens(words: list[Word]) -> list[tuple[int, int]]:
    """(first, last) of each run of words with no space between them that EWT writes as one multiword token."""
    groups = []
    i = 0
    while i < len(words):
        j = i
        while (j + 1 < len(words) and not words[j].space_after and
               (_CLITIC.match(words[j + 1].form) or (words[j].form[-1].isalpha() and words[j + 1].form[0].isalpha()))):
            j += 1
        if j > i:
            groups.append((i, j))
        i = j + 1
    return groups


def sentence_text(words: list[Word]) -> str:
    return "".join(w.form + (" " if w.space_after else "") for w in words).rstrip(" ")


def _misc(attributes: list[str]) -> str:
    return "|".join(attributes) if attributes else "_"


def _model_attributes(word: Word, upos_model: str | None) -> list[str]:
    return [f"{name}={tag}" for name, tag in word.tags.items() if name != upos_model and tag != "O"]


def conllu_sentence(sentence: Sentence, upos_model: str | None) -> str:
    if sentence.lines is not None:
        return _rewrite_conllu(sentence, upos_model)
    lines = []
    if sentence.new_document:
        lines.append(f"# newdoc id = {sentence.document}")
    if sentence.new_paragraph:
        lines.append("# newpar")
    lines.append(f"# sent_id = {sentence.sent_id}")
    lines.append(f"# text = {sentence.text if sentence.text is not None else sentence_text(sentence.words)}")
    starts = {first: last for first, last in sentence.multiwords}
    inside: set[int] = {i for first, last in sentence.multiwords for i in range(first, last + 1)}
    for i, word in enumerate(sentence.words):
        if i in starts:
            last = starts[i]
            surface = "".join(w.form for w in sentence.words[i:last + 1])
            space = [] if sentence.words[last].space_after else ["SpaceAfter=No"]
            lines.append(f"{i + 1}-{last + 1}\t{surface}\t_\t_\t_\t_\t_\t_\t_\t{_misc(space)}")
        upos = word.tags.get(upos_model, "_") if upos_model else "_"
        attributes = _model_attributes(word, upos_model)
        if not word.space_after and i not in inside:
            attributes.append("SpaceAfter=No")
        lines.append(f"{i + 1}\t{word.form}\t_\t{upos}\t_\t_\t_\t_\t_\t{_misc(attributes)}")
    return "\n".join(lines) + "\n\n"


def _rewrite_conllu(sentence: Sentence, upos_model: str | None) -> str:
    """A CoNLL-U input sentence with UPOS and MISC filled: every other column and line as it was."""
    out = []
    words = iter(sentence.words)
    for line in sentence.lines or []:
        columns = line.split("\t")
        if line.startswith("#") or len(columns) != 10 or not columns[0].isdigit():
            out.append(line)
            continue
        word = next(words)
        if upos_model:
            columns[3] = word.tags[upos_model]
        attributes = _model_attributes(word, upos_model)
        if attributes:
            kept = [a for a in columns[9].split("|") if a != "_" and a.split("=", 1)[0] not in word.tags]
            columns[9] = _misc(attributes + kept)
        out.append("\t".join(columns))
    return "\n".join(out) + "\n\n"


def jsonl_sentence(sentence: Sentence, upos_model: str | None) -> str:
    words = []
    for word in sentence.words:
        item = {"text": word.form, "start": word.start, "end": word.end}
        if upos_model:
            item["upos"] = word.tags[upos_model]
        item.update({name: tag for name, tag in word.tags.items() if name != upos_model})
        words.append(item)
    record = {"doc": sentence.document, "sent_id": sentence.sent_id, "paragraph": sentence.paragraph,
              "text": sentence.text if sentence.text is not None else sentence_text(sentence.words),
              "start": sentence.words[0].start if sentence.words else None,
              "end": sentence.words[-1].end if sentence.words else None, "words": words}
    if sentence.multiwords:
        record["multiword_tokens"] = [
            {"text": "".join(w.form for w in sentence.words[first:last + 1]), "start": sentence.words[first].start,
             "end": sentence.words[last].end, "words": [first, last + 1]} for first, last in sentence.multiwords]
    if sentence.spans:
        spans: dict[str, list] = {}
        for span in sentence.spans:
            first, last = sentence.words[span.first], sentence.words[span.end - 1]
            spans.setdefault(span.model, []).append(
                {"label": span.label, "words": [span.first, span.end], "start": first.start, "end": last.end,
                 "text": sentence_text(sentence.words[span.first:span.end]), "score": round(span.score, 4)})
        record["spans"] = spans
    return json.dumps(record, ensure_ascii=False) + "\n"


def write_sentence(sentence: Sentence, output_format: str, upos_model: str | None) -> str:
    return (conllu_sentence if output_format == "conllu" else jsonl_sentence)(sentence, upos_model)

"""Raw text -> UD English word tokens with character offsets.

NLTK's Treebank-style word tokenizer follows the conventions of UD English EWT (punctuation split off,
clitics split: ``do n't``, ``ca n't``, ``we 'll``, ``gon na``, ``John 's``) and reports exact spans.
URLs and e-mail addresses, which EWT keeps as single tokens, are cut out first and kept whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nltk.tokenize import NLTKWordTokenizer

_WORD_TOKENIZER = NLTKWordTokenizer()
_PROTECTED = re.compile(r"(?:https?://|www\.)\S+|[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_TRAILING_PUNCTUATION = ".,;:!?)]}'\""
_FALLBACK = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class Token:
    text: str
    start: int  # character offset in the input text
    end: int  # exclusive: text == input[start:end]


def _word_spans(text: str, offset: int) -> list[tuple[int, int]]:
    try:
        spans = list(_WORD_TOKENIZER.span_tokenize(text))
    except ValueError:  # NLTK could not align its tokens with the text (rewritten quotes and the like)
        spans = [m.span() for m in _FALLBACK.finditer(text)]
    return [(offset + start, offset + end) for start, end in spans if end > start]


def tokenize(text: str) -> list[Token]:
    spans: list[tuple[int, int]] = []
    position = 0
    for match in _PROTECTED.finditer(text):
        start, end = match.span()
        while end > start + 1 and text[end - 1] in _TRAILING_PUNCTUATION:  # "see x.com." ends the sentence
            end -= 1
        if start < position:
            continue
        spans += _word_spans(text[position:start], position)
        spans.append((start, end))
        position = end
    spans += _word_spans(text[position:], position)
    return [Token(text[start:end], start, end) for start, end in spans]

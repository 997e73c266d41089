"""Raw text -> sentences of UD English word tokens with character offsets, by named tokenizers.

Two tokenizers, named so that a model records the one it was trained with (``metadata.json``'s
``tokenizer``) and serving tokenizes its input the same way (``tokenizer_for``):

- ``ud-english`` (the default): sentence boundaries and words as UD English EWT draws them. Each whitespace-
  delimited chunk is cut the way spaCy's tokenizer works, special cases first, then prefixes, suffixes and
  infixes, with EWT's conventions: clitics split (``do n't``, ``ca n't``, ``we 'll``, ``gon na``), hyphens
  between letters split (``al - Sadr``) except after prefixes EWT keeps (``e-mail``, ``non-profit``), runs of
  punctuation kept whole (``!!``, ``...``, ``--``, ``:)``), a word's final period split off unless it is an
  abbreviation (``Dr.``, ``U.S.``, ``etc.``), numbers and their units apart (``5 pm``, ``$ 10 k``), URLs and
  e-mail addresses whole. The abbreviations, the prefixes and the chunks that EWT cuts otherwise than these
  rules (``cannot``, ``alot``, ``im``) are a lexicon learnt from EWT train (``ud_english_lexicon.json``,
  written by ``python -m training.tagger.tokenizer_lexicon``). A sentence ends at terminal punctuation
  (``.``, ``?!``, ``...``, closing quotes and brackets after it) followed by a word, and at a blank line.
  Measured on EWT dev (``benchmarks/tokenization.py``): word F1 0.9905 on paragraphs and on single sentences.
- ``nltk-treebank``: NLTK's Treebank word tokenizer, which the models trained before ``ud-english`` existed
  read; it splits only the period at the very end of its input (``Jose. Can`` stays ``Jose.``) and does not
  split sentences. Word F1 0.919 on EWT dev paragraphs, 0.971 on single sentences.

Every tokenizer keeps each token exactly the text between its offsets, in order, leaving out only whitespace
(a property test holds it on any text).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

DEFAULT_TOKENIZER = "ud-english"
LEGACY_TOKENIZER = "nltk-treebank"  # what models exported without a "tokenizer" in their metadata read
LEXICON_FILE = Path(__file__).with_name("ud_english_lexicon.json")


@dataclass(frozen=True)
class Token:
    text: str
    start: int  # character offset in the input text
    end: int  # exclusive: text == input[start:end]


class Tokenizer(Protocol):
    name: str

    def tokenize(self, text: str) -> list[Token]:
        """Every word token of ``text``, in order."""

    def sentences(self, text: str) -> list[list[Token]]:
        """The same tokens, grouped into sentences."""


# --- ud-english ---

# A URL does not end in punctuation that ends a sentence or closes a bracket ("see x.com/a." ends with ".").
_URL = r"(?:https?://|ftp://|www\.)[^\s<>\"]*[^\s<>\".,;:!?)\]}']|[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
_EMOTICON = (r"(?:[:;=8][-o^']?[()\[\]DPpO/\\|*3]+|[()\[\]]+[-o^']?[:;=]|<3|\^_\^|\^\^|o\.O|O\.o|-_-|:-?\||XD|xD)")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:[.,:/-]\d+)+|\d+)")  # 5, 5.50, 1,000, 10:30, 11/28/2000, 713-853-3989
_INNER_PERIODS = r"(?:[A-Za-z]\.){2,}"  # U.S., e.g., p.m.
_WHOLE = re.compile(rf"(?:{_URL}|{_INNER_PERIODS}|{_EMOTICON})")
_PUNCTUATION_ONLY = re.compile(r"[^\w\s]+")
# Inside a punctuation-only chunk: emoticons, runs of one character ("!!", "...", "<<"), mixes of terminal
# punctuation (".?", "?!") stay whole; any other character is a token of its own.
_PUNCTUATION_PIECE = re.compile(rf"{_EMOTICON}|([^\w\s])\1+|[.!?…]{{2,}}|[^\w\s]")
_CLITIC = re.compile(r"(?i)(?:n['’]t|['’](?:s|re|ve|ll|d|m))$")
_OPENING = frozenset("([{\"'“‘`«<$#*~¿¡")
_TRAILING_PUNCTUATION = re.compile(r"(?:[.!?…]{2,}|([^\w\s])\1*)$")
# Infixes: hyphens, slashes, commas and brackets between letters; dash and ellipsis runs anywhere inside; a
# number's unit (5pm, 10k, 170m, but not the ordinals 2nd, 3rd).
_INFIX = re.compile(r"((?<=[^\W\d_])[-/,()\[\]{}](?=\w)|(?<=\w)[-/,()\[\]{}](?=[^\W\d_])|--+|\.{2,}|…"
                    # "month.American": two sentences missing a space (but "Newsfeed.Com" is a name)
                    r"|(?<=[a-z0-9]{2})[.!?](?=[A-Z][a-z])(?!(?:Com|Net|Org|Edu|Gov)\b)"
                    r"|(?<=\d)(?=(?!st$|nd$|rd$|th$|s$)[^\W\d_]+$))")
_TERMINAL = re.compile(r"^(?:[.!?…]+|[.!?…]*[!?][^\w\s]*)$")  # tokens that can end a sentence
_CLOSERS = frozenset(("\"", "'", "”", "’", ")", "]", "}", "»", "''"))
_BLANK_LINE = re.compile(r"\n[^\S\n]*\n")
_CHUNK = re.compile(r"\S+")
SPLIT_CACHE_SIZE = 200_000  # chunks whose cut is kept (emptied when full: a few tens of MB at most)
# English titles that keep their period, beyond those EWT train has often enough to learn (Capt. Smith, Prof. Lee).
_TITLE_ABBREVIATIONS = ("adm", "capt", "cmdr", "col", "gen", "gov", "lt", "maj", "mt", "prof", "rep", "sen", "sgt", "supt")
# Contractions written without the apostrophe, split as EWT splits them (do|nt, have|nt), beyond the lexicon's
_NT_CONTRACTION = re.compile(r"(?i)^(do|does|did|have|has|had|is|are|was|were|could|would|should|must|need)nt$")
# Web text's slash abbreviations, whole (b/c, w/o); "w/" before a word is a word of its own (w/ it, w/milk)
_SLASH_WORD = re.compile(r"(?i)^(?:b/c|w/o|w/out|w/e|a/c)$")


class UDEnglishTokenizer:
    """UD English EWT's words and sentences (see the module docstring); ``lexicon`` as ``ud_english_lexicon.json``."""

    name = DEFAULT_TOKENIZER

    def __init__(self, lexicon: dict):
        self.abbreviations = frozenset(a.lower() for a in (*lexicon["abbreviations"], *_TITLE_ABBREVIATIONS))
        self.joined_prefixes = frozenset(p.lower() for p in lexicon["joined_prefixes"])
        # lower-cased chunk -> the lengths of its tokens
        self.exceptions = {chunk: tuple(lengths) for chunk, lengths in lexicon["exceptions"].items()}
        # chunk -> the lengths of its tokens: words repeat (Zipf), so most chunks of a text were cut before
        self._split_cache: dict[str, list[int]] = {}
        # the exceptions that are words (gonna, cannot): they also apply inside quotes or before punctuation
        self.word_exceptions = {chunk: lengths for chunk, lengths in self.exceptions.items()
                                if re.fullmatch(r"[a-z'’]+", chunk)}

    def tokenize(self, text: str) -> list[Token]:
        tokens = []
        cache = self._split_cache
        for match in _CHUNK.finditer(text):
            chunk, start = match.group(0), match.start()
            lengths = cache.get(chunk)
            if lengths is None:
                lengths = self.split(chunk)
                if sum(lengths) != len(chunk) or min(lengths, default=1) < 1:  # cannot happen; never lose a character
                    lengths = [len(chunk)]
                if len(cache) >= SPLIT_CACHE_SIZE:
                    cache.clear()
                cache[chunk] = lengths
            for length in lengths:
                tokens.append(Token(text[start:start + length], start, start + length))
                start += length
        return tokens

    def sentences(self, text: str) -> list[list[Token]]:
        tokens = self.tokenize(text)
        breaks = {m.start() for m in _BLANK_LINE.finditer(text)}
        sentences: list[list[Token]] = []
        current: list[Token] = []
        for i, token in enumerate(tokens):
            if current and any(current[-1].end <= b < token.start for b in breaks):
                sentences.append(current)
                current = []
            current.append(token)
            following = tokens[i + 1] if i + 1 < len(tokens) else None
            if following is None or not self._ends_sentence(current, following):
                continue
            sentences.append(current)
            current = []
        if current:
            sentences.append(current)
        return sentences

    @staticmethod
    def _ends_sentence(current: list[Token], following: Token) -> bool:
        """Terminal punctuation (then any closing quotes or brackets attached to it) before a word, a number or an
        opening quote or bracket. EWT's web text starts many sentences in lower case, so a lower-case word counts
        too, except after a closing quote (``"Why?" she asked``)."""
        j = len(current) - 1
        while j > 0 and current[j].text in _CLOSERS and current[j - 1].end == current[j].start:
            j -= 1
        if not _TERMINAL.match(current[j].text):
            return False
        if following.text in _CLOSERS and following.start == current[-1].end:
            return False  # a closing quote or bracket still to come: the sentence ends after it
        first = following.text[0]
        if first.islower() and j < len(current) - 1:
            return False
        return first.isalnum() or first in "\"'“‘(["

    # --- one whitespace-delimited chunk -> the lengths of its tokens ---

    def split(self, chunk: str) -> list[int]:
        special = self.exceptions.get(chunk.lower())  # learnt on whole chunks, so applied to whole chunks
        if special is not None:
            return list(special)
        prefixes: list[int] = []
        suffixes: list[int] = []  # innermost last
        while chunk:
            special = self.word_exceptions.get(chunk.lower()) if prefixes or suffixes else None
            if special is not None:
                return prefixes + list(special) + suffixes[::-1]
            if (_WHOLE.fullmatch(chunk) or _NUMBER.fullmatch(chunk) or self._is_abbreviation(chunk)
                    or _SLASH_WORD.fullmatch(chunk)):
                return prefixes + [len(chunk)] + suffixes[::-1]
            contraction = _NT_CONTRACTION.fullmatch(chunk)
            if contraction:
                return prefixes + [len(contraction.group(1)), 2] + suffixes[::-1]
            if chunk[:2].lower() == "w/" and len(chunk) > 2 and chunk[2].isalpha():
                prefixes.append(2)
                chunk = chunk[2:]
                continue
            if _PUNCTUATION_ONLY.fullmatch(chunk):
                return prefixes + [len(m.group(0)) for m in _PUNCTUATION_PIECE.finditer(chunk)] + suffixes[::-1]
            if chunk[0] in _OPENING:  # an opening bracket, quote or currency sign (a run of one counts once)
                length = re.match(r"([^\w\s])\1*", chunk).end()
                prefixes.append(length)
                chunk = chunk[length:]
                continue
            length = self._suffix(chunk)
            if length:
                suffixes.append(length)
                chunk = chunk[:-length]
                continue
            return prefixes + self._infixes(chunk) + suffixes[::-1]
        return prefixes + suffixes[::-1]

    def _is_abbreviation(self, chunk: str) -> bool:
        return chunk.endswith(".") and chunk[:-1].lower() in self.abbreviations

    def _suffix(self, chunk: str) -> int:
        """The length of the clitic or the trailing punctuation to split off the end of ``chunk``; 0 for none."""
        clitic = _CLITIC.search(chunk)
        if clitic and clitic.start() > 0:
            return len(chunk) - clitic.start()
        trailing = _TRAILING_PUNCTUATION.search(chunk)
        if trailing is None:
            return 0
        if trailing.group(0) == ".." and (self._is_abbreviation(chunk[:-1]) or re.fullmatch(_INNER_PERIODS, chunk[:-1])):
            return 1  # "Inc.." ends a sentence after an abbreviation: "Inc." then "."
        if trailing.group(0) == "." and re.fullmatch(_INNER_PERIODS, chunk):
            return 0
        return len(trailing.group(0))

    def _infixes(self, chunk: str) -> list[int]:
        if _NUMBER.fullmatch(chunk) or _WHOLE.fullmatch(chunk):
            return [len(chunk)]
        pieces = [piece for piece in _INFIX.split(chunk) if piece]
        lengths: list[int] = []
        i = 0
        while i < len(pieces):
            # "e-mail", "non-profit": a hyphen after a prefix that EWT keeps joined
            if i + 2 < len(pieces) and pieces[i + 1] == "-" and pieces[i].lower() in self.joined_prefixes:
                lengths.append(len(pieces[i]) + 1 + len(pieces[i + 2]))
                i += 3
            else:
                lengths.append(len(pieces[i]))
                i += 1
        return lengths


# --- nltk-treebank (legacy) ---



@functools.cache
def _word_tokenizer():
    """NLTK's tokenizer, imported when first used: ``import nltk`` takes 2 s (it imports SciPy's statistics)."""
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()

_PROTECTED = re.compile(r"(?:https?://|www\.)\S+|[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PROTECTED_TRAILING = ".,;:!?)]}'\""
_FALLBACK = re.compile(r"\w+|[^\w\s]")


class TreebankTokenizer:
    """NLTK's Treebank-style word tokenizer with URLs and e-mail addresses cut out first and kept whole; the whole
    text is one sentence. Kept unchanged for the models trained on it."""

    name = LEGACY_TOKENIZER

    @staticmethod
    def _word_spans(text: str, offset: int) -> list[tuple[int, int]]:
        try:
            spans = list(_word_tokenizer().span_tokenize(text))
        except ValueError:  # NLTK could not align its tokens with the text (rewritten quotes and the like)
            spans = [m.span() for m in _FALLBACK.finditer(text)]
        return [(offset + start, offset + end) for start, end in spans if end > start]

    def tokenize(self, text: str) -> list[Token]:
        spans: list[tuple[int, int]] = []
        position = 0
        for match in _PROTECTED.finditer(text):
            start, end = match.span()
            while end > start + 1 and text[end - 1] in _PROTECTED_TRAILING:  # "see x.com." ends the sentence
                end -= 1
            if start < position:
                continue
            spans += self._word_spans(text[position:start], position)
            spans.append((start, end))
            position = end
        spans += self._word_spans(text[position:], position)
        return [Token(text[start:end], start, end) for start, end in spans]

    def sentences(self, text: str) -> list[list[Token]]:
        tokens = self.tokenize(text)
        return [tokens] if tokens else []


@functools.cache
def get_tokenizer(name: str = DEFAULT_TOKENIZER) -> Tokenizer:
    """A tokenizer by name (one instance per name); KeyError naming the known ones for any other."""
    if name == DEFAULT_TOKENIZER:
        return UDEnglishTokenizer(json.loads(LEXICON_FILE.read_text(encoding="utf-8")))
    if name == LEGACY_TOKENIZER:
        return TreebankTokenizer()
    raise KeyError(f"unknown tokenizer {name!r}; known: {', '.join(TOKENIZERS)}")


TOKENIZERS = (DEFAULT_TOKENIZER, LEGACY_TOKENIZER)


def tokenizer_for(metadata: dict) -> Tokenizer:
    """The tokenizer an exported model reads raw text with: the one its metadata names. A dialog model exported
    before models recorded theirs was trained on ``nltk-treebank`` text and keeps it; a tagger learns from gold
    tokens, whatever tokenized them, so without a record it gets the default."""
    name = metadata.get("tokenizer")
    if name is None:
        name = LEGACY_TOKENIZER if metadata.get("kind") == "dialog" else DEFAULT_TOKENIZER
    return get_tokenizer(name)


def tokenize(text: str) -> list[Token]:
    """The default tokenizer's tokens of ``text``."""
    return get_tokenizer().tokenize(text)

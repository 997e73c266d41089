"""Vocabularies and the token-to-id preprocessing shared by training and serving.

Ids 0 and 1 are reserved in word and character vocabularies: 0 pads (and is masked), 1 stands
for anything unknown. A word's embedding key is ``normalize_word(word)`` (lower-cased, ASCII
digits folded to 0); characters keep their case. The exported SavedModel implements the same
rules with ``tf.strings`` ops (``training.export``), and a test checks that both encodings of
real sentences are identical, so training and serving cannot drift apart.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

PAD_ID = 0
UNK_ID = 1
PAD_TOKEN = ""  # padding in the exported model's string input
UNK_TOKEN = "<unk>"
DIGIT_PATTERN = "[0-9]"  # RE2 and Python agree on this class (\d would not: RE2's is ASCII-only)
_DIGITS = re.compile(DIGIT_PATTERN)


def normalize_word(word: str) -> str:
    """Embedding key of a word; mirrored by ``training.export.normalize_words_tf``."""
    return _DIGITS.sub("0", word.lower())


def word_characters(word: str, max_word_length: int) -> list[str]:
    """Characters (code points) of a word fed to the character encoder, truncated."""
    return list(word[:max_word_length])


@dataclass(frozen=True)
class Vocab:
    """Ordered items; index 0 is padding and 1 unknown unless ``reserved`` is False (labels)."""

    items: tuple[str, ...]
    reserved: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {item: i for i, item in enumerate(self.items)})

    @classmethod
    def build(cls, counts: Counter, min_count: int = 1) -> "Vocab":
        # Most frequent first, ties broken alphabetically, so a build is deterministic.
        kept = sorted((item for item, n in counts.items() if n >= min_count and item not in (PAD_TOKEN, UNK_TOKEN)),
                      key=lambda item: (-counts[item], item))
        return cls((PAD_TOKEN, UNK_TOKEN, *kept))

    @classmethod
    def labels(cls, labels: Iterable[str]) -> "Vocab":
        return cls(tuple(sorted(set(labels))), reserved=False)

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item: str) -> bool:
        return item in self._index  # type: ignore[attr-defined]

    @property
    def lookup_items(self) -> list[str]:
        """The items after the reserved ids, as a StringLookup vocabulary wants them."""
        return list(self.items[2:] if self.reserved else self.items)

    def id(self, item: str) -> int:
        index = self._index.get(item)  # type: ignore[attr-defined]
        if index is None:
            if not self.reserved:
                raise KeyError(f"unknown label {item!r}; known: {', '.join(self.items)}")
            return UNK_ID
        return index


@dataclass(frozen=True)
class TaggerVocabs:
    words: Vocab  # normalized words
    chars: Vocab  # characters
    tags: Vocab  # output labels

    @classmethod
    def build(cls, sentences: Sequence, min_word_count: int) -> "TaggerVocabs":
        word_counts: Counter = Counter()
        char_counts: Counter = Counter()
        tags: set[str] = set()
        for sentence in sentences:
            for word in sentence.words:
                word_counts[normalize_word(word)] += 1
                char_counts.update(word)
            tags.update(sentence.tags)
        return cls(Vocab.build(word_counts, min_word_count), Vocab.build(char_counts, 1), Vocab.labels(tags))

    def to_dict(self) -> dict:
        return {"words": list(self.words.items), "chars": list(self.chars.items), "tags": list(self.tags.items)}

    @classmethod
    def from_dict(cls, data: dict) -> "TaggerVocabs":
        return cls(Vocab(tuple(data["words"])), Vocab(tuple(data["chars"])), Vocab(tuple(data["tags"]), reserved=False))


def encode_words(words: Sequence[str], vocabs: TaggerVocabs, max_word_length: int) -> tuple[np.ndarray, np.ndarray]:
    """One sentence -> word ids ``int32[time]`` and character ids ``int32[time, chars]``."""
    word_ids = np.array([vocabs.words.id(normalize_word(w)) for w in words], dtype=np.int32)
    chars = [word_characters(w, max_word_length) for w in words]
    char_ids = np.zeros((len(words), max((len(c) for c in chars), default=0)), dtype=np.int32)
    for i, word_chars in enumerate(chars):
        char_ids[i, :len(word_chars)] = [vocabs.chars.id(c) for c in word_chars]
    return word_ids, char_ids

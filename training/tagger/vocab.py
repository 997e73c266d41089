"""The token tagger's vocabularies (words, characters, tags) and its token-to-id preprocessing.

Words are keyed by ``training.common.vocab.normalize_word``; characters keep their case. The exported
SavedModel implements the same rules with ``tf.strings`` ops (``training.tagger.export``), and a test checks
that both encodings of real sentences are identical.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from training.common.vectors import KeptVectors
from training.common.vocab import Vocab, normalize_word


def word_characters(word: str, max_word_length: int) -> list[str]:
    """Characters (code points) of a word fed to the character encoder, truncated."""
    return list(word[:max_word_length])


@dataclass(frozen=True)
class TaggerVocabs:
    words: Vocab  # normalized words
    chars: Vocab  # characters
    tags: Vocab  # output labels
    pretrained: KeptVectors | None = None  # the pretrained table's kept words and their rows, if the model has one
    conditions: Vocab | None = None  # span models with an "embedding" condition: the conditions seen in training

    @classmethod
    def build(cls, sentences: Sequence, min_word_count: int, conditions: bool = False) -> "TaggerVocabs":
        word_counts: Counter = Counter()
        char_counts: Counter = Counter()
        condition_counts: Counter = Counter()
        tags: set[str] = set()
        for sentence in sentences:
            for word in sentence.words:
                word_counts[normalize_word(word)] += 1
                char_counts.update(word)
            tags.update(sentence.tags)
            if getattr(sentence, "condition", None):
                condition_counts[sentence.condition] += 1
        return cls(Vocab.build(word_counts, min_word_count), Vocab.build(char_counts, 1), Vocab.labels(tags),
                   None, Vocab.build(condition_counts, 1) if conditions else None)

    def to_dict(self) -> dict:
        data = {"words": list(self.words.items), "chars": list(self.chars.items), "tags": list(self.tags.items)}
        if self.pretrained is not None:
            data["pretrained"] = self.pretrained.to_dict()
        if self.conditions is not None:
            data["conditions"] = list(self.conditions.items)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TaggerVocabs":
        pretrained = KeptVectors.from_dict(data["pretrained"]) if data.get("pretrained") else None
        conditions = Vocab(tuple(data["conditions"])) if data.get("conditions") else None
        return cls(Vocab(tuple(data["words"])), Vocab(tuple(data["chars"])), Vocab(tuple(data["tags"]), reserved=False),
                   pretrained, conditions)

    def with_pretrained(self, pretrained: KeptVectors | None) -> "TaggerVocabs":
        return TaggerVocabs(self.words, self.chars, self.tags, pretrained, self.conditions)


def condition_token(condition: str | None) -> str:
    """A span model's condition written as a first token (config ``condition`` "first-token"); no condition: ``<condition:>``."""
    return f"<condition:{condition or ''}>"


def encode_pretrained(words: Sequence[str], vocabs: TaggerVocabs) -> np.ndarray | None:
    """One sentence -> the pretrained table's row ids ``int32[time]`` (1: not in the kept table); None without one."""
    if vocabs.pretrained is None:
        return None
    return np.array([vocabs.pretrained.id(w) for w in words], dtype=np.int32)


def encode_words(words: Sequence[str], vocabs: TaggerVocabs, max_word_length: int) -> tuple[np.ndarray, np.ndarray]:
    """One sentence -> word ids ``int32[time]`` and character ids ``int32[time, chars]``."""
    word_ids = np.array([vocabs.words.id(normalize_word(w)) for w in words], dtype=np.int32)
    chars = [word_characters(w, max_word_length) for w in words]
    char_ids = np.zeros((len(words), max((len(c) for c in chars), default=0)), dtype=np.int32)
    for i, word_chars in enumerate(chars):
        char_ids[i, :len(word_chars)] = [vocabs.chars.id(c) for c in word_chars]
    return word_ids, char_ids

"""Vocabularies and the word normalisation that every model's preprocessing shares, in training and serving.

Ids 0 and 1 are reserved in word-like vocabularies: 0 pads (and is masked), 1 stands for anything unknown.
A word's embedding key is ``normalize_word(word)`` (lower-cased, ASCII digits folded to 0). Exported
SavedModels implement the same rule with ``tf.strings`` ops (``training.common.graph_ops``), and tests check
that both encodings of real sentences are identical, so training and serving cannot drift apart.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

PAD_ID = 0
UNK_ID = 1
PAD_TOKEN = ""  # padding in the exported model's string input
UNK_TOKEN = "<unk>"
DIGIT_PATTERN = "[0-9]"  # RE2 and Python agree on this class (\d would not: RE2's is ASCII-only)
_DIGITS = re.compile(DIGIT_PATTERN)


def normalize_word(word: str) -> str:
    """Embedding key of a word; mirrored by ``training.common.graph_ops.normalize_words_tf``."""
    return _DIGITS.sub("0", word.lower())


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

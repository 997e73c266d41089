"""Words -> a pretrained encoder's word pieces (BERT's WordPiece), shared by training and serving.

A model with a pretrained sentence encoder (``training.common.text_encoder``) reads word pieces, not words: the
words that a named tokenizer cut (``training.common.tokenizer``) are split again by the encoder's own tokenizer,
with its normalizer (BERT's: clean control characters, lower-case), pre-tokenizer (punctuation apart) and
WordPiece vocabulary. The splitting is Hugging Face's ``tokenizers`` (the library the encoder's publisher uses),
configured from the encoder's ``tokenizer.json``, so that pieces are exactly the ones the encoder was trained on.

An exported model keeps only the pieces it has rows for (``kept``): the pieces its training text uses often enough
and every ASCII single-character piece, so any English text still splits into known pieces (a word with a character
outside them is ``[UNK]``, as in BERT). Greedy longest match then splits a word into longer pieces where they are
kept and into shorter ones where they are not; training text is split with the kept tokenizer too, so the model
trains on what it serves. The kept tokenizer is written beside the SavedModel (``word_pieces.json``) and the
service splits each turn with it.

Special tokens typed in user text are ordinary text here: the kept tokenizer has no added tokens, so ``[CLS]`` in a
turn splits into ``[``, ``cl``, ``##s``, ``]`` rather than into the marker.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from tokenizers import Tokenizer

from training.common.errors import ConfigError

# BERT's markers; checked to be in the vocabulary when a tokenizer is read.
PAD_PIECE, UNK_PIECE, START_PIECE, END_PIECE = "[PAD]", "[UNK]", "[CLS]", "[SEP]"
SPECIAL_PIECES = (PAD_PIECE, UNK_PIECE, START_PIECE, END_PIECE)
WORD_CACHE = 50_000  # words whose pieces a tokenizer keeps (emptied when full): about 5 MB


class WordPieces:
    """A WordPiece tokenizer (``tokenizer.json`` of a BERT) applied to words already cut by a word tokenizer."""

    def __init__(self, definition: dict, source: str = "tokenizer.json"):
        model = definition.get("model") or {}
        if model.get("type") != "WordPiece" or not isinstance(model.get("vocab"), dict):
            raise ConfigError(f"{source}: not a WordPiece tokenizer (model type {model.get('type')!r})")
        missing = [piece for piece in SPECIAL_PIECES if piece not in model["vocab"]]
        if missing:
            raise ConfigError(f"{source}: the vocabulary lacks BERT's {', '.join(missing)}")
        # Only the pieces: no padding or truncation, no [CLS]/[SEP] template, no special tokens matched in text.
        self.definition = {**definition, "truncation": None, "padding": None, "post_processor": None, "added_tokens": []}
        self.vocabulary: dict[str, int] = dict(model["vocab"])
        self.tokenizer = Tokenizer.from_str(json.dumps(self.definition))
        self._word_cache: dict[str, tuple[str, ...]] = {}  # word -> its pieces (split_words)

    @classmethod
    def from_file(cls, path: str | Path) -> "WordPieces":
        path = Path(path)
        try:
            definition = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ConfigError(f"{path}: cannot read a tokenizer ({error})") from error
        return cls(definition, str(path))

    def split_words(self, words: Sequence[str]) -> list[tuple[str, ...]]:
        """Each word's pieces (continuations prefixed ``##``; unknown: ``[UNK]``; a word the normalizer empties:
        none). Words already cut are split one by one (BERT's normalizer, pre-tokenizer and WordPiece never look
        across them), so each word's pieces are kept (``WORD_CACHE`` words): a served turn then costs dictionary
        lookups, where the library's call costs 15 us and its batch call 110 us (a thread pool woken per call)."""
        cache = self._word_cache
        found = {word: cache.get(word) for word in words}
        missing = [word for word, pieces in found.items() if pieces is None]
        if missing:
            encoded = self.tokenizer.encode(missing, is_pretokenized=True, add_special_tokens=False)
            split: dict[str, list[str]] = {word: [] for word in missing}
            for piece, index in zip(encoded.tokens, encoded.word_ids):
                split[missing[index]].append(piece)
            if len(cache) + len(missing) > WORD_CACHE:
                cache.clear()
            for word in missing:
                found[word] = cache[word] = tuple(split[word])
        return [found[word] for word in words]  # type: ignore[misc]

    def split(self, words: Sequence[str]) -> list[str]:
        """One turn's words -> its pieces."""
        return [piece for pieces in self.split_words(words) for piece in pieces]

    def split_many(self, turns: Sequence[Sequence[str]]) -> list[list[str]]:
        """Many turns' words -> each turn's pieces."""
        return [self.split(turn) for turn in turns]

    def kept(self, pieces: Sequence[str]) -> "WordPieces":
        """The same tokenizer over ``pieces`` (its ids in that order), BERT's markers and every ASCII single-character
        piece of this vocabulary added (so that any English word splits into kept pieces)."""
        keep = list(dict.fromkeys([*SPECIAL_PIECES, *pieces, *(p for p in self.vocabulary if single_character(p))]))
        unknown = [p for p in keep if p not in self.vocabulary]
        if unknown:
            raise ValueError(f"pieces not in the vocabulary: {', '.join(unknown[:5])}")
        model = {**self.definition["model"], "vocab": {piece: i for i, piece in enumerate(keep)}}
        return WordPieces({**self.definition, "model": model})

    def to_json(self) -> str:
        return json.dumps(self.definition, ensure_ascii=False)


def single_character(piece: str) -> bool:
    """An ASCII character alone, as a word's start or as a continuation (``a``, ``##a``)."""
    character = piece.removeprefix("##")
    return len(character) == 1 and character.isascii()


def turn_pieces(pieces: Sequence[str], max_words: int) -> list[str]:
    """A turn's pieces as a model reads them after its start marker (the exported model prepends the marker): the
    first ``max_words - 2`` pieces and the end marker ``[SEP]``, as BERT was trained to read a sentence."""
    return [*pieces[:max_words - 2], END_PIECE]

"""Length-bucketed batches of encoded sentences as a ``keras.utils.PyDataset`` (any Keras backend).

Sentences are sorted by length and cut into batches, so each batch is padded only to its own
longest sentence and word. Batch order is shuffled before the first epoch and after each one. No axis
depends on the first batches' shapes (``training.common.batching.ShapeGuardedBatches``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.common.batching import ShapeGuardedBatches, round_up
from training.common.vocab import PAD_ID, UNK_ID


@dataclass(frozen=True)
class EncodedSentence:
    word_ids: np.ndarray  # int32[time]
    char_ids: np.ndarray  # int32[time, chars]
    tag_ids: np.ndarray  # int32[time]
    pretrained_ids: np.ndarray | None = None  # int32[time]: rows of the pretrained table (models with vectors)
    condition_id: int | None = None  # span models with an "embedding" condition: the sentence's condition


def pad_batch(sentences: list[EncodedSentence], multiple: int = 1,
              shape: tuple[int, int] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """-> inputs {word_ids int32[B, T], char_ids int32[B, T, C] (, pretrained_ids int32[B, T], condition_ids int32[B])},
    tag ids int32[B, T],
    weights float32[B, T]; T and C are the longest sentence and word rounded up to ``multiple``, or ``shape`` =
    (T, C) where given."""
    time, chars = shape or sentences_shape(sentences, multiple)
    word_ids = np.full((len(sentences), time), PAD_ID, dtype=np.int32)
    char_ids = np.full((len(sentences), time, chars), PAD_ID, dtype=np.int32)
    tag_ids = np.zeros((len(sentences), time), dtype=np.int32)
    with_pretrained = sentences[0].pretrained_ids is not None
    pretrained_ids = np.full((len(sentences), time), PAD_ID, dtype=np.int32) if with_pretrained else None
    for row, sentence in enumerate(sentences):
        length = len(sentence.word_ids)
        word_ids[row, :length] = sentence.word_ids
        char_ids[row, :length, :sentence.char_ids.shape[1]] = sentence.char_ids
        tag_ids[row, :length] = sentence.tag_ids
        if with_pretrained:
            pretrained_ids[row, :length] = sentence.pretrained_ids
    weights = (word_ids != PAD_ID).astype(np.float32)
    inputs = {"word_ids": word_ids, "char_ids": char_ids}
    if with_pretrained:
        inputs["pretrained_ids"] = pretrained_ids
    if sentences[0].condition_id is not None:
        inputs["condition_ids"] = np.array([s.condition_id for s in sentences], dtype=np.int32)
    return inputs, tag_ids, weights


def sentences_shape(sentences: list[EncodedSentence], multiple: int = 1) -> tuple[int, int]:
    """(time, characters): the longest sentence and word (at least 1), rounded up to ``multiple``."""
    time = round_up(max(len(s.word_ids) for s in sentences), multiple)
    chars = round_up(max(max((s.char_ids.shape[1] for s in sentences), default=1), 1), multiple)
    return time, chars


class BucketedBatches(ShapeGuardedBatches):
    """Batches of sentences of similar length; ``word_dropout`` replaces known words by <unk>. Variable axes: time
    and characters per word (``ShapeGuardedBatches``)."""

    def __init__(self, sentences: list[EncodedSentence], batch_size: int, *, shuffle: bool,
                 word_dropout: float = 0.0, seed: int = 0, multiple: int = 1):
        super().__init__(multiple)
        if not sentences:
            raise ValueError("no sentences to batch")
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i].word_ids))
        self.sentences = sentences
        self.batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        self.shuffle = shuffle
        self.word_dropout = word_dropout
        self.rng = np.random.default_rng(seed)
        if shuffle:
            self.rng.shuffle(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def variable_shape(self, index: int) -> tuple[int, int]:
        return sentences_shape([self.sentences[i] for i in self.batches[index]], self.multiple)

    def padded_batch(self, index: int, shape: tuple[int, int]):
        inputs, tag_ids, weights = pad_batch([self.sentences[i] for i in self.batches[index]], self.multiple, shape)
        if self.word_dropout > 0:
            word_ids = inputs["word_ids"]
            drop = (self.rng.random(word_ids.shape) < self.word_dropout) & (word_ids > UNK_ID)
            inputs["word_ids"] = np.where(drop, UNK_ID, word_ids).astype(np.int32)
        return inputs, tag_ids, weights

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self.rng.shuffle(self.batches)

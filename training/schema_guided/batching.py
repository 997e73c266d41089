"""Batches of cached encoder states for the span head: turns of similar length together, every variable axis guarded.

Variable axes: pieces per turn (P), words per turn (W), and slots per service (K): all three are padded per batch and
guarded against TensorFlow freezing them (``training.common.batching.ShapeGuardedBatches``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from training.common.batching import ShapeGuardedBatches
from training.schema_guided.data import SchemaTurn


class EncodedTurns:
    """Turns' encoder states kept as one float16 array: turn i's states are ``states[offsets[i]:offsets[i + 1]]``."""

    def __init__(self, states: np.ndarray, offsets: Sequence[int], word_starts: Sequence[Sequence[int]]):
        self.states = states  # float16[total pieces, E]
        self.offsets = list(offsets)
        self.word_starts = [list(s) for s in word_starts]

    def pieces(self, i: int) -> int:
        return self.offsets[i + 1] - self.offsets[i]


class SpanBatches(ShapeGuardedBatches):
    """Inputs ``states [B, P, E]``, ``word_starts [B, W]``, ``slot_vectors [B, K, E]``, ``slot_mask [B, K]``; targets
    ``[B, W]`` (0 O, 1 + 2k B of slot k, 2 + 2k I of slot k); weights ``[B, W]`` (1 on real words)."""

    def __init__(self, turns: Sequence[SchemaTurn], encoded: EncodedTurns, slots: dict[str, tuple[list[str], np.ndarray]],
                 batch_size: int, shuffle: bool, seed: int = 0, multiple: int = 1):
        super().__init__(multiple)
        self.turns, self.encoded, self.slots = turns, encoded, slots  # slots: service -> (names, vectors [K, E])
        self.batch_size, self.shuffle = batch_size, shuffle
        self.rng = np.random.default_rng(seed)
        self.size = encoded.states.shape[-1]
        self.order = self._order()

    def _order(self) -> list[list[int]]:
        rows = sorted(range(len(self.turns)), key=lambda i: len(self.turns[i].words))
        batches = [rows[i:i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
        if self.shuffle:
            self.rng.shuffle(batches)
        return batches

    def on_epoch_end(self) -> None:
        self.order = self._order()

    def __len__(self) -> int:
        return len(self.order)

    def variable_shape(self, index: int) -> tuple[int, ...]:
        rows = self.order[index]
        return (max(self.encoded.pieces(i) for i in rows), max(len(self.turns[i].words) for i in rows),
                max(max(len(self.slots[self.turns[i].service][0]) for i in rows), 1))

    def padded_batch(self, index: int, shape: tuple[int, ...]):
        pieces, words, k = shape
        rows = self.order[index]
        n = len(rows)
        states = np.zeros((n, pieces, self.size), np.float32)
        starts = np.full((n, words), -1, np.int32)
        slot_vectors = np.zeros((n, k, self.size), np.float32)
        slot_mask = np.zeros((n, k), np.float32)
        targets = np.zeros((n, words), np.int32)
        for b, i in enumerate(rows):
            turn, first = self.turns[i], self.encoded.offsets[i]
            states[b, :self.encoded.pieces(i)] = self.encoded.states[first:self.encoded.offsets[i + 1]]
            starts[b, :len(turn.words)] = self.encoded.word_starts[i]
            names, vectors = self.slots[turn.service]
            slot_vectors[b, :len(names)] = vectors
            slot_mask[b, :len(names)] = 1.0
            for slot, begin, end in turn.spans:
                if slot not in names:  # a gold span of another service's slot: nothing here can name it
                    continue
                column = names.index(slot)
                targets[b, begin] = 1 + 2 * column
                targets[b, begin + 1:end] = 2 + 2 * column
        weights = (starts >= 0).astype(np.float32)
        return ({"states": states, "word_starts": starts, "slot_vectors": slot_vectors, "slot_mask": slot_mask},
                targets, weights)

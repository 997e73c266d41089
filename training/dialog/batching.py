"""Batches of whole encoded dialogs as a ``keras.utils.PyDataset`` (any Keras backend).

Arrays of a batch of B dialogs, padded to its longest dialog (D turns) and longest turn (W words):
    word_ids          int32[B, D, W]   (padding turns hold the start-of-turn marker; their speaker id is 0)
    (or, for an encoder model's turn-level stage, utterance_vectors float32[B, D, E] in place of word ids)
    speaker_ids       int32[B, D]
    previous_actions  float32[B, D, L] (dialog-action: the previous turn's gold actions)
    targets           int32[B, D] or float32[B, D, L];  weights float32[B, D] (0: padding or unlabelled)
"""

from __future__ import annotations

import numpy as np

from training.common.batching import ShapeGuardedBatches, round_up
from training.common.vocab import PAD_ID, UNK_ID
from training.dialog.vocab import TURN_START_ID, EncodedDialog


def previous_actions(targets: np.ndarray) -> np.ndarray:
    """Each turn's input bits: the previous turn's gold actions (what the system did), zeros first. [D, L]."""
    shifted = np.zeros_like(targets)
    shifted[1:] = targets[:-1]
    return shifted


def dialogs_shape(dialogs: list[EncodedDialog], multiple: int = 1) -> tuple[int, int]:
    """(turns, words): the longest dialog and turn, rounded up to ``multiple``."""
    return (round_up(max(len(d.speaker_ids) for d in dialogs), multiple),
            round_up(max(d.word_ids.shape[1] for d in dialogs), multiple))


def pad_dialogs(dialogs: list[EncodedDialog], multi_label: bool, multiple: int = 1,
                shape: tuple[int, int] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """-> inputs {word_ids [B, D, W], speaker_ids [B, D], (pretrained_ids [B, D, W]), (previous_actions [B, D, L])},
    targets, weights [B, D];
    D and W are the longest dialog and turn, rounded up to ``multiple`` (``training.common.batching.shape_multiple``),
    or ``shape`` = (D, W) where given."""
    turns, words = shape or dialogs_shape(dialogs, multiple)
    batch = len(dialogs)
    # Padding turns hold the start marker too: no utterance is ever fully masked (cuDNN rejects those);
    # their speaker id 0 marks them as padding.
    word_ids = np.zeros((batch, turns, words), dtype=np.int32)
    word_ids[:, :, 0] = TURN_START_ID
    with_pretrained = dialogs[0].pretrained_ids is not None
    pretrained_ids = np.zeros((batch, turns, words), dtype=np.int32) if with_pretrained else None
    if with_pretrained:
        pretrained_ids[:, :, 0] = UNK_ID  # the start marker's row, as encode_turn_pretrained gives it
    speaker_ids = np.full((batch, turns), PAD_ID, dtype=np.int32)
    weights = np.zeros((batch, turns), dtype=np.float32)
    targets = np.zeros((batch, turns, dialogs[0].targets.shape[1]) if multi_label else (batch, turns),
                       dtype=dialogs[0].targets.dtype)
    actions = np.zeros_like(targets) if multi_label else None
    for row, dialog in enumerate(dialogs):
        d, w = dialog.word_ids.shape
        word_ids[row, :d, :w] = dialog.word_ids
        if with_pretrained:
            pretrained_ids[row, :d, :w] = dialog.pretrained_ids
        speaker_ids[row, :d] = dialog.speaker_ids
        weights[row, :d] = dialog.labeled
        targets[row, :d] = dialog.targets
        if multi_label:
            actions[row, :d] = previous_actions(dialog.targets)
    inputs = {"word_ids": word_ids, "speaker_ids": speaker_ids}
    if dialogs[0].utterance_vectors is not None:  # each turn's pooled encoder vector, not its pieces
        vectors = np.zeros((batch, turns, dialogs[0].utterance_vectors.shape[1]), dtype=np.float32)
        for row, dialog in enumerate(dialogs):
            vectors[row, :len(dialog.utterance_vectors)] = dialog.utterance_vectors
        inputs = {"utterance_vectors": vectors, "speaker_ids": speaker_ids}
    if with_pretrained:
        inputs["pretrained_ids"] = pretrained_ids
    if multi_label:
        inputs["previous_actions"] = actions
    return inputs, targets, weights


class DialogBatches(ShapeGuardedBatches):
    """Whole dialogs of similar length, about ``batch_turns`` turns a batch; shuffled batch order per epoch.
    Variable axes: turns per dialog and words per turn (``ShapeGuardedBatches``)."""

    def __init__(self, dialogs: list[EncodedDialog], batch_turns: int, multi_label: bool, *, shuffle: bool,
                 word_dropout: float = 0.0, seed: int = 0, multiple: int = 1):
        super().__init__(multiple)
        if not dialogs:
            raise ValueError("no dialogs to batch")
        self.dialogs = dialogs
        self.multi_label = multi_label
        order = sorted(range(len(dialogs)), key=lambda i: len(dialogs[i].speaker_ids))
        self.batches: list[list[int]] = []
        current: list[int] = []
        for i in order:
            # Padded size if i joins: the batch's dialogs all grow to i's length (the longest so far).
            if current and (len(current) + 1) * len(dialogs[i].speaker_ids) > batch_turns:
                self.batches.append(current)
                current = []
            current.append(i)
        self.batches.append(current)
        self.shuffle = shuffle
        self.word_dropout = word_dropout
        self.rng = np.random.default_rng(seed)
        if shuffle:
            self.rng.shuffle(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def variable_shape(self, index: int) -> tuple[int, int]:
        return dialogs_shape([self.dialogs[i] for i in self.batches[index]], self.multiple)

    def padded_batch(self, index: int, shape: tuple[int, int]):
        inputs, targets, weights = pad_dialogs([self.dialogs[i] for i in self.batches[index]], self.multi_label,
                                               self.multiple, shape)
        if self.word_dropout > 0 and "word_ids" in inputs:
            word_ids = inputs["word_ids"]
            drop = (self.rng.random(word_ids.shape) < self.word_dropout) & (word_ids > TURN_START_ID)
            inputs["word_ids"] = np.where(drop, UNK_ID, word_ids).astype(np.int32)
        return inputs, targets, weights

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self.rng.shuffle(self.batches)

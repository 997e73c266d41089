"""Dialog vocabularies, the turn-to-id preprocessing shared by training and serving, and batches of dialogs.

A turn's text is tokenized by ``training.tokenizer`` (the service's tokenizer), words are normalized as
for the POS tagger (``training.vocab.normalize_word``), and every turn starts with the start-of-turn
marker (id ``TURN_START_ID``), so an empty utterance is still a turn with one word. Ids: words and
speakers reserve 0 (padding) and 1 (unknown); a padding turn is the one whose speaker id is 0. The
exported SavedModel repeats these rules with ``tf.strings`` ops (``training.dialog_export``), and a test
checks that both encodings agree.

Arrays of one dialog with D turns (``EncodedDialog``):
    word_ids     int32[D, W]  (W <= max_words; position 0 is the start-of-turn marker)
    speaker_ids  int32[D]
    targets      int32[D] label ids (dialog acts) or float32[D, L] bits (actions)
    labeled      float32[D]   0 where the turn has no gold label (not trained on, not scored)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import keras
import numpy as np

from training.batching import round_up
from training.dialog_data import Dialog
from training.tokenizer import tokenize
from training.vocab import PAD_ID, PAD_TOKEN, UNK_ID, UNK_TOKEN, Vocab, normalize_word

TURN_START = "<s>"
TURN_START_ID = 2  # words: 0 padding, 1 unknown, 2 start of turn


def turn_tokens(text: str) -> list[str]:
    """Raw turn text -> word tokens, as the service tokenizes it."""
    return [token.text for token in tokenize(text)]


@dataclass(frozen=True)
class DialogVocabs:
    words: Vocab  # normalized words; TURN_START at TURN_START_ID
    speakers: Vocab  # speaker names ("" is never an entry: it reads as unknown)
    labels: Vocab  # output labels, sorted, no reserved ids

    @classmethod
    def build(cls, dialogs: Sequence[Dialog], tokenized: Sequence[Sequence[list[str]]], min_word_count: int) -> "DialogVocabs":
        word_counts: Counter = Counter()
        speakers: Counter = Counter()
        labels: set[str] = set()
        for dialog, turns in zip(dialogs, tokenized):
            for turn, tokens in zip(dialog.turns, turns):
                word_counts.update(normalize_word(t) for t in tokens)
                if turn.speaker:
                    speakers[turn.speaker] += 1
                labels.update(turn.labels or ())
        kept = sorted((w for w, n in word_counts.items() if n >= min_word_count and w not in (PAD_TOKEN, UNK_TOKEN, TURN_START)),
                      key=lambda w: (-word_counts[w], w))
        return cls(Vocab((PAD_TOKEN, UNK_TOKEN, TURN_START, *kept)), Vocab.build(speakers, 1), Vocab.labels(labels))

    def to_dict(self) -> dict:
        return {"words": list(self.words.items), "speakers": list(self.speakers.items), "labels": list(self.labels.items)}

    @classmethod
    def from_dict(cls, data: dict) -> "DialogVocabs":
        return cls(Vocab(tuple(data["words"])), Vocab(tuple(data["speakers"])), Vocab(tuple(data["labels"]), reserved=False))


def encode_turn_words(tokens: Sequence[str], vocabs: DialogVocabs, max_words: int) -> np.ndarray:
    """One turn's tokens -> ``int32[<= max_words]``: the start marker, then the first max_words - 1 words."""
    return np.array([TURN_START_ID] + [vocabs.words.id(normalize_word(t)) for t in tokens[:max_words - 1]], dtype=np.int32)


def speaker_id(speaker: str, vocabs: DialogVocabs) -> int:
    return vocabs.speakers.id(speaker) if speaker else UNK_ID


@dataclass(frozen=True)
class EncodedDialog:
    word_ids: np.ndarray  # int32[D, W]
    speaker_ids: np.ndarray  # int32[D]
    targets: np.ndarray  # int32[D] or float32[D, L]
    labeled: np.ndarray  # float32[D]


def encode_dialog(dialog: Dialog, tokens: Sequence[list[str]], vocabs: DialogVocabs, max_words: int,
                  multi_label: bool) -> EncodedDialog:
    turns = [encode_turn_words(t, vocabs, max_words) for t in tokens]
    word_ids = np.zeros((len(turns), max(len(t) for t in turns)), dtype=np.int32)
    for i, ids in enumerate(turns):
        word_ids[i, :len(ids)] = ids
    speaker_ids = np.array([speaker_id(t.speaker, vocabs) for t in dialog.turns], dtype=np.int32)
    labeled = np.array([t.labels is not None for t in dialog.turns], dtype=np.float32)
    if multi_label:
        targets = np.zeros((len(turns), len(vocabs.labels)), dtype=np.float32)
        for i, turn in enumerate(dialog.turns):
            for label in turn.labels or ():
                if label in vocabs.labels:  # a label never seen in train cannot be predicted
                    targets[i, vocabs.labels.id(label)] = 1.0
    else:
        targets = np.zeros(len(turns), dtype=np.int32)
        for i, turn in enumerate(dialog.turns):
            if turn.labels and turn.labels[0] in vocabs.labels:
                targets[i] = vocabs.labels.id(turn.labels[0])
            elif turn.labels:
                labeled[i] = 0.0  # unseen in train: no gradient (still scored as wrong by evaluation)
    return EncodedDialog(word_ids, speaker_ids, targets, labeled)


def previous_actions(targets: np.ndarray) -> np.ndarray:
    """Each turn's input bits: the previous turn's gold actions (what the system did), zeros first. [D, L]."""
    shifted = np.zeros_like(targets)
    shifted[1:] = targets[:-1]
    return shifted


def pad_dialogs(dialogs: list[EncodedDialog], multi_label: bool,
                multiple: int = 1) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """-> inputs {word_ids [B, D, W], speaker_ids [B, D], (previous_actions [B, D, L])}, targets, weights [B, D];
    D and W are the longest dialog and turn, rounded up to ``multiple`` (``training.batching.shape_multiple``)."""
    turns = round_up(max(len(d.speaker_ids) for d in dialogs), multiple)
    words = round_up(max(d.word_ids.shape[1] for d in dialogs), multiple)
    batch = len(dialogs)
    # Padding turns hold the start marker too: no utterance is ever fully masked (cuDNN rejects those);
    # their speaker id 0 marks them as padding.
    word_ids = np.zeros((batch, turns, words), dtype=np.int32)
    word_ids[:, :, 0] = TURN_START_ID
    speaker_ids = np.full((batch, turns), PAD_ID, dtype=np.int32)
    weights = np.zeros((batch, turns), dtype=np.float32)
    targets = np.zeros((batch, turns, dialogs[0].targets.shape[1]) if multi_label else (batch, turns),
                       dtype=dialogs[0].targets.dtype)
    actions = np.zeros_like(targets) if multi_label else None
    for row, dialog in enumerate(dialogs):
        d, w = dialog.word_ids.shape
        word_ids[row, :d, :w] = dialog.word_ids
        speaker_ids[row, :d] = dialog.speaker_ids
        weights[row, :d] = dialog.labeled
        targets[row, :d] = dialog.targets
        if multi_label:
            actions[row, :d] = previous_actions(dialog.targets)
    inputs = {"word_ids": word_ids, "speaker_ids": speaker_ids}
    if multi_label:
        inputs["previous_actions"] = actions
    return inputs, targets, weights


class DialogBatches(keras.utils.PyDataset):
    """Whole dialogs of similar length, about ``batch_turns`` turns a batch; shuffled batch order per epoch.

    Under TensorFlow, ``fit`` fixes input shapes from the first two batches, so those two differ in
    both the turn and the word axis.
    """

    def __init__(self, dialogs: list[EncodedDialog], batch_turns: int, multi_label: bool, *, shuffle: bool,
                 word_dropout: float = 0.0, seed: int = 0, multiple: int = 1):
        super().__init__()
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
        self.multiple = multiple  # padded lengths rounded up to it
        self.rng = np.random.default_rng(seed)
        if shuffle:
            self._shuffle_batches()

    def _shape(self, batch: list[int]) -> tuple[int, int]:
        return (max(len(self.dialogs[i].speaker_ids) for i in batch), max(self.dialogs[i].word_ids.shape[1] for i in batch))

    def _shuffle_batches(self) -> None:
        self.rng.shuffle(self.batches)
        first = self._shape(self.batches[0])
        if len(self.batches) > 2 and any(a == b for a, b in zip(first, self._shape(self.batches[1]))):
            for j in range(2, len(self.batches)):
                if all(a != b for a, b in zip(first, self._shape(self.batches[j]))):
                    self.batches[1], self.batches[j] = self.batches[j], self.batches[1]
                    break

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int):
        inputs, targets, weights = pad_dialogs([self.dialogs[i] for i in self.batches[index]], self.multi_label,
                                               self.multiple)
        if self.word_dropout > 0:
            word_ids = inputs["word_ids"]
            drop = (self.rng.random(word_ids.shape) < self.word_dropout) & (word_ids > TURN_START_ID)
            inputs["word_ids"] = np.where(drop, UNK_ID, word_ids).astype(np.int32)
        return inputs, targets, weights

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self._shuffle_batches()

"""Dialog vocabularies and the turn-to-id preprocessing shared by training and serving.

A turn's text is tokenized by the config's tokenizer (``training.common.tokenizer``: the service reads a model's
turns with the same one), words are normalized by ``training.common.vocab.normalize_word``, and every turn starts with the start-of-turn marker (id
``TURN_START_ID``), so an empty utterance is still a turn with one word. Ids: words and speakers reserve 0
(padding) and 1 (unknown); a padding turn is the one whose speaker id is 0 (``training.dialog.batching``).
The exported SavedModel repeats these rules with ``tf.strings`` ops (``training.dialog.export``), and a test
checks that both encodings agree.

A model with a pretrained utterance encoder reads word pieces instead (``build_pieces``, ``piece_turns``): each
turn's words are split by the encoder's WordPiece tokenizer (``training.common.word_pieces``), ended by ``[SEP]``,
and looked up as they are (not normalized); the start marker stands for the encoder's ``[CLS]``.

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

import numpy as np

from training.common.tokenizer import DEFAULT_TOKENIZER, get_tokenizer
from training.common.vectors import KeptVectors
from training.common.vocab import PAD_TOKEN, UNK_ID, UNK_TOKEN, Vocab, normalize_word
from training.common.word_pieces import PAD_PIECE, START_PIECE, UNK_PIECE, WordPieces, turn_pieces
from training.dialog.data import Dialog

TURN_START = "<s>"
TURN_START_ID = 2  # words: 0 padding, 1 unknown, 2 start of turn


def turn_tokens(text: str, tokenizer: str = DEFAULT_TOKENIZER) -> list[str]:
    """Raw turn text -> word tokens, as the service tokenizes it for a model trained with ``tokenizer``."""
    return [token.text for token in get_tokenizer(tokenizer).tokenize(text)]


@dataclass(frozen=True)
class DialogVocabs:
    words: Vocab  # normalized words; TURN_START at TURN_START_ID
    speakers: Vocab  # speaker names ("" is never an entry: it reads as unknown)
    labels: Vocab  # output labels, sorted, no reserved ids
    pretrained: KeptVectors | None = None  # the pretrained table's kept words and their rows, if the model has one
    # A model with a pretrained sentence encoder (training.common.text_encoder) reads word pieces: ``words`` are then
    # the kept pieces (not normalized; TURN_START is the encoder's [CLS]), split by ``word_pieces``, and
    # ``encoder_shape`` (an EncoderShape's dict) builds the encoder again.
    word_pieces: WordPieces | None = None
    encoder_shape: dict | None = None

    @classmethod
    def build(cls, dialogs: Sequence[Dialog], tokenized: Sequence[Sequence[list[str]]], min_word_count: int) -> "DialogVocabs":
        word_counts = Counter(normalize_word(t) for turns in tokenized for tokens in turns for t in tokens)
        kept = sorted((w for w, n in word_counts.items() if n >= min_word_count and w not in (PAD_TOKEN, UNK_TOKEN, TURN_START)),
                      key=lambda w: (-word_counts[w], w))
        return cls(Vocab((PAD_TOKEN, UNK_TOKEN, TURN_START, *kept)), *speakers_and_labels(dialogs))

    @classmethod
    def build_pieces(cls, dialogs: Sequence[Dialog], pieces: Sequence[Sequence[list[str]]], word_pieces: WordPieces,
                     encoder_shape: dict, min_count: int) -> tuple["DialogVocabs", list[int]]:
        """Vocabularies of an encoder model, from its training turns' ``pieces`` as the encoder's whole tokenizer
        splits them (``piece_turns``): the pieces seen ``min_count`` times or more are kept (``WordPieces.kept``)
        -> (vocabularies, each word id's row in the encoder's published embedding)."""
        counts = Counter(p for turns in pieces for turn in turns for p in turn)
        used = [p for p in counts if counts[p] >= min_count]
        kept = word_pieces.kept(sorted(used, key=lambda p: word_pieces.vocabulary[p]))
        words = [p for p in kept.vocabulary if p not in (PAD_PIECE, UNK_PIECE, START_PIECE)]
        rows = [word_pieces.vocabulary[p] for p in (PAD_PIECE, UNK_PIECE, START_PIECE, *words)]
        return cls(Vocab((PAD_TOKEN, UNK_TOKEN, TURN_START, *words)), *speakers_and_labels(dialogs),
                   word_pieces=kept, encoder_shape=encoder_shape), rows

    def to_dict(self) -> dict:
        data = {"words": list(self.words.items), "speakers": list(self.speakers.items), "labels": list(self.labels.items)}
        if self.pretrained is not None:
            data["pretrained"] = self.pretrained.to_dict()
        if self.word_pieces is not None:
            data["word_pieces"] = self.word_pieces.definition
            data["encoder_shape"] = self.encoder_shape
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "DialogVocabs":
        pretrained = KeptVectors.from_dict(data["pretrained"]) if data.get("pretrained") else None
        word_pieces = WordPieces(data["word_pieces"], "vocabularies") if data.get("word_pieces") else None
        return cls(Vocab(tuple(data["words"])), Vocab(tuple(data["speakers"])), Vocab(tuple(data["labels"]), reserved=False),
                   pretrained, word_pieces, data.get("encoder_shape"))

    def with_pretrained(self, pretrained: KeptVectors | None) -> "DialogVocabs":
        return DialogVocabs(self.words, self.speakers, self.labels, pretrained, self.word_pieces, self.encoder_shape)


def speakers_and_labels(dialogs: Sequence[Dialog]) -> tuple[Vocab, Vocab]:
    """The speakers of ``dialogs`` ("" is never an entry) and their labels, sorted."""
    speakers = Counter(turn.speaker for dialog in dialogs for turn in dialog.turns if turn.speaker)
    labels = {label for dialog in dialogs for turn in dialog.turns for label in (turn.labels or ())}
    return Vocab.build(speakers, 1), Vocab.labels(labels)


def piece_turns(tokenized: Sequence[Sequence[list[str]]], word_pieces: WordPieces, max_words: int) -> list[list[list[str]]]:
    """Dialogs of word-tokenized turns -> the pieces each turn is read as (``turn_pieces``: at most max_words - 2, then
    [SEP]); the service splits a turn's words the same way (``training.dialog.saved_dialog``)."""
    flat = word_pieces.split_many([turn for turns in tokenized for turn in turns])
    pieces, start = [], 0
    for turns in tokenized:
        pieces.append([turn_pieces(p, max_words) for p in flat[start:start + len(turns)]])
        start += len(turns)
    return pieces


def encode_turn_words(tokens: Sequence[str], vocabs: DialogVocabs, max_words: int) -> np.ndarray:
    """One turn's tokens -> ``int32[<= max_words]``: the start marker, then the first max_words - 1 words (pieces:
    as they are, not normalized)."""
    key = normalize_word if vocabs.word_pieces is None else str
    return np.array([TURN_START_ID] + [vocabs.words.id(key(t)) for t in tokens[:max_words - 1]], dtype=np.int32)


def encode_turn_pretrained(tokens: Sequence[str], vocabs: DialogVocabs, max_words: int) -> np.ndarray:
    """One turn's tokens -> the kept vector table's rows ``int32[<= max_words]``, aligned with
    ``encode_turn_words``: the start marker has no vector (row 1, zeros)."""
    return np.array([UNK_ID] + [vocabs.pretrained.id(t) for t in tokens[:max_words - 1]], dtype=np.int32)


def speaker_id(speaker: str, vocabs: DialogVocabs) -> int:
    return vocabs.speakers.id(speaker) if speaker else UNK_ID


@dataclass(frozen=True)
class EncodedDialog:
    word_ids: np.ndarray  # int32[D, W]
    speaker_ids: np.ndarray  # int32[D]
    targets: np.ndarray  # int32[D] or float32[D, L]
    labeled: np.ndarray  # float32[D]
    pretrained_ids: np.ndarray | None = None  # int32[D, W]: rows of the kept vector table (models with vectors)
    # float32[D, E]: each turn's pooled encoder vector, in place of word ids (an encoder model's turn-level training)
    utterance_vectors: np.ndarray | None = None


def encode_dialog(dialog: Dialog, tokens: Sequence[list[str]], vocabs: DialogVocabs, max_words: int,
                  multi_label: bool) -> EncodedDialog:
    turns = [encode_turn_words(t, vocabs, max_words) for t in tokens]
    word_ids = np.zeros((len(turns), max(len(t) for t in turns)), dtype=np.int32)
    for i, ids in enumerate(turns):
        word_ids[i, :len(ids)] = ids
    pretrained_ids = None
    if vocabs.pretrained is not None:
        pretrained_ids = np.zeros_like(word_ids)
        for i, t in enumerate(tokens):
            ids = encode_turn_pretrained(t, vocabs, max_words)
            pretrained_ids[i, :len(ids)] = ids
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
    return EncodedDialog(word_ids, speaker_ids, targets, labeled, pretrained_ids)

"""Words -> the encoder's word pieces with each word's first piece: what training and serving both feed the model.

    words ["Book", "Sino", "at", "7pm"] -> [CLS] book si ##no at 7 ##pm [SEP]   ids   [P]
                                           word_starts [1, 2, 4, 5]              (a word's first piece)

At most ``max_pieces`` pieces with the markers; the words past that are cut (``word_starts`` -1 for them: they are
tagged O). A word whose pieces the tokenizer drops (control characters only) points at its neighbour's piece.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from training.common.word_pieces import END_PIECE, START_PIECE, WordPieces


def piece_rows(word_pieces: WordPieces, turns: Sequence[Sequence[str]], max_pieces: int) -> list[tuple[list[int], list[int]]]:
    """Per turn: (piece ids with [CLS] and [SEP], the first piece of each word or -1 past the cut)."""
    vocabulary = word_pieces.vocabulary
    start, end = vocabulary[START_PIECE], vocabulary[END_PIECE]
    rows = []
    for words in turns:
        pieces, word_ids = [], []  # the turn's pieces, and the word each comes from
        for index, word in enumerate(word_pieces.split_words(list(words) if words else ["."])):
            pieces.extend(vocabulary[piece] for piece in word)
            word_ids.extend([index] * len(word))
        ids = [start, *pieces[:max_pieces - 2], end]
        firsts: dict[int, int] = {}
        for position, word in enumerate(word_ids[:max_pieces - 2], start=1):
            if word not in firsts:
                firsts[word] = position
        starts, last = [], 1
        for w in range(len(words)):
            if w in firsts:
                last = firsts[w]
                starts.append(last)
            else:  # cut, or no piece of its own
                starts.append(-1 if w > max(firsts, default=-1) else last)
        rows.append((ids, starts))
    return rows


def pad_rows(rows: Sequence[tuple[list[int], list[int]]]) -> tuple[np.ndarray, np.ndarray]:
    """-> ids int32[B, P] (0 pads: [PAD] is id 0 in BERT vocabularies), word_starts int32[B, W] (-1 pads)."""
    pieces = max(len(ids) for ids, _ in rows)
    words = max(max(len(starts) for _, starts in rows), 1)
    ids_array = np.zeros((len(rows), pieces), np.int32)
    starts_array = np.full((len(rows), words), -1, np.int32)
    for i, (ids, starts) in enumerate(rows):
        ids_array[i, :len(ids)] = ids
        starts_array[i, :len(starts)] = starts
    return ids_array, starts_array

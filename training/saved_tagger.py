"""An exported tagger SavedModel as a Python object: tag lists of token lists in length-sorted batches.

Used by evaluation and by the service, so both call the model exactly as a deployed consumer would.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf

from training import artifacts
from training.vocab import PAD_TOKEN, UNK_ID

logger = logging.getLogger(__name__)


def default_intra_op_threads() -> int:
    """Threads per TensorFlow op: half the usable cores, since two inter-op threads run ops side by side."""
    return max(1, len(os.sched_getaffinity(0)) // 2)


def set_tensorflow_threads(inter_op: int = 2, intra_op: int = 0) -> bool:
    """Thread pools for serving: ``inter_op`` ops at once, each on ``intra_op`` threads (0: half the cores).

    Two inter-op threads let the two directions of each BiLSTM (independent loops in the serving graph)
    run at once; on 2 cores, 2 x 1 tags about 20 % more tokens/s than TensorFlow's default pools
    (``benchmarks/inprocess_tagging.py``). Only possible before TensorFlow first runs an op: returns
    False (and logs) when too late, leaving the pools as they are.
    """
    intra_op = intra_op or default_intra_op_threads()
    if (tf.config.threading.get_inter_op_parallelism_threads(),
            tf.config.threading.get_intra_op_parallelism_threads()) == (inter_op, intra_op):
        return True
    try:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    except RuntimeError:
        logger.warning("TensorFlow already started: its thread pools stay as they are")
        return False
    return True


def _only_concrete_function(function):
    """A restored function's single traced signature: called directly, it skips argument binding (~0.4 ms
    a call, which a single-sentence request feels)."""
    concrete = getattr(function, "concrete_functions", [])
    return concrete[0] if len(concrete) == 1 else function


@dataclass
class TaggedTokens:
    tags: list[str]
    scores: list[float]  # probability of each chosen tag
    probabilities: np.ndarray  # float32[time, n_labels], columns in ``SavedTagger.labels`` order


class SavedTagger:
    def __init__(self, model_dir: str | Path):
        self.directory = Path(model_dir)
        self.metadata = artifacts.read_metadata(self.directory) if (self.directory / artifacts.METADATA_FILE).is_file() else {}
        self.saved_model = tf.saved_model.load(str(self.directory))
        self._serve = _only_concrete_function(self.saved_model.serve)
        self._encode = _only_concrete_function(self.saved_model.encode)

    @property
    def labels(self) -> list[str]:
        return list(self.metadata.get("labels", []))

    @staticmethod
    def pad(sentences: Sequence[Sequence[str]]) -> np.ndarray:
        """Token lists -> ``object[B, T]`` array of strings, "" as padding."""
        tokens = np.full((len(sentences), max((len(s) for s in sentences), default=0)), PAD_TOKEN, dtype=object)
        for row, sentence in enumerate(sentences):
            tokens[row, :len(sentence)] = list(sentence)
        return tokens

    def _batches(self, sentences: Sequence[Sequence[str]], batch_size: int):
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            yield rows, self.pad([sentences[i] for i in rows])

    def tag(self, sentences: Sequence[Sequence[str]], batch_size: int = 256) -> list[TaggedTokens]:
        """Tag each sentence (a list of token strings); results in input order."""
        results: list[TaggedTokens | None] = [None] * len(sentences)
        for rows, tokens in self._batches(sentences, batch_size):
            output = self._serve(tf.constant(tokens, dtype=tf.string))
            tags = output["tags"].numpy()
            scores = output["scores"].numpy()
            probabilities = output["probabilities"].numpy()
            for j, i in enumerate(rows):
                n = len(sentences[i])
                results[i] = TaggedTokens([t.decode("utf-8") for t in tags[j, :n]], scores[j, :n].tolist(),
                                          probabilities[j, :n])
        return results  # type: ignore[return-value]

    def encode(self, sentences: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """The model's input ids for one padded batch: word_ids ``[B, T]``, char_ids ``[B, T, C]``."""
        output = self._encode(tf.constant(self.pad(sentences), dtype=tf.string))
        return output["word_ids"].numpy(), output["char_ids"].numpy()

    def unknown_word_mask(self, sentences: Sequence[Sequence[str]], batch_size: int = 256) -> list[np.ndarray]:
        """Per sentence, True where a token falls outside the model's word vocabulary (the <unk> id)."""
        masks: list[np.ndarray | None] = [None] * len(sentences)
        for rows, _ in self._batches(sentences, batch_size):
            word_ids, _ = self.encode([sentences[i] for i in rows])
            for j, i in enumerate(rows):
                masks[i] = word_ids[j, :len(sentences[i])] == UNK_ID
        return masks  # type: ignore[return-value]

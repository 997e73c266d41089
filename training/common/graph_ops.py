"""TensorFlow twins of the shared preprocessing, for the exported graphs (export only; models stay backend-agnostic).

Both wings' exporters put their vocabularies into the SavedModel as ``StringLookup`` layers built here,
normalise words with ``normalize_words_tf``, the graph twin of ``training.common.vocab.normalize_word``, and
carry a model's kept pretrained vectors as a ``PretrainedLookup``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from training.common.vectors import KeptVectors
from training.common.vocab import DIGIT_PATTERN, PAD_TOKEN, Vocab


def normalize_words_tf(tokens: tf.Tensor) -> tf.Tensor:
    """Graph twin of ``training.common.vocab.normalize_word``."""
    return tf.strings.regex_replace(tf.strings.lower(tokens, encoding="utf-8"), DIGIT_PATTERN, "0")


def string_lookup(vocab: Vocab, name: str) -> keras.layers.StringLookup:
    """A reserved vocabulary as a lookup layer: mask_token "" -> id 0 (padding); one OOV bucket -> id 1; the
    vocabulary from id 2 on, as ``Vocab.id`` numbers it."""
    return keras.layers.StringLookup(vocabulary=vocab.lookup_items, mask_token=PAD_TOKEN, num_oov_indices=1,
                                     output_mode="int", name=name)


class PretrainedLookup(tf.Module):
    """A kept vector table's words inside an exported graph: token strings -> the table's row ids.

    The keys go through a ``StringLookup`` (cased tables try the lower-cased token where the token itself is
    not found, as ``KeptVectors.id`` does); "" (padding) gets row 0 and a token the kept table lacks row 1, both
    zeros. The rows themselves are the model's ``pretrained_embedding`` weights (float16 when frozen).
    """

    def __init__(self, kept: KeptVectors, name: str = "pretrained"):
        super().__init__(name=name)
        self.casing = kept.casing
        # The keys (up to hundreds of thousands) go in as a vocabulary file, which the SavedModel keeps once as an
        # asset; a list would be written into the graph once per signature.
        self._folder = tempfile.TemporaryDirectory(prefix="seqtag-vectors-")
        keys_file = Path(self._folder.name) / f"{name}_keys.txt"
        keys_file.write_text("".join(f"{key}\n" for key in kept.keys), encoding="utf-8")
        self.key_lookup = keras.layers.StringLookup(vocabulary=str(keys_file), num_oov_indices=1, mask_token=None,
                                                    output_mode="int", name=f"{name}_lookup")
        self.row_of_index = tf.constant([1, *kept.ids], tf.int32)  # lookup index (0: not found) -> row
        self.ids(tf.constant([["build"]]))  # builds the lookup layer, which export needs

    def ids(self, tokens: tf.Tensor) -> tf.Tensor:
        """Tokens of any shape -> row ids ``int32`` of the same shape (mirrors ``KeptVectors.id``)."""
        keys = tf.strings.lower(tokens, encoding="utf-8") if self.casing == "lower" else tokens
        index = tf.cast(self.key_lookup(keys), tf.int32)
        if self.casing == "cased":
            lowered = tf.cast(self.key_lookup(tf.strings.lower(tokens, encoding="utf-8")), tf.int32)
            index = tf.where(index == 0, lowered, index)
        return tf.where(tokens == PAD_TOKEN, 0, tf.gather(self.row_of_index, index))

    def trackables(self) -> list:
        return [self.key_lookup]

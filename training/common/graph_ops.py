"""TensorFlow twins of the shared preprocessing, for the exported graphs (export only; models stay backend-agnostic).

Both wings' exporters put their vocabularies into the SavedModel as ``StringLookup`` layers built here, and
normalise words with ``normalize_words_tf``, the graph twin of ``training.common.vocab.normalize_word``.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from training.common.vocab import DIGIT_PATTERN, PAD_TOKEN, Vocab


def normalize_words_tf(tokens: tf.Tensor) -> tf.Tensor:
    """Graph twin of ``training.common.vocab.normalize_word``."""
    return tf.strings.regex_replace(tf.strings.lower(tokens, encoding="utf-8"), DIGIT_PATTERN, "0")


def string_lookup(vocab: Vocab, name: str) -> keras.layers.StringLookup:
    """A reserved vocabulary as a lookup layer: mask_token "" -> id 0 (padding); one OOV bucket -> id 1; the
    vocabulary from id 2 on, as ``Vocab.id`` numbers it."""
    return keras.layers.StringLookup(vocabulary=vocab.lookup_items, mask_token=PAD_TOKEN, num_oov_indices=1,
                                     output_mode="int", name=name)

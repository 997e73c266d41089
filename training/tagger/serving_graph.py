"""The trained tagger's forward pass as the exported ``serve`` function runs it: packed sequences, no padding.

Export only (TensorFlow). The character encoder and the sentence BiLSTMs of ``training.tagger.model`` run
through ``training.common.inference_graph``'s packed LSTMs on the model's own weight variables; tests check
that the result is the Keras model's probabilities.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from training.common.inference_graph import Packing, packed_bidirectional_lstm


@tf.autograph.experimental.do_not_convert
def encode_characters(char_encoder: keras.Model, char_ids: tf.Tensor) -> tf.Tensor:
    """Words' character ids ``[U, C]`` (0 pads on the right) -> character vectors ``[U, Dc]``."""
    if "char_bilstm" not in [layer.name for layer in char_encoder.layers]:
        return char_encoder(char_ids, training=False)  # the CNN encoder has no recurrence to speed up
    lengths = tf.reduce_sum(tf.cast(char_ids != 0, tf.int32), axis=-1)  # [U]
    packing = Packing.from_lengths(lengths)
    characters = tf.gather(char_encoder.get_layer("char_embedding").embeddings.value, packing.pack(char_ids))
    return packed_bidirectional_lstm(char_encoder.get_layer("char_bilstm"), characters, packing)  # [U, Dc]


@tf.autograph.experimental.do_not_convert
def tag_probabilities(sentence_tagger: keras.Model, word_ids: tf.Tensor, char_vectors: tf.Tensor,
                      pretrained_ids: tf.Tensor | None = None) -> tf.Tensor:
    """The sentence tagger's forward pass: word ids ``[B, T]``, char vectors ``[B, T, Dc]`` (and, for a model with
    a vector table, each token's row ``[B, T]``) -> ``[B, T, n_tags]`` (zeros at padding)."""
    packing = Packing.from_lengths(tf.reduce_sum(tf.cast(word_ids != 0, tf.int32), axis=-1))  # right-padded
    words = tf.gather(sentence_tagger.get_layer("word_embedding").embeddings.value, packing.pack(word_ids))
    parts = [words]
    if pretrained_ids is not None:  # float16 rows when frozen: read back as float32, as the model's concat does
        table = sentence_tagger.get_layer("pretrained_embedding").embeddings.value
        parts.append(tf.cast(tf.gather(table, packing.pack(pretrained_ids)), tf.float32))
    x = tf.concat([*parts, packing.pack(char_vectors)], axis=-1)  # [N, word_dim (+ Dp) + Dc]
    layer_names = [layer.name for layer in sentence_tagger.layers]
    depth = 1
    while f"bilstm_{depth}" in layer_names:
        x = packed_bidirectional_lstm(sentence_tagger.get_layer(f"bilstm_{depth}"), x, packing)  # [N, 2H]
        depth += 1
    dense = sentence_tagger.get_layer("tag_probabilities").layer
    probabilities = tf.nn.softmax(tf.matmul(x, dense.kernel.value) + dense.bias.value)  # [N, n_tags]
    return packing.unpack(probabilities, tf.shape(word_ids))

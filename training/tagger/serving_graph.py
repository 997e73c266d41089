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
                      pretrained_ids: tf.Tensor | None = None, condition_ids: tf.Tensor | None = None) -> tf.Tensor:
    """The sentence tagger's forward pass: word ids ``[B, T]``, char vectors ``[B, T, Dc]`` (and, for a model with
    a vector table, each token's row ``[B, T]``; for a span model with a condition embedding, each sentence's
    condition ``[B]``) -> ``[B, T, n_tags]`` (zeros at padding)."""
    packing = Packing.from_lengths(tf.reduce_sum(tf.cast(word_ids != 0, tf.int32), axis=-1))  # right-padded
    words = tf.gather(sentence_tagger.get_layer("word_embedding").embeddings.value, packing.pack(word_ids))
    parts = [words]
    if pretrained_ids is not None:  # float16 rows when frozen: read back as float32, as the model's concat does
        table = sentence_tagger.get_layer("pretrained_embedding").embeddings.value
        parts.append(tf.cast(tf.gather(table, packing.pack(pretrained_ids)), tf.float32))
    if condition_ids is not None:  # each token gets its sentence's condition vector
        conditions = tf.gather(sentence_tagger.get_layer("condition_embedding").embeddings.value, condition_ids)  # [B, Dk]
        parts.append(tf.gather(conditions, packing.row))
    x = tf.concat([*parts, packing.pack(char_vectors)], axis=-1)  # [N, word_dim (+ Dp) + Dc]
    layer_names = [layer.name for layer in sentence_tagger.layers]
    depth = 1
    while f"bilstm_{depth}" in layer_names:
        x = packed_bidirectional_lstm(sentence_tagger.get_layer(f"bilstm_{depth}"), x, packing)  # [N, 2H]
        depth += 1
    dense = sentence_tagger.get_layer("tag_probabilities").layer
    probabilities = tf.nn.softmax(tf.matmul(x, dense.kernel.value) + dense.bias.value)  # [N, n_tags]
    return packing.unpack(probabilities, tf.shape(word_ids))


# --- span models: constrained decoding and the spans it spells ---


@tf.autograph.experimental.do_not_convert
def constrained_viterbi(probabilities: tf.Tensor, lengths: tf.Tensor, allowed, start, end) -> tf.Tensor:
    """The most probable well-formed tag sequence of each sentence: ``probabilities [B, T, K]`` (right-padded to
    ``lengths [B]``) -> tag ids ``[B, T]``. ``allowed [K, K]``, ``start [K]``, ``end [K]`` say which tag may follow
    which, begin and end a sentence (``training.tagger.spans.transition_constraints``; its ``constrained_viterbi``
    is the NumPy twin). Padding steps keep each sentence's scores and point back to the same tag."""
    log_p = tf.math.log(tf.maximum(probabilities, 1e-30))  # [B, T, K]
    transitions = tf.where(tf.constant(allowed), 0.0, -1e9)  # [K, K]
    k = tf.shape(log_p)[2]
    steps = tf.shape(log_p)[1]
    score = log_p[:, 0] + tf.where(tf.constant(start), 0.0, -1e9)  # [B, K]
    identity = tf.range(k)[None, :]  # [1, K]

    def step(t, score, pointers):
        candidates = score[:, :, None] + transitions[None]  # [B, K previous, K next]
        best_previous = tf.argmax(candidates, axis=1, output_type=tf.int32)  # [B, K]
        new_score = tf.reduce_max(candidates, axis=1) + log_p[:, t]
        running = (t < lengths)[:, None]  # [B, 1]
        return (t + 1, tf.where(running, new_score, score),
                pointers.write(t, tf.where(running, best_previous, identity + 0 * best_previous)))

    pointers = tf.TensorArray(tf.int32, size=tf.maximum(steps, 1), element_shape=[None, None])
    pointers = pointers.write(0, tf.zeros_like(score, tf.int32) + identity)
    _, score, pointers = tf.while_loop(lambda t, *_: t < steps, step, (tf.constant(1), score, pointers))
    last = tf.argmax(score + tf.where(tf.constant(end), 0.0, -1e9), axis=-1, output_type=tf.int32)  # [B]
    pointers = pointers.stack()  # [T, B, K]
    rows = tf.range(tf.shape(score)[0])

    def back(t, tag, tags):
        tags = tags.write(t, tag)
        return t - 1, tf.gather_nd(pointers[t], tf.stack([rows, tag], axis=1)), tags

    tags = tf.TensorArray(tf.int32, size=tf.maximum(steps, 1), element_shape=[None])
    _, _, tags = tf.while_loop(lambda t, *_: t >= 0, back, (steps - 1, last, tags))
    return tf.transpose(tags.stack()[:steps])  # [B, T]


@tf.autograph.experimental.do_not_convert
def spans_of(tag_ids: tf.Tensor, lengths: tf.Tensor, scores: tf.Tensor, begins, insides, labels) -> dict[str, tf.Tensor]:
    """Well-formed tag ids ``[B, T]`` -> each sentence's spans, padded to the most spans of a sentence, S:
    ``span_count int32[B]``, ``span_starts`` / ``span_ends`` ``int32[B, S]`` (token indices, end exclusive),
    ``span_labels string[B, S]``, ``span_scores float32[B, S]`` (the mean probability of the span's tags).
    ``begins [K]`` marks the tags that start a span (B-, S-), ``insides [K]`` those inside one (B, I, E, S),
    ``labels [K]`` each tag's label."""
    shape = tf.shape(tag_ids)
    real = tf.sequence_mask(lengths, shape[1])  # [B, T]
    begin = tf.gather(tf.constant(begins), tag_ids) & real
    inside = tf.gather(tf.constant(insides), tag_ids) & real
    number = tf.cumsum(tf.cast(begin, tf.int32), axis=1) - 1  # [B, T]: the span a position belongs to
    count = tf.reduce_sum(tf.cast(begin, tf.int32), axis=1)  # [B]
    width = tf.maximum(tf.reduce_max(tf.concat([count, [0]], 0)), 1)
    positions = tf.cast(tf.where(inside), tf.int32)  # [N, 2]: (row, token)
    segment = positions[:, 0] * width + tf.gather_nd(number, positions)  # one id per (row, span)
    token = positions[:, 1]
    total = shape[0] * width
    starts = tf.math.unsorted_segment_min(token, segment, total)
    ends = tf.math.unsorted_segment_max(token, segment, total) + 1
    mean = tf.math.unsorted_segment_mean(tf.gather_nd(scores, positions), segment, total)
    first_tag = tf.math.unsorted_segment_max(tf.where(tf.gather_nd(begin, positions), tf.gather_nd(tag_ids, positions), -1),
                                             segment, total)
    present = tf.reshape(tf.range(width)[None, :] < count[:, None], [-1])  # [B * S]
    grid = [shape[0], width]
    return {"span_count": count,
            "span_starts": tf.reshape(tf.where(present, starts, 0), grid),
            "span_ends": tf.reshape(tf.where(present, ends, 0), grid),
            "span_labels": tf.reshape(tf.where(present, tf.gather(tf.constant(labels), tf.maximum(first_tag, 0)), ""), grid),
            "span_scores": tf.reshape(tf.where(present, mean, 0.0), grid)}

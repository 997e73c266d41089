"""The trained tagger's forward pass rewritten in TensorFlow for serving: the same arithmetic, less waste.

Export only (TensorFlow); training keeps the backend-agnostic Keras model of ``training.model``. The
functions here read that model's own weight variables, so the SavedModel stores each weight once, and a
test checks that they give the Keras model's probabilities. Measured on 2 CPU cores, three things make
inference faster than calling the Keras layers (``benchmarks/inprocess_tagging.py``):

- **Character encoder, bucketed by word length.** The batch's distinct words are sorted by length and
  encoded in a few chunks, each padded only to its own longest word: on EWT dev a batch of 256 sentences
  pads distinct words to 20 characters when they average 6.
- **Input projections hoisted out of the recurrence.** ``x @ kernel`` for every time step is one large
  matrix product before the loop; each step then only multiplies the ``[B, H]`` state.
- **No masks in the loop.** The backward direction runs over ``tf.reverse_sequence``, which reverses
  only each sequence's real steps, so padding stays at the end for both directions and no step needs a
  per-row mask; the two directions are independent loops that run side by side.

Padding never influences a real position: in both directions padding comes after every real step, and
the sentence tagger's outputs at padding are zeroed before the next layer, as Keras's masking does.
"""

from __future__ import annotations

import keras
import tensorflow as tf

CHAR_CHUNKS = 4  # length buckets for the character encoder; more buckets pad less but loop more


def _lstm_weights(lstm: keras.layers.LSTM) -> tuple[tf.Variable, tf.Variable, tf.Variable]:
    """(kernel ``[D, 4H]``, recurrent kernel ``[H, 4H]``, bias ``[4H]``), gates in Keras's i, f, c, o order."""
    cell = lstm.cell
    if cell.activation is not keras.activations.tanh or cell.recurrent_activation is not keras.activations.sigmoid:
        raise ValueError(f"{lstm.name}: only tanh/sigmoid LSTMs are supported by the serving graph")
    if not cell.use_bias:
        raise ValueError(f"{lstm.name}: an LSTM without bias is not supported by the serving graph")
    return cell.kernel.value, cell.recurrent_kernel.value, cell.bias.value  # the backend's tf.Variable


# Plain graph code: autograph would re-read this file's source when a function is traced (at export).
@tf.autograph.experimental.do_not_convert
def lstm_sequence(time_major: tf.Tensor, lstm: keras.layers.LSTM) -> tf.Tensor:
    """One LSTM direction over ``time_major [T, B, D]`` from a zero state -> outputs ``[T, B, H]``."""
    kernel, recurrent_kernel, bias = _lstm_weights(lstm)
    steps, batch = tf.shape(time_major)[0], tf.shape(time_major)[1]
    # x @ kernel for every step in one matrix product, read back one step at a time: [T] x [B, 4H].
    projections = tf.TensorArray(time_major.dtype, size=steps).unstack(tf.tensordot(time_major, kernel, 1) + bias)

    def step(t, h, c, outputs):
        z = projections.read(t) + tf.matmul(h, recurrent_kernel)  # [B, 4H], gates in i, f, c, o order
        i, f, g, o = tf.split(z, 4, axis=-1)
        c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        h = tf.sigmoid(o) * tf.tanh(c)
        return t + 1, h, c, outputs.write(t, h)

    zeros = tf.zeros([batch, lstm.units], time_major.dtype)
    outputs = tf.TensorArray(time_major.dtype, size=steps)
    _, _, _, outputs = tf.while_loop(lambda t, *_: t < steps, step, (0, zeros, zeros, outputs))
    return outputs.stack()


@tf.autograph.experimental.do_not_convert
def bidirectional_lstm(layer: keras.layers.Bidirectional, inputs: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
    """Run a Keras ``Bidirectional(LSTM)`` over right-padded ``inputs [B, T, D]`` with ``lengths [B]`` (int32).

    Returns ``[B, T, 2H]`` (forward and backward outputs per position; padding positions hold garbage the
    caller masks) when the layer returns sequences, else ``[B, 2H]``, each direction's output after the
    sequence's last real step (zeros for an empty sequence), as Keras gives with a mask.
    """
    time_major = tf.transpose(inputs, [1, 0, 2])  # [T, B, D]
    # The two directions are independent loops, which TensorFlow runs side by side on two cores.
    forward = lstm_sequence(time_major, layer.forward_layer)  # [T, B, H]
    backward = lstm_sequence(tf.reverse_sequence(time_major, lengths, seq_axis=0, batch_axis=1),
                             layer.backward_layer)  # [T, B, H], each row's real steps in reverse
    if layer.forward_layer.return_sequences:
        backward = tf.reverse_sequence(backward, lengths, seq_axis=0, batch_axis=1)
        return tf.transpose(tf.concat([forward, backward], axis=-1), [1, 0, 2])  # [B, T, 2H]
    last = tf.stack([tf.maximum(lengths - 1, 0), tf.range(tf.shape(lengths)[0])], axis=1)  # [B, 2]: (last step, row)
    final = tf.concat([tf.gather_nd(forward, last), tf.gather_nd(backward, last)], axis=-1)  # [B, 2H]
    return tf.where((lengths > 0)[:, None], final, 0.0)


@tf.autograph.experimental.do_not_convert
def encode_characters(char_encoder: keras.Model, char_ids: tf.Tensor) -> tf.Tensor:
    """Words' character ids ``[N, C]`` (0 pads on the right) -> character vectors ``[N, Dc]``."""
    if "char_bilstm" not in [layer.name for layer in char_encoder.layers]:
        return char_encoder(char_ids, training=False)  # the CNN encoder has no recurrence to speed up
    embeddings = char_encoder.get_layer("char_embedding").embeddings.value
    bilstm = char_encoder.get_layer("char_bilstm")
    lengths = tf.reduce_sum(tf.cast(char_ids != 0, tf.int32), axis=-1)  # [N]
    order = tf.argsort(lengths, stable=True)
    count = tf.shape(char_ids)[0]
    vectors = []
    for chunk in range(CHAR_CHUNKS):
        rows = order[count * chunk // CHAR_CHUNKS:count * (chunk + 1) // CHAR_CHUNKS]  # shortest words first
        chunk_lengths = tf.gather(lengths, rows)
        width = tf.reduce_max(tf.concat([chunk_lengths, [1]], axis=0))  # >= 1 even for an empty chunk
        chunk_ids = tf.gather(char_ids, rows)[:, :width]  # [n, width]
        vectors.append(bidirectional_lstm(bilstm, tf.gather(embeddings, chunk_ids), chunk_lengths))
    # Back to the input order: row order[k] gets the k-th computed vector.
    return tf.scatter_nd(order[:, None], tf.concat(vectors, axis=0),
                         tf.stack([count, 2 * bilstm.forward_layer.units]))


@tf.autograph.experimental.do_not_convert
def tag_probabilities(sentence_tagger: keras.Model, word_ids: tf.Tensor, char_vectors: tf.Tensor) -> tf.Tensor:
    """The sentence tagger's forward pass: word ids ``[B, T]`` and char vectors ``[B, T, Dc]`` -> ``[B, T, n_tags]``."""
    is_token = word_ids != 0
    lengths = tf.reduce_sum(tf.cast(is_token, tf.int32), axis=-1)  # [B]; tokens are right-padded
    mask = tf.cast(is_token, char_vectors.dtype)[..., None]  # [B, T, 1]
    words = tf.gather(sentence_tagger.get_layer("word_embedding").embeddings.value, word_ids)  # [B, T, word_dim]
    x = tf.concat([words, char_vectors], axis=-1)
    layer = 1
    while f"bilstm_{layer}" in [lay.name for lay in sentence_tagger.layers]:
        x = bidirectional_lstm(sentence_tagger.get_layer(f"bilstm_{layer}"), x, lengths) * mask  # [B, T, 2H]
        layer += 1
    dense = sentence_tagger.get_layer("tag_probabilities").layer
    return tf.nn.softmax(tf.tensordot(x, dense.kernel.value, 1) + dense.bias.value)  # [B, T, n_tags]

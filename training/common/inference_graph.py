"""Keras LSTMs rewritten in TensorFlow for serving on packed sequences: the same arithmetic, no padding.

Export only (TensorFlow); training keeps the backend-agnostic Keras models. The functions here read a trained
layer's own weight variables, so the SavedModel stores each weight once; each wing's serving graph
(``training.tagger.serving_graph``) runs its model's layers through them, and tests check that it gives the
Keras model's probabilities.

A padded batch wastes most of its work on padding when its sequences differ in length: 32 random EWT
sentences average 13 tokens and are padded to about 40, and a batch's distinct words average 6 characters
and are padded to 20. So the recurrences run on **packed sequences** (as PyTorch's
``pack_padded_sequence``): the rows sorted by length, longest first, and only the real steps stored,
time-major: step t's inputs are the first ``n_t`` rows, contiguous. Each loop step multiplies only the
``n_t`` rows still running, and the input projections ``x @ kernel`` of every real step are one matrix
product before the loop. The backward direction runs over the same packed layout with each sequence's
steps reversed (a permutation of packed positions), so padding never enters a computation, and the two
directions are independent loops that TensorFlow runs side by side.

Measured with ``benchmarks/inprocess_tagging.py`` on 2 CPU cores (see docs/speed.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import tensorflow as tf


@dataclass
class Packing:
    """Where the real steps of right-padded sequences of ``lengths [B]`` sit in packed, time-major order.

    Packed position ``p`` holds step ``time[p]`` of batch row ``row[p]``; positions of step t are
    ``offsets[t] .. offsets[t] + active[t]`` (rows longest first), N = sum(lengths) positions in all.
    """

    active: tf.Tensor  # int32[T]: rows still running at step t
    offsets: tf.Tensor  # int32[T]: first packed position of step t
    row: tf.Tensor  # int32[N]: batch row of each packed position
    time: tf.Tensor  # int32[N]: step of each packed position
    reverse: tf.Tensor  # int32[N]: position of the same row's step (length - 1 - time); an involution
    last: tf.Tensor  # int32[B]: packed position of each row's last real step; N (one past the end) for an empty row

    @classmethod
    def from_lengths(cls, lengths: tf.Tensor) -> "Packing":
        order = tf.argsort(lengths, direction="DESCENDING", stable=True)  # [B]: rank -> batch row
        sorted_lengths = tf.gather(lengths, order)  # [B]
        steps = tf.range(tf.reduce_max(tf.concat([lengths, [0]], axis=0)))  # [T]
        running = sorted_lengths[None, :] > steps[:, None]  # [T, B] by rank; each step's True ranks come first
        active = tf.reduce_sum(tf.cast(running, tf.int32), axis=1)  # [T]
        offsets = tf.cumsum(active, exclusive=True)  # [T]
        coordinates = tf.cast(tf.where(running), tf.int32)  # [N, 2]: (step, rank), time-major
        time, rank = coordinates[:, 0], coordinates[:, 1]
        rank_lengths = tf.gather(sorted_lengths, rank)
        reverse = tf.gather(offsets, rank_lengths - 1 - time) + rank
        last_by_rank = tf.where(sorted_lengths > 0,
                                tf.gather(tf.concat([offsets, [0]], axis=0), tf.maximum(sorted_lengths - 1, 0))
                                + tf.range(tf.size(lengths)), tf.reduce_sum(lengths))
        last = tf.scatter_nd(order[:, None], last_by_rank, tf.shape(lengths))  # [B], by batch row
        return cls(active, offsets, tf.gather(order, rank), time, reverse, last)

    def pack(self, padded: tf.Tensor) -> tf.Tensor:
        """``[B, T, ...]`` -> ``[N, ...]``."""
        return tf.gather_nd(padded, tf.stack([self.row, self.time], axis=1))

    def unpack(self, packed: tf.Tensor, batch_shape: tf.Tensor) -> tf.Tensor:
        """``[N, D]`` -> ``[B, T, D]`` (``batch_shape`` = [B, T]), zeros at padding."""
        shape = tf.concat([batch_shape, tf.shape(packed)[1:]], axis=0)
        return tf.scatter_nd(tf.stack([self.row, self.time], axis=1), packed, shape)


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
def packed_lstm(inputs: tf.Tensor, packing: Packing, lstm: keras.layers.LSTM) -> tf.Tensor:
    """One LSTM direction over packed ``inputs [N, D]`` from a zero state -> packed outputs ``[N, H]``."""
    kernel, recurrent_kernel, bias = _lstm_weights(lstm)
    projections = tf.matmul(inputs, kernel) + bias  # [N, 4H]: every real step's input projection at once
    steps = tf.size(packing.active)
    batch = tf.reduce_max(tf.concat([packing.active, [0]], axis=0))

    def step(t, h, c, outputs):
        n = packing.active[t]  # rows still running: the first n
        z = tf.slice(projections, [packing.offsets[t], 0], [n, -1]) + tf.matmul(h[:n], recurrent_kernel)  # [n, 4H]
        i, f, g, o = tf.split(z, 4, axis=-1)
        c_new = tf.sigmoid(f) * c[:n] + tf.sigmoid(i) * tf.tanh(g)
        h_new = tf.sigmoid(o) * tf.tanh(c_new)  # [n, H]
        # Finished rows keep their last state; they are never read again (rows are longest first).
        return (t + 1, tf.concat([h_new, h[n:]], axis=0), tf.concat([c_new, c[n:]], axis=0),
                outputs.write(t, h_new))

    zeros = tf.zeros([batch, lstm.units], inputs.dtype)
    outputs = tf.TensorArray(inputs.dtype, size=steps, infer_shape=False, element_shape=[None, lstm.units])
    _, _, _, outputs = tf.while_loop(lambda t, *_: t < steps, step, (0, zeros, zeros, outputs),
                                     shape_invariants=(tf.TensorShape([]), tf.TensorShape([None, lstm.units]),
                                                       tf.TensorShape([None, lstm.units]), tf.TensorShape(None)))
    return tf.reshape(outputs.concat(), [-1, lstm.units])  # [N, H], in packed order


@tf.autograph.experimental.do_not_convert
def packed_bidirectional_lstm(layer: keras.layers.Bidirectional, inputs: tf.Tensor, packing: Packing) -> tf.Tensor:
    """A Keras ``Bidirectional(LSTM)`` over packed ``inputs [N, D]`` -> packed ``[N, 2H]`` (both directions'
    output at each real step), or ``[B, 2H]`` (each direction's output after the last real step) when the
    layer returns no sequences."""
    forward = packed_lstm(inputs, packing, layer.forward_layer)  # [N, H]
    backward = packed_lstm(tf.gather(inputs, packing.reverse), packing, layer.backward_layer)  # [N, H], reversed steps
    if layer.forward_layer.return_sequences:
        return tf.concat([forward, tf.gather(backward, packing.reverse)], axis=-1)
    # Each direction's last step is step length - 1 of its own packed sequence: the same packed position.
    # An empty row points one past the end, at an appended zero row: zeros, as Keras's mask gives.
    final = tf.concat([forward, backward], axis=-1)  # [N, 2H]
    return tf.gather(tf.pad(final, [[0, 1], [0, 0]]), packing.last)  # [B, 2H]

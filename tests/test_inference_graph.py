"""The serving graph's packed BiLSTM against Keras's masked Bidirectional(LSTM), row lengths 0 included."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from training.common.inference_graph import Packing, packed_bidirectional_lstm

LENGTHS = [3, 0, 5, 1, 5, 2]  # unsorted, ties, an empty row; T = 7 leaves padding after the longest


def test_packing_layout():
    packing = Packing.from_lengths(tf.constant(LENGTHS))
    assert packing.active.numpy().tolist() == [5, 4, 3, 2, 2]  # rows still running at each step
    assert packing.offsets.numpy().tolist() == [0, 5, 9, 12, 14]
    rows, times = packing.row.numpy(), packing.time.numpy()
    assert sorted(zip(rows.tolist(), times.tolist())) == [(r, t) for r, n in enumerate(LENGTHS) for t in range(n)]
    reverse = packing.reverse.numpy()
    assert (reverse[reverse] == np.arange(sum(LENGTHS))).all()  # an involution
    assert (rows[reverse] == rows).all() and (times[reverse] == np.array(LENGTHS)[rows] - 1 - times).all()
    last = packing.last.numpy()
    assert last[1] == sum(LENGTHS)  # the empty row points past the end
    for r, n in enumerate(LENGTHS):
        if n:
            assert (rows[last[r]], times[last[r]]) == (r, n - 1)


@pytest.mark.parametrize("return_sequences", [True, False])
def test_packed_bilstm_equals_keras_with_mask(return_sequences):
    keras.utils.set_random_seed(3)
    layer = keras.layers.Bidirectional(keras.layers.LSTM(5, return_sequences=return_sequences))
    lengths = np.array(LENGTHS, dtype="int32")
    inputs = np.random.default_rng(0).normal(size=(len(LENGTHS), 7, 4)).astype("float32")
    mask = np.arange(7)[None, :] < lengths[:, None]
    expected = np.asarray(layer(inputs, mask=mask))
    packing = Packing.from_lengths(tf.constant(lengths))
    packed = packed_bidirectional_lstm(layer, packing.pack(tf.constant(inputs)), packing)
    if return_sequences:
        actual = packing.unpack(packed, tf.constant([len(LENGTHS), 7])).numpy()
        np.testing.assert_allclose(actual[mask], expected[mask], atol=1e-6)
        assert (actual[~mask] == 0).all()
    else:
        np.testing.assert_allclose(packed.numpy(), expected, atol=1e-6)
        assert (packed.numpy()[1] == 0).all()  # the empty row, as Keras's mask gives

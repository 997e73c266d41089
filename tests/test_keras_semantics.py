"""The seeds' Keras semantics as executable documentation: parameter counts and output shapes."""

import keras
import numpy as np
from keras import layers


def test_lstm_parameter_counts():
    # LSTM: 4 gates x units x (input + units + bias) = 4 * 5 * (1 + 5 + 1)
    sequence = keras.Sequential([keras.Input((None, 1)), layers.LSTM(5, return_sequences=True),
                                 layers.TimeDistributed(layers.Dense(1))])
    assert sequence.layers[0].count_params() == 140
    assert sequence.layers[1].count_params() == 6
    last = keras.Sequential([keras.Input((None, 1)), layers.LSTM(5), layers.Dense(5)])
    assert last.layers[1].count_params() == 30


def test_gru_and_time_distributed_dense_are_the_same_dense():
    gru = keras.Sequential([keras.Input((None, 15)), layers.GRU(16, reset_after=False)])
    assert gru.count_params() == 1536  # 3 gates x 16 x (15 + 16 + 1)

    dense = layers.Dense(15)
    wrapped = layers.TimeDistributed(layers.Dense(15))
    inputs = np.random.default_rng(0).normal(size=(3, 64, 16)).astype("float32")
    plain_out = dense(inputs)
    wrapped(inputs)  # build
    assert dense.count_params() == wrapped.count_params() == 255
    wrapped.set_weights(dense.get_weights())
    # Same weights, same numbers: only float32 rounding differs (one batched matmul vs one per step).
    np.testing.assert_allclose(keras.ops.convert_to_numpy(wrapped(inputs)),
                               keras.ops.convert_to_numpy(plain_out), rtol=0, atol=1e-6)


def test_return_sequences_shapes():
    inputs = np.zeros((4, 9, 3), dtype="float32")
    assert tuple(layers.LSTM(7, return_sequences=True)(inputs).shape) == (4, 9, 7)
    assert tuple(layers.LSTM(7, return_sequences=False)(inputs).shape) == (4, 7)

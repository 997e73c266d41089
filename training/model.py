"""The tagger's Keras model: integer ids in, a distribution over tags per token out.

Backend-agnostic Keras 3 (no ``tf.*``): it trains under TensorFlow, JAX or PyTorch. String
handling lives in the exported SavedModel (``training.export``), not here.

    word_ids  int32[B, T]     -> Embedding(mask_zero)                              -> [B, T, word_dim]
    char_ids  int32[B, T, C]  -> FoldedTimeDistributed(char Embedding -> BiLSTM or CNN)  -> [B, T, 2*char_hidden | char_hidden]
    concat -> Dropout -> layers x BiLSTM(hidden, return_sequences=True)            -> [B, T, 2*hidden]
           -> TimeDistributed(Dense(n_tags, softmax))                              -> [B, T, n_tags]
"""

from __future__ import annotations

import keras
from keras import layers, ops

from training.config import TaggerConfig


@keras.saving.register_keras_serializable(package="seqtag")
class FoldedTimeDistributed(layers.TimeDistributed):
    """TimeDistributed that folds time into batch: ``[B, T, ...] -> [B*T, ...] -> layer -> [B, T, ...]``.

    Same semantics as Keras's own (one layer applied to every time slice), but Keras 3 maps over the
    time steps with ``vectorized_map``, which TensorFlow cannot differentiate through an LSTM's loop
    (and which runs the inner layer T times); folding runs it once on B*T items on any backend.

    Its inputs are ids: a time step whose ids are all 0 is padding, and the output mask says so.
    That matters: Keras's Concatenate ORs its inputs' masks, treating an input without a mask as
    all-True, so without this mask the word embedding's padding mask would be lost downstream.
    """

    def call(self, inputs, training=None, mask=None):
        shape = ops.shape(inputs)
        folded = ops.reshape(inputs, (-1, *shape[2:]))  # [B*T, ...]
        kwargs = {"training": training} if self.layer._call_has_training_arg else {}
        outputs = self.layer(folded, **kwargs)  # [B*T, D]
        return ops.reshape(outputs, (shape[0], shape[1], *outputs.shape[1:]))  # [B, T, D]

    def compute_mask(self, inputs, mask=None):
        return ops.any(ops.not_equal(inputs, 0), axis=tuple(range(2, len(inputs.shape))))  # [B, T]


def build_char_encoder(config: TaggerConfig, n_chars: int) -> keras.Model:
    """One word's character ids ``int32[C]`` -> one vector; applied per word through TimeDistributed."""
    char_ids = keras.Input(shape=(None,), dtype="int32", name="chars")
    if config.char_encoder == "bilstm":
        x = layers.Embedding(n_chars, config.char_dim, mask_zero=True, name="char_embedding")(char_ids)  # [C, char_dim]
        x = layers.Bidirectional(layers.LSTM(config.char_hidden), name="char_bilstm")(x)  # [2*char_hidden]
    else:
        # Conv1D takes no mask: zero the padding positions before and after the convolution, so a
        # word's vector does not depend on how far the batch pads it ('same' padding adds zeros too).
        is_char = ops.expand_dims(ops.cast(ops.not_equal(char_ids, 0), "float32"), -1)  # [C, 1]
        x = layers.Embedding(n_chars, config.char_dim, name="char_embedding")(char_ids) * is_char
        x = layers.Conv1D(config.char_hidden, 3, padding="same", activation="relu", name="char_cnn")(x) * is_char
        x = layers.GlobalMaxPooling1D(name="char_pool")(x)  # [char_hidden]; ReLU >= 0, so padding's zeros never win
    return keras.Model(char_ids, x, name="char_encoder")


def build_tagger(config: TaggerConfig, n_words: int, n_chars: int, n_tags: int) -> keras.Model:
    word_ids = keras.Input(shape=(None,), dtype="int32", name="word_ids")  # [B, T], 0 = padding
    char_ids = keras.Input(shape=(None, None), dtype="int32", name="char_ids")  # [B, T, C], 0 = padding

    words = layers.Embedding(n_words, config.word_dim, mask_zero=True, name="word_embedding")(word_ids)
    chars = FoldedTimeDistributed(build_char_encoder(config, n_chars), name="char_features")(char_ids)
    x = layers.Concatenate(name="word_and_chars")([words, chars])  # mask: the word embedding's
    x = layers.Dropout(config.dropout, name="input_dropout")(x)
    for i in range(config.layers):
        # tanh/sigmoid, no recurrent dropout, right-padded masks: keeps cuDNN usable under TensorFlow.
        x = layers.Bidirectional(layers.LSTM(config.hidden, return_sequences=True), name=f"bilstm_{i + 1}")(x)
        x = layers.Dropout(config.dropout, name=f"dropout_{i + 1}")(x)
    probabilities = layers.TimeDistributed(layers.Dense(n_tags, activation="softmax"), name="tag_probabilities")(x)
    return keras.Model({"word_ids": word_ids, "char_ids": char_ids}, probabilities, name="tagger")

"""The tagger's Keras model: integer ids in, a distribution over tags per token out.

Backend-agnostic Keras 3 (no ``tf.*``): it trains under TensorFlow, JAX or PyTorch. String
handling lives in the exported SavedModel (``training.tagger.export``), not here.

    char_ids  int32[B, T, C] -> per word (FoldedTimeDistributed): char Embedding -> BiLSTM or CNN
                                                                         -> char_vectors [B, T, Dc]
    sentence_tagger(word_ids int32[B, T], char_vectors (, pretrained_ids int32[B, T], condition_ids int32[B])):
        word Embedding                                                   -> [B, T, word_dim]
        (pretrained Embedding: the kept rows of a vector table, frozen or fine-tuned -> [B, T, vector dims])
        (span models: condition Embedding, the same beside every token   -> [B, T, condition_dim])
        concat -> Dropout -> layers x BiLSTM(hidden, return_sequences=True, mask: word_ids != 0)
                                                                         -> [B, T, 2*hidden]
        -> TimeDistributed(Dense(n_tags, softmax))                       -> [B, T, n_tags]
"""

from __future__ import annotations

import keras
from keras import layers, ops

from training.common.layers import FoldedTimeDistributed, cudnn_safe_mask, pretrained_embedding
from training.tagger.config import TaggerConfig


def build_char_encoder(config: TaggerConfig, n_chars: int) -> keras.Model:
    """One word's character ids ``int32[C]`` -> one vector; applied per word through TimeDistributed."""
    char_ids = keras.Input(shape=(None,), dtype="int32", name="chars")
    if config.char_encoder == "bilstm":
        x = layers.Embedding(n_chars, config.char_dim, name="char_embedding")(char_ids)  # [C, char_dim]
        x = layers.Bidirectional(layers.LSTM(config.char_hidden), name="char_bilstm")(
            x, mask=cudnn_safe_mask(char_ids))  # [2*char_hidden]
    else:
        # Conv1D takes no mask: zero the padding positions before and after the convolution, so a
        # word's vector does not depend on how far the batch pads it ('same' padding adds zeros too).
        is_char = ops.expand_dims(ops.cast(ops.not_equal(char_ids, 0), "float32"), -1)  # [C, 1]
        x = layers.Embedding(n_chars, config.char_dim, name="char_embedding")(char_ids) * is_char
        x = layers.Conv1D(config.char_hidden, 3, padding="same", activation="relu", name="char_cnn")(x) * is_char
        x = layers.GlobalMaxPooling1D(name="char_pool")(x)  # [char_hidden]; ReLU >= 0, so padding's zeros never win
    return keras.Model(char_ids, x, name="char_encoder")


def char_vector_size(config: TaggerConfig) -> int:
    return 2 * config.char_hidden if config.char_encoder == "bilstm" else config.char_hidden


def build_sentence_tagger(config: TaggerConfig, n_words: int, n_tags: int,
                          pretrained_shape: tuple[int, int] | None = None, n_conditions: int | None = None) -> keras.Model:
    """Word ids ``[B, T]``, each word's character vector ``[B, T, Dc]`` (and, with ``pretrained_shape`` = (rows,
    dimensions) of a kept vector table, its row ids ``[B, T]``) -> tag probabilities ``[B, T, n_tags]``. The
    pretrained rows are set after building (``set_pretrained``)."""
    inputs = {"word_ids": keras.Input(shape=(None,), dtype="int32", name="word_ids"),  # 0 = padding
              "char_vectors": keras.Input(shape=(None, char_vector_size(config)), dtype="float32", name="char_vectors")}
    mask = ops.not_equal(inputs["word_ids"], 0)  # [B, T]; passed explicitly, as Concatenate would OR it away
    parts = [layers.Embedding(n_words, config.word_dim, name="word_embedding")(inputs["word_ids"])]  # [B, T, word_dim]
    if pretrained_shape is not None:
        inputs["pretrained_ids"] = keras.Input(shape=(None,), dtype="int32", name="pretrained_ids")
        parts.append(pretrained_embedding(config, pretrained_shape)(inputs["pretrained_ids"]))  # [B, T, vector dims]
    if n_conditions is not None:  # the sentence's condition beside every token
        inputs["condition_ids"] = keras.Input(shape=(), dtype="int32", name="condition_ids")  # [B]
        condition = layers.Embedding(n_conditions, config.condition_dim, name="condition_embedding")(inputs["condition_ids"])
        on_every_token = ops.ones_like(parts[0][..., :1])  # [B, T, 1]
        parts.append(ops.expand_dims(condition, 1) * on_every_token)  # [B, T, condition_dim]
    x = layers.Concatenate(name="word_and_chars")([*parts, inputs["char_vectors"]])
    x = layers.Dropout(config.dropout, name="input_dropout")(x)
    for i in range(config.layers):
        # tanh/sigmoid, no recurrent dropout, right-padded masks: keeps cuDNN usable under TensorFlow.
        x = layers.Bidirectional(layers.LSTM(config.hidden, return_sequences=True), name=f"bilstm_{i + 1}")(x, mask=mask)
        x = layers.Dropout(config.dropout, name=f"dropout_{i + 1}")(x)  # [B, T, 2*hidden]
    # float32 even under mixed precision: softmax and the loss need its range (training.common.distribute).
    probabilities = layers.TimeDistributed(layers.Dense(n_tags, activation="softmax", dtype="float32"),
                                           name="tag_probabilities", dtype="float32")(x)
    return keras.Model(inputs, probabilities, name="sentence_tagger")


def build_tagger(config: TaggerConfig, n_words: int, n_chars: int, n_tags: int,
                 pretrained_shape: tuple[int, int] | None = None, n_conditions: int | None = None) -> keras.Model:
    """The trained model: the character encoder applied per word, then the sentence tagger.

    The two parts are sub-models (``char_features``'s layer and ``sentence_tagger``) so that the exported
    serving function can run the character encoder once per distinct word of a batch.
    """
    inputs = {"word_ids": keras.Input(shape=(None,), dtype="int32", name="word_ids"),  # [B, T], 0 = padding
              "char_ids": keras.Input(shape=(None, None), dtype="int32", name="char_ids")}  # [B, T, C], 0 = padding
    char_vectors = FoldedTimeDistributed(build_char_encoder(config, n_chars), name="char_features")(inputs["char_ids"])
    tagger_inputs = {"word_ids": inputs["word_ids"], "char_vectors": char_vectors}
    if pretrained_shape is not None:
        inputs["pretrained_ids"] = keras.Input(shape=(None,), dtype="int32", name="pretrained_ids")  # [B, T]
        tagger_inputs["pretrained_ids"] = inputs["pretrained_ids"]
    if n_conditions is not None:
        inputs["condition_ids"] = keras.Input(shape=(), dtype="int32", name="condition_ids")  # [B]
        tagger_inputs["condition_ids"] = inputs["condition_ids"]
    probabilities = build_sentence_tagger(config, n_words, n_tags, pretrained_shape, n_conditions)(tagger_inputs)
    return keras.Model(inputs, probabilities, name="tagger")


def set_pretrained(tagger: keras.Model, matrix) -> None:
    """The kept rows of the vector table ``[rows, dimensions]`` into a model built with ``pretrained_shape``."""
    tagger.get_layer("sentence_tagger").get_layer("pretrained_embedding").set_weights([matrix])


def tagger_parts(tagger: keras.Model) -> tuple[keras.Model, keras.Model]:
    """(character encoder ``[N, C] -> [N, Dc]``, sentence tagger) of a model built by ``build_tagger``."""
    return tagger.get_layer("char_features").layer, tagger.get_layer("sentence_tagger")

"""The dialog models (Keras 3, backend-agnostic): a label, or a set of labels, for each turn, seeing only the past.

    word_ids [B, D, W] -> per turn (FoldedTimeDistributed): word Embedding -> BiLSTM(return_sequences)
       (with pretrained_ids [B, D, W]: stacked with the word ids [B, D, W, 2]; their kept vector rows join the
        word embedding before the BiLSTM, frozen or fine-tuned)
                          -> max and mean over the turn's words                    -> [B, D, 4 * utterance_hidden]
    speaker_ids [B, D] -> speaker Embedding                                         -> [B, D, speaker_dim]
    (dialog-action) previous_actions [B, D, L]: the system's previous actions as bits
    concat -> Dropout                                       = turn features         -> [B, D, F]
    -> LSTM(turn_hidden, return_sequences=True), causal; padding turns (speaker id 0) masked
    -> Dropout (-> with classifier_input "state+turn": concat with the turn features [B, D, turn_hidden + F])
    -> TimeDistributed(Dense(L, softmax | sigmoid))                                 -> [B, D, L]

With a pretrained sentence encoder (``utterance_encoder``; ``training.common.text_encoder``), the word ids are word
pieces and each turn is read by that encoder (a BERT, mean-pooled -> [B, D, hidden]) in place of the word
Embedding and BiLSTM. Such a model is trained in two stages (``training.dialog.encoder_training``): the encoder alone,
as a one-utterance classifier, then the turn model over its pooled vectors (``build_turn_head``), whose layers are
named as here so that the two stages' weights make one model.

``turn_features`` is a sub-model, so the exported ``step`` function can compute one turn's features and
advance the turn LSTM's cell by one step from a given state (``training.dialog.export``).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from training.common.layers import FoldedTimeDistributed, cudnn_safe_mask, pretrained_embedding
from training.dialog.config import DialogConfig


@keras.saving.register_keras_serializable(package="seqtag")
class MaskedMaxMeanPooling(layers.Layer):
    """``[N, W, E]`` with a word mask -> ``[N, 2E]``: max and mean over the real words (zeros if there are none)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            mask = ops.ones(ops.shape(inputs)[:2], dtype="bool")
        weights = ops.expand_dims(ops.cast(mask, inputs.dtype), -1)  # [N, W, 1]
        count = ops.sum(weights, axis=1)  # [N, 1]
        mean = ops.sum(inputs * weights, axis=1) / ops.maximum(count, 1.0)
        maximum = ops.max(ops.where(weights > 0, inputs, -1e9), axis=1)
        maximum = ops.where(count > 0, maximum, 0.0)
        return ops.concatenate([maximum, mean], axis=-1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2 * input_shape[-1])


def build_utterance_encoder(config: DialogConfig, n_words: int,
                            pretrained_shape: tuple[int, int] | None = None, encoder_shape: dict | None = None) -> keras.Model:
    """One turn's word ids ``int32[W]`` (0 pads) -> one vector ``[4 * utterance_hidden]``. With ``pretrained_shape``
    (rows, dimensions of a kept vector table) the input is ``int32[W, 2]``: each word's id and its table row. With
    ``encoder_shape`` (a pretrained encoder's): piece ids -> the encoder's mean-pooled vector ``[hidden]``."""
    if encoder_shape is not None:
        from training.common.text_encoder import EncoderShape, build_text_encoder  # keras-hub: an optional extra

        return build_text_encoder(EncoderShape.from_dict(encoder_shape), n_words, config.encoder_dropout)
    if pretrained_shape is None:
        word_ids = ids = keras.Input(shape=(None,), dtype="int32", name="words")
        x = layers.Embedding(n_words, config.word_dim, name="word_embedding")(word_ids)  # [W, word_dim]
    else:
        ids = keras.Input(shape=(None, 2), dtype="int32", name="words")
        word_ids, pretrained_ids = ids[..., 0], ids[..., 1]
        x = layers.Concatenate(name="word_vectors")([
            layers.Embedding(n_words, config.word_dim, name="word_embedding")(word_ids),
            pretrained_embedding(config, pretrained_shape)(pretrained_ids)])  # [W, word_dim + vector dims]
    x = layers.Dropout(config.dropout, name="word_dropout")(x)
    x = layers.Bidirectional(layers.LSTM(config.utterance_hidden, return_sequences=True), name="utterance_bilstm")(
        x, mask=cudnn_safe_mask(word_ids))  # [W, 2 * utterance_hidden]
    # Pooled over the turn's words (ids != 0) only.
    vector = MaskedMaxMeanPooling(name="utterance_pooling")(x, mask=ops.not_equal(word_ids, 0))  # [4 * utterance_hidden]
    return keras.Model(ids, vector, name="utterance_encoder")


def dialog_inputs(config: DialogConfig, n_labels: int, pretrained: bool) -> dict:
    inputs = {"word_ids": keras.Input(shape=(None, None), dtype="int32", name="word_ids"),
              "speaker_ids": keras.Input(shape=(None,), dtype="int32", name="speaker_ids")}
    if pretrained:
        inputs["pretrained_ids"] = keras.Input(shape=(None, None), dtype="int32", name="pretrained_ids")
    if config.multi_label:
        inputs["previous_actions"] = keras.Input(shape=(None, n_labels), dtype="float32", name="previous_actions")
    return inputs


def build_turn_features(config: DialogConfig, n_words: int, n_speakers: int, n_labels: int,
                        pretrained_shape: tuple[int, int] | None = None, encoder_shape: dict | None = None) -> keras.Model:
    """Inputs of D turns -> turn features ``[B, D, F]`` (the turn LSTM's input)."""
    inputs = dialog_inputs(config, n_labels, pretrained_shape is not None)
    encoder = build_utterance_encoder(config, n_words, pretrained_shape, encoder_shape)
    words = inputs["word_ids"]
    if pretrained_shape is not None:
        words = ops.stack([inputs["word_ids"], inputs["pretrained_ids"]], axis=-1)  # [B, D, W, 2]
    utterances = FoldedTimeDistributed(encoder, name="utterances")(words)
    return keras.Model(inputs, _turn_features(config, n_speakers, utterances, inputs), name="turn_features")


def _turn_features(config: DialogConfig, n_speakers: int, utterances, inputs: dict):
    """Each turn's utterance vector ``[B, D, U]`` with its speaker (and previous actions) -> ``[B, D, F]``."""
    speakers = layers.Embedding(n_speakers, config.speaker_dim, name="speaker_embedding")(inputs["speaker_ids"])
    parts = [utterances, speakers]
    if config.multi_label:
        parts.append(inputs["previous_actions"])
    features = layers.Concatenate(name="turn_inputs")(parts)
    return layers.Dropout(config.dropout, name="turn_dropout")(features)


def _turn_model(config: DialogConfig, n_labels: int, features, speaker_ids):
    """Turn features ``[B, D, F]`` -> the causal turn LSTM -> probabilities ``[B, D, L]``."""
    turn_mask = ops.not_equal(speaker_ids, 0)  # [B, D]: padding turns have speaker id 0
    # Unidirectional: a turn's output depends on it and the turns before it only, so it can stream.
    states = layers.LSTM(config.turn_hidden, return_sequences=True, name="turn_lstm")(features, mask=turn_mask)
    states = layers.Dropout(config.dropout, name="state_dropout")(states)
    if config.classifier_input == "state+turn":
        states = layers.Concatenate(name="classifier_inputs")([states, features])  # [B, D, turn_hidden + F]
    activation = "sigmoid" if config.multi_label else "softmax"
    # float32 even under mixed precision: softmax / sigmoid and the loss need its range (training.common.distribute).
    return layers.TimeDistributed(layers.Dense(n_labels, activation=activation, dtype="float32"),
                                  name="label_probabilities", dtype="float32")(states)


def turn_input_names(config: DialogConfig) -> list[str]:
    return ["word_ids", "speaker_ids"] + (["previous_actions"] if config.multi_label else [])


def build_dialog_model(config: DialogConfig, n_words: int, n_speakers: int, n_labels: int,
                       pretrained_shape: tuple[int, int] | None = None, encoder_shape: dict | None = None) -> keras.Model:
    inputs = dialog_inputs(config, n_labels, pretrained_shape is not None)
    features = build_turn_features(config, n_words, n_speakers, n_labels, pretrained_shape, encoder_shape)(inputs)  # [B, D, F]
    return keras.Model(inputs, _turn_model(config, n_labels, features, inputs["speaker_ids"]),
                       name=config.task.replace("-", "_"))


def build_model_for(config: DialogConfig, vocabs) -> keras.Model:
    """``build_dialog_model`` with the sizes of ``vocabs`` (a ``DialogVocabs``): words, speakers, labels, the kept
    vector table's shape, the encoder's shape."""
    return build_dialog_model(config, len(vocabs.words), len(vocabs.speakers), len(vocabs.labels),
                              vocabs.pretrained.shape if vocabs.pretrained is not None else None, vocabs.encoder_shape)


def build_turn_head(config: DialogConfig, n_speakers: int, n_labels: int, vector_size: int) -> keras.Model:
    """The turn model of an encoder model alone: ``utterance_vectors [B, D, E]`` (each turn's pooled encoder vector),
    ``speaker_ids [B, D]`` (and ``previous_actions``) -> probabilities ``[B, D, L]``. Its layers are named as
    ``build_dialog_model``'s, whose weights ``copy_turn_head`` sets from it."""
    inputs = {"utterance_vectors": keras.Input(shape=(None, vector_size), dtype="float32", name="utterance_vectors"),
              "speaker_ids": keras.Input(shape=(None,), dtype="int32", name="speaker_ids")}
    if config.multi_label:
        inputs["previous_actions"] = keras.Input(shape=(None, n_labels), dtype="float32", name="previous_actions")
    features = _turn_features(config, n_speakers, inputs["utterance_vectors"], inputs)
    return keras.Model(inputs, _turn_model(config, n_labels, features, inputs["speaker_ids"]), name="turn_head")


def copy_turn_head(head: keras.Model, model: keras.Model) -> None:
    """A trained ``build_turn_head`` model's weights into the whole model (``build_dialog_model`` with an encoder)."""
    features = model.get_layer("turn_features")
    features.get_layer("speaker_embedding").set_weights(head.get_layer("speaker_embedding").get_weights())
    for name in ("turn_lstm", "label_probabilities"):
        model.get_layer(name).set_weights(head.get_layer(name).get_weights())


def utterance_encoder(model: keras.Model) -> keras.Model:
    """The per-turn utterance encoder inside a dialog model (the BiLSTM one, or a pretrained encoder)."""
    return model.get_layer("turn_features").get_layer("utterances").layer


def set_pretrained(model: keras.Model, matrix) -> None:
    """The kept rows of the vector table ``[rows, dimensions]`` into a model built with ``pretrained_shape``."""
    utterance_encoder(model).get_layer("pretrained_embedding").set_weights([matrix])


def pretrained_rows(model: keras.Model):
    """The model's kept vector rows (as trained: fine-tuned or not)."""
    return utterance_encoder(model).get_layer("pretrained_embedding").get_weights()[0]


def dialog_parts(model: keras.Model) -> tuple[keras.Model, layers.LSTM, layers.Dense]:
    """(turn features sub-model, turn LSTM, output Dense) of a model built by ``build_dialog_model``."""
    return model.get_layer("turn_features"), model.get_layer("turn_lstm"), model.get_layer("label_probabilities").layer

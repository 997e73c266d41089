"""The schema-guided span tagger: a frozen pretrained encoder reads the turn, a small head matches each word against
the descriptions of the turn's service's slots.

    word pieces [B, P] -> the first ``encoder_layers`` of a BERT (frozen)             -> states [B, P, E]
    states at each word's first piece                                                 -> words  [B, W, E]
    -> BiLSTM(hidden) ++ words -> Dense(match, gelu)                                   -> h      [B, W, M]
    slot descriptions: "name words : description" through the same encoder, mean-pooled -> slots [B, K, E]
    -> Dense(match, gelu) -> keys for B and for I                                      -> kB, kI [B, K, D]
    logits: O = Dense(1)(h); B_k = h_B . kB_k / sqrt(D); I_k = h_I . kI_k / sqrt(D)      -> [B, W, 1 + 2K]

Columns are laid out ``O, B-slot0, I-slot0, B-slot1, I-slot1, ...`` so that a label's column does not depend on how
many slots a batch pads to. Slots beyond a service's own (``slot_mask`` false) get a logit of -1e9: the softmax, and
the decoder after it, only ever choose the service's own slots. A Dense softmax over a fixed label list cannot name
a slot it never saw; scoring against descriptions can, which is why this model ends in a scorer.

Training reads the encoder's states from a cache (the encoder is frozen), so ``build_span_head`` is the trainable
part; ``build_span_model`` puts the encoder in front of it for export.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from training.schema_guided.config import SchemaSpanConfig


@keras.saving.register_keras_serializable(package="seqtag")
class GatherWords(layers.Layer):
    """``states [B, P, E]`` and ``word_starts [B, W]`` (a word's first piece; -1 pads) -> ``[B, W, E]``."""

    def call(self, states, word_starts):
        index = ops.expand_dims(ops.maximum(word_starts, 0), -1)  # [B, W, 1]
        return ops.take_along_axis(states, index, axis=1)

    def compute_output_shape(self, states_shape, word_starts_shape):
        return (word_starts_shape[0], word_starts_shape[1], states_shape[-1])


@keras.saving.register_keras_serializable(package="seqtag")
class SlotScores(layers.Layer):
    """``h [B, W, M]``, keys ``kB, kI [B, K, D]``, ``slot_mask [B, K]`` -> logits ``[B, W, 1 + 2K]``."""

    def __init__(self, match: int, **kwargs):
        super().__init__(**kwargs)
        self.match = match
        self.query_b = layers.Dense(match, name="query_b")
        self.query_i = layers.Dense(match, name="query_i")
        self.outside = layers.Dense(1, name="outside")

    def build(self, h_shape, key_b_shape=None, key_i_shape=None, slot_mask_shape=None):
        for layer in (self.query_b, self.query_i, self.outside):
            layer.build(h_shape)

    def call(self, h, key_b, key_i, slot_mask):
        scale = 1.0 / float(self.match) ** 0.5
        score_b = ops.einsum("bwd,bkd->bwk", self.query_b(h), key_b) * scale  # [B, W, K]
        score_i = ops.einsum("bwd,bkd->bwk", self.query_i(h), key_i) * scale
        off = (1.0 - ops.cast(ops.expand_dims(slot_mask, 1), h.dtype)) * -1e9  # [B, 1, K]
        pairs = ops.stack([score_b + off, score_i + off], axis=-1)  # [B, W, K, 2]
        shape = ops.shape(pairs)
        pairs = ops.reshape(pairs, (shape[0], shape[1], shape[2] * 2))  # B-0, I-0, B-1, I-1, ...
        return ops.concatenate([self.outside(h), pairs], axis=-1)

    def compute_output_shape(self, h_shape, key_b_shape=None, key_i_shape=None, slot_mask_shape=None):
        k = None if key_b_shape[1] is None else 2 * key_b_shape[1] + 1
        return (h_shape[0], h_shape[1], k)

    def get_config(self):
        return {**super().get_config(), "match": self.match}


def build_span_head(config: SchemaSpanConfig) -> keras.Model:
    """The trainable part: encoder states and slot vectors in, logits ``[B, W, 1 + 2K]`` out."""
    states = keras.Input((None, config.encoder_size), name="states")
    word_starts = keras.Input((None,), dtype="int32", name="word_starts")
    slot_vectors = keras.Input((None, config.encoder_size), name="slot_vectors")
    slot_mask = keras.Input((None,), dtype="float32", name="slot_mask")
    words = GatherWords(name="gather_words")(states, word_starts)  # [B, W, E]
    word_mask = ops.greater_equal(word_starts, 0)
    x = layers.Dropout(config.dropout)(words)
    context = layers.Bidirectional(layers.LSTM(config.hidden, return_sequences=True), name="bilstm")(x, mask=word_mask)
    h = layers.Dense(config.match, activation="gelu", name="word_match")(layers.Concatenate()([context, x]))
    h = layers.Dropout(config.dropout)(h)  # [B, W, M]
    s = layers.Dense(config.match, activation="gelu", name="slot_match")(slot_vectors)  # [B, K, M]
    key_b = layers.Dense(config.match, name="key_b")(s)
    key_i = layers.Dense(config.match, name="key_i")(s)
    logits = SlotScores(config.match, name="slot_scores")(h, key_b, key_i, slot_mask)
    return keras.Model([states, word_starts, slot_vectors, slot_mask], logits, name="schema_span_head")

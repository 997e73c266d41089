"""A pretrained sentence encoder as a Keras utterance encoder: a BERT read from a Hugging Face directory.

The directory is what ``sentence-transformers`` or ``transformers`` publish for a BERT (all-MiniLM-L6-v2, say):
``config.json`` (``model_type`` "bert"), ``model.safetensors`` and ``tokenizer.json``. The network is keras-hub's
``BertBackbone`` (an optional extra, ``pip install -e '.[encoder]'``; only training builds it: an exported model
is a SavedModel and serving needs no keras-hub), with the first ``layers`` transformer layers of the published
ones and the embedding rows of the word pieces a model keeps (``training.common.word_pieces``):

    piece ids [N, W] (0 pads) -> BertBackbone: token + position + segment embeddings -> LayerNorm
                              -> ``layers`` x (self-attention over the real pieces, feed-forward)  -> [N, W, hidden]
                              -> mean over the real pieces (sentence-transformers' pooling)       -> [N, hidden]

Weights are ported by name from the published tensors (the mapping keras-hub's own Hugging Face converter uses);
the port checks every shape, and a test checks a tiny BERT written by the test against a NumPy reference forward
pass of the published architecture.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import keras
import numpy as np
from keras import layers, ops

from training.common.artifacts import sha256_file
from training.common.errors import ConfigError
from training.common.word_pieces import WordPieces

logger = logging.getLogger(__name__)

CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE = "config.json", "model.safetensors", "tokenizer.json"


@dataclass(frozen=True)
class EncoderShape:
    """What builds the encoder again without its directory (saved with a model's vocabularies)."""

    layers: int  # transformer layers kept (the first ones)
    heads: int
    hidden: int  # the pooled vector's size
    intermediate: int  # feed-forward size
    positions: int  # position embeddings kept: the model's max pieces per turn and a spare (``position_rows``)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "EncoderShape":
        return cls(**data)


@dataclass(frozen=True)
class PretrainedEncoder:
    """A published encoder directory, read and checked."""

    directory: Path
    config: dict  # its config.json
    word_pieces: WordPieces  # its whole vocabulary

    @classmethod
    def read(cls, directory: str | Path) -> "PretrainedEncoder":
        directory = Path(directory)
        for name in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE):
            if not (directory / name).is_file():
                raise ConfigError(f"{directory}: no {name} (an encoder directory holds {CONFIG_FILE}, {WEIGHTS_FILE} "
                                  f"and {TOKENIZER_FILE}, as sentence-transformers publish them)")
        try:
            config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        except ValueError as error:
            raise ConfigError(f"{directory / CONFIG_FILE}: not JSON ({error})") from error
        if config.get("model_type") != "bert":
            raise ConfigError(f"{directory / CONFIG_FILE}: model_type {config.get('model_type')!r}; only BERT encoders "
                              "(model_type \"bert\") are supported")
        if config.get("hidden_act", "gelu") != "gelu":
            raise ConfigError(f"{directory / CONFIG_FILE}: hidden_act {config['hidden_act']!r}; BertBackbone uses gelu")
        return cls(directory, config, WordPieces.from_file(directory / TOKENIZER_FILE))

    @property
    def layers(self) -> int:
        return int(self.config["num_hidden_layers"])

    def shape(self, layers: int, max_words: int) -> EncoderShape:
        if not 1 <= layers <= self.layers:
            raise ConfigError(f"encoder_layers must be in 1..{self.layers} for {self.directory}, got {layers}")
        positions = position_rows(max_words)
        if positions > int(self.config.get("max_position_embeddings", 512)):
            raise ConfigError(f"max_words {max_words} needs {positions} positions, more than {self.directory}'s "
                              f"{self.config['max_position_embeddings']}")
        return EncoderShape(layers, int(self.config["num_attention_heads"]), int(self.config["hidden_size"]),
                            int(self.config["intermediate_size"]), positions)

    def record(self, layers: int, licence: str) -> dict:
        """What ``metadata.json`` says of the encoder."""
        return {"directory": str(self.directory), "name": self.config.get("_name_or_path", self.directory.name),
                "file": WEIGHTS_FILE, "sha256": sha256_file(self.directory / WEIGHTS_FILE),
                "layers": f"first {layers} of {self.layers}", "licence": licence or "not stated"}

    def tensors(self) -> dict[str, np.ndarray]:
        from safetensors.numpy import load_file

        tensors = load_file(str(self.directory / WEIGHTS_FILE))
        # Published BERTs name their tensors with or without the "bert." prefix, and their LayerNorms
        # weight/bias (newer) or gamma/beta (older).
        renamed = {}
        for name, value in tensors.items():
            name = name.removeprefix("bert.")
            if ".LayerNorm." in name:
                name = name.replace(".gamma", ".weight").replace(".beta", ".bias")
            renamed[name] = value
        return renamed


def position_rows(max_words: int) -> int:
    """Position embeddings a model with ``max_words`` pieces per turn keeps: training pads a batch beyond its longest
    turn (to a multiple of 8 under JAX, and one multiple more for the second batch: ``ShapeGuardedBatches``), and
    the padded positions need rows too, though what they hold is masked out."""
    return -(-max_words // 8) * 8 + 8


@keras.saving.register_keras_serializable(package="seqtag")
class MaskedMeanPooling(layers.Layer):
    """``[N, W, E]`` and a mask ``[N, W]`` -> the mean over the real positions ``[N, E]`` (zeros if none)."""

    def call(self, inputs, mask):
        weights = ops.expand_dims(ops.cast(mask, inputs.dtype), -1)  # [N, W, 1]
        return ops.sum(inputs * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1.0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])


def build_text_encoder(shape: EncoderShape, vocabulary_size: int, dropout: float = 0.1) -> keras.Model:
    """Piece ids ``int32[N, W]`` (0 pads) -> mean-pooled ``[N, hidden]``; random weights (``port_weights`` fills them)."""
    try:
        from keras_hub.models import BertBackbone
    except ImportError as error:  # an optional extra: serving and the other models do without it
        raise ConfigError("a pretrained utterance encoder needs keras-hub: pip install -e '.[encoder]'") from error

    ids = keras.Input(shape=(None,), dtype="int32", name="pieces")
    backbone = BertBackbone(vocabulary_size=vocabulary_size, num_layers=shape.layers, num_heads=shape.heads,
                            hidden_dim=shape.hidden, intermediate_dim=shape.intermediate, dropout=dropout,
                            max_sequence_length=shape.positions, name="bert")
    # The [CLS] pooler is BERT's, not this model's: the mean pool replaces it, so it is frozen (and never updated).
    backbone.get_layer("pooled_dense").trainable = False
    mask = ops.not_equal(ids, 0)
    states = backbone({"token_ids": ids, "segment_ids": ops.zeros_like(ids),
                       "padding_mask": ops.cast(mask, "int32")})["sequence_output"]  # [N, W, hidden]
    return keras.Model(ids, MaskedMeanPooling(name="piece_pooling")(states, mask), name="text_encoder")


def port_weights(encoder: keras.Model, pretrained: PretrainedEncoder, rows: Sequence[int]) -> None:
    """The published weights into ``build_text_encoder``'s model: the token embedding's rows ``rows`` (one per kept
    piece, in the model's id order), the first positions, the first layers."""
    tensors = pretrained.tensors()
    backbone = encoder.get_layer("bert")

    def put(variable, name: str, value: np.ndarray | None = None) -> None:
        value = tensors[name] if value is None else value
        if tuple(variable.shape) != value.shape:
            raise ConfigError(f"{pretrained.directory / WEIGHTS_FILE}: {name} has shape {value.shape}, "
                              f"the encoder's {variable.path} {tuple(variable.shape)}")
        variable.assign(value.astype(np.float32))

    def dense(variable, name: str) -> None:  # [out, in] (PyTorch) -> the Keras kernel's [in, ...] layout
        put(variable, name, tensors[name].T.reshape(tuple(variable.shape)))

    def vector(variable, name: str) -> None:
        put(variable, name, tensors[name].reshape(tuple(variable.shape)))

    put(backbone.get_layer("token_embedding").embeddings, "embeddings.word_embeddings.weight",
        tensors["embeddings.word_embeddings.weight"][np.asarray(rows)])
    positions = backbone.get_layer("position_embedding").position_embeddings
    put(positions, "embeddings.position_embeddings.weight",
        tensors["embeddings.position_embeddings.weight"][:positions.shape[0]])
    put(backbone.get_layer("segment_embedding").embeddings, "embeddings.token_type_embeddings.weight")
    put(backbone.get_layer("embeddings_layer_norm").gamma, "embeddings.LayerNorm.weight")
    put(backbone.get_layer("embeddings_layer_norm").beta, "embeddings.LayerNorm.bias")
    for i in range(backbone.num_layers):
        block, prefix = backbone.get_layer(f"transformer_layer_{i}"), f"encoder.layer.{i}."
        attention = block._self_attention_layer
        for part, name in (("query_dense", "attention.self.query"), ("key_dense", "attention.self.key"),
                           ("value_dense", "attention.self.value"), ("output_dense", "attention.output.dense")):
            dense(getattr(attention, part).kernel, f"{prefix}{name}.weight")
            vector(getattr(attention, part).bias, f"{prefix}{name}.bias")
        put(block._self_attention_layer_norm.gamma, f"{prefix}attention.output.LayerNorm.weight")
        put(block._self_attention_layer_norm.beta, f"{prefix}attention.output.LayerNorm.bias")
        dense(block._feedforward_intermediate_dense.kernel, f"{prefix}intermediate.dense.weight")
        vector(block._feedforward_intermediate_dense.bias, f"{prefix}intermediate.dense.bias")
        dense(block._feedforward_output_dense.kernel, f"{prefix}output.dense.weight")
        vector(block._feedforward_output_dense.bias, f"{prefix}output.dense.bias")
        put(block._feedforward_layer_norm.gamma, f"{prefix}output.LayerNorm.weight")
        put(block._feedforward_layer_norm.beta, f"{prefix}output.LayerNorm.bias")
    if "pooler.dense.weight" in tensors:  # unused by the mean pool, but the backbone has it
        dense(backbone.get_layer("pooled_dense").kernel, "pooler.dense.weight")
        vector(backbone.get_layer("pooled_dense").bias, "pooler.dense.bias")
    logger.info("ported %s: %d layers, %d piece rows", pretrained.directory, backbone.num_layers, len(rows))

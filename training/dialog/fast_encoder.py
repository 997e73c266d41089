"""The fast ``step`` of a dialog model with a pretrained utterance encoder: the BERT, its pooling and one turn-LSTM
step as one ONNX graph, built from the exported version's weights (``training.common.fast_path`` says why and how
it is checked against the SavedModel before it serves).

Why it matters more here than for the BiLSTM models: a float16 export stores its 10 M weights as float16 and its
``step`` casts them all to float32 on every call (about 2 ms a turn on this machine); the graph holds them cast once,
when the version loads, and ONNX Runtime runs the transformer's matrix products fused.

    Python: a turn's pieces (``SavedDialogModel.model_turns``) -> the start marker and the first max_words - 1 piece
            ids, speaker ids (the rules of ``training.dialog.vocab`` and of the exported ``step``)
    ONNX:   piece_ids [B, W] (0 pads) -> token + position + segment embeddings -> LayerNorm
            -> layers x (multi-head self-attention over the real pieces -> add, LayerNorm
                         -> Dense, GELU (tanh, as keras-hub's BertBackbone) -> Dense -> add, LayerNorm)
            -> mean over the real pieces                                                  -> [B, hidden]
            + speaker Embedding (+ previous actions)                      = turn features -> [B, F]
            -> one step of the turn LSTM and the classifier (``fast_dialog.turn_step``)   -> [B, L], state
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from training.common.fast_path import FastPathUnsupported, GraphBuilder, inference_session, weights_by_role
from training.common.vocab import UNK_ID
from training.dialog.fast_dialog import OnnxDialogStep, turn_step
from training.dialog.vocab import TURN_START_ID, DialogVocabs

TURN_LAYERS = ("speaker_embedding", "turn_lstm", "label_probabilities")  # the turn model's, after the encoder
LAYER_NORM_EPSILON = 1e-12  # keras-hub's BertBackbone (and BERT's)


def weights_by_path(variables) -> dict[str, np.ndarray]:
    """A SavedModel's float variables by their path (``transformer_layer_0/self_attention_layer/query/kernel``), as
    float32: a float16 export computes in float32 from the values it stores."""
    return {v.name.split(":")[0]: v.numpy().astype(np.float32) for v in variables if v.dtype.is_floating}


class FastEncoderDialogStep(OnnxDialogStep):
    """One turn for each of B sessions, states in and out, through ONNX Runtime."""

    def __init__(self, saved_model, metadata: dict, vocab: dict):
        config = metadata.get("config")
        if not isinstance(config, dict) or "ensemble" in vocab:
            raise FastPathUnsupported("an ensemble of encoder models is not exported")
        variables = getattr(saved_model, "stored_variables", None)
        variables = list(variables) if variables is not None else list(saved_model.variables or saved_model._all_variables)
        encoder = weights_by_path(variables)
        turn = weights_by_role([v for v in variables if v.name.split("/")[0] in TURN_LAYERS])
        shape = vocab.get("encoder_shape") or {}
        if not shape or "token_embedding/embeddings" not in encoder:
            raise FastPathUnsupported("no encoder weights or shape in the version")
        self.vocabs = DialogVocabs.from_dict(vocab)
        self.max_words = int(config["max_words"])
        self.multi_label = bool(config.get("task") == "dialog-action")
        self.model = encoder_step_graph(encoder, turn, int(shape["layers"]), int(shape["heads"]), self.multi_label,
                                        config.get("classifier_input", "state") == "state+turn")
        # One thread, as the other dialog steps: two (for the service's micro-batches of many sessions' turns) served
        # 516 turns/s at 64 sessions against 533 for one, in the same kind of run: the other core is busy with HTTP.
        self.session = inference_session(self.model)
        self._pieces = self.vocabs.words._index  # type: ignore[attr-defined]
        self._speakers = self.vocabs.speakers._index  # type: ignore[attr-defined]

    def turn_feeds(self, turns: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
        """Each session's pieces (``SavedDialogModel.model_turns``) -> the start marker and the first max_words - 1
        piece ids, as the exported ``step`` looks them up (not normalized)."""
        kept = [list(pieces[:self.max_words - 1]) for pieces in turns]
        piece_ids = np.zeros((len(kept), 1 + max(len(p) for p in kept)), np.int32)
        piece_ids[:, 0] = TURN_START_ID
        for row, pieces in enumerate(kept):
            piece_ids[row, 1:1 + len(pieces)] = [self._pieces.get(p, UNK_ID) for p in pieces]
        return {"piece_ids": piece_ids}


def encoder_step_graph(encoder: dict[str, np.ndarray], turn: dict, layers: int, heads: int, multi_label: bool,
                       state_and_turn: bool):
    """The encoder model's ``step`` as an ONNX model (weights: the encoder's by path, the turn model's by role)."""
    g = GraphBuilder("seqtag_encoder_dialog_step")
    piece_ids = g.input("piece_ids", np.int32, ["batch", "pieces"])
    speaker_ids = g.input("speaker_ids", np.int32, ["batch"])
    units = turn[("turn_lstm", "", "recurrent_kernel")].shape[0]
    state_h = g.input("state_h", np.float32, ["batch", units])
    state_c = g.input("state_c", np.float32, ["batch", units])
    hidden = encoder["token_embedding/embeddings"].shape[1]
    size = hidden // heads

    def layer_norm(x: str, prefix: str) -> str:
        return g.node("LayerNormalization", [x, g.const(encoder[prefix + "/gamma"]), g.const(encoder[prefix + "/beta"])],
                      axis=-1, epsilon=LAYER_NORM_EPSILON)

    def dense(x: str, prefix: str) -> str:
        # Kernels [in, out], [hidden, heads, size] (query, key, value) or [heads, size, hidden] (attention output):
        # each as [in, out], the input's axes flattened in the order the graph's reshapes lay them out.
        kernel, bias = encoder[prefix + "/kernel"], encoder[prefix + "/bias"]
        return g.dense(x, kernel.reshape(-1, bias.size), bias.reshape(-1))

    def heads_first(x: str) -> str:  # [B, W, hidden] -> [B, heads, W, size]
        return g.node("Transpose", [g.node("Reshape", [x, g.const(np.array([0, 0, heads, size]))])], perm=[0, 2, 1, 3])

    # Embeddings: token rows, positions 0..W-1, segment 0.
    length = g.node("Slice", [g.node("Shape", [piece_ids]), g.const(np.array([1])), g.const(np.array([2]))])  # [W]
    positions = g.node("Slice", [g.const(encoder["position_embedding/embeddings"]), g.const(np.array([0])), length,
                                 g.const(np.array([0]))])  # the first W rows
    x = g.node("Add", [g.node("Gather", [g.const(encoder["token_embedding/embeddings"]), piece_ids]), positions])
    x = g.node("Add", [x, g.const(encoder["segment_embedding/embeddings"][0])])
    x = layer_norm(x, "embeddings_layer_norm")
    is_piece = g.node("Greater", [piece_ids, g.const(np.array(0, np.int32))])  # [B, W]
    key_mask = g.node("Unsqueeze", [is_piece, g.const(np.array([1, 2]))])  # [B, 1, 1, W]
    for i in range(layers):
        prefix = f"transformer_layer_{i}/"
        attention = prefix + "self_attention_layer/"
        query = g.node("Mul", [heads_first(dense(x, attention + "query")), g.const(np.array(1 / math.sqrt(size), np.float32))])
        key, value = heads_first(dense(x, attention + "key")), heads_first(dense(x, attention + "value"))
        scores = g.node("MatMul", [query, g.node("Transpose", [key], perm=[0, 1, 3, 2])])  # [B, heads, W, W]
        weights = g.node("Softmax", [g.node("Where", [key_mask, scores, g.const(np.array(-1e9, np.float32))])], axis=-1)
        context = g.node("Reshape", [g.node("Transpose", [g.node("MatMul", [weights, value])], perm=[0, 2, 1, 3]),
                                     g.const(np.array([0, 0, hidden]))])  # [B, W, hidden]
        x = layer_norm(g.node("Add", [x, dense(context, attention + "attention_output")]),
                       prefix + "self_attention_layer_norm")
        inner = dense(x, prefix + "feedforward_intermediate_dense")
        cube = g.node("Mul", [g.node("Mul", [inner, inner]), inner])
        tanh = g.node("Tanh", [g.node("Mul", [g.const(np.array(math.sqrt(2 / math.pi), np.float32)),
                                              g.node("Add", [inner, g.node("Mul", [cube, g.const(np.array(0.044715, np.float32))])])])])
        gelu = g.node("Mul", [g.node("Mul", [inner, g.const(np.array(0.5, np.float32))]),
                              g.node("Add", [tanh, g.const(np.array(1.0, np.float32))])])
        x = layer_norm(g.node("Add", [x, dense(gelu, prefix + "feedforward_output_dense")]), prefix + "feedforward_layer_norm")
    # Mean over the real pieces (MaskedMeanPooling).
    weight = g.node("Unsqueeze", [g.node("Cast", [is_piece], to=1), g.const(np.array([-1]))])  # [B, W, 1]
    pooled = g.node("Div", [g.node("ReduceSum", [g.node("Mul", [x, weight]), g.const(np.array([1]))], keepdims=0),
                            g.node("Max", [g.node("ReduceSum", [weight, g.const(np.array([1]))], keepdims=0),
                                           g.const(np.array(1.0, np.float32))])])
    parts = [pooled, g.node("Gather", [g.const(turn[("speaker_embedding", "", "embeddings")]), speaker_ids])]
    if multi_label:
        n_labels = turn[("label_probabilities", "", "bias")].shape[0]
        parts.append(g.input("previous_actions", np.float32, ["batch", n_labels]))
    turn_step(g, turn, g.node("Concat", parts, axis=-1), state_h, state_c, multi_label, state_and_turn)
    return g.model()

"""The schema-guided span tagger's fast path: its two signatures as ONNX graphs built from the exported version's
weights (``training.common.fast_path`` says why and how a fast path is checked before it serves).

    encode_slots: piece_ids [N, P]                         -> the encoder, mean over real pieces -> vectors [N, E]
    emissions:    piece_ids [B, P] -> the encoder           -> states [B, P, E]
                  (one encoder graph serves both, so its weights are held once; the head is a graph of its own)
                  states at each word's first piece (word_starts [B, W], -1 pads)            -> words [B, W, E]
                  -> BiLSTM over each turn's words ++ words -> Dense(match, gelu)            -> h [B, W, M]
                  slot_vectors [B, K, E] -> Dense(match, gelu) -> key_b, key_i               -> [B, K, M]
                  O = outside(h); B_k = query_b(h) . key_b_k / sqrt(M); I_k likewise; a slot beyond the
                  service's own (slot_mask 0) gets -1e9                                      -> softmax [B, W, 1 + 2K]

The same layout and arithmetic as ``training.schema_guided.model`` (``GatherWords``, ``SlotScores``); the encoder
is the dialog models' (``training.common.encoder_graph``), here with all its states kept.
"""

from __future__ import annotations

import copy
import math
import re

import numpy as np

from training.common.fast_path import FastPathUnsupported, GraphBuilder, inference_session, quantized_matmul_model
from training.common.encoder_graph import encoder_graph, states_width, weights_by_path


def gelu(g: GraphBuilder, x: str) -> str:
    """Keras's ``gelu`` (exact): x * (1 + erf(x / sqrt 2)) / 2."""
    erf = g.node("Erf", [g.node("Mul", [x, g.const(np.array(1 / math.sqrt(2), np.float32))])])
    return g.node("Mul", [g.node("Mul", [x, g.const(np.array(0.5, np.float32))]),
                          g.node("Add", [erf, g.const(np.array(1.0, np.float32))])])


def lstm_weight(weights: dict[str, np.ndarray], direction: str, part: str) -> np.ndarray:
    """``bilstm/forward_lstm/lstm_cell/kernel``; Keras numbers the inner layer (``forward_lstm_3``) when a process
    built other models first, as a test run does."""
    pattern = re.compile(rf"bilstm/{direction}_lstm(_\d+)?/lstm_cell/{part}")
    found = [name for name in weights if pattern.fullmatch(name)]
    if len(found) != 1:
        raise FastPathUnsupported(f"no single {direction} LSTM {part} in the version")
    return weights[found[0]]


class FastSchemaTagger:
    """``encode_slots`` and ``emissions`` of an exported schema-guided span tagger, through ONNX Runtime."""

    def __init__(self, saved_model, metadata: dict):
        config = metadata.get("config")
        variables = getattr(saved_model, "stored_variables", None)
        if not isinstance(config, dict) or variables is None:
            raise FastPathUnsupported("no config or stored variables in the version")
        weights = weights_by_path(list(variables))
        needed = ("token_embedding/embeddings", "word_match/kernel", "slot_match/kernel", "key_b/kernel", "key_i/kernel",
                  "slot_scores/query_b/kernel", "slot_scores/query_i/kernel", "slot_scores/outside/kernel")
        if any(name not in weights for name in needed):
            raise FastPathUnsupported("not the encoder and span head this fast path knows")
        layers = int(config["encoder_layers"])
        heads = int(weights["transformer_layer_0/self_attention_layer/query/kernel"].shape[1])
        # Sessions, and the float encoder graph until ``quantized`` has read it (``release``): ONNX Runtime holds its
        # own copy of the weights
        self.width = states_width(weights)
        self.encoder_model = encoder_graph(weights, layers, heads, with_states=True)
        self.encoder = inference_session(self.encoder_model)
        self.turn_encoder = self.encoder  # what encodes turns: this one, or the int8 twin's
        self.head = inference_session(head_graph(weights))
        self.precision = "float32"

    def quantized(self) -> "FastSchemaTagger":
        """A twin whose turns go through an int8 encoder (``fast_path.quantized_matmul_model``: dense layers in
        int8, activations quantized per call), each turn in a call of its own and without padding, so that a turn's
        slots never depend on the turns beside it. The slot descriptions stay float32: a service's vectors are
        encoded once and kept."""
        twin = copy.copy(self)
        twin.turn_encoder = inference_session(quantized_matmul_model(self.encoder_model))
        twin.precision = "int8"
        return twin

    def release(self) -> None:
        """Let go of the float encoder graph once the reader has chosen its precision."""
        self.encoder_model = None

    def encode_slots(self, piece_ids: np.ndarray) -> np.ndarray:
        return self.encoder.run(["turn_vector"], {"piece_ids": piece_ids})[0]

    def turn_states(self, piece_ids: np.ndarray) -> np.ndarray:
        """The encoder's states ``[B, P, E]`` of the turns' pieces ``[B, P]`` (0 pads)."""
        if self.precision != "int8":
            return self.turn_encoder.run(["states"], {"piece_ids": piece_ids})[0]
        states = np.zeros((*piece_ids.shape, self.width), np.float32)
        for row, ids in enumerate(piece_ids):  # one call a turn, at its own length: padding would move its scales
            length = int(np.count_nonzero(ids))
            states[row, :length] = self.turn_encoder.run(["states"], {"piece_ids": ids[None, :length]})[0][0]
        return states

    def emissions(self, piece_ids: np.ndarray, word_starts: np.ndarray, slot_vectors: np.ndarray,
                  slot_mask: np.ndarray) -> np.ndarray:
        return self.head.run(["probabilities"], {"states": self.turn_states(piece_ids), "word_starts": word_starts,
                                                 "slot_vectors": slot_vectors, "slot_mask": slot_mask})[0]


def head_graph(weights: dict[str, np.ndarray]):
    """``emissions`` after the encoder, as an ONNX model: ``states [B, P, E]``, ``word_starts``, ``slot_vectors``,
    ``slot_mask`` -> ``probabilities`` (weights by path, as ``weights_by_path`` reads them)."""
    g = GraphBuilder("seqtag_schema_span_head")
    width = states_width(weights)
    states = g.input("states", np.float32, ["batch", "pieces", width])
    word_starts = g.input("word_starts", np.int32, ["batch", "words"])
    slot_vectors = g.input("slot_vectors", np.float32, ["batch", "slots", width])
    slot_mask = g.input("slot_mask", np.float32, ["batch", "slots"])

    def dense(x: str, name: str) -> str:
        return g.dense(x, weights[name + "/kernel"], weights[name + "/bias"])

    # GatherWords: each word's first piece ([B, W] indices broadcast over E); -1 pads read piece 0.
    index = g.node("Unsqueeze", [g.node("Max", [word_starts, g.const(np.array(0, np.int32))]), g.const(np.array([-1]))])
    index = g.node("Expand", [g.node("Cast", [index], to=7), g.node("Concat", [
        g.node("Shape", [word_starts]), g.const(np.array([width]))], axis=0)])  # int64 [B, W, E]
    words = g.node("GatherElements", [states, index], axis=1)  # [B, W, E]
    # The BiLSTM over each turn's words (the real ones come first: -1 only pads or cuts at the end).
    lengths = g.node("ReduceSum", [g.node("Cast", [g.node("GreaterOrEqual", [word_starts, g.const(np.array(0, np.int32))])],
                                          to=6), g.const(np.array([1]))], keepdims=0)  # int32 [B]
    lstm = {direction: tuple(lstm_weight(weights, direction, part) for part in ("kernel", "recurrent_kernel", "bias"))
            for direction in ("forward", "backward")}
    y, _ = g.bidirectional_lstm(g.node("Transpose", [words], perm=[1, 0, 2]), lengths, lstm["forward"], lstm["backward"])
    hidden = lstm["forward"][1].shape[0]
    context = g.node("Reshape", [g.node("Transpose", [y], perm=[2, 0, 1, 3]), g.const(np.array([0, 0, 2 * hidden]))])
    h = gelu(g, dense(g.node("Concat", [context, words], axis=-1), "word_match"))  # [B, W, M]
    s = gelu(g, dense(slot_vectors, "slot_match"))  # [B, K, M]
    match = weights["slot_scores/query_b/kernel"].shape[1]
    scale = g.const(np.array(1 / math.sqrt(match), np.float32))
    off = g.node("Mul", [g.node("Sub", [g.const(np.array(1.0, np.float32)), g.node("Unsqueeze", [slot_mask, g.const(np.array([1]))])]),
                         g.const(np.array(-1e9, np.float32))])  # [B, 1, K]

    def scores(query: str, key: str) -> str:  # [B, W, K, 1]
        product = g.node("MatMul", [dense(h, f"slot_scores/{query}"), g.node("Transpose", [dense(s, key)], perm=[0, 2, 1])])
        return g.node("Unsqueeze", [g.node("Add", [g.node("Mul", [product, scale]), off]), g.const(np.array([-1]))])

    pairs = g.node("Concat", [scores("query_b", "key_b"), scores("query_i", "key_i")], axis=-1)  # [B, W, K, 2]
    pairs = g.node("Reshape", [pairs, g.const(np.array([0, 0, -1]))])  # B-0, I-0, B-1, I-1, ...
    logits = g.node("Concat", [dense(h, "slot_scores/outside"), pairs], axis=-1)
    g.output(g.node("Softmax", [logits], axis=-1), "probabilities", np.float32, ["batch", "words", "labels"])
    return g.model()

"""A pretrained BERT encoder (keras-hub's ``BertBackbone``, as ``training.common.text_encoder`` ports it) as ONNX graph
pieces, built from an exported version's weights by path: what the fast paths of every model with an encoder share
(``training.dialog.fast_encoder``, ``training.schema_guided.fast``).

    piece_ids [B, W] (0 pads) -> token + position + segment embeddings -> LayerNorm
        -> layers x (multi-head self-attention over the real pieces -> add, LayerNorm
                     -> Dense, GELU (tanh, as keras-hub's BertBackbone) -> Dense -> add, LayerNorm)   -> states [B, W, E]
        -> mean over the real pieces (MaskedMeanPooling)                                          -> [B, E]
"""

from __future__ import annotations

import math

import numpy as np

from training.common.fast_path import GraphBuilder

LAYER_NORM_EPSILON = 1e-12  # keras-hub's BertBackbone (and BERT's)


def weights_by_path(variables) -> dict[str, np.ndarray]:
    """A SavedModel's float variables by their path (``transformer_layer_0/self_attention_layer/query/kernel``), as
    float32: a float16 export computes in float32 from the values it stores."""
    values = ((v.name.split(":")[0], np.asarray(v.numpy())) for v in variables)
    return {name: value.astype(np.float32) for name, value in values if np.issubdtype(value.dtype, np.floating)}


def encoder_graph(encoder: dict[str, np.ndarray], layers: int, heads: int, with_states: bool = False):
    """The pretrained encoder and its pooling as an ONNX model: ``piece_ids [B, W]`` -> ``turn_vector [B, hidden]``
    (weights: the encoder's by path); ``with_states``: also every piece's ``states [B, W, hidden]``."""
    g = GraphBuilder("seqtag_turn_encoder")
    piece_ids = g.input("piece_ids", np.int32, ["batch", "pieces"])
    states, is_piece = encoder_states(g, encoder, piece_ids, layers, heads)
    g.output(mean_over_pieces(g, states, is_piece), "turn_vector", np.float32, ["batch", states_width(encoder)])
    if with_states:
        g.output(states, "states", np.float32, ["batch", "pieces", states_width(encoder)])
    return g.model()


def states_width(encoder: dict[str, np.ndarray]) -> int:
    return int(encoder["token_embedding/embeddings"].shape[1])


def encoder_states(g: GraphBuilder, encoder: dict[str, np.ndarray], piece_ids: str, layers: int,
                   heads: int) -> tuple[str, str]:
    """The first ``layers`` of a BERT (keras-hub's ``BertBackbone`` port, weights by path) over ``piece_ids [B, W]``
    (0 pads) -> (``states [B, W, hidden]``, ``is_piece [B, W]``)."""
    hidden = states_width(encoder)
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
    return x, is_piece


def mean_over_pieces(g: GraphBuilder, states: str, is_piece: str) -> str:
    """``states [B, W, hidden]`` averaged over the real pieces (``MaskedMeanPooling``) -> ``[B, hidden]``."""
    weight = g.node("Unsqueeze", [g.node("Cast", [is_piece], to=1), g.const(np.array([-1]))])  # [B, W, 1]
    return g.node("Div", [g.node("ReduceSum", [g.node("Mul", [states, weight]), g.const(np.array([1]))], keepdims=0),
                          g.node("Max", [g.node("ReduceSum", [weight, g.const(np.array([1]))], keepdims=0),
                                         g.const(np.array(1.0, np.float32))])])



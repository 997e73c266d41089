"""The fast ``step`` of a dialog model with a pretrained utterance encoder: the BERT and its pooling
(``training.common.encoder_graph``), then one turn-LSTM step, as ONNX graphs built from the exported version's weights (``training.common.fast_path`` says why and how
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

Two graphs, not one: the encoder's (``piece_ids`` -> the turn's vector) and the turn model's (vector, speaker,
state -> probabilities, state). Between them sits an LRU cache of turn vectors keyed by the turn's piece ids
(backchannels such as "Uh-huh." are a large share of SwDA's turns), so a repeated turn skips the transformer.

``quantized()`` gives an int8 twin (``fast_path.quantized_matmul_model``: the dense layers' weights in int8 per
channel, activations quantized per call). Per call means per tensor: a batch of turns would share one scale, and
one session's turn would change another's answer, so the int8 encoder takes each turn in a call of its own (also
faster than a padded batch: issue 32's probe measured 0.64 ms a turn alone against 1.3 ms in calls of 16). The
float encoder takes the cache's misses in one call.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from typing import Sequence

import numpy as np

from training.common.encoder_graph import encoder_graph, weights_by_path
from training.common.fast_path import (FastPathUnsupported, GraphBuilder, inference_session, quantized_matmul_model,
                                       weights_by_role)
from training.common.vocab import UNK_ID
from training.dialog.fast_dialog import OnnxDialogStep, turn_step
from training.dialog.vocab import TURN_START_ID, DialogVocabs

TURN_LAYERS = ("speaker_embedding", "turn_lstm", "label_probabilities")  # the turn model's, after the encoder
CACHED_TURNS = 4096  # turn vectors kept (a 384-wide one is 1.5 KB: 6 MB)


class TurnVectorCache:
    """Turn vectors by piece ids, least recently used out first; thread-safe (the service's request threads)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.hits = self.misses = 0
        self._vectors: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, ...]) -> np.ndarray | None:
        with self._lock:
            vector = self._vectors.get(key)
            if vector is None:
                self.misses += 1
            else:
                self.hits += 1
                self._vectors.move_to_end(key)
            return vector

    def put(self, key: tuple[int, ...], vector: np.ndarray) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._vectors[key] = vector
            self._vectors.move_to_end(key)
            while len(self._vectors) > self.capacity:
                self._vectors.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._vectors.clear()
            self.hits = self.misses = 0

    def stats(self) -> dict:
        with self._lock:
            looked = self.hits + self.misses
            return {"turns": len(self._vectors), "capacity": self.capacity, "hits": self.hits, "misses": self.misses,
                    "hit_rate": self.hits / looked if looked else 0.0}


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
        self.hidden = encoder["token_embedding/embeddings"].shape[1]
        self.encoder_model = encoder_graph(encoder, int(shape["layers"]), int(shape["heads"]))
        self.model = turn_graph(turn, self.hidden, self.multi_label,
                                config.get("classifier_input", "state") == "state+turn")
        self.precision = "float32"
        # One thread, as the other dialog steps: two (for the service's micro-batches of many sessions' turns) served
        # 516 turns/s at 64 sessions against 533 for one, in the same kind of run: the other core is busy with HTTP.
        self.encoder_session = inference_session(self.encoder_model)
        self.session = inference_session(self.model)
        self.vectors = TurnVectorCache(CACHED_TURNS)
        self._pieces = self.vocabs.words._index  # type: ignore[attr-defined]
        self._speakers = self.vocabs.speakers._index  # type: ignore[attr-defined]

    def quantized(self) -> "FastEncoderDialogStep":
        """A twin whose encoder's dense layers run in int8, each turn in a call of its own, with a cache of its own;
        the turn model stays float."""
        twin = copy.copy(self)
        twin.encoder_model = quantized_matmul_model(self.encoder_model)
        twin.encoder_session = inference_session(twin.encoder_model)
        twin.precision = "int8"
        twin.vectors = TurnVectorCache(self.vectors.capacity)
        return twin

    def with_cache(self, capacity: int) -> "FastEncoderDialogStep":
        self.vectors = TurnVectorCache(capacity)
        return self

    def piece_ids(self, turns: Sequence[Sequence[str]]) -> list[tuple[int, ...]]:
        """Each session's pieces (``SavedDialogModel.model_turns``) -> the start marker and the first max_words - 1
        piece ids, as the exported ``step`` looks them up (not normalized)."""
        return [(TURN_START_ID, *(self._pieces.get(p, UNK_ID) for p in pieces[:self.max_words - 1])) for pieces in turns]

    def encode(self, turns: Sequence[Sequence[str]]) -> np.ndarray:
        """The turns' vectors ``[B, hidden]``: from the cache, else from the encoder."""
        keys = self.piece_ids(turns)
        vectors = np.empty((len(keys), self.hidden), np.float32)
        missing = []
        for row, key in enumerate(keys):
            cached = self.vectors.get(key)
            if cached is None:
                missing.append(row)
            else:
                vectors[row] = cached
        if self.precision == "int8":  # one turn a call: its scale is its own
            for row in missing:
                vectors[row] = self._run_encoder([keys[row]])[0]
        elif missing:
            vectors[missing] = self._run_encoder([keys[row] for row in missing])
        for row in missing:
            self.vectors.put(keys[row], vectors[row].copy())
        return vectors

    def _run_encoder(self, keys: list[tuple[int, ...]]) -> np.ndarray:
        piece_ids = np.zeros((len(keys), max(map(len, keys))), np.int32)  # 0 pads
        for row, key in enumerate(keys):
            piece_ids[row, :len(key)] = key
        return self.encoder_session.run(["turn_vector"], {"piece_ids": piece_ids})[0]

    def turn_feeds(self, turns: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
        return {"turn_vector": self.encode(turns)}

    def step_encoded(self, turn_vectors: np.ndarray, speakers, state_h, state_c,
                     previous_actions=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``step`` for turns already encoded (``encode``), ``turn_vectors [B, hidden]``."""
        feeds = self.feeds([], speakers, state_h, state_c, previous_actions, {"turn_vector": turn_vectors})
        probabilities, new_h, new_c = self.session.run(["probabilities", "next_state_h", "next_state_c"], feeds)
        return probabilities, new_h, new_c


def turn_graph(turn: dict, hidden: int, multi_label: bool, state_and_turn: bool):
    """The turn model's step as an ONNX model: ``turn_vector [B, hidden]``, ``speaker_ids [B]``, the state (and the
    previous actions) -> ``probabilities``, ``next_state_h``, ``next_state_c`` (weights by role)."""
    g = GraphBuilder("seqtag_encoder_dialog_turn")
    pooled = g.input("turn_vector", np.float32, ["batch", hidden])
    speaker_ids = g.input("speaker_ids", np.int32, ["batch"])
    units = turn[("turn_lstm", "", "recurrent_kernel")].shape[0]
    state_h = g.input("state_h", np.float32, ["batch", units])
    state_c = g.input("state_c", np.float32, ["batch", units])
    parts = [pooled, g.node("Gather", [g.const(turn[("speaker_embedding", "", "embeddings")]), speaker_ids])]
    if multi_label:
        n_labels = turn[("label_probabilities", "", "bias")].shape[0]
        parts.append(g.input("previous_actions", np.float32, ["batch", n_labels]))
    turn_step(g, turn, g.node("Concat", parts, axis=-1), state_h, state_c, multi_label, state_and_turn)
    return g.model()

"""The dialog models' fast ``step``: one turn of B sessions as one ONNX graph of fused kernels, ids made in Python.

Built from an exported version's own weights and vocabularies (``training.common.fast_path`` says why and how it
is checked), for ``SavedDialogModel(runtime="onnx")``:

    Python: tokens -> the start marker and the first max_words - 1 word ids (pretrained rows), speaker ids
            (the rules of ``training.dialog.vocab`` and of the exported ``step``)
    ONNX:   word_ids [B, W], lengths [B] -> word Embedding (+ pretrained rows) -> BiLSTM over each turn's own
            length (no padding to max_words) -> max and mean over its words               -> [B, 4 * Hu]
            + speaker Embedding (+ previous actions as bits)            = turn features    -> [B, F]
            -> one step of the turn LSTM from state_h, state_c [B, H]   -> new state_h, state_c
            (-> beside the turn features, for classifier_input "state+turn")
            -> Dense softmax | sigmoid                                                     -> [B, L]

Sessions of different lengths and turns of different lengths share one call: each row is its own sequence.
An ensemble (``FastEnsembleStep``) runs one such graph per member, each from its own state slice and with its own
vocabularies, and averages their probabilities, as the exported ``step`` does. Its members' weights are told apart by
the lists the export keeps (``member_<i>_variables``); an ensemble exported before them steps through the SavedModel.
"""

from __future__ import annotations

import logging
import re
from typing import Sequence

import numpy as np

from training.common.fast_path import (FastPathUnsupported, GraphBuilder, graph_lowercase, inference_session,
                                       saved_model_weights, weights_by_role)
from training.common.vocab import DIGIT_PATTERN, PAD_TOKEN, UNK_ID
from training.dialog.vocab import TURN_START_ID, DialogVocabs

logger = logging.getLogger(__name__)

_DIGITS = re.compile(DIGIT_PATTERN)

# Conversations written for the check a version passes when it loads: streamed through the fast ``step`` and the
# SavedModel's, all sessions at once (fewer as the shorter ones end), they must agree turn after turn. Speakers
# of both corpora's kinds; an empty turn, an unknown speaker, a turn longer than any model's max_words.
PROBE_DIALOGS = [
    [("A", ["Do", "you", "have", "any", "pets", "?"]), ("B", ["Yes", ",", "two", "cats", "."]), ("A", ["Oh", ",", "nice", "."]),
     ("B", ["Uh-huh", "."]), ("A", ["What", "are", "their", "names", "?"])],
    [("USER", ["I", "need", "a", "table", "for", "two", "in", "Paris", "tonight", "."]), ("USER", ["At", "7", "pm", "."]),
     ("USER", ["Yes", "please", "."])],
    [("B", []), ("caller", ["Hello", "?"])],
    [("SYSTEM", ["well"] + ["it", "was", "a", "long", "story", ",", "and", "then", "we", "went", "home"] * 12)],
]


def _normalize(word: str) -> str:
    return _DIGITS.sub("0", graph_lowercase(word))


def member_variables_name(index: int) -> str:
    """The SavedModel attribute that lists an ensemble member's variables (``training.dialog.export``)."""
    return f"member_{index}_variables"


def fast_dialog_step(saved_model, metadata: dict, vocab: dict) -> "FastDialogStep | FastEnsembleStep":
    """The fast step of an exported version: one model's, or an ensemble's."""
    if "ensemble" in vocab:
        return FastEnsembleStep(saved_model, metadata, vocab)
    return FastDialogStep(saved_model, metadata, vocab)


class OnnxDialogStep:
    """What the dialog models' fast steps share: the speaker ids, the state and previous actions fed as the exported
    ``step`` takes them, and one ONNX Runtime call. Subclasses set ``session``, ``multi_label``, ``_speakers`` and
    feed the turns' ids (``turn_feeds``)."""

    session = None
    multi_label = False
    _speakers: dict = {}

    def speaker_id(self, speaker: str) -> int:
        """As the exported ``step``: "" and unseen names are unknown (1), never padding."""
        return UNK_ID if speaker == PAD_TOKEN else self._speakers.get(speaker, UNK_ID)

    def turn_feeds(self, turns: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def feeds(self, turns: Sequence[Sequence[str]], speakers: Sequence[str], state_h: np.ndarray, state_c: np.ndarray,
              previous_actions: np.ndarray | None = None, turn_feeds: dict | None = None) -> dict[str, np.ndarray]:
        feeds = {**(self.turn_feeds(turns) if turn_feeds is None else turn_feeds), "speaker_ids": np.array([self.speaker_id(s) for s in speakers], np.int32),
                 "state_h": np.asarray(state_h, np.float32), "state_c": np.asarray(state_c, np.float32)}
        if self.multi_label:
            feeds["previous_actions"] = np.asarray(previous_actions, np.float32)
        return feeds

    def step(self, turns, speakers, state_h, state_c, previous_actions=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> (probabilities ``[B, L]``, new state_h, new state_c)."""
        probabilities, new_h, new_c = self.session.run(["probabilities", "next_state_h", "next_state_c"],
                                                       self.feeds(turns, speakers, state_h, state_c, previous_actions))
        return probabilities, new_h, new_c


class FastDialogStep(OnnxDialogStep):
    """One turn for each of B sessions, states in and out, through ONNX Runtime."""

    def __init__(self, saved_model, metadata: dict, vocab: dict, weights: dict | None = None,
                 config: dict | None = None):
        """``weights`` (by role) and ``config``: an ensemble member's; by default the version's own."""
        config = metadata.get("config") if config is None else config
        if not isinstance(config, dict) or "ensemble" in vocab:
            raise FastPathUnsupported("an ensemble steps through FastEnsembleStep")
        if config.get("utterance_encoder"):  # its turns go through a transformer (training.dialog.fast_encoder)
            raise FastPathUnsupported("a pretrained utterance encoder's step is FastEncoderDialogStep's")
        self.vocabs = DialogVocabs.from_dict(vocab)
        self.max_words = int(config["max_words"])
        self.multi_label = bool(config.get("multi_label", metadata.get("multi_label")))
        self.pretrained = self.vocabs.pretrained is not None
        if self.pretrained:
            self._pretrained_index = dict(zip(self.vocabs.pretrained.keys, self.vocabs.pretrained.ids))
            self._pretrained_cased = self.vocabs.pretrained.casing == "cased"
        weights = saved_model_weights(saved_model) if weights is None else weights
        self.units = int(weights[("turn_lstm", "", "recurrent_kernel")].shape[0])
        self.model = dialog_step_graph(weights, self.multi_label, self.pretrained,
                                       config.get("classifier_input", "state") == "state+turn")
        self.session = inference_session(self.model)  # one thread: a step of even 64 sessions is ~0.1 ms of work
        self._words = self.vocabs.words._index  # type: ignore[attr-defined]
        self._speakers = self.vocabs.speakers._index  # type: ignore[attr-defined]

    def _pretrained_id(self, word: str) -> int:
        found = self._pretrained_index.get(word if self._pretrained_cased else graph_lowercase(word))
        if found is None and self._pretrained_cased:
            found = self._pretrained_index.get(graph_lowercase(word))
        return UNK_ID if found is None else found

    def turn_feeds(self, turns: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
        kept = [list(tokens[:self.max_words - 1]) for tokens in turns]
        lengths = np.array([1 + len(tokens) for tokens in kept], np.int32)
        word_ids = np.zeros((len(kept), int(lengths.max())), np.int32)
        word_ids[:, 0] = TURN_START_ID
        words = self._words
        for row, tokens in enumerate(kept):
            word_ids[row, 1:1 + len(tokens)] = [words.get(_normalize(t), UNK_ID) for t in tokens]
        feeds = {"word_ids": word_ids, "lengths": lengths}
        if self.pretrained:
            pretrained_ids = np.zeros_like(word_ids)
            pretrained_ids[:, 0] = UNK_ID  # the start marker has no vector
            for row, tokens in enumerate(kept):
                pretrained_ids[row, 1:1 + len(tokens)] = [self._pretrained_id(t) for t in tokens]
            feeds["pretrained_ids"] = pretrained_ids
        return feeds


class FastEnsembleStep:
    """An ensemble's step: each member's fast step from its slice of the state (``state_h [B, H1 + H2 + ...]``),
    the members' probabilities averaged and their new states side by side."""

    def __init__(self, saved_model, metadata: dict, vocab: dict):
        configs, vocabs = metadata.get("config"), vocab["ensemble"]
        if not isinstance(configs, list) or len(configs) != len(vocabs):
            raise FastPathUnsupported("an ensemble's metadata does not list a config for each member")
        collections = [getattr(saved_model, member_variables_name(i), None) for i in range(len(vocabs))]
        if any(collection is None for collection in collections):
            raise FastPathUnsupported("an ensemble exported before its members' variables were kept apart")
        self.members = [FastDialogStep(saved_model, metadata, member_vocab, weights_by_role(collection), member_config)
                        for member_vocab, collection, member_config in zip(vocabs, collections, configs)]
        self.units = sum(member.units for member in self.members)
        bounds = np.cumsum([0] + [member.units for member in self.members])
        self.slices = [slice(start, end) for start, end in zip(bounds[:-1], bounds[1:])]  # each member's state columns

    def step(self, turns, speakers, state_h, state_c, previous_actions=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> (probabilities ``[B, L]``, new state_h, new state_c), as the exported ``step`` of an ensemble."""
        outputs = [member.step(turns, speakers, state_h[:, columns], state_c[:, columns], previous_actions)
                   for member, columns in zip(self.members, self.slices)]
        probabilities = np.mean([p for p, _, _ in outputs], axis=0, dtype=np.float32)
        return (probabilities, np.concatenate([h for _, h, _ in outputs], axis=-1),
                np.concatenate([c for _, _, c in outputs], axis=-1))


def dialog_step_graph(weights: dict, multi_label: bool, pretrained: bool, state_and_turn: bool):
    """A dialog model's ``step`` as an ONNX model, from its weights keyed by role (``saved_model_weights``)."""
    def lstm(layer: str, direction: str) -> tuple:
        return tuple(weights[(layer, direction, name)] for name in ("kernel", "recurrent_kernel", "bias"))

    g = GraphBuilder("seqtag_dialog_step")
    word_ids = g.input("word_ids", np.int32, ["batch", "words"])
    lengths = g.input("lengths", np.int32, ["batch"])
    speaker_ids = g.input("speaker_ids", np.int32, ["batch"])
    units = weights[("turn_lstm", "", "recurrent_kernel")].shape[0]
    state_h = g.input("state_h", np.float32, ["batch", units])
    state_c = g.input("state_c", np.float32, ["batch", units])

    vectors = [g.node("Gather", [g.const(weights[("word_embedding", "", "embeddings")]), word_ids])]  # [B, W, Dw]
    if pretrained:
        pretrained_ids = g.input("pretrained_ids", np.int32, ["batch", "words"])
        table = g.node("Gather", [g.const(weights[("pretrained_embedding", "", "embeddings")]), pretrained_ids])
        vectors.append(g.node("Cast", [table], to=1))
    x = g.node("Transpose", [g.node("Concat", vectors, axis=-1) if len(vectors) > 1 else vectors[0]], perm=[1, 0, 2])
    y, _ = g.bidirectional_lstm(x, lengths, lstm("utterance_bilstm", "forward"), lstm("utterance_bilstm", "backward"))
    y = g.node("Reshape", [g.node("Transpose", [y], perm=[2, 0, 1, 3]), g.const(np.array([0, 0, -1]))])  # [B, W, 2Hu]
    # MaskedMaxMeanPooling over the turn's words (ids != 0), as the Keras layer computes it.
    is_word = g.node("Greater", [word_ids, g.const(np.array(0, np.int32))])  # [B, W]
    weight = g.node("Unsqueeze", [g.node("Cast", [is_word], to=1), g.const(np.array([-1]))])  # [B, W, 1]
    count = g.node("ReduceSum", [weight, g.const(np.array([1]))], keepdims=0)  # [B, 1]
    mean = g.node("Div", [g.node("ReduceSum", [g.node("Mul", [y, weight]), g.const(np.array([1]))], keepdims=0),
                          g.node("Max", [count, g.const(np.array(1.0, np.float32))])])
    masked = g.node("Where", [g.node("Unsqueeze", [is_word, g.const(np.array([-1]))]), y,
                              g.const(np.array(-1e9, np.float32))])
    maximum = g.node("Where", [g.node("Greater", [count, g.const(np.array(0.0, np.float32))]),
                               g.node("ReduceMax", [masked], axes=[1], keepdims=0), g.const(np.array(0.0, np.float32))])
    parts = [maximum, mean, g.node("Gather", [g.const(weights[("speaker_embedding", "", "embeddings")]), speaker_ids])]
    if multi_label:
        n_labels = weights[("label_probabilities", "", "bias")].shape[0]
        parts.append(g.input("previous_actions", np.float32, ["batch", n_labels]))
    features = g.node("Concat", parts, axis=-1)  # [B, F]
    turn_step(g, weights, features, state_h, state_c, multi_label, state_and_turn)
    return g.model()


def turn_step(g: GraphBuilder, weights: dict, features: str, state_h: str, state_c: str, multi_label: bool,
              state_and_turn: bool) -> None:
    """Turn features ``[B, F]`` and the state -> one step of the turn LSTM and the classifier: the graph's outputs
    ``probabilities``, ``next_state_h``, ``next_state_c`` (weights keyed by role, as ``saved_model_weights``)."""
    units = weights[("turn_lstm", "", "recurrent_kernel")].shape[0]
    # One step of the turn LSTM's cell, as Keras's LSTMCell: gates i, f, c, o.
    z = g.node("Add", [g.node("Add", [g.node("MatMul", [features, g.const(weights[("turn_lstm", "", "kernel")])]),
                                      g.node("MatMul", [state_h, g.const(weights[("turn_lstm", "", "recurrent_kernel")])])]),
                       g.const(weights[("turn_lstm", "", "bias")])])
    i, f, c, o = g.node("Split", [z], outputs=4, axis=-1)
    new_c = g.node("Add", [g.node("Mul", [g.node("Sigmoid", [f]), state_c]),
                           g.node("Mul", [g.node("Sigmoid", [i]), g.node("Tanh", [c])])])
    new_h = g.node("Mul", [g.node("Sigmoid", [o]), g.node("Tanh", [new_c])])
    classifier_input = g.node("Concat", [new_h, features], axis=-1) if state_and_turn else new_h
    logits = g.dense(classifier_input, weights[("label_probabilities", "", "kernel")],
                     weights[("label_probabilities", "", "bias")])
    probabilities = g.node("Sigmoid", [logits]) if multi_label else g.node("Softmax", [logits], axis=-1)
    n_labels = weights[("label_probabilities", "", "bias")].shape[0]
    g.output(probabilities, "probabilities", np.float32, ["batch", n_labels])
    g.output(new_h, "next_state_h", np.float32, ["batch", units])
    g.output(new_c, "next_state_c", np.float32, ["batch", units])

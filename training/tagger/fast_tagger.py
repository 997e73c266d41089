"""The tagger's fast path: its numeric core as one ONNX graph of fused LSTM kernels, fed ids made in Python.

Built from an exported version's own weights and vocabularies (``training.common.fast_path`` says why and how it
is checked), for ``SavedTagger(runtime="onnx")``:

    Python: tokens -> word ids, pretrained rows, each distinct word's character ids (the rules of
            ``training.tagger.vocab`` and of the exported ``encode``; a cache keeps each token's ids)
    ONNX:   char_ids [U, C], char_lengths [U] -> char Embedding -> BiLSTM (or CNN + max)     -> [U, Dc]
            word_ids [B, T] -> word Embedding (+ pretrained rows, float16 read as float32)
            + each token's distinct word's vector (word_index [B, T])  -> concat            -> [B, T, D]
            -> layers x BiLSTM over lengths [B] -> Dense softmax                              -> [B, T, n_tags]

The same layout as the exported ``serve`` (the character encoder runs once per distinct word of a batch),
with ONNX Runtime's LSTM kernel in place of TensorFlow's loops. Span models (a condition, constrained
decoding) are not expressed here: ``FastPathUnsupported``, and they serve through the SavedModel.
"""

from __future__ import annotations

import logging
import re
from typing import Sequence

import numpy as np

from training.common.fast_path import (FastPathUnsupported, GraphBuilder, graph_lowercase, inference_session,
                                       saved_model_weights)
from training.common.vocab import DIGIT_PATTERN, UNK_ID
from training.tagger.vocab import TaggerVocabs

logger = logging.getLogger(__name__)

# Real sentences of many lengths and kinds (clitics, numbers, URLs, non-ASCII, words longer than the character
# encoder reads), written for the check a version passes when it loads: the fast path must give the
# SavedModel's probabilities on them, in one mixed-length batch and one at a time.
PROBE_SENTENCES = [
    ["This", "is", "a", "warm-up", "sentence", "."],
    ["I", "do", "n't", "know", "what", "you", "mean", "."],
    ["Yes", "!"],
    ["The", "meeting", "was", "moved", "to", "3:30", "pm", "on", "Nov.", "23", ",", "2026", "."],
    ["Call", "me", "at", "555-0199", "or", "write", "to", "jane.doe@example.com", "."],
    ["Visit", "https://www.example.org/some/very/long/path?with=query&and=more", "for", "details"],
    ["Zoë", "and", "Björn", "visited", "İstanbul", "and", "Kraków", "last", "summer", "."],
    ["Hmm"],
    ["We", "'re", "gon", "na", "need", "a", "bigger", "boat", ",", "said", "the", "chief", "of", "police", "to",
     "the", "shark", "hunter", "who", "had", "just", "come", "aboard", "with", "his", "ropes", ",", "barrels",
     "and", "a", "rifle", "that", "nobody", "had", "ever", "seen", "him", "fire", "."],
    ["ANTIDISESTABLISHMENTARIANISM", "is", "a", "long", "word", ";", "so", "is", "floccinaucinihilipilification"],
    ["Prices", "rose", "4.5", "%", "in", "Q3", "(", "after", "2.1", "%", "in", "Q2", ")", "."],
    ["Can", "you", "recommend", "a", "good", "Thai", "restaurant", "near", "the", "station", "?"],
    ["the", "the", "the", "cat", "cat", "sat"],
    ["Σίσυφος", "ΣΊΣΥΦΟΣ", "x\u0301", "🙂", "ǅemal", "ﬁnance"],
]


_DIGITS = re.compile(DIGIT_PATTERN)


def _normalize(word: str) -> str:
    """``training.common.vocab.normalize_word`` as the exported graph computes it (``graph_lowercase``)."""
    return _DIGITS.sub("0", graph_lowercase(word))


class FastTagger:
    """Token lists -> tag probabilities through ONNX Runtime; ``probabilities`` is the whole interface."""

    CACHE_SIZE = 200_000  # tokens whose ids are kept (cleared when full: a bounded cache of a Zipfian stream)

    def __init__(self, saved_model, metadata: dict, vocab: dict):
        config = metadata.get("config")
        if not isinstance(config, dict):
            raise FastPathUnsupported("not a single model's config")
        if metadata.get("task") == "spans" or config.get("task") == "spans":
            raise FastPathUnsupported("span models decode inside the SavedModel")
        self.vocabs = TaggerVocabs.from_dict(vocab)
        self.max_word_length = int(config["max_word_length"])
        self.n_tags = len(self.vocabs.tags)
        weights = saved_model_weights(saved_model)
        self.char_encoder = config.get("char_encoder", "bilstm")
        self.pretrained = self.vocabs.pretrained is not None
        if self.pretrained:
            self._pretrained_index = dict(zip(self.vocabs.pretrained.keys, self.vocabs.pretrained.ids))
            self._pretrained_cased = self.vocabs.pretrained.casing == "cased"
        self.model = tagger_graph(weights, self.char_encoder, self.pretrained)
        self.session = inference_session(self.model)
        self._words = self.vocabs.words._index  # type: ignore[attr-defined]
        self._chars = self.vocabs.chars._index  # type: ignore[attr-defined]
        self._cache: dict[str, tuple] = {}

    def _pretrained_id(self, word: str) -> int:
        """Mirrors ``KeptVectors.id`` with the graph's lower-casing."""
        found = self._pretrained_index.get(word if self._pretrained_cased else graph_lowercase(word))
        if found is None and self._pretrained_cased:
            found = self._pretrained_index.get(graph_lowercase(word))
        return UNK_ID if found is None else found

    def token_ids(self, token: str) -> tuple[int, int, tuple[int, ...]]:
        """(word id, pretrained row (0 without a table), character ids) of one token, as the exported ``encode``."""
        ids = self._cache.get(token)
        if ids is None:
            chars = self._chars
            ids = (self._words.get(_normalize(token), UNK_ID), self._pretrained_id(token) if self.pretrained else 0,
                   tuple(chars.get(ch, UNK_ID) for ch in token[:self.max_word_length]))
            if len(self._cache) >= self.CACHE_SIZE:
                self._cache = {}
            self._cache[token] = ids
        return ids

    def feeds(self, sentences: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
        """One batch of non-empty token lists -> the graph's inputs (right-padded)."""
        batch, time = len(sentences), max(len(s) for s in sentences)
        word_ids = np.zeros((batch, time), np.int32)
        word_index = np.zeros((batch, time), np.int32)
        pretrained_ids = np.zeros((batch, time), np.int32)
        distinct: dict[str, int] = {}
        char_rows: list[tuple[int, ...]] = []
        for b, sentence in enumerate(sentences):
            for t, token in enumerate(sentence):
                word_id, pretrained_id, chars = self.token_ids(token)
                index = distinct.get(token)
                if index is None:
                    index = distinct[token] = len(char_rows)
                    char_rows.append(chars)
                word_ids[b, t] = word_id
                pretrained_ids[b, t] = pretrained_id
                word_index[b, t] = index
        char_lengths = np.array([len(row) for row in char_rows], np.int32)
        char_ids = np.zeros((len(char_rows), max(1, int(char_lengths.max()))), np.int32)
        for u, row in enumerate(char_rows):
            char_ids[u, :len(row)] = row
        feeds = {"char_ids": char_ids, "char_lengths": char_lengths, "word_ids": word_ids, "word_index": word_index,
                 "lengths": np.array([len(s) for s in sentences], np.int32)}
        if self.pretrained:
            feeds["pretrained_ids"] = pretrained_ids
        return feeds

    def probabilities(self, sentences: Sequence[Sequence[str]]) -> np.ndarray:
        """Non-empty token lists (no "" tokens) -> ``float32[B, T, n_tags]`` (rows right-padded; padding is not
        a token's)."""
        return self.session.run(["probabilities"], self.feeds(sentences))[0]


def tagger_graph(weights: dict, char_encoder: str, pretrained: bool):
    """The tagger's numeric core as an ONNX model, from its weights keyed by role (``saved_model_weights``)."""
    def lstm(layer: str, direction: str) -> tuple:
        return tuple(weights[(layer, direction, name)] for name in ("kernel", "recurrent_kernel", "bias"))

    g = GraphBuilder("seqtag_tagger")
    char_ids = g.input("char_ids", np.int32, ["distinct", "chars"])
    char_lengths = g.input("char_lengths", np.int32, ["distinct"])
    word_ids = g.input("word_ids", np.int32, ["batch", "time"])
    word_index = g.input("word_index", np.int32, ["batch", "time"])
    lengths = g.input("lengths", np.int32, ["batch"])

    characters = g.node("Gather", [g.const(weights[("char_embedding", "", "embeddings")]), char_ids])  # [U, C, E]
    if char_encoder == "bilstm":
        _, last = g.bidirectional_lstm(g.node("Transpose", [characters], perm=[1, 0, 2]), char_lengths,
                                       lstm("char_bilstm", "forward"), lstm("char_bilstm", "backward"))  # [2, U, H]
        # Keras's Bidirectional concatenates the forward then the backward direction's last output.
        char_vectors = g.node("Reshape", [g.node("Transpose", [last], perm=[1, 0, 2]), g.const(np.array([0, -1]))])
    elif char_encoder == "cnn":
        # As the Keras encoder: padding characters zeroed before and after a 'same' convolution, then the max.
        kernel, bias = weights[("char_cnn", "", "kernel")], weights[("char_cnn", "", "bias")]  # [k, E, F], [F]
        is_char = g.node("Unsqueeze", [g.node("Cast", [g.node("Greater", [char_ids, g.const(np.array(0, np.int32))])],
                                              to=1), g.const(np.array([-1]))])  # [U, C, 1] float
        x = g.node("Transpose", [g.node("Mul", [characters, is_char])], perm=[0, 2, 1])  # [U, E, C]
        width = kernel.shape[0]
        x = g.node("Conv", [x, g.const(np.transpose(kernel, (2, 1, 0)).copy()), g.const(bias)],
                   pads=[(width - 1) // 2, width - 1 - (width - 1) // 2])  # [U, F, C]
        x = g.node("Mul", [g.node("Transpose", [g.node("Relu", [x])], perm=[0, 2, 1]), is_char])  # [U, C, F]
        char_vectors = g.node("ReduceMax", [x], axes=[1], keepdims=0)  # [U, F]
    else:
        raise FastPathUnsupported(f"character encoder {char_encoder!r}")

    parts = [g.node("Gather", [g.const(weights[("word_embedding", "", "embeddings")]), word_ids])]
    if pretrained:  # float16 rows when frozen: read as float32, as the model's Concatenate does
        pretrained_ids = g.input("pretrained_ids", np.int32, ["batch", "time"])
        table = g.node("Gather", [g.const(weights[("pretrained_embedding", "", "embeddings")]), pretrained_ids])
        parts.append(g.node("Cast", [table], to=1))
    parts.append(g.node("Gather", [char_vectors, word_index]))  # [B, T, Dc]
    x = g.node("Transpose", [g.node("Concat", parts, axis=-1)], perm=[1, 0, 2])  # [T, B, D]
    depth = 1
    while ("bilstm_" + str(depth), "forward", "kernel") in weights:
        y, _ = g.bidirectional_lstm(x, lengths, lstm(f"bilstm_{depth}", "forward"), lstm(f"bilstm_{depth}", "backward"))
        x = g.node("Reshape", [g.node("Transpose", [y], perm=[0, 2, 1, 3]), g.const(np.array([0, 0, -1]))])  # [T, B, 2H]
        depth += 1
    if depth == 1:
        raise FastPathUnsupported("no sentence BiLSTM found among the weights")
    logits = g.dense(x, weights[("tag_probabilities", "", "kernel")], weights[("tag_probabilities", "", "bias")])
    probabilities = g.node("Transpose", [g.node("Softmax", [logits], axis=-1)], perm=[1, 0, 2])  # [B, T, K]
    g.output(probabilities, "probabilities", np.float32, ["batch", "time", "tags"])
    return g.model()

"""The tagger's fast path: its numeric core as one ONNX graph of fused LSTM kernels, fed ids made in Python.

Built from an exported version's own weights and vocabularies (``training.common.fast_path`` says why and how it
is checked), for ``SavedTagger(runtime="onnx")``:

    Python: tokens -> word ids, pretrained rows, character ids (the rules of ``training.tagger.vocab`` and of the
            exported ``encode``), kept per token with the token's character vector
    ONNX 1: char_ids [U, C], char_lengths [U] -> char Embedding -> BiLSTM (or CNN + max)     -> [U, Dc]
            (only for words whose vector is not kept yet, in groups of similar length)
    ONNX 2: word_ids [B, T] -> word Embedding (+ pretrained rows, float16 read as float32)
            + each token's distinct word's vector (word_index [B, T])  -> concat            -> [B, T, D]
            -> layers x BiLSTM over lengths [B] -> Dense softmax                              -> [B, T, n_tags]

The exported ``serve``'s layout (the character encoder runs once per distinct word), with ONNX Runtime's LSTM
kernel in place of TensorFlow's loops. Span models' conditions are inputs as in ``serve`` (a first token, or an
embedding beside every token); their constrained decoding and spans run on these probabilities in NumPy
(``SavedTagger``, with ``training.tagger.spans``).
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Sequence

import numpy as np

from training.common.fast_path import (FastPathUnsupported, GraphBuilder, Runner, graph_lowercase, quantized_lstm_model,
                                       saved_model_weights)
from training.common.vocab import DIGIT_PATTERN, UNK_ID
from training.tagger.vocab import TaggerVocabs, condition_token

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
    """Token lists -> tag probabilities through ONNX Runtime; ``probabilities`` is the whole interface.

    Two graphs: the character encoder (distinct words -> vectors) and the sentence tagger (ids and each token's
    word vector -> probabilities). A word's character vector depends on its characters alone, so it is kept with
    the token's ids (``cache_size`` tokens, two generations: a token used again moves to the newest) and only
    words not seen lately go through the encoder, in groups of similar length: a batch's longest word (a URL)
    would otherwise set every word's number of steps.
    """

    @classmethod
    def from_saved_model(cls, saved_model, metadata: dict, vocab: dict) -> "FastTagger":
        """The graphs written from a SavedModel's weights (what ``build_fast_model`` calls)."""
        config = metadata.get("config")
        if not isinstance(config, dict):
            raise FastPathUnsupported("not a single model's config")
        weights = saved_model_weights(saved_model)
        pretrained = bool(vocab.get("pretrained"))
        condition = config.get("condition", "none") if config.get("task") == "spans" else "none"
        return cls(metadata, vocab, char_encoder_graph(weights, config.get("char_encoder", "bilstm")),
                   sentence_graph(weights, pretrained, condition == "embedding"))

    def __init__(self, metadata: dict, vocab: dict, char_model, sentence_model, cache_size: int = 50_000):
        config = metadata.get("config")
        if not isinstance(config, dict):
            raise FastPathUnsupported("not a single model's config")
        self.vocabs = TaggerVocabs.from_dict(vocab)
        # Span models: a condition written as a first token (a token like any other here, its position dropped
        # from the output) or embedded beside every token (an input of the graph).
        self.condition = config.get("condition", "none") if config.get("task") == "spans" else "none"
        if self.condition == "embedding" and self.vocabs.conditions is None:
            raise FastPathUnsupported("a condition embedding without its vocabulary")
        self.max_word_length = int(config["max_word_length"])
        self.n_tags = len(self.vocabs.tags)
        self.char_encoder = config.get("char_encoder", "bilstm")
        self.pretrained = self.vocabs.pretrained is not None
        if self.pretrained:
            self._pretrained_index = dict(zip(self.vocabs.pretrained.keys, self.vocabs.pretrained.ids))
            self._pretrained_cased = self.vocabs.pretrained.casing == "cased"
        self.char_model, self.sentence_model = char_model, sentence_model
        self.char_runner = Runner(self.char_model, parallel_from=2048)  # characters in a call
        self.sentence_runner = Runner(self.sentence_model, parallel_from=512)  # token positions in a call
        self._words = self.vocabs.words._index  # type: ignore[attr-defined]
        self._chars = self.vocabs.chars._index  # type: ignore[attr-defined]
        self.cache_size = cache_size
        self._recent: dict[str, list] = {}  # token -> [word id, pretrained row, char ids, char vector or None]
        self._older: dict[str, list] = {}

    def quantized(self) -> "FastTagger":
        """A twin whose sentence graph runs its LSTMs in int8 (``fast_path.quantized_lstm_model``), on one thread a
        call (see ``SavedTagger._quantize``); this one is left as it is. The character encoder stays float: its
        vectors are kept per word, so it runs for a small share of the tokens."""
        twin = copy.copy(self)
        twin.sentence_model = quantized_lstm_model(self.sentence_model)
        twin.sentence_runner = Runner(twin.sentence_model, threads=1)
        return twin

    def _pretrained_id(self, word: str) -> int:
        """Mirrors ``KeptVectors.id`` with the graph's lower-casing."""
        found = self._pretrained_index.get(word if self._pretrained_cased else graph_lowercase(word))
        if found is None and self._pretrained_cased:
            found = self._pretrained_index.get(graph_lowercase(word))
        return UNK_ID if found is None else found

    def _entry(self, token: str) -> list:
        entry = self._recent.get(token)
        if entry is None:
            entry = self._older.get(token)
            if entry is None:
                chars = self._chars
                entry = [self._words.get(_normalize(token), UNK_ID), self._pretrained_id(token) if self.pretrained else 0,
                         tuple(chars.get(ch, UNK_ID) for ch in token[:self.max_word_length]), None]
            if len(self._recent) >= self.cache_size:  # the older generation goes; the newer one becomes it
                self._older, self._recent = self._recent, {}
            self._recent[token] = entry
        return entry

    def forget(self) -> None:
        """Drop every kept token (ids and character vectors): the next calls pay the cold cost (benchmarks)."""
        self._recent, self._older = {}, {}

    def token_ids(self, token: str) -> tuple[int, int, tuple[int, ...]]:
        """(word id, pretrained row (0 without a table), character ids) of one token, as the exported ``encode``."""
        word_id, pretrained_id, chars, _ = self._entry(token)
        return word_id, pretrained_id, chars

    def _encode_words(self, entries: list[list]) -> None:
        """Fill in the character vectors of ``entries`` (those without one): sorted by length, in groups whose
        padding stays small, since every word of a call runs as many steps as its longest."""
        entries = sorted(entries, key=lambda e: len(e[2]))
        start = 0
        while start < len(entries):
            end = start + 1
            while end < len(entries) and (end - start < 64 or len(entries[end][2]) <= 1.25 * len(entries[start][2])):
                end += 1
            group = entries[start:end]
            lengths = np.array([len(e[2]) for e in group], np.int32)
            char_ids = np.zeros((len(group), max(1, int(lengths.max()))), np.int32)
            for row, entry in enumerate(group):
                char_ids[row, :len(entry[2])] = entry[2]
            vectors = self.char_runner.run(["char_vectors"], {"char_ids": char_ids, "char_lengths": lengths},
                                           char_ids.size)[0]
            for entry, vector in zip(group, vectors):
                entry[3] = vector
            start = end

    def feeds(self, sentences: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
        """One batch of non-empty token lists -> the sentence graph's inputs (right-padded)."""
        batch, time = len(sentences), max(len(s) for s in sentences)
        word_ids = np.zeros((batch, time), np.int32)
        word_index = np.zeros((batch, time), np.int32)
        pretrained_ids = np.zeros((batch, time), np.int32)
        distinct: dict[str, int] = {}
        entries: list[list] = []
        for b, sentence in enumerate(sentences):
            for t, token in enumerate(sentence):
                index = distinct.get(token)
                if index is None:
                    index = distinct[token] = len(entries)
                    entries.append(self._entry(token))
                entry = entries[index]
                word_ids[b, t] = entry[0]
                pretrained_ids[b, t] = entry[1]
                word_index[b, t] = index
        missing = [entry for entry in entries if entry[3] is None]
        if missing:
            self._encode_words(missing)
        feeds = {"char_vectors": np.stack([entry[3] for entry in entries]), "word_ids": word_ids,
                 "word_index": word_index, "lengths": np.array([len(s) for s in sentences], np.int32)}
        if self.pretrained:
            feeds["pretrained_ids"] = pretrained_ids
        return feeds

    def probabilities(self, sentences: Sequence[Sequence[str]],
                      conditions: Sequence[str | None] | None = None) -> np.ndarray:
        """Non-empty token lists (no "" tokens) -> ``float32[B, T, n_tags]`` (rows right-padded; padding is not
        a token's). Span models take each sentence's condition (None or "" for none), as the exported ``serve``."""
        conditions = list(conditions) if conditions is not None else [None] * len(sentences)
        if self.condition == "first-token":  # written before the sentence, as in training
            sentences = [[condition_token(c), *s] for c, s in zip(conditions, sentences)]
        feeds = self.feeds(sentences)
        if self.condition == "embedding":  # "" -> 0: no condition; one training never saw -> 1
            feeds["condition_ids"] = np.array([self.vocabs.conditions.id(c or "") for c in conditions], np.int32)
        probabilities = self.sentence_runner.run(["probabilities"], feeds, feeds["word_ids"].size)[0]
        return probabilities[:, 1:] if self.condition == "first-token" else probabilities


def _lstm(weights: dict, layer: str, direction: str) -> tuple:
    return tuple(weights[(layer, direction, name)] for name in ("kernel", "recurrent_kernel", "bias"))


def char_encoder_graph(weights: dict, char_encoder: str):
    """Words' character ids ``[U, C]`` (0 pads on the right) and lengths ``[U]`` -> ``char_vectors [U, Dc]``."""
    g = GraphBuilder("seqtag_char_encoder")
    char_ids = g.input("char_ids", np.int32, ["words", "chars"])
    char_lengths = g.input("char_lengths", np.int32, ["words"])
    characters = g.node("Gather", [g.const(weights[("char_embedding", "", "embeddings")]), char_ids])  # [U, C, E]
    if char_encoder == "bilstm":
        _, last = g.bidirectional_lstm(g.node("Transpose", [characters], perm=[1, 0, 2]), char_lengths,
                                       _lstm(weights, "char_bilstm", "forward"), _lstm(weights, "char_bilstm", "backward"))
        # Keras's Bidirectional concatenates the forward then the backward direction's last output ([2, U, H]).
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
    g.output(char_vectors, "char_vectors", np.float32, ["words", "dimensions"])
    return g.model()


def sentence_graph(weights: dict, pretrained: bool, condition: bool = False):
    """Word ids ``[B, T]``, the batch's distinct words' character vectors ``[U, Dc]`` and each token's row among
    them ``word_index [B, T]`` (and pretrained rows ``[B, T]``; a span model's condition ids ``[B]``), lengths ``[B]``
    -> ``probabilities [B, T, K]``."""
    g = GraphBuilder("seqtag_sentence_tagger")
    char_vectors = g.input("char_vectors", np.float32, ["words", "dimensions"])
    word_ids = g.input("word_ids", np.int32, ["batch", "time"])
    word_index = g.input("word_index", np.int32, ["batch", "time"])
    lengths = g.input("lengths", np.int32, ["batch"])
    parts = [g.node("Gather", [g.const(weights[("word_embedding", "", "embeddings")]), word_ids])]
    if pretrained:  # float16 rows when frozen: read as float32, as the model's Concatenate does
        pretrained_ids = g.input("pretrained_ids", np.int32, ["batch", "time"])
        table = g.node("Gather", [g.const(weights[("pretrained_embedding", "", "embeddings")]), pretrained_ids])
        parts.append(g.node("Cast", [table], to=1))
    if condition:  # each token gets its sentence's condition vector
        condition_ids = g.input("condition_ids", np.int32, ["batch"])
        vectors = g.node("Gather", [g.const(weights[("condition_embedding", "", "embeddings")]), condition_ids])
        size = weights[("condition_embedding", "", "embeddings")].shape[1]
        shape = g.node("Concat", [g.node("Shape", [word_ids]), g.const(np.array([size]))], axis=0)  # [B, T, Dk]
        parts.append(g.node("Expand", [g.node("Unsqueeze", [vectors, g.const(np.array([1]))]), shape]))
    parts.append(g.node("Gather", [char_vectors, word_index]))  # [B, T, Dc]
    x = g.node("Transpose", [g.node("Concat", parts, axis=-1)], perm=[1, 0, 2])  # [T, B, D]
    depth = 1
    while (f"bilstm_{depth}", "forward", "kernel") in weights:
        y, _ = g.bidirectional_lstm(x, lengths, _lstm(weights, f"bilstm_{depth}", "forward"),
                                    _lstm(weights, f"bilstm_{depth}", "backward"))
        x = g.node("Reshape", [g.node("Transpose", [y], perm=[0, 2, 1, 3]), g.const(np.array([0, 0, -1]))])  # [T, B, 2H]
        depth += 1
    if depth == 1:
        raise FastPathUnsupported("no sentence BiLSTM found among the weights")
    logits = g.dense(x, weights[("tag_probabilities", "", "kernel")], weights[("tag_probabilities", "", "bias")])
    probabilities = g.node("Transpose", [g.node("Softmax", [logits], axis=-1)], perm=[1, 0, 2])  # [B, T, K]
    g.output(probabilities, "probabilities", np.float32, ["batch", "time", "tags"])
    return g.model()

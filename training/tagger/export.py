"""Export a trained tagger as an end-to-end SavedModel: token strings in, tags and probabilities out.

The vocabularies live inside the SavedModel as ``StringLookup`` layers, so a consumer needs nothing but
the directory. Signatures (``string[B, T]`` tokens, "" as padding):

    serve(tokens)  -> tags string[B, T] ("" at padding), scores float32[B, T] (probability of the tag),
                      probabilities float32[B, T, n_tags] (columns in metadata["labels"] order)
    encode(tokens) -> word_ids int32[B, T], char_ids int32[B, T, C]: the model's input ids, the same as
                      ``training.tagger.vocab.encode_words`` gives (checked by a test)

This module uses TensorFlow (export always runs under it); the model itself stays backend-agnostic.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import keras
import tensorflow as tf

from training.common import artifacts
from training.common.graph_ops import PretrainedLookup, normalize_words_tf, string_lookup
from training.common.vectors import exported_record
from training.common.vocab import PAD_TOKEN
from training.tagger.config import TaggerConfig
from training.tagger.model import tagger_parts
from training.tagger.serving_graph import constrained_viterbi, encode_characters, spans_of, tag_probabilities
from training.tagger.spans import OUTSIDE, parse_tag, transition_constraints
from training.tagger.vocab import TaggerVocabs

logger = logging.getLogger(__name__)

VOCAB_FILE = "vocab.json"  # the vocabularies in plain text too, so a version can be re-exported from its directory
TOKENS_SPEC = tf.TensorSpec(shape=[None, None], dtype=tf.string, name="tokens")
CONDITIONS_SPEC = tf.TensorSpec(shape=[None], dtype=tf.string, name="conditions")  # span models; "" for none


class TaggerSignatures:
    """Builds the ``serve`` and ``encode`` functions around a trained id-level model."""

    def __init__(self, model: keras.Model, vocabs: TaggerVocabs, config: TaggerConfig):
        self.model = model
        self.config = config
        self.char_encoder, self.sentence_tagger = tagger_parts(model)
        self.max_word_length = config.max_word_length
        self.word_lookup = string_lookup(vocabs.words, "word_lookup")
        self.char_lookup = string_lookup(vocabs.chars, "char_lookup")
        self.pretrained = PretrainedLookup(vocabs.pretrained) if vocabs.pretrained is not None else None
        self.condition_lookup = string_lookup(vocabs.conditions, "condition_lookup") if vocabs.conditions else None
        self.labels = tf.constant(list(vocabs.tags.items), dtype=tf.string)
        self.spans = config.task == "spans"
        if self.spans:  # the constrained decoder's transitions and how tags spell spans
            self.allowed, self.start, self.end = transition_constraints(vocabs.tags.items, config.scheme)
            parsed = [parse_tag(tag, config.scheme) for tag in vocabs.tags.items]
            self.begins = [prefix in ("B", "S") for prefix, _ in parsed]
            self.insides = [prefix != OUTSIDE for prefix, _ in parsed]
            self.tag_labels = [label for _, label in parsed]
        self.encode(tf.constant([["build"]]))  # builds the lookup layers, which export needs
        if self.condition_lookup is not None:
            self.condition_lookup(tf.constant(["build"]))

    def word_ids(self, tokens: tf.Tensor) -> tf.Tensor:
        return tf.cast(self.word_lookup(normalize_words_tf(tokens)), tf.int32)

    def char_ids(self, tokens: tf.Tensor) -> tf.Tensor:
        """Tokens of any shape ``[...]`` -> character ids ``[..., C]``, C >= 1 (as training pads)."""
        chars = tf.strings.unicode_split(tokens, "UTF-8", errors="replace")  # ragged [..., (C)]
        chars = chars[..., :self.max_word_length]
        char_ids = tf.cast(self.char_lookup(chars), tf.int32).to_tensor(default_value=0)
        missing = tf.maximum(0, 1 - tf.shape(char_ids)[-1])
        paddings = tf.concat([tf.zeros([tf.rank(char_ids) - 1, 2], tf.int32), [[0, missing]]], axis=0)
        return tf.pad(char_ids, paddings)

    def encode(self, tokens: tf.Tensor) -> dict[str, tf.Tensor]:
        ids = {"word_ids": self.word_ids(tokens), "char_ids": self.char_ids(tokens)}
        if self.pretrained is not None:
            ids["pretrained_ids"] = self.pretrained.ids(tokens)
        return ids

    def serve(self, tokens: tf.Tensor, conditions: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        is_token = tokens != PAD_TOKEN  # [B, T]: the sentence's tokens
        condition_ids = None
        if self.config.condition == "first-token":  # written before the sentence, as in training
            written = tf.strings.join(["<condition:", conditions, ">"])
            tokens = tf.concat([written[:, None], tokens], axis=1)  # [B, 1 + T]
        elif self.condition_lookup is not None:
            condition_ids = tf.cast(self.condition_lookup(conditions), tf.int32)  # "" -> 0: no condition
        word_ids = self.word_ids(tokens)
        # The character encoder runs once per distinct word of the batch, never on padding: the same
        # result as running it at every position (the model's own layout), for a fraction of the work.
        # Both parts run as ``training.tagger.serving_graph`` lays them out for speed, on the model's weights.
        positions = tf.where(tokens != PAD_TOKEN)  # [N, 2]: the model's tokens (a first-token condition included)
        distinct, index = tf.unique(tf.gather_nd(tokens, positions))  # [U], [N]
        distinct_vectors = encode_characters(self.char_encoder, self.char_ids(distinct))  # [U, Dc]
        shape = tf.concat([tf.shape(tokens, out_type=tf.int64), tf.shape(distinct_vectors, out_type=tf.int64)[1:]], 0)
        char_vectors = tf.scatter_nd(positions, tf.gather(distinct_vectors, index), shape)  # [B, T, Dc]
        pretrained_ids = self.pretrained.ids(tokens) if self.pretrained is not None else None  # [B, T]
        probabilities = tag_probabilities(self.sentence_tagger, word_ids, char_vectors, pretrained_ids,
                                          condition_ids)  # [B, T, n_tags]
        if self.config.condition == "first-token":
            probabilities = probabilities[:, 1:]  # the condition's own position is not the sentence's
        if not self.spans:
            best = tf.argmax(probabilities, axis=-1, output_type=tf.int32)  # [B, T]
            tags = tf.where(is_token, tf.gather(self.labels, best), tf.constant(PAD_TOKEN))
            scores = tf.where(is_token, tf.reduce_max(probabilities, axis=-1), 0.0)
            return {"tags": tags, "scores": scores, "probabilities": probabilities}
        # Span models: the most probable well-formed sequence (never an I- that continues nothing), and its spans.
        lengths = tf.reduce_sum(tf.cast(is_token, tf.int32), axis=-1)  # [B]
        best = constrained_viterbi(probabilities, lengths, self.allowed, self.start, self.end)  # [B, T]
        chosen = tf.gather(probabilities, best, batch_dims=2)  # [B, T]: the probability of each chosen tag
        outputs = spans_of(best, lengths, chosen, self.begins, self.insides, self.tag_labels)
        return {"tags": tf.where(is_token, tf.gather(self.labels, best), tf.constant(PAD_TOKEN)),
                "scores": tf.where(is_token, chosen, 0.0), "probabilities": probabilities, **outputs}

    def write(self, directory: Path) -> None:
        archive = keras.export.ExportArchive()
        # The model itself is not tracked: the endpoints capture all its weights, which the archive saves
        # as the variables they use; tracking the model too would store every weight twice.
        archive.track(self.word_lookup)
        archive.track(self.char_lookup)
        for trackable in self.pretrained.trackables() if self.pretrained is not None else ():
            archive.track(trackable)
        if self.condition_lookup is not None:
            archive.track(self.condition_lookup)
        serve_spec = [TOKENS_SPEC, CONDITIONS_SPEC] if self.spans else [TOKENS_SPEC]
        archive.add_endpoint("serve", tf.function(self.serve, input_signature=serve_spec))
        archive.add_endpoint("encode", tf.function(self.encode, input_signature=[TOKENS_SPEC]))
        archive.write_out(str(directory), verbose=False)


def export_tagger(model: keras.Model, vocabs: TaggerVocabs, config: TaggerConfig, model_root: str | Path,
                  metadata: dict[str, Any], dev_sentences=None,
                  verify: Callable[[Path, dict], Any] | None = None) -> tuple[int, Path]:
    """Write ``model_root/<next version>/`` with the SavedModel and ``metadata.json``.

    With ``dev_sentences``, the exported SavedModel (not the training object) is evaluated on them and
    the figures go into the metadata under ``metrics.dev``. ``verify(staging directory, metadata)`` returns a
    record kept under ``export_check``, or raises, and nothing is published. Returns (version, directory).
    """
    from training.tagger.evaluate import evaluate_spans, evaluate_tagger  # evaluation loads what this module writes
    from training.tagger.saved_tagger import SavedTagger

    spans = config.task == "spans"
    serve = ("tokens string[batch, time] ('' pads)" + (", conditions string[batch] ('' for none)" if spans else "")
             + " -> tags, scores, probabilities"
             + (", span_count, span_starts, span_ends (token indices, end exclusive), span_labels, span_scores" if spans
                else ""))

    def write(staging: Path) -> dict[str, Any]:
        TaggerSignatures(model, vocabs, config).write(staging)
        (staging / VOCAB_FILE).write_text(json.dumps(vocabs.to_dict(), ensure_ascii=False), encoding="utf-8")
        # A POS tagger is trained on gold words: raw text is best read by the default tokenizer; a span model
        # on text that its config's tokenizer cut (training.common.tokenizer).
        written = {**metadata, "name": Path(model_root).name, "kind": "tagger", "task": config.task,
                   "tokenizer": config.tokenizer, "format": "tf_saved_model",
                   **({"scheme": config.scheme, "condition": config.condition} if spans else {}),
                   "signatures": {"serve": serve, "encode": "tokens string[batch, time] -> word_ids, char_ids"},
                   "labels": list(vocabs.tags.items), "word_vocabulary_size": len(vocabs.words),
                  "pretrained_words": len(vocabs.pretrained.keys) if vocabs.pretrained is not None else 0,
                   "char_vocabulary_size": len(vocabs.chars), "config": config.to_dict(),
                   "parameters": int(model.count_params()), "libraries": artifacts.library_versions()}
        if metadata.get("vectors"):
            written["vectors"] = exported_record(metadata["vectors"], [model])
        if verify is not None:
            written["export_check"] = verify(staging, written)
        if dev_sentences is not None:
            if spans:
                metrics = evaluate_spans(SavedTagger(staging, written), dev_sentences)
                logger.info("exported model on dev: span F1 %.4f (boundaries only %.4f) over %d spans", metrics["f1"],
                            metrics["unlabelled"]["f1"], metrics["spans"])
            else:
                metrics = evaluate_tagger(SavedTagger(staging), dev_sentences)
                logger.info("exported model on dev: accuracy %.4f over %d tokens", metrics["accuracy"], metrics["tokens"])
            written.setdefault("metrics", {})["dev"] = metrics
        return written

    version, target = artifacts.write_new_version(model_root, write)
    logger.info("wrote %s (version %d)", target, version)
    return version, target

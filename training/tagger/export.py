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
from training.common.tokenizer import DEFAULT_TOKENIZER
from training.common.vocab import PAD_TOKEN
from training.tagger.config import TaggerConfig
from training.tagger.model import tagger_parts
from training.tagger.serving_graph import encode_characters, tag_probabilities
from training.tagger.vocab import TaggerVocabs

logger = logging.getLogger(__name__)

VOCAB_FILE = "vocab.json"  # the vocabularies in plain text too, so a version can be re-exported from its directory
TOKENS_SPEC = tf.TensorSpec(shape=[None, None], dtype=tf.string, name="tokens")


class TaggerSignatures:
    """Builds the ``serve`` and ``encode`` functions around a trained id-level model."""

    def __init__(self, model: keras.Model, vocabs: TaggerVocabs, config: TaggerConfig):
        self.model = model
        self.char_encoder, self.sentence_tagger = tagger_parts(model)
        self.max_word_length = config.max_word_length
        self.word_lookup = string_lookup(vocabs.words, "word_lookup")
        self.char_lookup = string_lookup(vocabs.chars, "char_lookup")
        self.pretrained = PretrainedLookup(vocabs.pretrained) if vocabs.pretrained is not None else None
        self.labels = tf.constant(list(vocabs.tags.items), dtype=tf.string)
        self.encode(tf.constant([["build"]]))  # builds the lookup layers, which export needs

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

    def serve(self, tokens: tf.Tensor) -> dict[str, tf.Tensor]:
        word_ids = self.word_ids(tokens)  # [B, T]
        is_token = word_ids > 0
        # The character encoder runs once per distinct word of the batch, never on padding: the same
        # result as running it at every position (the model's own layout), for a fraction of the work.
        # Both parts run as ``training.tagger.serving_graph`` lays them out for speed, on the model's weights.
        positions = tf.where(is_token)  # [N, 2]
        distinct, index = tf.unique(tf.gather_nd(tokens, positions))  # [U], [N]
        distinct_vectors = encode_characters(self.char_encoder, self.char_ids(distinct))  # [U, Dc]
        shape = tf.concat([tf.shape(tokens, out_type=tf.int64), tf.shape(distinct_vectors, out_type=tf.int64)[1:]], 0)
        char_vectors = tf.scatter_nd(positions, tf.gather(distinct_vectors, index), shape)  # [B, T, Dc]
        pretrained_ids = self.pretrained.ids(tokens) if self.pretrained is not None else None  # [B, T]
        probabilities = tag_probabilities(self.sentence_tagger, word_ids, char_vectors, pretrained_ids)  # [B, T, n_tags]
        best = tf.argmax(probabilities, axis=-1, output_type=tf.int32)  # [B, T]
        tags = tf.where(is_token, tf.gather(self.labels, best), tf.constant(PAD_TOKEN))
        scores = tf.where(is_token, tf.reduce_max(probabilities, axis=-1), 0.0)
        return {"tags": tags, "scores": scores, "probabilities": probabilities}

    def write(self, directory: Path) -> None:
        archive = keras.export.ExportArchive()
        # The model itself is not tracked: the endpoints capture all its weights, which the archive saves
        # as the variables they use; tracking the model too would store every weight twice.
        archive.track(self.word_lookup)
        archive.track(self.char_lookup)
        for trackable in self.pretrained.trackables() if self.pretrained is not None else ():
            archive.track(trackable)
        archive.add_endpoint("serve", tf.function(self.serve, input_signature=[TOKENS_SPEC]))
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
    from training.tagger.evaluate import evaluate_tagger  # evaluation loads what this module writes
    from training.tagger.saved_tagger import SavedTagger

    def write(staging: Path) -> dict[str, Any]:
        TaggerSignatures(model, vocabs, config).write(staging)
        (staging / VOCAB_FILE).write_text(json.dumps(vocabs.to_dict(), ensure_ascii=False), encoding="utf-8")
        # Trained on gold words: raw text is best read by the default tokenizer (training.common.tokenizer).
        written = {**metadata, "name": Path(model_root).name, "kind": "tagger", "tokenizer": DEFAULT_TOKENIZER,
                   "format": "tf_saved_model",
                   "signatures": {"serve": "tokens string[batch, time] ('' pads) -> tags, scores, probabilities",
                                  "encode": "tokens string[batch, time] -> word_ids, char_ids"},
                   "labels": list(vocabs.tags.items), "word_vocabulary_size": len(vocabs.words),
                  "pretrained_words": len(vocabs.pretrained.keys) if vocabs.pretrained is not None else 0,
                   "char_vocabulary_size": len(vocabs.chars), "config": config.to_dict(),
                   "parameters": int(model.count_params()), "libraries": artifacts.library_versions()}
        if verify is not None:
            written["export_check"] = verify(staging, written)
        if dev_sentences is not None:
            metrics = evaluate_tagger(SavedTagger(staging), dev_sentences)
            written.setdefault("metrics", {})["dev"] = metrics
            logger.info("exported model on dev: accuracy %.4f over %d tokens", metrics["accuracy"], metrics["tokens"])
        return written

    version, target = artifacts.write_new_version(model_root, write)
    logger.info("wrote %s (version %d)", target, version)
    return version, target

"""Export the schema-guided span tagger: encoder + head as one SavedModel, weights stored as float16.

Signatures (``SavedSchemaTagger`` calls them):

    encode_slots(pieces int32[N, P])                                   -> vectors float32[N, E]  (mean-pooled)
    emissions(pieces int32[B, P], word_starts int32[B, W],
              slot_vectors float32[B, K, E], slot_mask float32[B, K])  -> probabilities float32[B, W, 1 + 2K]

The version directory also holds ``word_pieces.json`` (the kept pieces: ``training.schema_guided.pieces`` splits with
it), ``schemas.json`` (the services training had: shipped, so the server knows them without a registration) and
``metadata.json``. Before it is published the SavedModel must give the Keras model's probabilities (weights already
rounded to float16) on probe turns within ``EXPORT_TOLERANCE``, and is scored on the dev file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from training.common import artifacts
from training.common.service_schema import ServiceSchema
from training.common.word_pieces import WordPieces
from training.dialog.export import StoredWeights, round_weights
from training.schema_guided.config import SchemaSpanConfig
from training.schema_guided.data import SchemaTurn, span_slots
from training.schema_guided.evaluate import span_metrics
from training.schema_guided.saved import SCHEMAS_FILE, WORD_PIECES_FILE, SavedSchemaTagger

logger = logging.getLogger(__name__)

EXPORT_TOLERANCE = 1e-4  # float32 arithmetic in another graph order: measured differences are ~1e-6
PROBE_TURNS = [["I", "want", "a", "table", "at", "Sino", "in", "San", "Jose", "at", "7", "pm", "."],
               ["Book", "it", "."], ["Fly", "me", "from", "LAX", "to", "Seattle", "on", "March", "3rd"]]


def full_model(encoder, head: keras.Model, config: SchemaSpanConfig) -> keras.Model:
    pieces = keras.Input((None,), dtype="int32", name="pieces")
    word_starts = keras.Input((None,), dtype="int32", name="word_starts")
    slot_vectors = keras.Input((None, config.encoder_size), name="slot_vectors")
    slot_mask = keras.Input((None,), name="slot_mask")
    states, _ = encoder.both(pieces)
    logits = head({"states": states, "word_starts": word_starts, "slot_vectors": slot_vectors, "slot_mask": slot_mask})
    return keras.Model([pieces, word_starts, slot_vectors, slot_mask], ops.softmax(logits, axis=-1), name="schema_span_tagger")


class SchemaSignatures(tf.Module):
    def __init__(self, model: keras.Model, slot_encoder: keras.Model):
        super().__init__()
        self.model, self.slot_encoder = model, slot_encoder
        self.stored = StoredWeights(model)
        self.stored_variables = self.stored.variables(model)  # tracked: what the SavedModel writes

    def encode_slots(self, pieces):
        return {"vectors": self.stored.call(self.slot_encoder, pieces, training=False)}

    def emissions(self, pieces, word_starts, slot_vectors, slot_mask):
        return {"probabilities": self.stored.call(self.model, [pieces, word_starts, slot_vectors, slot_mask], training=False)}

    def write(self, directory: Path, size: int) -> None:
        archive = keras.export.ExportArchive()
        archive.add_variable_collection("stored_variables", self.stored_variables)
        archive.add_endpoint("encode_slots", tf.function(self.encode_slots, input_signature=[
            tf.TensorSpec([None, None], tf.int32, name="pieces")]))
        archive.add_endpoint("emissions", tf.function(self.emissions, input_signature=[
            tf.TensorSpec([None, None], tf.int32, name="pieces"), tf.TensorSpec([None, None], tf.int32, name="word_starts"),
            tf.TensorSpec([None, None, size], tf.float32, name="slot_vectors"),
            tf.TensorSpec([None, None], tf.float32, name="slot_mask")]))
        archive.write_out(str(directory), verbose=False)


def export_schema_tagger(encoder, head: keras.Model, config: SchemaSpanConfig, word_pieces: WordPieces,
                         schemas: dict[str, ServiceSchema], record: dict[str, Any], out_root: Path,
                         dev: Sequence[SchemaTurn], dev_schemas: dict[str, ServiceSchema]) -> tuple[int, Path]:
    model = full_model(encoder, head, config)
    round_weights(model)
    signatures = SchemaSignatures(model, encoder.model)
    labels = sorted({slot.name for schema in schemas.values() for slot in span_slots(schema)})

    def write(staging: Path) -> dict[str, Any]:
        signatures.write(staging, config.encoder_size)
        (staging / WORD_PIECES_FILE).write_text(word_pieces.to_json(), encoding="utf-8")
        (staging / SCHEMAS_FILE).write_text(json.dumps([s.to_json() for s in schemas.values()], indent=1,
                                                       ensure_ascii=False), encoding="utf-8")
        metadata = {"task": "spans", "data_format": "sgd", **record, "name": out_root.name, "kind": "tagger",
                    "schema_guided": True, "tokenizer": config.tokenizer, "format": "tf_saved_model", "scheme": "bio",
                    "signatures": {"encode_slots": "pieces int32[N, P] -> vectors float32[N, E]",
                                   "emissions": "pieces int32[B, P], word_starts int32[B, W], slot_vectors float32[B, K, E], "
                                                "slot_mask float32[B, K] -> probabilities float32[B, W, 1 + 2K] "
                                                "(O, B-slot0, I-slot0, ...)"},
                    "labels": labels, "services": sorted(schemas), "config": config.to_dict(),
                    "parameters": int(sum(np.prod(v.shape) for v in model.variables)),
                    "weights_stored_as": "float16", "libraries": artifacts.library_versions()}
        saved = SavedSchemaTagger(staging, metadata)
        metadata["export_check"] = _check(saved, model, encoder, schemas)
        if dev:
            encodings = {name: saved.encode_service(schema) for name, schema in dev_schemas.items()}
            predicted = saved.tag([t.words for t in dev], conditions=[encodings[t.service] for t in dev])
            metadata["metrics"] = {"dev": span_metrics([t.spans for t in dev],
                                                       [[(s.label, s.start, s.end) for s in r.spans] for r in predicted],
                                                       [t.service for t in dev], set(schemas))}
            m = metadata["metrics"]["dev"]
            logger.info("exported model on dev: F1 %.4f; services training had %.4f, lacked %.4f", m["f1"],
                        m["seen_services"]["f1"], m["unseen_services"]["f1"])
        return metadata

    version, target = artifacts.write_new_version(out_root, write)
    logger.info("wrote %s (version %d)", target, version)
    return version, target


def _check(saved: SavedSchemaTagger, model: keras.Model, encoder, schemas: dict[str, ServiceSchema]) -> dict[str, Any]:
    """The SavedModel against the Keras model on the probe turns with the first training service's slots."""
    from training.schema_guided.pieces import pad_rows, piece_rows

    schema = next(iter(schemas.values()))
    encoding = saved.encode_service(schema)
    rows = piece_rows(saved.word_pieces, PROBE_TURNS, saved.config["max_pieces"])
    ids, starts = pad_rows(rows)
    k = len(encoding.slots)
    vectors = np.repeat(encoding.vectors[None], len(rows), axis=0)
    mask = np.ones((len(rows), k), np.float32)
    expected = np.asarray(model([ids, starts, vectors, mask], training=False))
    got = saved._emissions(tf.constant(ids), tf.constant(starts), tf.constant(vectors), tf.constant(mask))["probabilities"].numpy()
    worst = float(np.max(np.abs(expected - got)))
    if not worst <= EXPORT_TOLERANCE:
        from training.common.checkpoint import ExportMismatchError

        raise ExportMismatchError(f"the SavedModel's probabilities differ from the Keras model's by {worst:.3g}")
    return {"items": len(rows), "trained_under": keras.backend.backend(), "max_abs_difference": worst,
            "tolerance": EXPORT_TOLERANCE}

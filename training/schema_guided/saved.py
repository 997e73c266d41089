"""An exported schema-guided span tagger as a Python object: encode a service's slots once, then tag its turns.

Used by ``seqtag evaluate`` and by the service, so both call the model as a deployed consumer would: TensorFlow, the
version directory and ``training.common`` only (no trainer, no Keras model code).

    encode_service(schema) -> ServiceEncoding: the service's span slots and their vectors [K, E] (one encoder pass)
    tag(turns, encodings)  -> per turn: BIO tags over the service's own slot names, and the spans they spell

The decoder is the span models' constrained Viterbi (``training.tagger.spans.SpanDecoder``) over the tags
``O, B-slot0, I-slot0, ...`` of the turn's service: spans are well formed and name only that service's slots.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf

from training.common import artifacts
from training.common.saved_model import only_concrete_function
from training.common.service_schema import ServiceSchema, read_schemas, schema_digest
from training.common.tokenizer import tokenizer_for
from training.common.word_pieces import WordPieces
from training.schema_guided.data import describe_slot, span_slots
from training.schema_guided.pieces import pad_rows, piece_rows
from training.tagger.saved_tagger import Span, TaggedTokens
from training.tagger.spans import SpanDecoder

logger = logging.getLogger(__name__)

WORD_PIECES_FILE = "word_pieces.json"
SCHEMAS_FILE = "schemas.json"
BATCH = 32  # turns per model call (length-sorted)


@dataclass(frozen=True)
class ServiceEncoding:
    service: str
    digest: str  # the schema's: a re-registered schema gets a new encoding
    slots: tuple[str, ...]  # its span slots (non-categorical), in schema order
    vectors: np.ndarray  # float32[K, E]
    all_slots: tuple[str, ...] = ()  # every slot, categorical ones too (what actions name), in schema order
    all_vectors: np.ndarray | None = None  # float32[S, E]

    @property
    def tags(self) -> tuple[str, ...]:
        return ("O", *(tag for slot in self.slots for tag in (f"B-{slot}", f"I-{slot}")))


@lru_cache(maxsize=512)
def span_decoder(tags: tuple[str, ...]) -> SpanDecoder:
    """The constrained decoder of a service's tags (``ServiceEncoding.tags``), built once per tag list."""
    return SpanDecoder(tags, "bio")


class SavedSchemaTagger:
    spans = True  # a span model: tag() takes each sentence's service
    schema_guided = True
    runtime = "tensorflow"

    def __init__(self, model_dir: str | Path, metadata: dict | None = None, runtime: str = "tensorflow"):
        self.directory = Path(model_dir)
        self.metadata = metadata if metadata is not None else artifacts.read_metadata(self.directory)
        self.config = self.metadata["config"]
        self.saved_model = tf.saved_model.load(str(self.directory))
        self._encode_slots = only_concrete_function(self.saved_model.encode_slots)
        self._emissions = only_concrete_function(self.saved_model.emissions)
        self.word_pieces = WordPieces.from_file(self.directory / WORD_PIECES_FILE)
        self.tokenizer = tokenizer_for({"kind": "tagger", **self.metadata})
        self.shipped = {s.service_name: s for s in read_schemas(self.directory / SCHEMAS_FILE)}
        self.fast_check = {"runtime": "tensorflow", "reason": "schema-guided models run as their SavedModel"}

    @property
    def labels(self) -> list[str]:
        return list(self.metadata.get("labels", []))

    @property
    def trained_services(self) -> set[str]:
        return set(self.shipped)

    def encode_service(self, schema: ServiceSchema) -> ServiceEncoding:
        """The service's span slots through the encoder, once (the server keeps the result per schema digest)."""
        every = list(schema.slots)
        size = self.config["encoder_size"]
        vectors = np.zeros((0, size), np.float32)
        if every:
            texts = [self.tokenizer.tokenize(describe_slot(slot)) for slot in every]
            rows = piece_rows(self.word_pieces, [[t.text for t in words] for words in texts],
                              self.config["max_description_pieces"])
            ids, _ = pad_rows(rows)
            vectors = self._encode_slots(tf.constant(ids))["vectors"].numpy()
        spans = [i for i, slot in enumerate(every) if not slot.is_categorical]
        return ServiceEncoding(schema.service_name, schema_digest(schema), tuple(every[i].name for i in spans),
                               vectors[spans].reshape(len(spans), size), tuple(s.name for s in every), vectors)

    def emissions(self, turns: Sequence[Sequence[str]], encodings: Sequence[ServiceEncoding]) -> list[np.ndarray]:
        """Per turn, the probabilities ``[T, 1 + 2K]`` of its service's tags (``ServiceEncoding.tags`` order)."""
        out: list[np.ndarray | None] = [None] * len(turns)
        order = sorted(range(len(turns)), key=lambda i: len(turns[i]))
        size = self.config["encoder_size"]
        for begin in range(0, len(order), BATCH):
            rows = order[begin:begin + BATCH]
            ids, starts = pad_rows(piece_rows(self.word_pieces, [turns[i] for i in rows], self.config["max_pieces"]))
            k = max(max(len(encodings[i].slots) for i in rows), 1)
            vectors = np.zeros((len(rows), k, size), np.float32)
            mask = np.zeros((len(rows), k), np.float32)
            for j, i in enumerate(rows):
                n = len(encodings[i].slots)
                vectors[j, :n], mask[j, :n] = encodings[i].vectors, 1.0
            probabilities = self._emissions(tf.constant(ids), tf.constant(starts), tf.constant(vectors),
                                            tf.constant(mask))["probabilities"].numpy()
            for j, i in enumerate(rows):
                out[i] = probabilities[j, :len(turns[i]), :1 + 2 * len(encodings[i].slots)]
        return out  # type: ignore[return-value]

    def tag(self, sentences: Sequence[Sequence[str]], batch_size: int = BATCH,
            conditions: Sequence[ServiceEncoding] | None = None) -> list[TaggedTokens]:
        """Tag each turn with its service's slots (``conditions``: each turn's ``ServiceEncoding``)."""
        if conditions is None or any(not isinstance(c, ServiceEncoding) for c in conditions):
            raise ValueError("a schema-guided model tags a turn of a service: give each turn its ServiceEncoding")
        results = []
        for probabilities, encoding in zip(self.emissions(sentences, conditions), conditions):
            tags = encoding.tags
            best, chosen, spans = span_decoder(tags).decode(probabilities)
            results.append(TaggedTokens([tags[k] for k in best], chosen.tolist(), probabilities,
                                        [Span(label, first, end, score) for label, first, end, score in spans],
                                        columns=list(tags)))
        return results

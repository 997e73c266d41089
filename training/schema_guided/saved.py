"""An exported schema-guided span tagger as a Python object: encode a service's slots once, then tag its turns.

Used by ``seqtag evaluate`` and by the service, so both call the model as a deployed consumer would: TensorFlow, the
version directory and ``training.common`` only (no trainer, no Keras model code).

    encode_service(schema) -> ServiceEncoding: the service's span slots and their vectors [K, E] (one encoder pass)
    tag(turns, encodings)  -> per turn: BIO tags over the service's own slot names, and the spans they spell

The decoder is the span models' constrained Viterbi (``training.tagger.spans.SpanDecoder``) over the tags
``O, B-slot0, I-slot0, ...`` of the turn's service: spans are well formed and name only that service's slots.

``runtime="onnx"`` (the service's default) also builds the fast path (``training.schema_guided.fast``) from the
version's weights and checks both signatures against the SavedModel's on probe turns and the first shipped
service's slots (half of them masked for one turn) before it serves: a disagreement beyond
``fast_path.TOLERANCE`` raises ``FastPathMismatch`` (the service rejects the version).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from training.common import artifacts
from training.common.fast_path import PRECISIONS, RUNTIMES, FastPathUnsupported, accept, record_int8
from training.common.saved_model import LazySavedModel, import_tensorflow, only_concrete_function
from training.common.service_schema import ServiceSchema, read_schemas, schema_digest
from training.common.tokenizer import tokenizer_for
from training.common.word_pieces import WordPieces
from training.schema_guided.data import describe_slot, span_slots
from training.schema_guided.pieces import pad_rows, piece_rows
from training.tagger.saved_tagger import Span, TaggedTokens
from training.tagger.spans import SpanDecoder

logger = logging.getLogger(__name__)
# What defines the probe and the graphs built for it: part of a cached fast path's key (training.common.fast_cache)
PROBE_CODE = (Path(__file__), Path(__file__).with_name("fast.py"), Path(__file__).parents[1] / "common" / "encoder_graph.py")

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


PROBE_TURNS = [["I", "want", "a", "table", "at", "Sino", "in", "San", "Jose", "at", "7", "pm", "."], ["Book", "it", "."],
               ["hi"], ["Find", "me", "a", "cheap", "Italian", "place", "in", "Palo", "Alto", "for", "four", "people",
                        "tomorrow", "evening", ",", "somewhere", "with", "outdoor", "seating", "please"]]


class SavedSchemaTagger(LazySavedModel):
    spans = True  # a span model: tag() takes each sentence's service
    schema_guided = True

    def __init__(self, model_dir: str | Path, metadata: dict | None = None, runtime: str = "tensorflow",
                 fast_cache: bool = False, precision: str = "float32"):
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        self.directory = Path(model_dir)
        self.metadata = metadata if metadata is not None else artifacts.read_metadata(self.directory)
        self.config = self.metadata["config"]
        self._saved_model = None  # loaded now, or (a fast path from the cache) when first needed
        self.word_pieces = WordPieces.from_file(self.directory / WORD_PIECES_FILE)
        self.tokenizer = tokenizer_for({"kind": "tagger", **self.metadata})
        self.shipped = {s.service_name: s for s in read_schemas(self.directory / SCHEMAS_FILE)}
        self.fast = None  # training.schema_guided.fast.FastSchemaTagger, once checked
        self.fast_check: dict = {"runtime": "tensorflow", "reason": "runtime=tensorflow"}
        if runtime == "onnx":
            self._build_fast_path(fast_cache)
            if self.fast is not None and precision == "int8":
                self._use_int8()
            if self.fast is not None:
                self.fast.release()
        if self.fast is None:
            self._require_saved_model()

    @property
    def precision(self) -> str:
        return getattr(self.fast, "precision", "float32")

    def _use_int8(self) -> None:
        """The int8 turn encoder (``FastSchemaTagger.quantized``), if it agrees with the float one on the probe: no
        probability moves more than ``INT8_TOLERANCE`` and ``INT8_AGREEMENT`` of the probe's words keep their tag;
        float32 stays otherwise, with a warning."""
        schema = next(iter(self.shipped.values()))
        slot_ids, (ids, starts), mask = self._probe_inputs(schema)
        vectors = np.repeat(self.fast.encode_slots(slot_ids)[None], len(PROBE_TURNS), axis=0)
        int8 = self.fast.quantized()
        reference, quantized = (fast.emissions(ids, starts, vectors, mask) for fast in (self.fast, int8))
        rows = [(row, slice(0, len(turn))) for row, turn in enumerate(PROBE_TURNS)]
        worst = max(float(np.abs(quantized[row, words] - reference[row, words]).max()) for row, words in rows)
        same = sum(int((quantized[row, words].argmax(-1) == reference[row, words].argmax(-1)).sum()) for row, words in rows)
        agreement = same / sum(len(turn) for turn in PROBE_TURNS)
        if record_int8(self.fast_check, self.directory, worst, agreement, "tags", "int8_tag_agreement"):
            self.fast = int8

    def _loaded(self, saved_model) -> None:
        self._encode_slots = only_concrete_function(saved_model.encode_slots)
        self._emissions = only_concrete_function(saved_model.emissions)

    def _build_fast_path(self, use_cache: bool) -> None:
        """The fast path from the SavedModel's weights (or the cache's: ``training.common.fast_cache``), checked
        against the SavedModel's answers on the probe (or the cache's record of them) before it serves."""
        from training.common import fast_cache
        from training.schema_guided.fast import FastSchemaTagger  # ONNX is imported only when asked for

        schema = next(iter(self.shipped.values()), None)
        if schema is None or not schema.slots:
            self.fast_check = {"runtime": "tensorflow", "reason": "no shipped service to check the fast path with"}
            return
        entry = fast_cache.entry_for(self.directory, PROBE_CODE) if use_cache else None
        cached = fast_cache.load(entry) if entry is not None else None
        try:
            fast = FastSchemaTagger(cached.weights if cached else self.saved_model, self.metadata)
        except FastPathUnsupported as reason:
            logger.info("%s: no fast path (%s); tagging through TensorFlow", self.directory, reason)
            self.fast_check = {"runtime": "tensorflow", "reason": str(reason)}
            return
        reference = cached.reference if cached else self._probe_reference(schema)
        self.fast_check = accept(self.directory, self._probe_difference(fast, schema, reference),
                                 "fast path's slot vectors or probabilities", "probe turns", len(PROBE_TURNS))
        self.fast = fast
        fast_cache.settle(entry, cached, self.directory, self.fast_check, None if cached else self.saved_model, reference)

    def _probe_inputs(self, schema: ServiceSchema) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], np.ndarray]:
        """The probe: the first shipped service's slot description pieces, the probe turns' (piece ids, word starts),
        and a slot mask in which one turn's service has half the slots (fewer than the batch pads to)."""
        ids, starts = pad_rows(piece_rows(self.word_pieces, PROBE_TURNS, self.config["max_pieces"]))
        mask = np.ones((len(PROBE_TURNS), len(schema.slots)), np.float32)
        mask[1, len(schema.slots) // 2:] = 0.0
        return self._slot_piece_ids(schema), (ids, starts), mask

    def _probe_reference(self, schema: ServiceSchema) -> dict[str, np.ndarray]:
        """The SavedModel's slot vectors ``[K, E]`` and probe probabilities ``[B, T, 1 + 2K]``."""
        tf = import_tensorflow()
        slot_ids, (ids, starts), mask = self._probe_inputs(schema)
        vectors = self._encode_slots(tf.constant(slot_ids))["vectors"].numpy()
        batch = np.repeat(vectors[None], len(PROBE_TURNS), axis=0)
        probabilities = self._emissions(tf.constant(ids), tf.constant(starts), tf.constant(batch),
                                        tf.constant(mask))["probabilities"].numpy()
        return {"slot_vectors": vectors, "probabilities": probabilities}

    def _probe_difference(self, fast, schema: ServiceSchema, reference: dict[str, np.ndarray]) -> float:
        slot_ids, (ids, starts), mask = self._probe_inputs(schema)
        vectors = reference["slot_vectors"]
        worst = float(np.abs(fast.encode_slots(slot_ids) - vectors).max())
        got = fast.emissions(ids, starts, np.repeat(vectors[None], len(PROBE_TURNS), axis=0), mask)
        for row, turn in enumerate(PROBE_TURNS):  # a turn's own words: past them is padding
            worst = max(worst, float(np.abs(got[row, :len(turn)] - reference["probabilities"][row, :len(turn)]).max()))
        return worst

    def _slot_piece_ids(self, schema: ServiceSchema) -> np.ndarray:
        texts = [self.tokenizer.tokenize(describe_slot(slot)) for slot in schema.slots]
        rows = piece_rows(self.word_pieces, [[t.text for t in words] for words in texts],
                          self.config["max_description_pieces"])
        return pad_rows(rows)[0]

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
            ids = self._slot_piece_ids(schema)
            vectors = (self.fast.encode_slots(ids) if self.fast is not None
                       else self._encode_slots(import_tensorflow().constant(ids))["vectors"].numpy())
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
            if self.fast is not None:
                probabilities = self.fast.emissions(ids, starts, vectors, mask)
            else:
                tf = import_tensorflow()
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

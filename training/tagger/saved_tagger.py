"""An exported tagger SavedModel as a Python object: tag lists of token lists in length-sorted batches.

Used by evaluation and by the service, so both call the model exactly as a deployed consumer would. It
needs TensorFlow and the model directory only: no trainer, model builder or scorer.

``runtime="onnx"`` (the service's default) also builds the fast path from the version's weights
(``training.tagger.fast_tagger``) and checks it against the SavedModel on a probe before anything is tagged:
a disagreement beyond ``fast_path.TOLERANCE`` raises ``FastPathMismatch`` (the service rejects the version).
Span models decode their spans on the fast path's probabilities with ``training.tagger.spans.SpanDecoder``, the
NumPy twin of the graph's decoding; inputs the fast path does not take ("" tokens, empty sentences) go through the
SavedModel.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from training.common import artifacts
from training.common.fast_path import (INT8_AGREEMENT, INT8_TOLERANCE, PRECISIONS, RUNTIMES, FastPathMismatch, accept,
                                       build_fast_model, int8_passes, max_difference, onnx_threads)
from training.common.saved_model import LazySavedModel, only_concrete_function, pad_tokens
from training.common.tokenizer import tokenizer_for
from training.common.vocab import PAD_TOKEN, UNK_ID
from training.tagger import fast_tagger
from training.tagger.fast_tagger import PROBE_SENTENCES

logger = logging.getLogger(__name__)

# Sentences per fast-path call: ONNX Runtime's LSTM runs every row of a call for the call's longest sentence, so
# length-sorted calls of 16-32 waste less than one of 256 (27k vs 16k tokens/s on 2 cores, EWT dev).
FAST_BATCH = 32
# What defines the probe and the graphs built for it: part of a cached fast path's key (training.common.fast_cache)
PROBE_CODE = (Path(__file__), Path(fast_tagger.__file__))


@dataclass(frozen=True)
class Span:
    label: str
    start: int  # first token
    end: int  # one past the last token
    score: float  # the mean probability of its tags


@dataclass
class TaggedTokens:
    tags: list[str]
    scores: list[float]  # probability of each chosen tag
    probabilities: np.ndarray  # float32[time, n_labels], columns in ``SavedTagger.labels`` order
    spans: list[Span] | None = None  # span models: the spans the (well-formed) tags spell
    # the tag of each probability column when it is not the model's label list (a schema-guided model's columns are
    # its turn's service's own tags: O, B-slot0, I-slot0, ...)
    columns: list[str] | None = None


class SavedTagger(LazySavedModel):
    def __init__(self, model_dir: str | Path, metadata: dict | None = None, runtime: str = "tensorflow",
                 precision: str = "float32", fast_cache: bool = False):
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
        if precision not in PRECISIONS or (precision == "int8" and runtime != "onnx"):
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (int8 on the onnx runtime), not {precision!r}")
        self.precision = precision
        self._pool = None  # int8: a thread per core running calls side by side
        self.directory = Path(model_dir)
        if metadata is None and (self.directory / artifacts.METADATA_FILE).is_file():
            metadata = artifacts.read_metadata(self.directory)
        self.metadata = metadata or {}
        self.spans = self.metadata.get("task") == "spans"  # a span model: tag() takes conditions, gives spans
        self.tokenizer = tokenizer_for({"kind": "tagger", **self.metadata})  # what reads raw text for this model
        self._saved_model = None  # loaded now, or (a fast path from the cache) when first needed
        self.fast = None  # training.tagger.fast_tagger.FastTagger, once checked
        self._span_decoder = None  # span models on the fast path: training.tagger.spans.SpanDecoder
        self.fast_check: dict | None = None  # what the check measured, or why there is no fast path
        if runtime != "onnx":
            self._require_saved_model()
            return
        self._build_fast_path(fast_cache)
        if self.fast is not None and self.precision == "int8":
            self._quantize(self.fast)

    def _loaded(self, saved_model) -> None:
        self._serve = only_concrete_function(saved_model.serve)
        self._encode = only_concrete_function(saved_model.encode)

    def _probe_conditions(self) -> list[str] | None:
        """Span models: every other probe sentence with the first condition the model knows, the rest with none."""
        known = list(self.metadata.get("conditions") or []) or [""]
        return [known[0] if row % 2 else "" for row in range(len(PROBE_SENTENCES))] if self.spans else None

    def _build_fast_path(self, use_cache: bool) -> None:
        """The fast path from the SavedModel's weights (or the cache's: ``training.common.fast_cache``), checked
        against the SavedModel's answers on the probe (or the cache's record of them) before it serves."""
        from training.common import fast_cache

        entry = fast_cache.entry_for(self.directory, PROBE_CODE) if use_cache else None
        cached = fast_cache.load(entry) if entry is not None else None
        fast, reason = build_fast_model(self.directory, fast_tagger.FastTagger.from_saved_model,
                                        cached.weights if cached else self.saved_model, self.metadata)
        if fast is None:
            logger.info("%s: no fast path (%s); tagging through TensorFlow", self.directory, reason)
            self.fast_check = {"runtime": "tensorflow", "reason": reason}
            self._require_saved_model()
            return
        reference = cached.reference if cached else self._probe_reference()
        self.fast_check = accept(self.directory, self._probe_difference(fast, reference), "fast path's probabilities",
                                 "probe sentences", len(PROBE_SENTENCES))
        self.fast = fast
        fast_cache.settle(entry, cached, self.directory, self.fast_check, None if cached else self.saved_model, reference)

    def _probe_reference(self) -> dict[str, np.ndarray]:
        """The SavedModel's answers on the probe: its input ids for the probe batch, and each sentence's
        probabilities ``[T, K]``."""
        reference = dict(self.input_ids(PROBE_SENTENCES))
        tagged = self._tag_tensorflow(PROBE_SENTENCES, len(PROBE_SENTENCES), self._probe_conditions())
        reference.update({f"probabilities_{row}": result.probabilities for row, result in enumerate(tagged)})
        return reference

    def _probe_difference(self, fast, reference: dict[str, np.ndarray]) -> float:
        """The fast path against the SavedModel's probe answers: the same ids (else ``FastPathMismatch``), then the
        largest probability difference over one mixed-length batch and each sentence alone (a lone request is the
        common case, and packs differently)."""
        for row, sentence in enumerate(PROBE_SENTENCES):
            for t, token in enumerate(sentence):
                word_id, pretrained_id, chars = fast.token_ids(token)
                expected = reference["char_ids"][row, t]
                if (word_id != reference["word_ids"][row, t] or list(chars) != expected[:len(chars)].tolist()
                        or expected[len(chars):].any()
                        or ("pretrained_ids" in reference and pretrained_id != reference["pretrained_ids"][row, t])):
                    raise FastPathMismatch(f"the fast path's ids for {token!r} differ from the SavedModel's encode")
        conditions = self._probe_conditions()
        expected = [reference[f"probabilities_{row}"] for row in range(len(PROBE_SENTENCES))]
        batched = fast.probabilities(PROBE_SENTENCES, conditions)
        fast_rows = [batched[row, :len(s)] for row, s in enumerate(PROBE_SENTENCES)]
        fast_rows += [fast.probabilities([s], conditions[row:row + 1] if conditions else None)[0]
                      for row, s in enumerate(PROBE_SENTENCES)]
        return max_difference(fast_rows, expected + expected)

    def _quantize(self, fast) -> None:
        """The int8 sentence graph, checked against the float fast path on the probe (``INT8_TOLERANCE``); a model
        that int8 changes more than that (an untrained one, say) stays float32, with a warning.

        Its calls run on one thread each: int8 answers depend (slightly: 7 of EWT dev's 25k tags) on how many threads
        a call is split over, so a call is never split, and the same input gets the same tags on any machine and in
        any number of processes; a pool of threads runs several calls at once instead."""
        conditions = self._probe_conditions()
        reference = fast.probabilities(PROBE_SENTENCES, conditions)
        int8 = fast.quantized()
        quantized = int8.probabilities(PROBE_SENTENCES, conditions)
        rows = [slice(0, len(s)) for s in PROBE_SENTENCES]
        worst = max(float(np.abs(quantized[i, r] - reference[i, r]).max()) for i, r in enumerate(rows))
        same = sum(int((quantized[i, r].argmax(-1) == reference[i, r].argmax(-1)).sum()) for i, r in enumerate(rows))
        agreement = same / sum(len(s) for s in PROBE_SENTENCES)
        if not int8_passes(self.directory, worst, agreement, "tags"):  # float32 it stays
            self.precision = "float32"
            self.fast_check["int8_rejected"] = (f"int8 moves probabilities by {worst:.3g} and keeps {agreement:.1%} of "
                                                f"the probe's tags (limits {INT8_TOLERANCE:g}, {INT8_AGREEMENT:.0%})")
            return
        self.fast = int8
        threads = onnx_threads()
        if threads > 1:  # calls side by side, each on one thread: the cores without a thread count in the answers
            self._pool = ThreadPoolExecutor(threads, thread_name_prefix="int8-calls")
        self.fast_check.update({"precision": "int8", "int8_max_difference": worst, "int8_tag_agreement": agreement})

    @property
    def labels(self) -> list[str]:
        return list(self.metadata.get("labels", []))

    def _batches(self, sentences: Sequence[Sequence[str]], batch_size: int):
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            yield rows, pad_tokens([sentences[i] for i in rows])

    def tag(self, sentences: Sequence[Sequence[str]], batch_size: int = 256,
            conditions: Sequence[str | None] | None = None) -> list[TaggedTokens]:
        """Tag each sentence (a list of token strings); results in input order. Span models take each sentence's
        condition (e.g. the service a dialog turn is about; None or "" for none) and give its spans."""
        if self.fast is not None and all(s and PAD_TOKEN not in s for s in sentences):
            return self._tag_fast(sentences, batch_size, conditions)
        return self._tag_tensorflow(sentences, batch_size, conditions)

    def _tag_fast(self, sentences: Sequence[Sequence[str]], batch_size: int,
                  conditions: Sequence[str | None] | None = None) -> list[TaggedTokens]:
        labels = self.fast.vocabs.tags.items
        results: list[TaggedTokens | None] = [None] * len(sentences)
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
        step = min(batch_size, FAST_BATCH)

        def tag_rows(rows: list[int]) -> None:
            probabilities = self.fast.probabilities([sentences[i] for i in rows],
                                                    [conditions[i] for i in rows] if conditions else None)
            if self.spans:
                for j, i in enumerate(rows):
                    results[i] = self._decode_spans(probabilities[j, :len(sentences[i])])
                return
            best = probabilities.argmax(axis=-1)
            scores = probabilities.max(axis=-1)
            for j, i in enumerate(rows):
                n = len(sentences[i])
                results[i] = TaggedTokens([labels[k] for k in best[j, :n]], scores[j, :n].tolist(), probabilities[j, :n])

        calls = [order[start:start + step] for start in range(0, len(order), step)]
        if self._pool is not None and len(calls) > 1:
            list(self._pool.map(tag_rows, calls))  # ONNX Runtime lets go of the GIL while it computes
        else:
            for rows in calls:
                tag_rows(rows)
        return results  # type: ignore[return-value]

    def _decode_spans(self, probabilities: np.ndarray) -> TaggedTokens:
        """One sentence's ``[T, K]`` -> the most probable well-formed tags and the spans they spell, as the exported
        graph decodes them (``training.tagger.spans.SpanDecoder``, its NumPy twin)."""
        if self._span_decoder is None:
            from training.tagger.spans import SpanDecoder

            self._span_decoder = SpanDecoder(self.labels, self.metadata["scheme"])
        best, chosen, spans = self._span_decoder.decode(probabilities)
        return TaggedTokens([self.labels[k] for k in best], chosen.tolist(), probabilities,
                            [Span(label, first, end, score) for label, first, end, score in spans])

    def _tag_tensorflow(self, sentences: Sequence[Sequence[str]], batch_size: int,
                        conditions: Sequence[str | None] | None = None) -> list[TaggedTokens]:
        import tensorflow as tf

        self._require_saved_model()  # the fast path may have come from the cache
        results: list[TaggedTokens | None] = [None] * len(sentences)
        for rows, tokens in self._batches(sentences, batch_size):
            args = [tf.constant(tokens, dtype=tf.string)]
            if self.spans:
                args.append(tf.constant([(conditions[i] if conditions else None) or "" for i in rows], dtype=tf.string))
            output = self._serve(*args)
            tags = output["tags"].numpy()
            scores = output["scores"].numpy()
            probabilities = output["probabilities"].numpy()
            spans = ({name: output[name].numpy() for name in ("span_count", "span_starts", "span_ends", "span_labels",
                                                               "span_scores")} if self.spans else None)
            for j, i in enumerate(rows):
                n = len(sentences[i])
                found = None
                if spans is not None:
                    found = [Span(spans["span_labels"][j, k].decode("utf-8"), int(spans["span_starts"][j, k]),
                                  int(spans["span_ends"][j, k]), float(spans["span_scores"][j, k]))
                             for k in range(int(spans["span_count"][j]))]
                results[i] = TaggedTokens([t.decode("utf-8") for t in tags[j, :n]], scores[j, :n].tolist(),
                                          probabilities[j, :n], found)
        return results  # type: ignore[return-value]

    def encode(self, sentences: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """The model's input ids for one padded batch: word_ids ``[B, T]``, char_ids ``[B, T, C]``."""
        import tensorflow as tf

        self._require_saved_model()
        output = self._encode(tf.constant(pad_tokens(sentences), dtype=tf.string))
        return output["word_ids"].numpy(), output["char_ids"].numpy()

    def input_ids(self, sentences: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
        """Every input id the model computes for one padded batch: word_ids, char_ids (and, with a vector table,
        pretrained_ids ``[B, T]``, the table's rows)."""
        import tensorflow as tf

        self._require_saved_model()
        return {name: value.numpy() for name, value in self._encode(tf.constant(pad_tokens(sentences), dtype=tf.string)).items()}

    def unknown_word_mask(self, sentences: Sequence[Sequence[str]], batch_size: int = 256) -> list[np.ndarray]:
        """Per sentence, True where a token falls outside the model's word vocabulary (the <unk> id)."""
        masks: list[np.ndarray | None] = [None] * len(sentences)
        for rows, _ in self._batches(sentences, batch_size):
            word_ids, _ = self.encode([sentences[i] for i in rows])
            for j, i in enumerate(rows):
                masks[i] = word_ids[j, :len(sentences[i])] == UNK_ID
        return masks  # type: ignore[return-value]

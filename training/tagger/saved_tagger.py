"""An exported tagger SavedModel as a Python object: tag lists of token lists in length-sorted batches.

Used by evaluation and by the service, so both call the model exactly as a deployed consumer would. It
needs TensorFlow and the model directory only: no trainer, model builder or scorer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf

from training.common import artifacts
from training.common.saved_model import only_concrete_function, pad_tokens
from training.common.tokenizer import tokenizer_for
from training.common.vocab import UNK_ID


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


class SavedTagger:
    def __init__(self, model_dir: str | Path, metadata: dict | None = None):
        self.directory = Path(model_dir)
        if metadata is None and (self.directory / artifacts.METADATA_FILE).is_file():
            metadata = artifacts.read_metadata(self.directory)
        self.metadata = metadata or {}
        self.spans = self.metadata.get("task") == "spans"  # a span model: tag() takes conditions, gives spans
        self.saved_model = tf.saved_model.load(str(self.directory))
        self.tokenizer = tokenizer_for({"kind": "tagger", **self.metadata})  # what reads raw text for this model
        self._serve = only_concrete_function(self.saved_model.serve)
        self._encode = only_concrete_function(self.saved_model.encode)

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
        output = self._encode(tf.constant(pad_tokens(sentences), dtype=tf.string))
        return output["word_ids"].numpy(), output["char_ids"].numpy()

    def input_ids(self, sentences: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
        """Every input id the model computes for one padded batch: word_ids, char_ids (and, with a vector table,
        pretrained_ids ``[B, T]``, the table's rows)."""
        return {name: value.numpy() for name, value in self._encode(tf.constant(pad_tokens(sentences), dtype=tf.string)).items()}

    def unknown_word_mask(self, sentences: Sequence[Sequence[str]], batch_size: int = 256) -> list[np.ndarray]:
        """Per sentence, True where a token falls outside the model's word vocabulary (the <unk> id)."""
        masks: list[np.ndarray | None] = [None] * len(sentences)
        for rows, _ in self._batches(sentences, batch_size):
            word_ids, _ = self.encode([sentences[i] for i in rows])
            for j, i in enumerate(rows):
                masks[i] = word_ids[j, :len(sentences[i])] == UNK_ID
        return masks  # type: ignore[return-value]

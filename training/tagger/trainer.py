"""The token tagger's training loop: Keras ``fit`` on bucketed batches, dev accuracy after every epoch, early stopping.

The best epoch's weights (by dev accuracy) are restored at the end. Seeds are fixed. One log line
per epoch gives loss, dev accuracy, learning rate and training tokens/s.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import keras
import numpy as np

from training.common import checkpoint
from training.common.batching import shape_multiple
from training.common.callbacks import EpochDevScore, resumable_run, tensorboard_callbacks
from training.common.distribute import Placement, float32_copy, precision, predict_batch, predict_in_order
from training.common.errors import ConfigError
from training.common.layers import inference_config
from training.common.vectors import read_vectors, select
from training.common.seeding import set_random_seed
from training.tagger.batching import BucketedBatches, EncodedSentence
from training.tagger.config import TaggerConfig
from training.tagger.data import TaggedSentence
from training.tagger.model import build_tagger, set_pretrained
from training.tagger.spans import OUTSIDE, tags_to_spans
from training.tagger.vocab import TaggerVocabs, condition_token, encode_pretrained, encode_words

logger = logging.getLogger(__name__)


def conditioned(sentences: Sequence[TaggedSentence], config: TaggerConfig, hide: float = 0.0,
                seed: int = 0) -> list[TaggedSentence]:
    """Span models' sentences as the model reads them: with a "first-token" condition, the condition written as a
    first token tagged O (``condition_token``). A share ``hide`` of them (training: ``condition_dropout``) lose their
    condition, so that the model also serves sentences that come without one."""
    if config.condition == "none":
        return list(sentences)
    rng = np.random.default_rng(seed)
    result = []
    for sentence in sentences:
        condition = sentence.condition if rng.random() >= hide else None
        if config.condition == "first-token":
            sentence = replace(sentence, words=(condition_token(condition), *sentence.words),
                               tags=(OUTSIDE, *sentence.tags))
        result.append(replace(sentence, condition=condition))
    return result


def encode_sentences(sentences: Sequence[TaggedSentence], vocabs: TaggerVocabs,
                     config: TaggerConfig) -> list[EncodedSentence]:
    """Sentences (``conditioned`` already) -> the model's ids."""
    encoded = []
    for sentence in sentences:
        word_ids, char_ids = encode_words(sentence.words, vocabs, config.max_word_length)
        tag_ids = np.array([vocabs.tags.id(t) if t in vocabs.tags else 0 for t in sentence.tags], dtype=np.int32)
        condition_id = vocabs.conditions.id(sentence.condition or "") if vocabs.conditions is not None else None
        encoded.append(EncodedSentence(word_ids, char_ids, tag_ids, encode_pretrained(sentence.words, vocabs),
                                       condition_id))
    return encoded


def token_accuracy(model: keras.Model, batches: BucketedBatches, distributed: bool = False) -> float:
    correct = total = 0
    for index in range(len(batches)):
        inputs, tag_ids, weights = batches[index]
        predicted = np.argmax(predict_batch(model, inputs, distributed), axis=-1)
        correct += int(((predicted == tag_ids) * weights).sum())
        total += int(weights.sum())
    return correct / max(total, 1)


class DevEvaluation(EpochDevScore):
    """Token accuracy on dev, as ``dev_accuracy``."""

    score_key = "dev_accuracy"
    items = "tokens"

    def __init__(self, dev_batches: BucketedBatches, train_tokens: int, max_seconds: float = 0.0,
                 distributed: bool = False):
        super().__init__(train_tokens, max_seconds, distributed)
        self.dev_batches = dev_batches

    def dev_score(self) -> float:
        return token_accuracy(self.model, self.dev_batches, self.distributed)

    def describe(self, record: dict) -> str:
        return f"dev accuracy {record['dev_accuracy']:.4f}"


def span_f1(model: keras.Model, batches: BucketedBatches, tags: Sequence[str], scheme: str,
            distributed: bool = False) -> float:
    """Exact span F1 (label and boundaries) of the most probable tag at each token."""
    matched = gold_count = predicted_count = 0
    for index in range(len(batches)):
        inputs, tag_ids, weights = batches[index]
        predicted = np.argmax(predict_batch(model, inputs, distributed), axis=-1)
        for row in range(len(tag_ids)):
            n = int(weights[row].sum())
            gold = set(tags_to_spans([tags[i] for i in tag_ids[row, :n]], scheme))
            guess = set(tags_to_spans([tags[i] for i in predicted[row, :n]], scheme))
            matched += len(gold & guess)
            gold_count += len(gold)
            predicted_count += len(guess)
    return 2 * matched / max(gold_count + predicted_count, 1)


class SpanDevEvaluation(DevEvaluation):
    """Exact span F1 on dev, as ``dev_span_f1`` (span models stop early on it, not on token accuracy)."""

    score_key = "dev_span_f1"

    def __init__(self, dev_batches: BucketedBatches, train_tokens: int, max_seconds: float = 0.0,
                 distributed: bool = False, tags: Sequence[str] = (), scheme: str = "bio"):
        super().__init__(dev_batches, train_tokens, max_seconds, distributed)
        self.tags, self.scheme = list(tags), scheme

    def dev_score(self) -> float:
        return span_f1(self.model, self.dev_batches, self.tags, self.scheme, self.distributed)

    def describe(self, record: dict) -> str:
        return f"dev span F1 {record['dev_span_f1']:.4f}"


@dataclass
class TrainingResult:
    model: keras.Model
    vocabs: TaggerVocabs
    config: TaggerConfig
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_dev_accuracy: float = 0.0
    seconds: float = 0.0
    vectors: dict | None = None  # the pretrained table's record (training.common.vectors.select), if any


def train_tagger(config: TaggerConfig, train: Sequence[TaggedSentence], dev: Sequence[TaggedSentence],
                 *, verbose: int = 0, tensorboard_dir: str | None = None,
                 placement: Placement | None = None, backup_dir: Path | None = None,
                 after_epoch: Callable[[dict, Callable[[], TrainingResult]], None] | None = None) -> TrainingResult:
    """Train on ``train``, early-stop on ``dev`` token accuracy; returns the best epoch's model, in float32
    on the default device whatever ``config.mixed_precision`` and ``placement`` (``training.common.distribute``).
    ``backup_dir``: after every epoch, what a restarted run needs to go on from there
    (``training.common.callbacks.resumable_run``); a run that finds one there resumes from it.
    ``after_epoch(record, snapshot)``: called after each epoch's dev score, early stopping and schedule with the
    epoch's history record, its dev ``score`` (accuracy or span F1, whichever the run stops on) and ``stops`` (no
    epoch follows); ``snapshot()`` is the run so far as a result (the weights of now), e.g. to keep it."""
    placement = placement or Placement()
    if not train:
        raise ValueError("the training data holds no sentences")
    if not dev:
        raise ValueError("the dev data holds no sentences")
    set_random_seed(config.seed, keep_tensorflow_out=not tensorboard_dir)
    train = conditioned(train, config, config.condition_dropout, config.seed)
    dev = conditioned(dev, config)
    vocabs = TaggerVocabs.build(train, config.min_word_count, conditions=config.condition == "embedding")
    vectors_record = None
    if config.vectors:
        kept, vectors_record = select(read_vectors(config.vectors), {w for s in train for w in s.words},
                                      config.vectors_top, float16=not config.vectors_trainable)
        vocabs = vocabs.with_pretrained(kept)
    unseen_tags = sorted({t for s in dev for t in s.tags} - set(vocabs.tags.items))
    if unseen_tags:
        logger.warning("dev tags never seen in train (always counted wrong): %s", ", ".join(unseen_tags))
    logger.info("vocabularies: %d words, %d characters, %d tags", len(vocabs.words), len(vocabs.chars), len(vocabs.tags))

    # batch_size is per replica: every replica gets the batch a one-device run trains on.
    multiple = shape_multiple()
    train_batches = placement.shard(BucketedBatches(encode_sentences(train, vocabs, config),
                                                    config.batch_size * placement.replicas, shuffle=True,
                                                    word_dropout=config.word_dropout, seed=config.seed,
                                                    multiple=multiple))
    dev_batches = BucketedBatches(encode_sentences(dev, vocabs, config), 256, shuffle=False, multiple=multiple)

    def build() -> keras.Model:
        return build_model(config, vocabs)

    with precision(config.mixed_precision), placement.scope():
        model = build()
        if vocabs.pretrained is not None:
            set_pretrained(model, vocabs.pretrained.matrix)
        model.compile(optimizer=placement.optimizer(keras.optimizers.Adam(config.learning_rate, clipnorm=config.clipnorm)),
                      loss="sparse_categorical_crossentropy", jit_compile=False)
    placement.synchronize(model)
    logger.info("model: %d parameters, computing in %s", model.count_params(), model.dtype_policy.name)

    train_tokens = sum(len(s.words) for s in train)
    if config.task == "spans":
        dev_evaluation = SpanDevEvaluation(dev_batches, train_tokens, config.max_minutes * 60, placement.distributed,
                                           vocabs.tags.items, config.scheme)
    else:
        dev_evaluation = DevEvaluation(dev_batches, train_tokens, config.max_minutes * 60, placement.distributed)
    score_key = dev_evaluation.score_key
    plateau = keras.callbacks.ReduceLROnPlateau(monitor=score_key, mode="max", factor=0.5,
                                                patience=config.lr_decay_patience, min_lr=1e-5)
    early_stopping = keras.callbacks.EarlyStopping(monitor=score_key, mode="max", patience=config.patience,
                                                   restore_best_weights=True)
    callbacks = [
        *placement.epoch_callbacks(),
        dev_evaluation,  # before the schedule and early stopping: they read the dev score it adds to the logs
        plateau,
        early_stopping,
        *tensorboard_callbacks(tensorboard_dir),
        # the epoch's record, and whether training stops after it (early stopping or the time budget said so)
        *([keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: after_epoch(
            {**dev_evaluation.history[-1], "score": dev_evaluation.history[-1][score_key],
             "stops": bool(model.stop_training) or epoch + 1 >= config.epochs},
            snapshot))] if after_epoch else []),
        # last: what a restarted run goes on from, once this epoch's callbacks are done
        *(resumable_run(backup_dir, dev_evaluation, early_stopping, plateau, train_batches, placement.writes)
          if backup_dir else []),
    ]
    start = time.perf_counter()

    def snapshot() -> TrainingResult:
        best = max(dev_evaluation.history, key=lambda r: r[score_key])
        return TrainingResult(kept_model(model, config, vocabs, placement), vocabs, config, list(dev_evaluation.history),
                              best["epoch"], best[score_key], time.perf_counter() - start, vectors_record)

    model.fit(train_batches, epochs=config.epochs, callbacks=callbacks, verbose=verbose)
    seconds = time.perf_counter() - start
    best = max(dev_evaluation.history, key=lambda r: r[score_key])
    logger.info("best epoch %d of %d: %s %.4f (%.0f s in all)", best["epoch"], len(dev_evaluation.history),
                score_key.replace("_", " "), best[score_key], seconds)
    model = kept_model(model, config, vocabs, placement)
    if config.vectors and config.vectors_trainable:
        rounded = (token_accuracy(model, dev_batches) if config.task == "pos"
                   else span_f1(model, dev_batches, vocabs.tags.items, config.scheme))
        logger.info("%s with the fine-tuned vector rows rounded to float16: %.4f", score_key.replace("_", " "), rounded)
    return TrainingResult(model, vocabs, config, dev_evaluation.history, best["epoch"], best[score_key], seconds,
                          vectors_record)


def kept_model(model: keras.Model, config: TaggerConfig, vocabs: TaggerVocabs, placement: Placement) -> keras.Model:
    """What a checkpoint keeps of the model being trained: float32, outside any strategy; fine-tuned vector rows
    rounded to float16 (``inference_config``), as the export keeps them."""
    return float32_copy(model, lambda: build_model(inference_config(config), vocabs), placement,
                        force=bool(config.vectors) and config.vectors_trainable)


def build_model(config: TaggerConfig, vocabs: TaggerVocabs) -> keras.Model:
    """The model ``config`` describes, sized by ``vocabs`` (the pretrained rows are set apart)."""
    return build_tagger(config, len(vocabs.words), len(vocabs.chars), len(vocabs.tags),
                        vocabs.pretrained.shape if vocabs.pretrained else None,
                        len(vocabs.conditions) if vocabs.conditions is not None else None)


PROBE_SENTENCES = 32  # dev sentences whose probabilities the checkpoint keeps, for the export to reproduce


def predict_sentences(model: keras.Model, encoded: Sequence[EncodedSentence]) -> list[np.ndarray]:
    """Tag probabilities ``[T, n_tags]`` for each encoded sentence, in the order given."""
    return predict_in_order(model, BucketedBatches(list(encoded), 64, shuffle=False), [len(s.word_ids) for s in encoded])


def save_tagger_checkpoint(result: TrainingResult, directory: Path, metadata: dict,
                           dev: Sequence[TaggedSentence] = ()) -> Path:
    """Weights, vocabularies, config and the training record (``training.common.checkpoint``); the first dev sentences
    (with their conditions) and the trained model's probabilities on them are the probe the export must reproduce
    (a first-token condition's position left out, as the exported model leaves it out)."""
    probe = list(dev[:PROBE_SENTENCES])
    probabilities = []
    if probe:
        probabilities = predict_sentences(result.model, encode_sentences(conditioned(probe, result.config), result.vocabs,
                                                                         result.config))
        if result.config.condition == "first-token":
            probabilities = [p[1:] for p in probabilities]
    state = {"kind": "tagger", "config": result.config.to_dict(), "vocabs": result.vocabs.to_dict(), "metadata": metadata,
             "probe": [list(s.words) for s in probe], "probe_conditions": [s.condition for s in probe]}
    return checkpoint.write_checkpoint(directory, result.model, state, probabilities)


def load_tagger_checkpoint(directory: Path) -> tuple[keras.Model, TaggerVocabs, TaggerConfig, dict]:
    """-> (model with the trained weights, vocabularies, config, the checkpoint's state)."""
    state = checkpoint.read_state(directory)
    if state["kind"] != "tagger":
        raise ConfigError(f"{directory}: a {state['kind']} checkpoint, not a tagger's")
    config = TaggerConfig.from_dict(state["config"])
    vocabs = TaggerVocabs.from_dict(state["vocabs"])
    model = checkpoint.load_weights(directory, build_model(inference_config(config), vocabs))
    return model, vocabs, config, state

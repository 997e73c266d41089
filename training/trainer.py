"""Training loop: Keras ``fit`` on bucketed batches, dev accuracy after every epoch, early stopping.

The best epoch's weights (by dev accuracy) are restored at the end. Seeds are fixed. One log line
per epoch gives loss, dev accuracy, learning rate and training tokens/s.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from training import checkpoint
from training.batching import BucketedBatches, EncodedSentence, shape_multiple
from training.config import TaggerConfig
from training.conllu_reader import TaggedSentence
from training.distribute import Placement, float32_copy, precision, predict_batch, predict_in_order
from training.errors import ConfigError
from training.model import build_tagger
from training.vocab import TaggerVocabs, encode_words

logger = logging.getLogger(__name__)


def encode_sentences(sentences: Sequence[TaggedSentence], vocabs: TaggerVocabs,
                     config: TaggerConfig) -> list[EncodedSentence]:
    encoded = []
    for sentence in sentences:
        word_ids, char_ids = encode_words(sentence.words, vocabs, config.max_word_length)
        tag_ids = np.array([vocabs.tags.id(t) if t in vocabs.tags else 0 for t in sentence.tags], dtype=np.int32)
        encoded.append(EncodedSentence(word_ids, char_ids, tag_ids))
    return encoded


def token_accuracy(model: keras.Model, batches: BucketedBatches, distributed: bool = False) -> float:
    correct = total = 0
    for index in range(len(batches)):
        inputs, tag_ids, weights = batches[index]
        predicted = np.argmax(predict_batch(model, inputs, distributed), axis=-1)
        correct += int(((predicted == tag_ids) * weights).sum())
        total += int(weights.sum())
    return correct / max(total, 1)


def tensorboard_callbacks(log_dir: str | None) -> list[keras.callbacks.Callback]:
    """``--tensorboard DIR``: loss, dev score and learning rate per epoch, for ``tensorboard --logdir DIR``."""
    return [keras.callbacks.TensorBoard(log_dir=str(log_dir), update_freq="epoch")] if log_dir else []


class EpochDevScore(keras.callbacks.Callback):
    """After every epoch: the dev score into the logs under ``score_key`` (early stopping and the learning
    rate schedule read it), one history record and one log line; stops training once ``max_seconds`` of
    training have passed. Subclasses say how to score dev and what a training item is (token, turn)."""

    score_key = "dev_score"
    items = "items"  # what ``train_items`` counts, for the speed in the record: "tokens", "turns"

    def __init__(self, train_items: int, max_seconds: float = 0.0, distributed: bool = False):
        super().__init__()
        self.train_items = train_items
        self.max_seconds = max_seconds
        self.distributed = distributed  # the model was built under a tf.distribute strategy
        self.history: list[dict] = []
        self._train_start = self._epoch_start = 0.0

    def dev_score(self) -> float:
        raise NotImplementedError

    def describe(self, record: dict) -> str:
        return f"dev {record[self.score_key]:.4f}"

    def on_train_begin(self, logs=None):
        self._train_start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._epoch_start
        score = self.dev_score()
        if logs is not None:
            logs[self.score_key] = score
        record = {"epoch": epoch + 1, "loss": float(logs.get("loss", float("nan"))) if logs else float("nan"),
                  self.score_key: score,
                  "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
                  "seconds": seconds, f"{self.items}_per_second": self.train_items / seconds}
        self.history.append(record)
        logger.info("epoch %d: loss %.4f, %s, lr %.2g, %.0f %s/s, %.0f s", record["epoch"], record["loss"],
                    self.describe(record), record["learning_rate"], record[f"{self.items}_per_second"], self.items,
                    seconds)
        if self.max_seconds and time.perf_counter() - self._train_start > self.max_seconds:
            logger.info("time budget of %.0f minutes used up: stopping", self.max_seconds / 60)
            self.model.stop_training = True


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


@dataclass
class TrainingResult:
    model: keras.Model
    vocabs: TaggerVocabs
    config: TaggerConfig
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_dev_accuracy: float = 0.0
    seconds: float = 0.0


def train_tagger(config: TaggerConfig, train: Sequence[TaggedSentence], dev: Sequence[TaggedSentence],
                 *, verbose: int = 0, tensorboard_dir: str | None = None,
                 placement: Placement | None = None) -> TrainingResult:
    """Train on ``train``, early-stop on ``dev`` token accuracy; returns the best epoch's model, in float32
    on the default device whatever ``config.mixed_precision`` and ``placement`` (``training.distribute``)."""
    placement = placement or Placement()
    if not train:
        raise ValueError("the training data holds no sentences")
    if not dev:
        raise ValueError("the dev data holds no sentences")
    keras.utils.set_random_seed(config.seed)
    vocabs = TaggerVocabs.build(train, config.min_word_count)
    unseen_tags = sorted({t for s in dev for t in s.tags} - set(vocabs.tags.items))
    if unseen_tags:
        logger.warning("dev tags never seen in train (always counted wrong): %s", ", ".join(unseen_tags))
    logger.info("vocabularies: %d words, %d characters, %d tags", len(vocabs.words), len(vocabs.chars), len(vocabs.tags))

    # batch_size is per replica: every replica gets the batch a one-device run trains on.
    multiple = shape_multiple()
    train_batches = BucketedBatches(encode_sentences(train, vocabs, config), config.batch_size * placement.replicas,
                                    shuffle=True, word_dropout=config.word_dropout, seed=config.seed, multiple=multiple)
    dev_batches = BucketedBatches(encode_sentences(dev, vocabs, config), 256, shuffle=False, multiple=multiple)

    def build() -> keras.Model:
        return build_tagger(config, len(vocabs.words), len(vocabs.chars), len(vocabs.tags))

    with precision(config.mixed_precision), placement.scope():
        model = build()
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=config.clipnorm),
                      loss="sparse_categorical_crossentropy", jit_compile=False)
    logger.info("model: %d parameters, computing in %s", model.count_params(), model.dtype_policy.name)

    dev_evaluation = DevEvaluation(dev_batches, sum(len(s.words) for s in train), config.max_minutes * 60,
                                   placement.distributed)
    callbacks = [
        dev_evaluation,  # first: the others read the dev_accuracy it adds to the logs
        keras.callbacks.ReduceLROnPlateau(monitor="dev_accuracy", mode="max", factor=0.5,
                                          patience=config.lr_decay_patience, min_lr=1e-5),
        keras.callbacks.EarlyStopping(monitor="dev_accuracy", mode="max", patience=config.patience,
                                      restore_best_weights=True),
        *tensorboard_callbacks(tensorboard_dir),
    ]
    start = time.perf_counter()
    model.fit(train_batches, epochs=config.epochs, callbacks=callbacks, verbose=verbose)
    seconds = time.perf_counter() - start
    best = max(dev_evaluation.history, key=lambda r: r["dev_accuracy"])
    logger.info("best epoch %d of %d: dev accuracy %.4f (%.0f s in all)", best["epoch"],
                len(dev_evaluation.history), best["dev_accuracy"], seconds)
    model = float32_copy(model, build, placement)
    return TrainingResult(model, vocabs, config, dev_evaluation.history, best["epoch"], best["dev_accuracy"], seconds)


PROBE_SENTENCES = 32  # dev sentences whose probabilities the checkpoint keeps, for the export to reproduce


def predict_sentences(model: keras.Model, encoded: Sequence[EncodedSentence]) -> list[np.ndarray]:
    """Tag probabilities ``[T, n_tags]`` for each encoded sentence, in the order given."""
    return predict_in_order(model, BucketedBatches(list(encoded), 64, shuffle=False), [len(s.word_ids) for s in encoded])


def save_tagger_checkpoint(result: TrainingResult, directory: Path, metadata: dict,
                           dev: Sequence[TaggedSentence] = ()) -> Path:
    """Weights, vocabularies, config and the training record (``training.checkpoint``); the first dev sentences
    and the trained model's probabilities on them are the probe the export must reproduce."""
    probe = list(dev[:PROBE_SENTENCES])
    probabilities = predict_sentences(result.model, encode_sentences(probe, result.vocabs, result.config)) if probe else []
    state = {"kind": "pos", "config": result.config.to_dict(), "vocabs": result.vocabs.to_dict(), "metadata": metadata,
             "probe": [list(s.words) for s in probe]}
    return checkpoint.write_checkpoint(directory, result.model, state, probabilities)


def load_tagger_checkpoint(directory: Path) -> tuple[keras.Model, TaggerVocabs, TaggerConfig, dict]:
    """-> (model with the trained weights, vocabularies, config, the checkpoint's state)."""
    state = checkpoint.read_state(directory)
    if state["kind"] != "pos":
        raise ConfigError(f"{directory}: a {state['kind']} checkpoint, not a part-of-speech tagger's")
    config = TaggerConfig.from_dict(state["config"])
    vocabs = TaggerVocabs.from_dict(state["vocabs"])
    model = checkpoint.load_weights(directory, build_tagger(config, len(vocabs.words), len(vocabs.chars), len(vocabs.tags)))
    return model, vocabs, config, state

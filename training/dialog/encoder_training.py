"""Training a dialog model whose turns a pretrained sentence encoder reads (``DialogConfig.utterance_encoder``).

Two stages, then one model:

1. **The encoder alone**, fine-tuned on the training turns as a one-utterance classifier: piece ids -> BERT ->
   mean pool -> Dense (softmax over the acts; sigmoid over the actions), AdamW with a linear warm-up and a linear
   decay to 5 % of the peak, gradients clipped at norm 1, batches of ``encoder_batch`` utterances of similar
   length (shuffled). Only labelled turns train it; dev is only scored.
2. **The turn model over fixed vectors**: every turn's pooled vector is computed once by the fine-tuned encoder
   (inference mode) and the turn model (speaker embedding, causal turn LSTM, classifier: ``build_turn_head``) is
   trained over them by the usual loop (``training.dialog.trainer.fit_turn_model``: dev after every epoch, early
   stopping).

The encoder's weights and the turn model's then fill one ``build_dialog_model`` model, which checkpoints, exports
and streams like any dialog model. Why not end to end: every epoch of the turn model would then run the encoder
forward and backward over every turn (about 10 minutes on 2 cores for SwDA train); over fixed vectors an epoch
takes seconds, and the measurements in docs/training/encoders.md show the two stages reach the target.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Sequence

import keras
import numpy as np
from keras import layers, ops

from training.common.batching import ShapeGuardedBatches, round_up, shape_multiple
from training.common.distribute import Placement
from training.common.errors import ConfigError
from training.common.text_encoder import PretrainedEncoder, port_weights
from training.common.seeding import set_random_seed
from training.dialog.batching import DialogBatches
from training.dialog.config import DialogConfig
from training.dialog.data import Dialog
from training.dialog.model import build_model_for, build_turn_head, copy_turn_head, utterance_encoder
from training.dialog.vocab import DialogVocabs, EncodedDialog, piece_turns

logger = logging.getLogger(__name__)


class UtteranceBatches(ShapeGuardedBatches):
    """Single turns' piece ids (no padding) and their targets, ``batch_size`` of similar length a batch:
    ``pieces int32[N, W]`` (0 pads) -> targets ``[N]`` (acts) or ``[N, L]`` (actions). Variable axis: pieces."""

    def __init__(self, utterances: Sequence[np.ndarray], targets: np.ndarray | None, batch_size: int, *,
                 shuffle: bool, seed: int = 0, multiple: int = 1):
        super().__init__(multiple)
        if not utterances:
            raise ValueError("no utterances to batch")
        self.utterances, self.targets, self.shuffle = utterances, targets, shuffle
        order = np.argsort([len(u) for u in utterances], kind="stable")
        self.batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        self.rng = np.random.default_rng(seed)
        if shuffle:
            self.rng.shuffle(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def variable_shape(self, index: int) -> tuple[int]:
        return (round_up(max(len(self.utterances[i]) for i in self.batches[index]), self.multiple),)

    def padded_batch(self, index: int, shape: tuple[int]):
        rows = self.batches[index]
        pieces = np.zeros((len(rows), shape[0]), dtype=np.int32)
        for r, i in enumerate(rows):
            pieces[r, :len(self.utterances[i])] = self.utterances[i]
        return (pieces,) if self.targets is None else (pieces, self.targets[rows])

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self.rng.shuffle(self.batches)


@keras.saving.register_keras_serializable(package="seqtag")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """``peak`` reached linearly over ``warmup`` steps, then down linearly to ``floor * peak`` at ``total`` steps."""

    def __init__(self, peak: float, warmup: int, total: int, floor: float = 0.05):
        self.peak, self.warmup, self.total, self.floor = peak, warmup, total, floor

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = ops.minimum(1.0, (step + 1.0) / max(self.warmup, 1))
        return self.peak * warm * ops.maximum(self.floor, 1.0 - step / max(self.total, 1))

    def get_config(self) -> dict:
        return {"peak": self.peak, "warmup": self.warmup, "total": self.total, "floor": self.floor}


def turn_utterances(dialogs: Sequence[EncodedDialog], labeled_only: bool) -> tuple[list[np.ndarray], np.ndarray]:
    """Every turn's piece ids (its padding dropped) and target, in dialog order; ``labeled_only``: labelled turns."""
    utterances, targets = [], []
    for dialog in dialogs:
        for i, ids in enumerate(dialog.word_ids):
            if labeled_only and dialog.labeled[i] <= 0:
                continue
            utterances.append(ids[ids > 0])
            targets.append(dialog.targets[i])
    return utterances, np.asarray(targets)


def utterance_outputs(model: keras.Model, utterances: Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
    """``model`` (the encoder, or the classifier over it) on each utterance's piece ids, in inference mode, batched
    by length -> ``[N, output size]`` in the utterances' order."""
    batches = UtteranceBatches(utterances, None, batch_size, shuffle=False)
    outputs = np.zeros((len(utterances), model.output_shape[-1]), dtype=np.float32)
    for index in range(len(batches)):
        (pieces,) = batches.padded_batch(index, batches.variable_shape(index))
        outputs[batches.batches[index]] = keras.ops.convert_to_numpy(model(pieces, training=False))
    return outputs


def pooled_vectors(encoder: keras.Model, dialogs: Sequence[EncodedDialog]) -> list[np.ndarray]:
    """Each dialog's turns through the encoder (inference mode) -> ``[D, hidden]`` per dialog."""
    vectors = utterance_outputs(encoder, turn_utterances(dialogs, labeled_only=False)[0])
    split, start = [], 0
    for dialog in dialogs:
        split.append(vectors[start:start + len(dialog.speaker_ids)])
        start += len(dialog.speaker_ids)
    return split


def fine_tune_encoder(encoder: keras.Model, config: DialogConfig, n_labels: int, train: Sequence[EncodedDialog],
                      dev: Sequence[EncodedDialog], verbose: int = 0) -> dict:
    """Stage 1: ``encoder`` fine-tuned in place as a one-utterance classifier -> its record (per-epoch dev score)."""
    utterances, targets = turn_utterances(train, labeled_only=True)
    dev_utterances, dev_targets = turn_utterances(dev, labeled_only=True)
    batches = UtteranceBatches(utterances, targets, config.encoder_batch, shuffle=True, seed=config.seed,
                               multiple=shape_multiple())
    pieces = keras.Input(shape=(None,), dtype="int32", name="pieces")
    activation = "sigmoid" if config.multi_label else "softmax"
    classifier = keras.Model(pieces, layers.Dense(n_labels, activation=activation, name="utterance_labels")(encoder(pieces)),
                             name="utterance_classifier")
    schedule = WarmupLinearDecay(config.encoder_learning_rate, config.encoder_warmup, config.encoder_epochs * len(batches))
    classifier.compile(keras.optimizers.AdamW(schedule, weight_decay=config.encoder_weight_decay, clipnorm=1.0),
                       "binary_crossentropy" if config.multi_label else "sparse_categorical_crossentropy", jit_compile=False)
    history = []
    for epoch in range(1, config.encoder_epochs + 1):
        start = time.perf_counter()
        classifier.fit(batches, epochs=1, verbose=verbose)
        seconds = time.perf_counter() - start
        probabilities = utterance_outputs(classifier, dev_utterances)
        if config.multi_label:
            predicted, gold = probabilities >= 0.5, dev_targets > 0.5
            tp, wrong = (predicted & gold).sum(), (predicted ^ gold).sum()
            score, name = float(2 * tp / max(2 * tp + wrong, 1)), "micro-F1 at 0.5"
        else:
            score, name = float((probabilities.argmax(-1) == dev_targets).mean()), "accuracy"
        history.append({"epoch": epoch, "seconds": round(seconds, 1), "dev_one_utterance": round(score, 4),
                        "utterances_per_second": round(len(utterances) / seconds, 1)})
        logger.info("encoder epoch %d: %.0f s (%.0f utterances/s), one-utterance dev %s %.4f", epoch, seconds,
                    len(utterances) / seconds, name, score)
    return {"epochs": history, "train_utterances": len(utterances), "batches_per_epoch": len(batches)}


def train_encoder_dialog_model(config: DialogConfig, train: Sequence[Dialog], dev: Sequence[Dialog], *, verbose: int = 0,
                               tensorboard_dir: str | None = None, placement: Placement | None = None):
    """Both stages -> a ``DialogTrainingResult`` whose model is the whole dialog model (float32)."""
    from training.dialog.trainer import (DialogTrainingResult, encode_dialogs, fit_turn_model, predict_batches,
                                         tokenize_dialogs, tuned_thresholds)

    placement = placement or Placement()
    if placement.distributed or config.mixed_precision != "none":
        raise ConfigError("an utterance encoder trains on one device in float32 (no --distribute, no --mixed-precision)")
    set_random_seed(config.seed, keep_tensorflow_out=False)  # keras-hub: left as it is
    start = time.perf_counter()
    pretrained = PretrainedEncoder.read(config.utterance_encoder)
    shape = pretrained.shape(config.encoder_layers, config.max_words)
    train_words = tokenize_dialogs(train, config.tokenizer)
    vocabs, rows = DialogVocabs.build_pieces(train, piece_turns(train_words, pretrained.word_pieces, config.max_words),
                                             pretrained.word_pieces, shape.to_dict(), config.min_word_count)
    # Train and dev are read with the kept pieces, as the served model reads any text.
    train_pieces = piece_turns(train_words, vocabs.word_pieces, config.max_words)
    dev_pieces = piece_turns(tokenize_dialogs(dev, config.tokenizer), vocabs.word_pieces, config.max_words)
    train_encoded = encode_dialogs(train, train_pieces, vocabs, config)
    dev_encoded = encode_dialogs(dev, dev_pieces, vocabs, config)
    logger.info("pieces: %d kept of the encoder's %d; %d speakers, %d labels (%.0f s)", len(vocabs.words),
                len(pretrained.word_pieces.vocabulary), len(vocabs.speakers), len(vocabs.labels), time.perf_counter() - start)

    model = build_model_for(config, vocabs)
    encoder = utterance_encoder(model)
    port_weights(encoder, pretrained, rows)
    fine_tuning = fine_tune_encoder(encoder, config, len(vocabs.labels), train_encoded, dev_encoded, verbose)

    start = time.perf_counter()
    train_vectors = pooled_vectors(encoder, train_encoded)
    dev_vectors = pooled_vectors(encoder, dev_encoded)
    fine_tuning["vectors_seconds"] = round(time.perf_counter() - start, 1)
    logger.info("pooled vectors of %d + %d dialogs in %.0f s", len(train), len(dev), fine_tuning["vectors_seconds"])
    with_vectors = [dataclasses.replace(d, utterance_vectors=v) for d, v in zip(train_encoded, train_vectors)]
    dev_with_vectors = [dataclasses.replace(d, utterance_vectors=v) for d, v in zip(dev_encoded, dev_vectors)]
    train_batches = DialogBatches(with_vectors, config.batch_turns, config.multi_label, shuffle=True, seed=config.seed,
                                  multiple=shape_multiple())
    dev_batches = DialogBatches(dev_with_vectors, 4 * config.batch_turns, config.multi_label, shuffle=False,
                                multiple=shape_multiple())
    head = build_turn_head(config, len(vocabs.speakers), len(vocabs.labels), shape.hidden)
    head.compile(optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=config.clipnorm),
                 loss="binary_crossentropy" if config.multi_label else "sparse_categorical_crossentropy", jit_compile=False)
    logger.info("turn model: %d parameters over the encoder's %d", head.count_params(), encoder.count_params())
    history, best, seconds = fit_turn_model(head, train_batches, dev_batches, config, sum(len(d.turns) for d in train),
                                            placement, verbose, tensorboard_dir)
    copy_turn_head(head, model)
    thresholds = tuned_thresholds([predict_batches(head, dev_batches)], dev_batches) if config.multi_label else None
    record = {**pretrained.record(config.encoder_layers, config.encoder_licence), "pieces_kept": len(vocabs.words),
              "pieces_published": len(pretrained.word_pieces.vocabulary), "fine_tuning": fine_tuning}
    total = seconds + sum(e["seconds"] for e in fine_tuning["epochs"]) + fine_tuning["vectors_seconds"]
    return DialogTrainingResult(model, vocabs, config, thresholds, history, best["epoch"], best["dev_score"],
                                total, encoder=record)


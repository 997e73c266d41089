"""Training loop of the dialog models: Keras ``fit`` on batches of whole dialogs, a dev score after every epoch.

The dev score is accuracy (dialog acts) or micro-F1 at threshold 0.5 (actions); early stopping restores
the best epoch's weights. For actions, per-label thresholds are then tuned on dev
(``training.dialog.evaluate.tune_thresholds``). Seeds are fixed; one log line per epoch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from training.common import checkpoint
from training.common.batching import shape_multiple
from training.common.callbacks import EpochDevScore, resumable_run, tensorboard_callbacks
from training.common.distribute import Placement, float32_copy, precision, predict_in_order
from training.common.errors import ConfigError
from training.common.layers import inference_config
from training.common.tokenizer import LEGACY_TOKENIZER
from training.common.vocab import PAD_ID
from training.common.vectors import read_vectors, select
from training.common.seeding import set_random_seed
from training.dialog.batching import DialogBatches
from training.dialog.config import DialogConfig
from training.dialog.data import Dialog, Turn
from training.dialog.model import build_model_for, set_pretrained
from training.dialog.vocab import DialogVocabs, EncodedDialog, encode_dialog, piece_turns, turn_tokens

logger = logging.getLogger(__name__)


def tokenize_dialogs(dialogs: Sequence[Dialog], tokenizer: str) -> list[list[list[str]]]:
    return [[turn_tokens(turn.text, tokenizer) for turn in dialog.turns] for dialog in dialogs]


def model_tokens(dialogs: Sequence[Dialog], vocabs: DialogVocabs, config: DialogConfig) -> list[list[list[str]]]:
    """What the model reads of each turn: its words, or (an encoder model) its word pieces."""
    tokens = tokenize_dialogs(dialogs, config.tokenizer)
    return tokens if vocabs.word_pieces is None else piece_turns(tokens, vocabs.word_pieces, config.max_words)


def encode_dialogs(dialogs: Sequence[Dialog], tokenized, vocabs: DialogVocabs, config: DialogConfig) -> list[EncodedDialog]:
    return [encode_dialog(d, t, vocabs, config.max_words, config.multi_label) for d, t in zip(dialogs, tokenized)]


def predict_batches(model: keras.Model, batches: DialogBatches, distributed: bool = False) -> list[np.ndarray]:
    """Probabilities ``[D, L]`` for each dialog of ``batches``, in the order the dialogs were given."""
    return predict_in_order(model, batches, [len(d.speaker_ids) for d in batches.dialogs], distributed)


def dev_score(model: keras.Model, batches: DialogBatches, multi_label: bool, distributed: bool = False) -> float:
    """Accuracy over labeled turns (acts), or micro-F1 at the best single threshold (actions).

    For actions a fixed 0.5 would score 0 for the first epochs, while rare labels' probabilities are
    still low everywhere, and early stopping would give up on a model that is learning.
    """
    probabilities = predict_batches(model, batches, distributed)
    labeled = [d.labeled > 0 for d in batches.dialogs]
    if not multi_label:
        correct = sum(int((p.argmax(-1) == d.targets)[m].sum()) for p, d, m in zip(probabilities, batches.dialogs, labeled))
        return correct / max(sum(int(m.sum()) for m in labeled), 1)
    scores = np.concatenate([p[m] for p, m in zip(probabilities, labeled)])
    gold = np.concatenate([d.targets[m] for d, m in zip(batches.dialogs, labeled)]) > 0.5
    best = 0.0
    for threshold in np.arange(0.1, 0.95, 0.05):
        predicted = scores >= threshold
        tp, fp, fn = (predicted & gold).sum(), (predicted & ~gold).sum(), (~predicted & gold).sum()
        best = max(best, float(2 * tp / max(2 * tp + fp + fn, 1)))
    return best


class DialogDevEvaluation(EpochDevScore):
    """``dev_score``: accuracy (acts) or best-threshold micro-F1 (actions)."""

    items = "turns"

    def __init__(self, dev_batches: DialogBatches, multi_label: bool, train_turns: int, max_seconds: float = 0.0,
                 distributed: bool = False):
        super().__init__(train_turns, max_seconds, distributed)
        self.dev_batches = dev_batches
        self.multi_label = multi_label

    def dev_score(self) -> float:
        return dev_score(self.model, self.dev_batches, self.multi_label, self.distributed)

    def describe(self, record: dict) -> str:
        return f"dev {'micro-F1 (best threshold)' if self.multi_label else 'accuracy'} {record['dev_score']:.4f}"


@dataclass
class DialogTrainingResult:
    model: keras.Model
    vocabs: DialogVocabs
    config: DialogConfig
    thresholds: list[float] | None  # per label (actions only)
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_dev_score: float = 0.0
    seconds: float = 0.0
    vectors: dict | None = None  # the pretrained table's record (training.common.vectors.select), if any
    encoder: dict | None = None  # the pretrained encoder's record and its fine-tuning (training.dialog.encoder_training)


def train_dialog_model(config: DialogConfig, train: Sequence[Dialog], dev: Sequence[Dialog], *,
                       verbose: int = 0, init: tuple[keras.Model, DialogVocabs] | None = None,
                       tensorboard_dir: str | None = None, placement: Placement | None = None,
                       backup_dir: Path | None = None) -> DialogTrainingResult:
    """Train on ``train``, early-stop on ``dev``. ``init``: a trained model and its vocabularies
    (``load_checkpoint``) to go on training from, e.g. with a lower learning rate or on more data; its
    vocabularies are kept, so words and labels it never saw stay unknown. The model comes back in float32 on the
    default device whatever ``config.mixed_precision`` and ``placement`` (``training.common.distribute``: a
    data-parallel worker steps on its rows of each global batch). ``backup_dir``: after every epoch, what a
    restarted run needs to go on from there (``training.common.callbacks.resumable_run``)."""
    placement = placement or Placement()
    if not train or not dev:
        raise ValueError("the training and dev data must each hold at least one dialog")
    if config.utterance_encoder:
        raise ConfigError("a model with an utterance encoder trains in two stages: "
                          "training.dialog.encoder_training.train_encoder_dialog_model")
    set_random_seed(config.seed, keep_tensorflow_out=not tensorboard_dir)
    start = time.perf_counter()
    train_tokens, dev_tokens = tokenize_dialogs(train, config.tokenizer), tokenize_dialogs(dev, config.tokenizer)
    vocabs = init[1] if init else DialogVocabs.build(train, train_tokens, config.min_word_count)
    vectors_record = None
    if config.vectors and not init:  # a run that goes on from a checkpoint keeps its table (in its weights)
        kept, vectors_record = select(read_vectors(config.vectors), {t for d in train_tokens for turn in d for t in turn},
                                      config.vectors_top, float16=not config.vectors_trainable)
        vocabs = vocabs.with_pretrained(kept)
    logger.info("tokenized %d + %d dialogs in %.0f s; vocabularies: %d words, %d speakers, %d labels",
                len(train), len(dev), time.perf_counter() - start, len(vocabs.words), len(vocabs.speakers), len(vocabs.labels))
    unseen = sorted({label for d in dev for t in d.turns for label in (t.labels or ())} - set(vocabs.labels.items))
    if unseen:
        logger.warning("dev labels never seen in train (always counted wrong): %s", ", ".join(unseen[:20]))

    # batch_turns is per replica: every replica gets the batch a one-device run trains on.
    multiple = shape_multiple()
    train_batches = placement.shard(
        DialogBatches(encode_dialogs(train, train_tokens, vocabs, config), config.batch_turns * placement.replicas,
                      config.multi_label, shuffle=True, word_dropout=config.word_dropout, seed=config.seed,
                      multiple=multiple),
        real_turns)
    dev_batches = DialogBatches(encode_dialogs(dev, dev_tokens, vocabs, config), 4 * config.batch_turns,
                                config.multi_label, shuffle=False, multiple=multiple)
    def build() -> keras.Model:
        return build_model_for(config, vocabs)

    loss = "binary_crossentropy" if config.multi_label else "sparse_categorical_crossentropy"
    with precision(config.mixed_precision), placement.scope():
        model = build()
        if init:  # the checkpoint's weights, in a model built for this run's precision and devices
            model.set_weights(init[0].get_weights())
        elif vocabs.pretrained is not None:
            set_pretrained(model, vocabs.pretrained.matrix)
        optimizer = keras.optimizers.Adam(config.learning_rate, clipnorm=config.clipnorm,
                                          use_ema=config.ema_momentum > 0, ema_momentum=config.ema_momentum)
        model.compile(optimizer=placement.optimizer(optimizer), loss=loss, jit_compile=False)
    placement.synchronize(model)
    logger.info("model: %d parameters, %d training batches, computing in %s", model.count_params(), len(train_batches),
                model.dtype_policy.name)

    history, best, seconds = fit_turn_model(model, train_batches, dev_batches, config, sum(len(d.turns) for d in train),
                                            placement, verbose, tensorboard_dir, backup_dir)

    # Fine-tuned vector rows are rounded to float16 now (inference_config): the model that is kept is that one.
    model = float32_copy(model, lambda: build_model_for(inference_config(config), vocabs), placement,
                         force=bool(config.vectors) and config.vectors_trainable)
    thresholds = tuned_thresholds([predict_batches(model, dev_batches)], dev_batches) if config.multi_label else None
    return DialogTrainingResult(model, vocabs, config, thresholds, history, best["epoch"], best["dev_score"], seconds,
                                vectors_record)


def real_turns(inputs: dict, weights: np.ndarray) -> np.ndarray:
    """The turns a dialog model's output mask keeps: every real turn (padding turns have speaker id 0), weighted 0
    or not (an action model's system turns, a turn without a label)."""
    return inputs["speaker_ids"] != PAD_ID


def fit_turn_model(model: keras.Model, train_batches: DialogBatches, dev_batches: DialogBatches, config: DialogConfig,
                   train_turns: int, placement: Placement, verbose: int = 0,
                   tensorboard_dir: str | None = None, backup_dir: Path | None = None) -> tuple[list[dict], dict, float]:
    """``fit`` with a dev score after every epoch, the learning rate halved on a plateau and early stopping (the best
    epoch's weights restored) -> (each epoch's record, the best one's, seconds of training)."""
    evaluation = DialogDevEvaluation(dev_batches, config.multi_label, train_turns, config.max_minutes * 60,
                                     placement.distributed)
    # With --ema-momentum the averaged weights are swapped in at each epoch's end (and out at the next one's
    # start), before the dev score: dev scores them, and early stopping keeps them for the best epoch.
    swap = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if config.ema_momentum > 0 else []
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="dev_score", mode="max", factor=0.5,
                                                patience=config.lr_decay_patience, min_lr=1e-5)
    early_stopping = keras.callbacks.EarlyStopping(monitor="dev_score", mode="max", patience=config.patience,
                                                   restore_best_weights=True)
    callbacks = [
        *placement.epoch_callbacks(),
        *swap,
        evaluation,  # before the others: they read the dev_score it adds to the logs
        plateau,
        early_stopping,
        *tensorboard_callbacks(tensorboard_dir),
        # last: what a restarted run goes on from, once this epoch's callbacks are done
        *(resumable_run(backup_dir, evaluation, early_stopping, plateau, train_batches, placement.writes)
          if backup_dir else []),
    ]
    fit_start = time.perf_counter()
    model.fit(train_batches, epochs=config.epochs, callbacks=callbacks, verbose=verbose)
    seconds = time.perf_counter() - fit_start
    best = max(evaluation.history, key=lambda r: r["dev_score"])
    logger.info("best epoch %d of %d: dev %.4f (%.0f s of training)", best["epoch"], len(evaluation.history),
                best["dev_score"], seconds)
    return evaluation.history, best, seconds


def tuned_thresholds(member_probabilities: Sequence[list[np.ndarray]], dev_batches: DialogBatches) -> list[float]:
    """Per-label thresholds for the averaged probabilities of one or more models on the dev dialogs."""
    from training.dialog.evaluate import tune_thresholds  # the scorer reads exported models (TensorFlow)

    probabilities = [np.mean(rows, axis=0) for rows in zip(*member_probabilities)]  # per dialog [D, L]
    labeled = [d.labeled > 0 for d in dev_batches.dialogs]
    tuned, global_threshold = tune_thresholds(
        np.concatenate([p[m] for p, m in zip(probabilities, labeled)]),
        np.concatenate([d.targets[m] for d, m in zip(dev_batches.dialogs, labeled)]))
    logger.info("thresholds tuned on dev: global %.2f, per label %.2f..%.2f", global_threshold, tuned.min(), tuned.max())
    return [float(t) for t in tuned]


def ensemble_thresholds(members: Sequence[tuple[keras.Model, DialogVocabs, DialogConfig]], dev: Sequence[Dialog]) -> list[float]:
    """Thresholds for an ensemble of multi-label models: each member reads dev with its own vocabularies."""
    probabilities, batches = [], None
    for model, vocabs, config in members:
        tokens = model_tokens(dev, vocabs, config)
        batches = DialogBatches(encode_dialogs(dev, tokens, vocabs, config), 4 * config.batch_turns,
                                config.multi_label, shuffle=False)
        probabilities.append(predict_batches(model, batches))
    return tuned_thresholds(probabilities, batches)


def keras_probabilities(model: keras.Model, vocabs: DialogVocabs, config: DialogConfig,
                        dialogs: Sequence[Dialog]) -> list[np.ndarray]:
    """A Keras dialog model's probabilities ``[D, L]`` for each of ``dialogs`` (the checkpoint's probe is so computed)."""
    batches = DialogBatches(encode_dialogs(dialogs, model_tokens(dialogs, vocabs, config), vocabs, config),
                            4 * config.batch_turns, config.multi_label, shuffle=False)
    return predict_batches(model, batches)


PROBE_DIALOGS = 8  # dev dialogs whose probabilities the checkpoint keeps, for the export to reproduce


def save_checkpoint(result: DialogTrainingResult, directory: Path, metadata: dict, dev: Sequence[Dialog] = ()) -> Path:
    """Weights, vocabularies, thresholds and the training record, written before any export is tried:
    a failed export loses nothing (``seqtag export --from-checkpoint DIR`` exports it again). The first dev
    dialogs and the trained model's probabilities on them are the probe the export must reproduce."""
    probe = list(dev[:PROBE_DIALOGS])
    probabilities = keras_probabilities(result.model, result.vocabs, result.config, probe) if probe else []
    state = {"kind": "dialog", "config": result.config.to_dict(), "vocabs": result.vocabs.to_dict(),
             "thresholds": result.thresholds, "metadata": metadata,
             "probe": [[{"speaker": t.speaker, "text": t.text, "labels": t.labels} for t in d.turns] for d in probe]}
    return checkpoint.write_checkpoint(directory, result.model, state, probabilities)


def probe_dialogs(state: dict) -> list[Dialog]:
    """The probe's dialogs, as ``save_checkpoint`` kept them."""
    return [Dialog(f"probe-{i}", tuple(Turn(t["speaker"], t["text"], None if t["labels"] is None else tuple(t["labels"]))
                                       for t in turns), "checkpoint probe")
            for i, turns in enumerate(state.get("probe", []))]


# Options that shape the weights or the vocabularies: a run that goes on from a checkpoint keeps them.
ARCHITECTURE_FIELDS = ("task", "min_word_count", "tokenizer", "vectors", "vectors_top", "word_dim", "utterance_hidden", "speaker_dim", "turn_hidden",
                       "classifier_input", "utterance_encoder", "encoder_layers", "max_words")


def load_checkpoint(directory: Path) -> tuple[keras.Model, DialogVocabs, DialogConfig, list[float] | None, dict]:
    """-> (model with the trained weights, vocabularies, config, thresholds, training metadata)."""
    state = checkpoint.read_state(directory)
    if state["kind"] != "dialog":
        raise ConfigError(f"{directory}: a {state['kind']} checkpoint, not a dialog model's")
    # A checkpoint written before configs named their tokenizer was trained on the legacy one.
    config = DialogConfig.from_dict({"tokenizer": LEGACY_TOKENIZER, **state["config"]})
    vocabs = DialogVocabs.from_dict(state["vocabs"])
    model = build_model_for(inference_config(config), vocabs)
    checkpoint.load_weights(directory, model)
    return model, vocabs, config, state["thresholds"], state["metadata"]

"""Epoch callbacks that both wings' trainers use: the dev score after every epoch, a time budget, TensorBoard."""

from __future__ import annotations

import json
import logging
import os
import random
import time
from pathlib import Path

import keras
import numpy as np

logger = logging.getLogger(__name__)


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


class ResumableRun(keras.callbacks.Callback):
    """What a restarted run needs beyond Keras's ``BackupAndRestore`` (weights, optimizer, epoch), kept beside its
    backup after every epoch and given back when a restarted run begins: the dev history, early stopping's and the
    learning rate schedule's counters, the best weights so far, the training batches' order and random state
    (``state()``/``restore()``) and Python's random state (Keras shuffles the batches' order with it), so that a run resumed after epoch k goes on exactly as the run that was not
    stopped: exactly with dropout 0; dropout's random numbers are drawn anew after a restart.

    One state file per epoch (the last two are kept): ``BackupAndRestore`` may fall back to its previous backup when
    the last one was cut short, and the state of that epoch is then the one read. Place it before
    ``BackupAndRestore`` and after the callbacks whose state it keeps (their ``on_train_begin`` resets them first).
    """

    def __init__(self, directory, dev: EpochDevScore, early_stopping: keras.callbacks.EarlyStopping,
                 plateau: keras.callbacks.ReduceLROnPlateau, batches, writes: bool = True):
        super().__init__()
        self.directory = Path(directory)
        self.writes = writes  # False: this process only reads what another one writes (data-parallel ranks > 0)
        self.dev, self.early_stopping, self.plateau, self.batches = dev, early_stopping, plateau, batches
        self.resumed_after = 0  # the epoch a restarted run went on from (0: it started afresh)

    def _path(self, epoch: int, suffix: str):
        return self.directory / f"run-state-{epoch}.{suffix}"

    def on_train_begin(self, logs=None):
        metadata = self.directory / "training_metadata.json"  # BackupAndRestore's: the epoch its weights are from
        if not metadata.exists():
            return
        epoch = json.loads(metadata.read_text())["epoch"]
        path = self._path(epoch, "json")
        if not path.exists():
            logger.warning("%s: no run state for epoch %d: the dev history starts again", self.directory, epoch)
            return
        state = json.loads(path.read_text())
        self.dev.history = state["history"]
        for name, value in state["early_stopping"].items():
            setattr(self.early_stopping, name, value)
        for name, value in state["plateau"].items():
            setattr(self.plateau, name, value)
        best = self._path(epoch, "npz")
        if best.exists():
            with np.load(best) as arrays:
                self.early_stopping.best_weights = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
        self.batches.restore(state["batches"])
        version, internal, gauss = state["python_random"]
        random.setstate((version, tuple(internal), gauss))
        self.resumed_after = epoch
        logger.info("resumed after epoch %d from %s", epoch, self.directory)

    def on_epoch_end(self, epoch, logs=None):
        if not self.writes:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        early, plateau = self.early_stopping, self.plateau
        state = {"epoch": epoch + 1, "history": self.dev.history, "batches": self.batches.state(),
                 # Keras's PyDataset adapter shuffles the order of the batches each epoch with Python's random
                 "python_random": random.getstate(),
                 "early_stopping": {"wait": early.wait, "best": float(early.best) if early.best is not None else None,
                                    "best_epoch": early.best_epoch, "stopped_epoch": early.stopped_epoch},
                 "plateau": {"wait": plateau.wait, "best": float(plateau.best),
                             "cooldown_counter": plateau.cooldown_counter}}
        if early.best_weights is not None:
            with open(self._path(epoch + 1, "npz.tmp"), "wb") as file:
                np.savez(file, *early.best_weights)
            os.replace(self._path(epoch + 1, "npz.tmp"), self._path(epoch + 1, "npz"))
        self._path(epoch + 1, "json.tmp").write_text(json.dumps(state))
        os.replace(self._path(epoch + 1, "json.tmp"), self._path(epoch + 1, "json"))
        for old in (self._path(epoch - 1, "json"), self._path(epoch - 1, "npz")):
            old.unlink(missing_ok=True)


class RestoreOnly(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` for a process that reads another one's backup and writes none (data-parallel workers of
    rank > 0: every worker holds the same weights and optimizer, so rank 0's backup is everyone's)."""

    def _save_model(self):
        pass

    def on_train_end(self, logs=None):
        pass  # the writer removes the backup


def resumable_run(directory, dev: EpochDevScore, early_stopping, plateau, batches,
                  writes: bool = True) -> list[keras.callbacks.Callback]:
    """The callbacks that let a run restarted in ``directory`` go on from its last epoch: ``ResumableRun``, then
    Keras's ``BackupAndRestore`` (its backup is removed when the run ends well). ``writes=False``: read it only."""
    backup = keras.callbacks.BackupAndRestore if writes else RestoreOnly
    return [ResumableRun(directory, dev, early_stopping, plateau, batches, writes),
            backup(str(directory), save_freq="epoch", double_checkpoint=True, delete_checkpoint=True)]

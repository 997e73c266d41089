"""Epoch callbacks that both wings' trainers use: the dev score after every epoch, a time budget, TensorBoard."""

from __future__ import annotations

import logging
import time

import keras

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

"""Where and in what precision a training run computes: mixed precision and ``tf.distribute`` strategies.

The models stay backend-agnostic Keras 3; these two run options are the only place that knows about devices:

- ``mixed_precision``: "none" (float32), "float16" or "bfloat16". Layers compute in that type and keep float32
  variables; the output layers are float32 (``dtype="float32"`` in the model builders), so softmax and
  sigmoid, and the loss, stay float32. Under float16, ``compile`` wraps the optimizer in Keras's
  ``LossScaleOptimizer``. Any backend.
- data-parallel workers on PyTorch's collectives, one process each, on one machine or several
  (``training.common.data_parallel``; ``seqtag train ... --workers N``). Any model, under KERAS_BACKEND=torch.
- ``distribute``: "none" or "mirrored" (``tf.distribute.MirroredStrategy``: every GPU of this machine, or its
  CPU). TensorFlow backend only. The batch options (sentences, turns) are per replica: the global batch is
  that times the number of replicas, so one replica sees what a one-device run sees. Several machines
  (``MultiWorkerMirroredStrategy``) are not offered: Keras 3's ``fit`` cannot run it (it averages a first batch
  across workers to build the model, which fails for batches of different shapes, and then every step's loss
  reduction fails: tensorflow/tensorflow#72388); docs/training/backends.md says what to do instead.

Whatever the run computed in, the checkpoint and the export get a float32 model (``float32_copy``): the
weights are float32 variables anyway, and serving computes in float32.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import keras
import numpy as np

from training.common.errors import ConfigError

logger = logging.getLogger(__name__)

MIXED_PRECISION = ("none", "float16", "bfloat16")
DISTRIBUTE = ("none", "mirrored")
_POLICIES = {"none": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


def check_run_options(mixed_precision: str, distribute: str) -> None:
    """The config's checks (no backend needed): known values only."""
    if mixed_precision not in MIXED_PRECISION:
        raise ConfigError(f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}, not {mixed_precision!r}")
    if distribute not in DISTRIBUTE:
        raise ConfigError(f"distribute must be one of {', '.join(DISTRIBUTE)}, not {distribute!r}")


@dataclass(frozen=True)
class Placement:
    """Where a run computes: the strategy (None: Keras's default device) and how many replicas it has."""

    strategy: Any = None
    replicas: int = 1
    # training.common.data_parallel.Collective: this process is one of ``replicas`` data-parallel workers
    collective: Any = None

    @property
    def distributed(self) -> bool:
        """A ``tf.distribute`` strategy (each data-parallel worker is a plain one-device process)."""
        return self.strategy is not None

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's files: every process but the data-parallel workers of rank > 0."""
        return self.collective is None or self.collective.rank == 0

    def shard(self, batches, unmasked=None):
        """The training batches this process steps on: ``batches`` (built with the global batch size), or a
        data-parallel worker's rows of each (``data_parallel.ShardedBatches``; ``unmasked``: the positions the
        model's output mask keeps, by default where the weights are not 0)."""
        if self.collective is None:
            return batches
        from training.common.data_parallel import ShardedBatches, weighted_positions

        return ShardedBatches(batches, self.collective.rank, self.collective.world, unmasked or weighted_positions)

    def optimizer(self, optimizer):
        """``optimizer``, averaging the workers' gradients first in a data-parallel worker."""
        if self.collective is None:
            return optimizer
        from training.common.data_parallel import all_reducing

        return all_reducing(optimizer, self.collective)

    def epoch_callbacks(self) -> list:
        """Callbacks to run first after each epoch: a data-parallel worker's loss becomes the workers' mean."""
        if self.collective is None:
            return []
        from training.common.data_parallel import WorkersMeanLoss

        return [WorkersMeanLoss(self.collective)]

    def synchronize(self, model) -> None:
        """Data-parallel workers start from rank 0's weights."""
        if self.collective is not None:
            self.collective.broadcast_weights(model)

    def scope(self):
        """Build and compile the model inside this (variables are created on every replica)."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def describe(self, mixed_precision: str) -> dict[str, Any]:
        """For the training record: where and in what the run computed."""
        devices = list(self.strategy.extended.worker_devices) if self.strategy is not None else _default_devices()
        if self.collective is not None:
            return {"strategy": f"torch.distributed ({self.collective.transport})", "replicas": self.replicas,
                    "workers": self.collective.world, "devices": devices, "devices_are": "each worker's",
                    "mixed_precision": mixed_precision}
        return {"strategy": type(self.strategy).__name__ if self.strategy is not None else "none",
                "replicas": self.replicas, "devices": devices, "mixed_precision": mixed_precision}


def _default_devices() -> list[str]:
    """The accelerators Keras's backend sees, or ["cpu"]."""
    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf
            gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
        elif backend == "jax":
            import jax
            gpus = [str(d) for d in jax.devices() if d.platform != "cpu"]
        elif backend == "torch":
            import torch
            gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        else:
            gpus = []
    except Exception:  # a broken driver must not fail a finished training run's record
        logger.debug("could not list %s devices", backend, exc_info=True)
        gpus = []
    return gpus or ["cpu"]


def placement(distribute: str) -> Placement:
    """The strategy a ``--distribute`` value asks for; in a data-parallel worker (started by torchrun, which sets
    ``WORLD_SIZE``), its place among the workers (``training.common.data_parallel``)."""
    from training.common import data_parallel

    if data_parallel.launched():
        if distribute != "none":
            raise ConfigError(f"--distribute {distribute} and data-parallel workers do not mix: one or the other")
        collective = data_parallel.Collective.join()
        return Placement(replicas=collective.world, collective=collective)
    if distribute == "none":
        return Placement()
    if keras.backend.backend() != "tensorflow":
        raise ConfigError(f"--distribute {distribute} uses tf.distribute: it needs KERAS_BACKEND=tensorflow, "
                          f"not {keras.backend.backend()}")
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy()
    logger.info("%s: %d replicas (%s)", type(strategy).__name__, strategy.num_replicas_in_sync,
                ", ".join(strategy.extended.worker_devices))
    return Placement(strategy, strategy.num_replicas_in_sync)


@contextlib.contextmanager
def precision(mixed_precision: str) -> Iterator[str]:
    """Layers built inside compute in the chosen type; the global policy is restored on the way out."""
    previous = keras.config.dtype_policy().name
    policy = _POLICIES[mixed_precision]
    keras.config.set_dtype_policy(policy)
    try:
        yield policy
    finally:
        keras.config.set_dtype_policy(previous)


def float32_copy(model: keras.Model, build: Callable[[], keras.Model], placement: Placement,
                 force: bool = False) -> keras.Model:
    """The same weights in a model built in float32 outside any strategy: what checkpoints and exports hold.
    ``model`` itself when it already is one, unless ``force`` (``build`` makes another layout of the same weights)."""
    if model.dtype_policy.name == "float32" and not placement.distributed and not force:
        return model
    with precision("none"):
        copy = build()
    copy.set_weights([np.asarray(w) for w in model.get_weights()])
    return copy


def predict_batch(model: keras.Model, inputs, distributed: bool = False) -> np.ndarray:
    """One batch's outputs. ``predict_on_batch`` (compiled) where it can; under a ``tf.distribute`` strategy
    it would run the whole batch on every replica and stack the copies, so the model is called directly."""
    if distributed:
        return keras.ops.convert_to_numpy(model(inputs, training=False))
    return model.predict_on_batch(inputs)


def predict_in_order(model: keras.Model, batches, lengths: Sequence[int], distributed: bool = False) -> list[np.ndarray]:
    """Outputs ``[length, ...]`` for each item of a length-bucketed ``batches`` (``BucketedBatches``,
    ``DialogBatches``: ``batches.batches`` holds each batch's item indices), in the order the items were given."""
    outputs: list[np.ndarray | None] = [None] * len(lengths)
    for index, members in enumerate(batches.batches):
        inputs = batches[index][0]
        probabilities = np.asarray(predict_batch(model, inputs, distributed))
        for row, i in enumerate(members):
            outputs[i] = probabilities[row, :lengths[i]]
    return outputs  # type: ignore[return-value]

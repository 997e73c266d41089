"""Data-parallel training across processes and machines on PyTorch's collectives (``torch.distributed``).

Why this engine (docs/training/distributed.md has the figures): TensorFlow's ``MultiWorkerMirroredStrategy`` does
not run under Keras 3's ``fit`` (tensorflow/tensorflow#72388); JAX's multi-process path compiles the training step
once per batch shape, and on this machine's CPU that cost 166 s for the tagger's first 5 shapes and then trained at
66 tokens/s against PyTorch's 694 (``benchmarks/train_speed.py``). PyTorch runs any shape as it comes, its
launcher (``torchrun``: ``python -m torch.distributed.run``) restarts failed workers, and the same code uses gloo
on CPUs and NCCL on GPUs. So a data-parallel run is ``KERAS_BACKEND=torch`` in every worker, started by torchrun
(``seqtag train ... --workers N`` starts it on this machine; several machines run torchrun themselves, which sets
``WORLD_SIZE``, ``RANK`` and the rendezvous address in each worker's environment) or by Ray Train's
``TorchTrainer`` on a Ray cluster (``--ray ADDRESS``: ``launch_on_ray``), which joins the group itself.

What each worker does, so that N workers train the very model one process trains on the same global batches:

- **The same batches.** Each worker builds the one-process run's batches (global batch = ``--batch-size`` x N, the
  same seed, so the same order, padding and word dropout) and keeps its rows of each: ``ShardedBatches``.
- **The same loss.** Keras divides a masked loss by the positions the output mask keeps in the batch it sees (a
  tagger's tokens, a dialog model's real turns). A worker's share of the global batch's loss is its positions'
  losses over the *global* batch's count, so its weights are scaled by N x (its positions) / (the batch's); the
  mean of the workers' losses is then the one-process loss, and so is the mean of their gradients.
- **The same step.** The optimizer's ``apply`` averages the gradients over the workers first (one all-reduce of
  every gradient as a flat buffer per step), then clips and steps as one process would; the weights start as
  rank 0's (a broadcast), so they stay equal on every worker.
- Every worker scores the whole dev set (the same weights give the same score), so early stopping and the learning
  rate schedule decide alike everywhere; only rank 0 writes the checkpoint.

Dropout draws its own random numbers in each worker: with ``--dropout 0`` a run of N workers equals the one-process
run to float rounding (``tests/test_backends.py``); with dropout it is the same training in distribution.

A worker that dies: torchrun stops the others and starts the group again (``--max-restarts``), and every worker
goes on from the last epoch's backup, which rank 0 writes to ``<checkpoint>/backup`` (its weights and optimizer are
everyone's; ``training.common.callbacks.resumable_run``: Keras's ``BackupAndRestore`` and the run's own state), as if
nothing had happened. On several machines the checkpoint directory is one they all see.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import keras
import numpy as np

from training.common.errors import ConfigError

logger = logging.getLogger(__name__)


def launched() -> bool:
    """True in a worker that torchrun (or another launcher setting ``WORLD_SIZE``) started for several workers."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass(frozen=True)
class Collective:
    """This worker's place in the run: its rank among ``world`` workers joined by ``torch.distributed``."""

    rank: int
    world: int
    transport: str  # "gloo" (CPU) or "nccl" (GPU)

    @classmethod
    def join(cls) -> "Collective":
        """Joins the process group the launcher described in the environment (``init_method="env://"``)."""
        if keras.backend.backend() != "torch":
            raise ConfigError(f"data-parallel training runs under KERAS_BACKEND=torch (torch.distributed), not "
                              f"{keras.backend.backend()}")
        import torch
        import torch.distributed as dist

        if torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
            # One GPU per worker on a node: the one of its local rank (Keras's "cuda" is the current device)
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
        if not dist.is_initialized():
            transport = "nccl" if torch.cuda.is_available() else "gloo"
            restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
            if restart is None:  # another launcher: its environment says how to meet
                dist.init_process_group(transport)
            else:
                # Under torchrun the workers meet in its agent's store. A group restarted after a failure would
                # read the failed group's addresses there (gloo: "connectFullMesh failed ... Connection refused",
                # pytorch/pytorch#167288), so each attempt keeps its keys under a prefix of its own.
                store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                                      int(os.environ["WORLD_SIZE"]), is_master=False)
                dist.init_process_group(transport, store=dist.PrefixStore(f"seqtag/attempt-{restart}", store),
                                        rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
        collective = cls(dist.get_rank(), dist.get_world_size(), dist.get_backend())
        if collective.rank != 0:  # one log of the run: rank 0's
            for name in ("training", "seqtag"):
                logging.getLogger(name).setLevel(logging.WARNING)
        logger.info("data-parallel worker %d of %d (%s)", collective.rank, collective.world, collective.transport)
        return collective

    def average_gradients(self, gradients: Sequence[Any], variables: Sequence[Any]) -> list[Any]:
        """The workers' mean of each gradient (a worker without one counts zeros; a variable no worker has a
        gradient for keeps None, as one process leaves it): one all-reduce of a flat buffer."""
        import torch
        import torch.distributed as dist

        parts = [(g if g is not None else torch.zeros_like(v.value)).reshape(-1) for g, v in zip(gradients, variables)]
        present = torch.tensor([g is not None for g in gradients], dtype=parts[0].dtype, device=parts[0].device)
        flat = torch.cat([*parts, present])
        dist.all_reduce(flat)
        flat /= self.world
        anyone = flat[-len(gradients):] > 0
        averaged, start = [], 0
        for part, variable, kept in zip(parts, variables, anyone):
            size = part.numel()
            averaged.append(flat[start:start + size].reshape(variable.value.shape) if kept else None)
            start += size
        return averaged

    def broadcast_weights(self, model: keras.Model) -> None:
        """Every worker starts from rank 0's weights (and any state its variables hold)."""
        import torch.distributed as dist

        for variable in model.variables:
            dist.broadcast(variable.value.data, src=0)

    def mean(self, value: float) -> float:
        """The workers' mean of ``value``."""
        import torch
        import torch.distributed as dist

        total = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(total)
        return float(total[0]) / self.world

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def all_reducing(optimizer: keras.optimizers.Optimizer, collective: Collective) -> keras.optimizers.Optimizer:
    """``optimizer``, its ``apply`` given the workers' mean gradients (Keras's torch trainer calls ``apply`` with
    the gradients ``backward`` left; clipping and the step then run on the mean, as in one process)."""
    apply = optimizer.apply

    def apply_averaged(gradients, trainable_variables=None):
        variables = trainable_variables if trainable_variables is not None else optimizer._trainable_variables
        return apply(collective.average_gradients(list(gradients), list(variables)), trainable_variables)

    optimizer.apply = apply_averaged
    return optimizer


def row_range(rows: int, rank: int, world: int) -> tuple[int, int]:
    """Worker ``rank``'s rows of a batch of ``rows``: contiguous, the first ``rows % world`` workers one more."""
    base, extra = divmod(rows, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def weighted_positions(inputs: dict, weights: np.ndarray) -> np.ndarray:
    """A tagger's unmasked positions: its tokens, where ``weights`` is 1 (the model masks padding words)."""
    return weights > 0


class ShardedBatches(keras.utils.PyDataset):
    """Worker ``rank``'s rows of each batch of ``batches`` (a ``ShapeGuardedBatches`` built with the global batch
    size): padded as the whole batch is, weights scaled so that the workers' mean loss is the whole batch's.

    A batch (inputs {name: [B, ...]}, targets [B, ...], weights [B, T]) is cut on its first axis. Keras divides a
    masked loss by the positions its output mask keeps (``unmasked(inputs, weights)`` -> bool [B, T]: a tagger's
    tokens; a dialog model's real turns, some of them weighted 0): this worker's weights are multiplied by
    ``world * unmasked_here / unmasked_in_batch``. A worker whose share is empty (the last batch of an epoch can be
    smaller than ``world``) gets the batch's first row at weight 0: it steps with zero gradients.
    """

    def __init__(self, batches, rank: int, world: int, unmasked=weighted_positions):
        super().__init__()
        self.batches, self.rank, self.world, self.unmasked = batches, rank, world, unmasked

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int):
        inputs, targets, weights = self.batches[index]
        start, stop = row_range(len(targets), self.rank, self.world)
        unmasked = self.unmasked(inputs, weights)
        tokens = float(np.sum(unmasked))
        if stop == start:
            start, stop, scale = 0, 1, 0.0
        else:
            scale = self.world * float(np.sum(unmasked[start:stop])) / tokens if tokens else 0.0
        rows = slice(start, stop)
        scaled = (weights[rows] * scale).astype(weights.dtype)
        return {name: value[rows] for name, value in inputs.items()}, targets[rows], scaled

    def on_epoch_end(self) -> None:
        self.batches.on_epoch_end()

    def state(self) -> dict:
        return self.batches.state()

    def restore(self, state: dict) -> None:
        self.batches.restore(state)


class WorkersMeanLoss(keras.callbacks.Callback):
    """First of a worker's callbacks: the epoch's loss in the logs becomes the workers' mean (each worker's loss is
    its share of the global batches', scaled by the number of workers), so the record shows one run's loss."""

    def __init__(self, collective: Collective):
        super().__init__()
        self.collective = collective

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and "loss" in logs:
            logs["loss"] = self.collective.mean(float(logs["loss"]))


def add_workers_options(parser, items: str) -> None:
    """``--workers``, ``--max-restarts``, ``--ray`` and ``--gpus`` on a ``seqtag train`` parser (``items``: what its
    batch size counts: sentences, turns)."""
    group = parser.add_argument_group("data-parallel training (torchrun on this machine, or Ray Train; several "
                                      "machines: docs/training/distributed.md)")
    group.add_argument("--workers", type=int, default=1, metavar="N",
                       help=f"train in N processes under KERAS_BACKEND=torch, each on its share of every global batch "
                            f"of N x the batch size in {items} (default 1: this process)")
    group.add_argument("--max-restarts", type=int, default=3, metavar="K",
                       help="with --workers: restart the workers from the last epoch's backup at most K times when "
                            "one fails (default 3)")
    group.add_argument("--ray", metavar="ADDRESS",
                       help="with --workers: run them on a Ray cluster (Ray Train; 'auto': the one this machine is in, "
                            "'local': one of this command's own), not under torchrun on this machine; --checkpoint "
                            "must then be a directory every node sees")
    group.add_argument("--gpus", action="store_true",
                       help="with --ray: one GPU per worker (NCCL), not one CPU (gloo)")


def check_workers_options(args, mixed_precision: str) -> None:
    """What the workers options refuse, before anything starts."""
    if args.gpus and not args.ray:
        raise ConfigError("--gpus goes with --ray (under torchrun, a worker takes the GPU of its local rank)")
    if (args.workers > 1 or launched()) and mixed_precision == "float16":
        # Keras's loss scaling skips a step whose gradients overflow, worker by worker: the workers would part ways
        raise ConfigError("data-parallel workers take --mixed-precision bfloat16 or none, not float16")


def launches(args) -> bool:
    """Whether this command starts data-parallel workers (it is not one of them)."""
    return (args.workers > 1 or bool(args.ray)) and not launched()


def run_workers(args, argv: Sequence[str], task: str, export: Callable[[Path], int]) -> int:
    """The command ``argv`` in ``args.workers`` data-parallel processes, under torchrun or on the Ray cluster
    ``args.ray`` names, then ``export(checkpoint)`` of the checkpoint their rank 0 wrote, here (under TensorFlow;
    under another backend, the command that exports it is logged) -> the exit status. The checkpoint directory is
    named here when the command names none: each worker's clock would name its own."""
    from training.common.checkpoint import default_directory, exports_here

    argv = list(argv)
    if args.checkpoint is None:
        args.checkpoint = default_directory(task)
        argv += ["--checkpoint", str(args.checkpoint)]
    if args.ray:
        # The workers are not launchers: they get the command without --ray (and Ray Train's RANK and WORLD_SIZE)
        status = launch_on_ray(without_option(argv, "--ray"), args.workers, args.max_restarts, args.ray,
                               str(args.checkpoint.resolve() / "ray"), args.gpus)
    else:
        status = launch(argv, args.workers, args.max_restarts)
    if status != 0:
        logger.error("the data-parallel workers failed (exit status %d): nothing was exported", status)
        return status
    return export(args.checkpoint) if exports_here(args.checkpoint, args.out) else 0


def without_option(argv: Sequence[str], option: str) -> list[str]:
    """``argv`` less ``option`` and its value (``--option VALUE`` or ``--option=VALUE``)."""
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == option:
            skip = True
        elif not item.startswith(option + "="):
            kept.append(item)
    return kept


def backup_directory(checkpoint: Path | None) -> Path:
    """A data-parallel worker's backup directory, ``<checkpoint>/backup``: rank 0 writes it after every epoch, and a
    restarted group goes on from it."""
    if checkpoint is None:
        raise ConfigError("data-parallel workers need --checkpoint: one directory that every worker names alike "
                          "(on several machines, one they all see)")
    return checkpoint / "backup"


def worker_environment() -> dict[str, str]:
    """What every worker's environment sets: the torch backend, and one OpenMP thread unless told otherwise
    (torchrun's own default, said here so the log shows it)."""
    return {"KERAS_BACKEND": "torch", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def launch(argv: Sequence[str], workers: int, max_restarts: int) -> int:
    """Runs ``seqtag <argv>`` as ``workers`` data-parallel processes on this machine under torchrun (PyTorch's
    elastic launcher: a worker that fails restarts the group, at most ``max_restarts`` times) -> its exit status."""
    if not _importable("torch.distributed.run"):
        raise ConfigError("--workers needs PyTorch (pip install -e '.[backends]')")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={workers}",
               f"--max-restarts={max_restarts}", "-m", "training.cli", *argv]
    env = {**os.environ, **worker_environment()}
    logger.info("starting %d data-parallel workers: %s", workers, " ".join(command))
    return subprocess.run(command, env=env).returncode


def launch_on_ray(argv: Sequence[str], workers: int, max_restarts: int, address: str, storage: str,
                  use_gpu: bool = False) -> int:
    """Runs ``seqtag <argv>`` as ``workers`` data-parallel processes on a Ray cluster (Ray Train's ``TorchTrainer``:
    one actor per worker, each given a CPU, or a GPU with ``use_gpu``, wherever the cluster has one; it joins them
    in a ``torch.distributed`` group, gloo or NCCL). A worker or node that dies restarts the whole group, at most
    ``max_restarts`` times (Ray Train's ``FailureConfig``), and the workers go on from the last epoch's backup in the
    checkpoint directory, which is why that directory must be one every node sees. -> 0, or 1 if the run failed.
    ``storage``: where Ray Train keeps the run's own record (a directory every node sees, or a URI)."""
    from training.common.ray_cluster import connect

    ray = connect(address, worker_environment(), log_to_driver=True)  # rank 0's epochs (the others log warnings only)
    try:
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer
    except ModuleNotFoundError:
        raise ConfigError("--ray needs Ray Train: pip install 'seqtag[ray]'") from None
    trainer = TorchTrainer(
        _ray_worker, train_loop_config={"argv": list(argv), "cwd": os.getcwd()},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=RunConfig(name="seqtag-data-parallel", storage_path=storage,
                             failure_config=FailureConfig(max_failures=max_restarts)))
    logger.info("starting %d data-parallel workers on the Ray cluster at %s (%s)", workers, address,
                ", ".join(f"{int(v)} {k}" for k, v in sorted(ray.cluster_resources().items()) if k in ("CPU", "GPU")))
    try:
        trainer.fit()
    except Exception as error:  # Ray Train's TrainingFailedError, once the restarts are spent
        logger.error("the data-parallel workers failed on Ray: %s", error)
        return 1
    return 0


def _ray_worker(config: dict) -> None:
    """One Ray Train worker: ``seqtag <argv>`` in this process, which Ray Train has put in the workers'
    ``torch.distributed`` group and given ``RANK`` and ``WORLD_SIZE``; in the launcher's directory where this node
    has it, so that the command's relative paths mean what they meant there."""
    from training.cli import main

    if os.path.isdir(config["cwd"]):
        os.chdir(config["cwd"])
    status = main(config["argv"])
    if status:
        raise RuntimeError(f"seqtag {' '.join(config['argv'])} exited with status {status}")


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False

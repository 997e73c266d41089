"""Helpers for tests that run ``seqtag train`` in other processes (another Keras backend, data-parallel workers,
Ray): the command in a fresh Python, the tiny tagger's arguments, the weights a checkpoint stored."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import TINY_OPTIONS

REPO = Path(__file__).resolve().parents[1]
# The tiny tagger in 2 epochs, its characters read by the CNN: under torch (eager) the characters' BiLSTM steps one
# Python loop per character position, which doubled the epochs of these multi-process runs
FAST_OPTIONS = [*TINY_OPTIONS[:TINY_OPTIONS.index("--epochs")], "--epochs", "2",
                *TINY_OPTIONS[TINY_OPTIONS.index("--epochs") + 2:], "--char-encoder", "cnn"]
SCRIPT = "import sys\n{prelude}\nfrom training.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def seqtag_environment(backend: str, env: dict | None = None) -> dict:
    """This process's environment for ``seqtag`` under ``backend`` (plus ``env``)."""
    environment = {**os.environ, **(env or {}), "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if backend == "torch":
        # One OpenMP thread: PyTorch's threads spin-wait for work, and beside TensorFlow's pools on 2 busy cores
        # the tiny model's epoch took 35-190 s instead of 3 s (the same numbers either way).
        environment.setdefault("OMP_NUM_THREADS", "1")
    return environment


def run_seqtag(args: list[str], *, backend: str = "tensorflow", prelude: str = "", timeout: int = 300,
               env: dict | None = None) -> subprocess.CompletedProcess:
    """``seqtag ARGS`` in a fresh Python process under ``backend``; ``prelude`` runs before it starts."""
    return subprocess.run([sys.executable, "-c", SCRIPT.format(prelude=prelude), *args], cwd=REPO,
                          env=seqtag_environment(backend, env), capture_output=True, text=True, timeout=timeout)


def train_args(ewt_slices, out: Path, checkpoint: Path, *extra: str) -> list[str]:
    train, dev = ewt_slices
    return ["train", "pos", "--train", str(train), "--dev", str(dev), "--out", str(out), "--checkpoint", str(checkpoint),
            *FAST_OPTIONS, *extra]


def stored_weights(path: Path) -> dict[str, np.ndarray]:
    """Every array of a Keras ``.weights.h5`` file, by its path in the file."""
    import h5py

    arrays = {}
    with h5py.File(path) as weights:
        weights.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset)
                           else None)
    return arrays


def max_weight_difference(checkpoint: Path, other: Path) -> float:
    """The largest difference between two checkpoints' weights (the same layout asserted)."""
    ours, theirs = stored_weights(checkpoint / "model.weights.h5"), stored_weights(other / "model.weights.h5")
    assert ours.keys() == theirs.keys()
    return max(float(np.abs(ours[k] - theirs[k]).max()) for k in ours)


def worker_pid(rank: int, marker: str) -> int | None:
    """The data-parallel worker of ``rank`` whose command line holds ``marker`` (torchrun sets RANK in its env)."""
    for entry in os.listdir("/proc"):
        try:
            command = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            environment = Path(f"/proc/{entry}/environ").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # not a process, or gone
            continue
        if marker in command and f"RANK={rank}" in environment:
            return int(entry)
    return None

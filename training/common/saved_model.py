"""What every reader of an exported SavedModel shares: TensorFlow's thread pools, string padding, fast calls.

Imported by the service and by each wing's reader (``SavedTagger``, ``SavedDialogModel``): TensorFlow and NumPy
only, nothing of training.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Sequence

import numpy as np

from training.common.vocab import PAD_TOKEN

logger = logging.getLogger(__name__)


def default_intra_op_threads() -> int:
    """Threads per TensorFlow op: half the usable cores, since two inter-op threads run ops side by side."""
    return max(1, len(os.sched_getaffinity(0)) // 2)


_WANTED_THREADS: tuple[int, int] | None = None  # set_tensorflow_threads's wish, until TensorFlow is imported


def set_tensorflow_threads(inter_op: int = 2, intra_op: int = 0) -> bool:
    """Thread pools for serving: ``inter_op`` ops at once, each on ``intra_op`` threads (0: half the cores).

    Two inter-op threads let the two directions of each BiLSTM (independent loops in the serving graph)
    run at once; on 2 cores, 2 x 1 tags about 20 % more tokens/s than TensorFlow's default pools
    (``benchmarks/inprocess_tagging.py``). A process that has not imported TensorFlow keeps the wish and applies
    it in ``import_tensorflow`` (a service whose fast paths come from the cache never imports it). Only possible
    before TensorFlow first runs an op: returns False (and logs) when too late, leaving the pools as they are.
    """
    global _WANTED_THREADS
    _WANTED_THREADS = (inter_op, intra_op or default_intra_op_threads())
    if "tensorflow" not in sys.modules:
        return True
    return _apply_threads()


def import_tensorflow():
    """TensorFlow, imported with the thread pools ``set_tensorflow_threads`` asked for."""
    import tensorflow as tf

    if _WANTED_THREADS is not None:
        _apply_threads()
    return tf


def _apply_threads() -> bool:
    import tensorflow as tf

    inter_op, intra_op = _WANTED_THREADS
    if (tf.config.threading.get_inter_op_parallelism_threads(),
            tf.config.threading.get_intra_op_parallelism_threads()) == (inter_op, intra_op):
        return True
    try:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    except RuntimeError:
        logger.warning("TensorFlow already started: its thread pools stay as they are")
        return False
    return True


class LazySavedModel:
    """What the exported-model readers share about their SavedModel: loaded at once, or, when the fast path came from
    the cache (``training.common.fast_cache``), on first use (TensorFlow is imported then). A reader sets
    ``directory``, ``fast`` and ``_saved_model = None``, and takes what it needs from a freshly loaded SavedModel in
    ``_loaded``."""

    directory = None
    fast = None
    _saved_model = None

    @property
    def runtime(self) -> str:
        return "onnx" if self.fast is not None else "tensorflow"

    @property
    def saved_model(self):
        self._require_saved_model()
        return self._saved_model

    def _require_saved_model(self) -> None:
        if self._saved_model is None:
            self._saved_model = import_tensorflow().saved_model.load(str(self.directory))
            self._loaded(self._saved_model)

    def _loaded(self, saved_model) -> None:
        """The reader's signatures (and the like) from a SavedModel just loaded."""


def only_concrete_function(function):
    """A restored function's single traced signature: called directly, it skips argument binding (~0.4 ms
    a call, which a single-sentence request feels)."""
    concrete = getattr(function, "concrete_functions", [])
    return concrete[0] if len(concrete) == 1 else function


def variable_role(path: str) -> tuple[str, str, str] | None:
    """``bilstm_1/forward_lstm_1/lstm_cell/kernel:0`` -> ("bilstm_1", "forward", "kernel"); None for RNG state.
    A weight's role survives changes in how a model nests its layers (re-export, the fast path)."""
    parts = path.split(":")[0].split("/")
    if parts[0].startswith("seed_generator"):
        return None
    direction = next((d for d in ("forward", "backward") if any(p.startswith(d) for p in parts[1:-1])), "")
    return parts[0], direction, parts[-1]


def pad_tokens(rows: Sequence[Sequence[str]]) -> np.ndarray:
    """Token lists -> ``object[B, T]`` array of strings, "" (``PAD_TOKEN``) as padding."""
    tokens = np.full((len(rows), max((len(row) for row in rows), default=0)), PAD_TOKEN, dtype=object)
    for index, row in enumerate(rows):
        tokens[index, :len(row)] = list(row)
    return tokens

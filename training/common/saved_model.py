"""What every reader of an exported SavedModel shares: TensorFlow's thread pools, string padding, fast calls.

Imported by the service and by each wing's reader (``SavedTagger``, ``SavedDialogModel``): TensorFlow and NumPy
only, nothing of training.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np

from training.common.vocab import PAD_TOKEN

logger = logging.getLogger(__name__)


def default_intra_op_threads() -> int:
    """Threads per TensorFlow op: half the usable cores, since two inter-op threads run ops side by side."""
    return max(1, len(os.sched_getaffinity(0)) // 2)


def set_tensorflow_threads(inter_op: int = 2, intra_op: int = 0) -> bool:
    """Thread pools for serving: ``inter_op`` ops at once, each on ``intra_op`` threads (0: half the cores).

    Two inter-op threads let the two directions of each BiLSTM (independent loops in the serving graph)
    run at once; on 2 cores, 2 x 1 tags about 20 % more tokens/s than TensorFlow's default pools
    (``benchmarks/inprocess_tagging.py``). Only possible before TensorFlow first runs an op: returns
    False (and logs) when too late, leaving the pools as they are.
    """
    import tensorflow as tf  # here, not at the top: readers of a cached fast path never load it

    intra_op = intra_op or default_intra_op_threads()
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

"""What every wing's batches share: padded lengths rounded for the backend's compiler.

Each wing batches its own items (``training.tagger.batching``: sentences; ``training.dialog.batching``:
dialogs) as a ``keras.utils.PyDataset``.
"""

from __future__ import annotations

import keras


def shape_multiple() -> int:
    """What padded lengths are rounded up to. Under JAX every new batch shape compiles the training step again;
    multiples of 8 bound the shapes an epoch sees (padding is masked: results are the same). TensorFlow
    (relaxed shapes) and PyTorch (eager) run any shape as it comes."""
    return 8 if keras.backend.backend() == "jax" else 1


def round_up(length: int, multiple: int) -> int:
    return -(-length // multiple) * multiple

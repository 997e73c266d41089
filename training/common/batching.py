"""What every wing's batches share: padded lengths rounded for the backend's compiler, and a guard on every
variable axis against TensorFlow freezing it.

Each wing batches its own items (``training.tagger.batching``: sentences; ``training.dialog.batching``:
dialogs) as a ``ShapeGuardedBatches``, a ``keras.utils.PyDataset``.
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


class ShapeGuardedBatches(keras.utils.PyDataset):
    """Batches whose inputs have variable axes (time, characters per word, words per turn, turns per dialog).

    Under TensorFlow, ``fit`` builds its ``tf.data`` pipeline with the shapes of the first two batches and freezes
    every axis on which they agree; a later batch of another size on that axis then fails ("generator yielded
    an element of shape (32, 6, 11) where an element of shape (None, None, 12) was expected"). So the second
    batch is padded one step (``multiple``) longer on every variable axis on which it would agree with the
    first: every variable axis is left unknown, whatever the data. Padding is masked, so the training is the
    same. Subclasses give each batch's own padded sizes (``variable_shape``) and build a batch padded to given
    sizes (``padded_batch``).
    """

    def __init__(self, multiple: int = 1):
        super().__init__()
        self.multiple = multiple  # padded lengths are rounded up to it (``shape_multiple``)

    def variable_shape(self, index: int) -> tuple[int, ...]:
        """Batch ``index``'s sizes on its variable axes, padded to its longest item and rounded up to ``multiple``."""
        raise NotImplementedError

    def padded_batch(self, index: int, shape: tuple[int, ...]):
        """Batch ``index`` (inputs, targets, weights) padded to ``shape`` on its variable axes."""
        raise NotImplementedError

    def guarded_shape(self, index: int) -> tuple[int, ...]:
        shape = self.variable_shape(index)
        if index == 1:
            first = self.variable_shape(0)
            shape = tuple(size + self.multiple if size == size_0 else size for size, size_0 in zip(shape, first))
        return shape

    def __getitem__(self, index: int):
        return self.padded_batch(index, self.guarded_shape(index))

    # A subclass keeps its batches' item indices in ``batches`` and draws from ``rng`` (shuffling, word dropout).
    def state(self) -> dict:
        """The batch order and the random state, for a run that resumes (JSON)."""
        return {"batches": self.batches, "rng": self.rng.bit_generator.state}

    def restore(self, state: dict) -> None:
        self.batches = [list(batch) for batch in state["batches"]]
        self.rng.bit_generator.state = state["rng"]

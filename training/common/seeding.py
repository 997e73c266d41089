"""One seed for a training run (Python's, NumPy's and the Keras backend's random numbers), and TensorFlow kept out
of a run under another backend."""

from __future__ import annotations

import sys

import keras


def set_random_seed(seed: int, keep_tensorflow_out: bool = True) -> None:
    """``keras.utils.set_random_seed``; under a backend other than TensorFlow, first ``keep_tensorflow_out()``
    (unless ``keep_tensorflow_out`` is False: ``--tensorboard`` writes its logs through TensorFlow)."""
    if keep_tensorflow_out:
        keep_tensorflow_out_of_this_process()
    keras.utils.set_random_seed(seed)


def keep_tensorflow_out_of_this_process() -> None:
    """Under ``KERAS_BACKEND=torch`` or ``jax``: Keras's checks for TensorFlow's types answer "not installed".

    Keras imports TensorFlow whenever it can, to check whether a value is one of its types (``tf.available``: when
    it seeds, when it serializes a layer's config...), though a run under another backend never makes one. That
    import costs each training process, every data-parallel worker and each of its restarts included, some 4 s of
    CPU. Keras asks its lazy ``tensorflow`` module (Keras 3.13's ``LazyModule._available``), which is told no here;
    anything that really uses TensorFlow still imports it. Nothing changes once TensorFlow is imported, or under it.
    """
    from keras.src.utils import module_utils

    lazy = module_utils.tensorflow
    if (keras.backend.backend() != "tensorflow" and "tensorflow" not in sys.modules
            and getattr(lazy, "_available", False) is None):
        lazy._available = False

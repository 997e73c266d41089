"""One seed for a training run: Python's, NumPy's and the Keras backend's random numbers."""

from __future__ import annotations

import sys

import keras


def set_random_seed(seed: int) -> None:
    """``keras.utils.set_random_seed``, without importing TensorFlow under another backend.

    Keras also seeds TensorFlow whenever it can import it (for ``tf.data`` pipelines, which seqtag's trainers do not
    use); under ``KERAS_BACKEND=torch`` that import costs every training process, each data-parallel worker
    included, some 4 s of CPU for nothing. Keras asks its lazy ``tensorflow`` module whether it is available: it is
    told no for this one call (Keras 3.13's ``LazyModule._available``; without that attribute Keras does as usual).
    """
    from keras.src.utils import module_utils

    lazy = module_utils.tensorflow
    skip = (keras.backend.backend() != "tensorflow" and "tensorflow" not in sys.modules
            and getattr(lazy, "_available", False) is None)
    if not skip:
        keras.utils.set_random_seed(seed)
        return
    lazy._available = False
    try:
        keras.utils.set_random_seed(seed)
    finally:
        lazy._available = None

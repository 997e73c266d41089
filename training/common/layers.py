"""Keras layers and masks that both wings' models share (backend-agnostic Keras 3, ``keras.ops`` only)."""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="seqtag")
class FoldedTimeDistributed(layers.TimeDistributed):
    """TimeDistributed that folds time into batch: ``[B, T, ...] -> [B*T, ...] -> layer -> [B, T, ...]``.

    Same semantics as Keras's own (one layer applied to every time slice), but Keras 3 maps over the
    time steps with ``vectorized_map``, which TensorFlow cannot differentiate through an LSTM's loop
    (and which runs the inner layer T times); folding runs it once on B*T items on any backend.
    It passes no mask on: the sentence tagger takes its mask from the word ids.
    """

    def call(self, inputs, training=None, mask=None):
        shape = ops.shape(inputs)
        folded = ops.reshape(inputs, (-1, *shape[2:]))  # [B*T, ...]
        kwargs = {"training": training} if self.layer._call_has_training_arg else {}
        outputs = self.layer(folded, **kwargs)  # [B*T, D]
        return ops.reshape(outputs, (shape[0], shape[1], *outputs.shape[1:]))  # [B, T, D]

    def compute_mask(self, inputs, mask=None):
        return None


def cudnn_safe_mask(ids):
    """``ids != 0`` (0 pads, on the right), with the first position always on.

    Under TensorFlow on a GPU the LSTMs run on cuDNN, which fails a batch holding a sequence with no step at
    all; a batch folded from padded sentences or dialogs holds such rows (padding words, padding turns).
    Giving them one step keeps cuDNN usable; their outputs are masked out further on, and a real word or
    turn never starts with padding, so real outputs are unchanged.
    """
    return ops.logical_or(ops.not_equal(ids, 0), ops.equal(ops.cumsum(ops.ones_like(ids), axis=-1), 1))


def pretrained_embedding(config, shape: tuple[int, int]) -> layers.Embedding:
    """The kept rows of a pretrained vector table (``shape`` = rows, dimensions), set after building. Frozen
    (``config.vectors_trainable`` false) they are float16 variables: half the model's bytes on disk, and the
    trainer rounds them to float16 first, so nothing changes; the concatenation after them reads them as float32.
    Fine-tuned, they train as float32; the trained model is then rebuilt frozen (``inference_config``), its rows
    rounded to float16, and that is what checkpoints, exports and dev figures hold."""
    if config.vectors_trainable:
        return layers.Embedding(*shape, name="pretrained_embedding")
    return layers.Embedding(*shape, trainable=False, dtype="float16", name="pretrained_embedding")


def inference_config(config):
    """The config a trained model is rebuilt with for checkpoints and exports: its pretrained rows frozen (float16)."""
    return config.replace(vectors_trainable=False) if getattr(config, "vectors_trainable", False) else config

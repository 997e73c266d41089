"""Training checkpoints: what a run leaves before any export is tried, readable under every backend.

    <dir>/model.weights.h5   the trained weights, float32 (Keras's backend-neutral weights file)
    <dir>/training.json      {"kind": "tagger" | "dialog", "config", "vocabs", ..., "metadata", "probe": the probe's inputs}
    <dir>/probe.npz          the trained model's probabilities on the probe inputs, as the training backend computed them

A run under JAX or PyTorch cannot write a SavedModel (TensorFlow does), so it stops at its checkpoint and
``KERAS_BACKEND=tensorflow seqtag export --from-checkpoint DIR --out models/NAME`` exports it. The new version
is published only if the SavedModel gives the probe's probabilities again, within ``PROBE_TOLERANCE``: the weights
reached TensorFlow whole and in their places, and the export reproduces the model that was trained.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np

from training.common.errors import ConfigError

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.weights.h5"
STATE_FILE = "training.json"
PROBE_FILE = "probe.npz"
# float32 probabilities computed by two backends' kernels differ by rounding (~1e-7); a weight misplaced or
# left at its initial value moves them by orders of magnitude more.
PROBE_TOLERANCE = 1e-4


class ExportMismatchError(RuntimeError):
    """The exported model does not reproduce the trained one on the checkpoint's probe."""


def write_checkpoint(directory: Path, model: keras.Model, state: dict[str, Any],
                     probe_probabilities: Sequence[np.ndarray] = ()) -> Path:
    """Weights, ``state`` (JSON) and the probe's probabilities (one array per probe item)."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save_weights(directory / WEIGHTS_FILE)
    if probe_probabilities:
        np.savez(directory / PROBE_FILE, *[np.asarray(p, dtype=np.float32) for p in probe_probabilities])
    (directory / STATE_FILE).write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
    logger.info("checkpoint written to %s", directory)
    return directory


def default_directory(task: str) -> Path:
    """``checkpoints/<task>-<time>``, for a run not given ``--checkpoint``."""
    return Path("checkpoints") / f"{task}-{time.strftime('%Y%m%d-%H%M%S')}"


def training_record(result, placement, mixed_precision: str, global_batch: int) -> dict[str, Any]:
    """The metadata's ``training`` part for a finished run (a tagger's or a dialog model's result)."""
    return {"backend": keras.backend.backend(), **placement.describe(mixed_precision), "global_batch": global_batch,
            "epochs_run": len(result.history), "best_epoch": result.best_epoch, "seconds": round(result.seconds, 1),
            "history": result.history}


def exports_here(directory: Path, out: Path) -> bool:
    """True under TensorFlow. Under another backend, logs how to export the checkpoint and returns False."""
    if keras.backend.backend() == "tensorflow":
        return True
    logger.info("trained under %s: export with KERAS_BACKEND=tensorflow seqtag export --from-checkpoint %s --out %s",
                keras.backend.backend(), directory, out)
    return False


def require_tensorflow() -> None:
    """Exports write SavedModels, which only TensorFlow can."""
    if keras.backend.backend() != "tensorflow":
        raise ConfigError("exporting needs KERAS_BACKEND=tensorflow")


def read_state(directory: Path) -> dict[str, Any]:
    """``training.json`` of a checkpoint; a checkpoint without ``kind`` is a dialog one (written before taggers had
    them), and kind "pos" is a tagger's (its name before span taggers)."""
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise ConfigError(f"{directory}: not a checkpoint directory (no {STATE_FILE})")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the checkpoint: {error}") from error
    state.setdefault("kind", "dialog")
    if state["kind"] == "pos":  # what tagger checkpoints were called before span taggers joined them
        state["kind"] = "tagger"
    return state


def load_weights(directory: Path, model: keras.Model) -> keras.Model:
    model.load_weights(Path(directory) / WEIGHTS_FILE)
    return model


def probe_probabilities(directory: Path) -> list[np.ndarray] | None:
    """The probabilities the training run saved for its probe, in probe order; None for checkpoints without one."""
    path = Path(directory) / PROBE_FILE
    if not path.is_file():
        return None
    with np.load(path) as arrays:
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]


def check_probe(expected: Sequence[np.ndarray] | None, exported: Sequence[np.ndarray], backend: str) -> dict | None:
    """Compare the exported model's probabilities with the trained model's: the record for the metadata, or
    ``ExportMismatchError``. None when the checkpoint has no probe."""
    if expected is None:
        return None
    if len(expected) != len(exported) or any(e.shape != x.shape for e, x in zip(expected, exported)):
        raise ExportMismatchError("the exported model's outputs on the probe do not have the trained model's shapes")
    difference = max(float(np.max(np.abs(e - x))) if e.size else 0.0 for e, x in zip(expected, exported))
    if difference > PROBE_TOLERANCE:
        raise ExportMismatchError(
            f"the exported model does not reproduce the model trained under {backend}: probabilities differ by up "
            f"to {difference:.2e} on the checkpoint's probe (tolerance {PROBE_TOLERANCE:g}); nothing was published")
    logger.info("export reproduces the model trained under %s: max difference %.1e over %d probe items", backend,
                difference, len(expected))
    return {"trained_under": backend, "items": len(expected), "max_abs_difference": difference,
            "tolerance": PROBE_TOLERANCE}

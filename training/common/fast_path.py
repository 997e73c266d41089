"""The fused-kernel fast path that readers of an exported model share: ONNX graphs built from a SavedModel's
weights, run by ONNX Runtime, and checked against the SavedModel before they serve.

Why: the exported ``serve``/``step`` functions run their LSTMs as TensorFlow while-loops, which cost about
0.2 ms a step per layer whatever the batch, so a lone sentence or turn pays more for loop steps than for
arithmetic. ONNX's ``LSTM`` operator (bidirectional, ``sequence_lens`` for the lengths) is one fused CPU kernel
in ONNX Runtime. Converters (tf2onnx, OpenVINO) keep the masked Keras LSTMs as ``Loop`` ops, so each wing
writes its numeric core (ids -> probabilities) here by hand from the trained weights
(``training.tagger.fast_tagger``, ``training.dialog.fast_dialog``), and does the string -> id preprocessing in
Python with training's rules.

The SavedModel stays the exported artifact and the contract: the fast graph is derived from its variables
(mapped by layer and role, as ``seqtag export --from`` does) when a version loads, so every shipped version
gets it, and it is *verified* against the SavedModel on a probe of real inputs before it serves
(``max_difference``). A graph that disagrees beyond ``TOLERANCE`` raises ``FastPathMismatch``: the service
rejects that version like a broken one. An architecture the fast graph cannot express (a version without
``vocab.json``, a dialog ensemble exported before its members' variables were listed apart) raises
``FastPathUnsupported`` and serves through TensorFlow.

The readers have TensorFlow loaded anyway (``graph_lowercase`` asks it how it lower-cases); nothing of training
is imported.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from training.common.saved_model import variable_role

logger = logging.getLogger(__name__)

TOLERANCE = 1e-5  # largest probability (or state) difference from the SavedModel a fast path may have
# An int8 fast path (``quantized_lstm_model``) is checked against the float one: on the probe, no probability may
# move more than this, and at least INT8_AGREEMENT of the tokens keep their most probable tag. Measured on EWT dev
# with models/pos/4: probabilities move up to 0.09, and accuracy is unchanged (0.95980 both).
INT8_TOLERANCE = 0.25
INT8_AGREEMENT = 0.95
PRECISIONS = ("float32", "int8")
OPSET = 17  # ONNX opset of the graphs (LSTM has had sequence_lens and bidirectional since opset 7)
RUNTIMES = ("onnx", "tensorflow")  # ``runtime`` of the readers: "onnx" builds the fast path, "tensorflow" does not


class FastPathUnsupported(ValueError):
    """The model has parts the fast graph does not express; it serves through the SavedModel."""


class FastPathMismatch(ValueError):
    """The fast graph's answers differ from the SavedModel's on the probe: the version must not serve."""


def onnx_threads() -> int:
    """Threads for a large ONNX Runtime call (``SEQTAG_ONNX_THREADS``; 0 or unset: the usable cores)."""
    threads = int(os.environ.get("SEQTAG_ONNX_THREADS", "0") or 0)
    return threads if threads > 0 else max(1, len(os.sched_getaffinity(0)))


class Runner:
    """One graph in two ONNX Runtime sessions: a single-threaded one for small calls and one on ``onnx_threads()``
    for calls of at least ``parallel_from`` units of work (e.g. tokens). Measured on 2 cores: a batch of length-
    sorted sentences runs nearly twice as fast on two threads (27k vs 12k tokens/s), while a lone sentence costs
    0.45 ms more CPU on two (1.68 vs 1.23 ms a request, for the same latency), which a server busy with other
    requests cannot spare. Sessions are thread-safe: request threads may run the same one at once.

    The parallel session is made at the first large call: each session holds its own copy of the weights (for
    ``pos/4``, 110 MiB for both against 69 MiB for one), and a service that tags lone sentences never needs it."""

    def __init__(self, model, parallel_from: int = 512, threads: int | None = None):
        self.model = model
        self.parallel_from = parallel_from
        self.single = inference_session(model, threads=1)
        self.threads = onnx_threads() if threads is None else threads
        self._parallel = self.single if self.threads <= 1 else None
        self._lock = threading.Lock()

    @property
    def parallel(self):
        if self._parallel is None:
            with self._lock:
                if self._parallel is None:
                    self._parallel = inference_session(self.model, threads=self.threads)
        return self._parallel

    def run(self, outputs: list[str], feeds: dict[str, np.ndarray], work: int) -> list[np.ndarray]:
        return (self.parallel if work >= self.parallel_from else self.single).run(outputs, feeds)


def weights_by_role(variables: Iterable) -> dict[tuple[str, str, str], np.ndarray]:
    """A SavedModel's variables as NumPy arrays keyed by (layer, direction, weight). A role found twice (an
    ensemble's members) is not one model's: ``FastPathUnsupported``."""
    weights: dict[tuple[str, str, str], np.ndarray] = {}
    for variable in variables:
        role = variable_role(variable.name)
        if role is None:
            continue
        if role in weights:
            raise FastPathUnsupported(f"two weights for {'/'.join(role)} (an ensemble)")
        value = variable.numpy()
        # A float16 export's weights compute in float32, as in its SavedModel; frozen vector rows stay float16
        # (the graphs cast the rows they gather).
        if value.dtype == np.float16 and role[0] != "pretrained_embedding":
            value = value.astype(np.float32)
        weights[role] = value
    return weights


def saved_model_weights(saved_model) -> dict[tuple[str, str, str], np.ndarray]:
    """Newer exports keep the weights only as the variables their functions use (``_all_variables``); a float16
    export lists the ones it stores (``stored_variables``)."""
    stored = getattr(saved_model, "stored_variables", None)
    if stored is not None:
        return weights_by_role(list(stored))
    return weights_by_role(list(saved_model.variables) or list(saved_model._all_variables))


# --- string rules, as the exported graphs apply them ---


_KNOWN_KEEPS: frozenset[str] | None = None  # _graph_keeps as a cached fast path recorded it (use_graph_keeps)


def use_graph_keeps(keeps: Iterable[str]) -> None:
    """Take ``_graph_keeps``'s answer from a record (``training.common.fast_cache``) instead of asking TensorFlow."""
    global _KNOWN_KEEPS
    _KNOWN_KEEPS = frozenset(keeps)


def graph_keeps() -> frozenset[str]:
    return _KNOWN_KEEPS if _KNOWN_KEEPS is not None else _graph_keeps()


@lru_cache(maxsize=1)
def _graph_keeps() -> frozenset[str]:
    """Characters that Python lower-cases and the exported graphs' ``tf.strings.lower`` (ICU, an older Unicode)
    leaves alone: 40 recent letters with TensorFlow 2.21 on Python 3.11. Asked of TensorFlow once per process."""
    import sys

    import tensorflow as tf

    changed = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF and chr(c).lower() != chr(c)]
    lowered = tf.strings.lower(tf.constant(changed), encoding="utf-8").numpy()
    return frozenset(ch for ch, low in zip(changed, lowered) if low.decode("utf-8") != ch.lower())


def graph_lowercase(word: str) -> str:
    """``word.lower()`` as the exported graphs compute it (``tf.strings.lower(encoding="utf-8")``): Python's
    full case mapping (final sigma, dotted I), except for the few letters ICU's tables do not know yet."""
    if word.isascii():
        return word.lower()
    keeps = graph_keeps()
    if not keeps.intersection(word):
        return word.lower()
    pieces, current = [], []
    for ch in word:  # those letters stay as they are; the runs between them are lower-cased as runs
        if ch in keeps:
            pieces.append("".join(current).lower())
            pieces.append(ch)
            current = []
        else:
            current.append(ch)
    pieces.append("".join(current).lower())
    return "".join(pieces)


def build_fast_model(directory: Path, build: Callable, saved_model, metadata: dict) -> tuple[Any, str | None]:
    """``build(saved_model, metadata, vocab.json's record)`` for the version in ``directory`` -> (the fast model,
    None), or (None, why there is none) when the version has no vocab.json or ``build`` cannot express it."""
    vocab_file = directory / "vocab.json"
    try:
        if not vocab_file.is_file():
            raise FastPathUnsupported("no vocab.json beside the SavedModel")
        return build(saved_model, metadata, json.loads(vocab_file.read_text(encoding="utf-8"))), None
    except FastPathUnsupported as reason:
        return None, str(reason)


def accept(directory: Path, worst: float, subject: str, probes: str, count: int) -> dict:
    """A fast path's verdict: ``worst`` (its largest difference from the SavedModel on ``count`` probes) beyond
    ``TOLERANCE`` raises ``FastPathMismatch`` naming ``subject`` (what differs); else the reader's ``fast_check``
    record, logged."""
    if not worst <= TOLERANCE:
        raise FastPathMismatch(f"the {subject} differ from the SavedModel's by {worst:.3g} (more than {TOLERANCE:g}) "
                               f"on the {probes}")
    logger.info("%s: fast path (ONNX Runtime) agrees with the SavedModel to %.2g", directory, worst)
    return {"runtime": "onnx", "max_difference": worst, "probe_" + probes.split()[-1]: count}


def int8_passes(directory: Path, worst: float, agreement: float, answers: str) -> bool:
    """The int8 check's verdict, shared by the readers: no probability moved more than ``INT8_TOLERANCE`` against
    the float fast path on the probe, and at least ``INT8_AGREEMENT`` of its ``answers`` (tags, acts) stayed; logged
    either way (a warning when the reader stays float32)."""
    if worst <= INT8_TOLERANCE and agreement >= INT8_AGREEMENT:
        logger.info("%s: int8 keeps %.1f%% of the probe's %s (probabilities within %.3g)", directory, 100 * agreement,
                    answers, worst)
        return True
    logger.warning("%s: int8 moves probabilities by %.3g and keeps %.1f%% of the probe's %s (limits %g, %.0f%%): "
                   "float32 it stays", directory, worst, 100 * agreement, answers, INT8_TOLERANCE, 100 * INT8_AGREEMENT)
    return False


def record_int8(fast_check: dict, directory: Path, worst: float, agreement: float, answers: str,
                agreement_key: str = "int8_agreement") -> bool:
    """``int8_passes``, with the check's figures and the precision that is served (int8 or float32) written into
    the reader's ``fast_check``: True when the reader takes its int8 path."""
    passes = int8_passes(directory, worst, agreement, answers)
    fast_check.update({"int8_max_difference": worst, agreement_key: agreement},
                      precision="int8" if passes else "float32")
    return passes


def max_difference(fast: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> float:
    """The largest absolute difference between paired arrays (inf when shapes differ or values are not finite)."""
    worst = 0.0
    for a, b in zip(fast, reference, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or not np.isfinite(a).all():
            return float("inf")
        if a.size:
            worst = max(worst, float(np.abs(a.astype(np.float64) - b).max()))
    return worst


# --- ONNX graphs ---


class GraphBuilder:
    """A small ONNX graph writer: constants, nodes with generated output names, inputs and outputs."""

    def __init__(self, name: str):
        self.name = name
        self.nodes: list = []
        self.initializers: list = []
        self.inputs: list = []
        self.outputs: list = []
        self._count = 0

    def const(self, array: np.ndarray, name: str | None = None) -> str:
        from onnx import numpy_helper

        self._count += 1
        name = name or f"const_{self._count}"
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: Sequence[str], outputs: int = 1, **attributes) -> str | list[str]:
        from onnx import helper

        self._count += 1
        names = [f"{op.lower()}_{self._count}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op, list(inputs), names, name=f"{op}_{self._count}", **attributes))
        return names[0] if outputs == 1 else names

    def input(self, name: str, dtype, shape: Sequence) -> str:
        from onnx import helper

        self.inputs.append(helper.make_tensor_value_info(name, _elem_type(dtype), list(shape)))
        return name

    def output(self, value: str, name: str, dtype, shape: Sequence) -> None:
        from onnx import helper

        self.nodes.append(helper.make_node("Identity", [value], [name], name=f"output_{name}"))
        self.outputs.append(helper.make_tensor_value_info(name, _elem_type(dtype), list(shape)))

    def model(self):
        import onnx
        from onnx import helper

        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="seqtag")
        model.ir_version = min(model.ir_version, 9)  # what ONNX Runtime 1.31 reads for opset 17
        onnx.checker.check_model(model)
        return model

    # --- layers ---

    def bidirectional_lstm(self, x: str, lengths: str, forward: tuple, backward: tuple) -> tuple[str, str]:
        """A Keras ``Bidirectional(LSTM)`` over time-major ``x [T, B, D]`` with each row's ``lengths [B]`` (int32)
        -> (``Y [T, 2, B, H]``, each direction's last output ``Y_h [2, B, H]``), as ONNX's fused ``LSTM``.
        ``forward`` and ``backward`` are each direction's Keras (kernel, recurrent kernel, bias)."""
        w, r, b = zip(*(onnx_lstm_weights(*weights) for weights in (forward, backward)))
        hidden = forward[1].shape[0]
        y, y_h = self.node("LSTM", [x, self.const(np.stack(w)), self.const(np.stack(r)), self.const(np.stack(b)),
                                    lengths], outputs=2, hidden_size=hidden, direction="bidirectional")
        return y, y_h

    def dense(self, x: str, kernel: np.ndarray, bias: np.ndarray) -> str:
        return self.node("Add", [self.node("MatMul", [x, self.const(kernel)]), self.const(bias)])


def onnx_lstm_weights(kernel: np.ndarray, recurrent_kernel: np.ndarray, bias: np.ndarray):
    """A Keras LSTM's (kernel ``[D, 4H]``, recurrent kernel ``[H, 4H]``, bias ``[4H]``), gates i, f, c, o, as ONNX's
    (W ``[4H, D]``, R ``[4H, H]``, B ``[8H]``), gates i, o, f, c. Keras has one bias, ONNX an input and a
    recurrence bias that it adds: Keras's goes in the first, zeros in the second."""
    hidden = recurrent_kernel.shape[0]
    order = [0, 3, 1, 2]  # ONNX's i, o, f, c in Keras's i, f, c, o

    def reorder(matrix):
        return np.concatenate([matrix[..., g * hidden:(g + 1) * hidden] for g in order], axis=-1)

    return (reorder(kernel).T.astype(np.float32), reorder(recurrent_kernel).T.astype(np.float32),
            np.concatenate([reorder(bias), np.zeros(4 * hidden, bias.dtype)]).astype(np.float32))


def _elem_type(dtype) -> int:
    from onnx import helper

    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def quantized_lstm_model(model):
    """``model`` with every LSTM's weights in int8, as ONNX Runtime's ``DynamicQuantizeLSTM`` (activations are
    quantized on the fly per call): the LSTM matrix products run on int8 kernels (VNNI where the CPU has it).
    Measured on 2 cores with models/pos/4's sentence graph: 80k against 34k tokens/s on EWT dev, same accuracy."""
    return quantized_model(model, ["LSTM"])


def quantized_matmul_model(model):
    """``model`` with the weights of every product by a constant matrix in int8, per output channel
    (``DynamicQuantizeMatMul``; activations quantized on the fly, per call and per tensor): a transformer's dense
    layers. Products between two activations (attention's scores and context) stay float: quantizing them too
    moved the argmax of 50 of 600 SwDA turns, against 12 (issue 32's probe)."""
    return quantized_model(model, ["MatMul"], per_channel=True, extra_options={"MatMulConstBOnly": True})


def quantized_model(model, op_types: list[str], per_channel: bool = False, extra_options: dict | None = None):
    """ONNX Runtime's dynamic quantization of ``op_types`` (weights QInt8) over an in-memory model."""
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    advice = _QuantizerChatter()
    root.addFilter(advice)
    try:
        with tempfile.TemporaryDirectory(prefix="seqtag-int8-") as folder:
            source, target = Path(folder) / "float.onnx", Path(folder) / "int8.onnx"
            onnx.save(model, str(source))
            quantize_dynamic(str(source), str(target), op_types_to_quantize=op_types, weight_type=QuantType.QInt8,
                             per_channel=per_channel, extra_options=extra_options or {})
            return onnx.load(str(target))
    finally:
        root.removeFilter(advice)


class _QuantizerChatter(logging.Filter):
    """The quantizer logs on the root logger: advice meant for image models' shape inference, and a line per
    tensor at INFO. Its warnings and errors pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "pre-processing before quantization" in record.getMessage():
            return False
        return record.levelno > logging.INFO or "onnxruntime" not in record.pathname


def inference_session(model, threads: int = 1):
    """An ONNX Runtime session for ``model`` on the CPU: ``threads`` per call, all graph optimisations, no spinning
    thread pool (the cores are shared with the request threads, and a spinning pool burns a core between calls)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

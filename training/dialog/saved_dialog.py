"""An exported dialog SavedModel as a Python object: whole dialogs, or one turn per session from a given state.

Used by evaluation and by the service, so both call the model as a deployed consumer would. It needs
TensorFlow and the model directory only: no trainer, model builder or scorer.

``runtime="onnx"`` (the service's default) also builds a fast ``step`` from the version's weights
(``training.dialog.fast_dialog``) and checks it against the SavedModel's, streaming probe conversations of
different lengths in shared calls, before any turn is taken: a disagreement beyond ``fast_path.TOLERANCE`` in
probabilities or state raises ``FastPathMismatch`` (the service rejects the version). Whole dialogs
(``predict``) go through the SavedModel; an ensemble steps through one fast graph per member.

``precision="int8"`` (the service's default, ``SEQTAG_ENCODER_PRECISION``) gives a model with a pretrained
utterance encoder an int8 encoder (``FastEncoderDialogStep.quantized``), checked in turn against the float fast
step on the probe (``INT8_TOLERANCE``, ``INT8_AGREEMENT``); one that fails the check steps in float32, with a
warning. Models without an encoder have no int8 step and ignore it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from training.common import artifacts
from training.common.fast_path import PRECISIONS, RUNTIMES, accept, build_fast_model, max_difference, record_int8
from training.common.saved_model import LazySavedModel, import_tensorflow, pad_tokens
from training.common.tokenizer import tokenizer_for
from training.common.vocab import PAD_TOKEN
from training.common.word_pieces import WordPieces, turn_pieces
from training.dialog import fast_dialog, fast_encoder
from training.dialog.fast_dialog import PROBE_DIALOGS

logger = logging.getLogger(__name__)

# What defines the probe and the graphs built for it: part of a cached fast path's key (training.common.fast_cache)
PROBE_CODE = (Path(__file__), Path(fast_dialog.__file__), Path(fast_encoder.__file__))


@dataclass
class DialogTurnInput:
    tokens: list[str]
    speaker: str
    previous_actions: list[str] | None = None  # dialog-action: the system's previous actions (None: none)


class SavedDialogModel(LazySavedModel):
    def __init__(self, model_dir: str | Path, metadata: dict | None = None, runtime: str = "tensorflow",
                 precision: str = "float32", cached_turns: int | None = None, fast_cache: bool = False):
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        self.directory = Path(model_dir)
        self.metadata = metadata if metadata is not None else artifacts.read_metadata(self.directory)
        self._saved_model = None  # loaded now, or (a fast path from the cache) when first needed
        self._zero_state: tuple[np.ndarray, np.ndarray] | None = None  # one session's zero state ([1, H] each)
        self.labels: list[str] = list(self.metadata["labels"])
        # label -> its name, for the labels that have one (SwDA's acts: "qy" -> "Yes-No-Question")
        self.label_names: dict[str, str] = dict(self.metadata.get("label_names") or {})
        self.label_index = {label: i for i, label in enumerate(self.labels)}
        self.multi_label: bool = bool(self.metadata.get("multi_label"))
        self.task: str = self.metadata.get("task", "dialog-act")
        self.state_size: int = int(self.metadata["state_size"])
        self.tokenizer = tokenizer_for(self.metadata)  # how this model's turns were cut into words in training
        # A model with a pretrained utterance encoder reads word pieces: its words are split again, as in training.
        self.word_pieces = (WordPieces.from_file(self.directory / self.metadata["word_pieces"])
                            if self.metadata.get("word_pieces") else None)
        self.max_words = int((self.metadata.get("config") or {}).get("max_words", 0)) if self.word_pieces else 0
        thresholds = self.metadata.get("thresholds")
        self.thresholds = np.array(thresholds if thresholds else [0.5] * len(self.labels), dtype=np.float32)
        self.fast = None  # training.dialog.fast_dialog.FastDialogStep (or FastEnsembleStep), once checked
        self.fast_check: dict | None = None  # what the check measured, or why there is no fast path
        if runtime != "onnx":
            self._require_saved_model()
        else:
            self._build_fast_path(fast_cache)
            if cached_turns is not None and hasattr(self.fast, "with_cache"):
                self.fast.with_cache(cached_turns)
            if precision == "int8" and hasattr(self.fast, "quantized"):
                self._use_int8()

    def _loaded(self, saved_model) -> None:
        tf = import_tensorflow()
        state = saved_model.zero_state(tf.constant(1, tf.int32))
        self._zero_state = (state["state_h"].numpy(), state["state_c"].numpy())

    @property
    def precision(self) -> str:
        return getattr(self.fast, "precision", "float32")

    def _probe_steps(self, step) -> list[np.ndarray]:
        """``step``'s probabilities ``[turns, L]`` for each probe conversation, all streamed at once from the zero
        state, fewer sessions as the shorter ones end (as the service batches them)."""
        state_h, state_c = self.zero_state(len(PROBE_DIALOGS))
        out: list[list[np.ndarray]] = [[] for _ in PROBE_DIALOGS]
        for t in range(max(len(d) for d in PROBE_DIALOGS)):
            live, turns = self._probe_turns(t)
            probabilities, state_h[live], state_c[live] = step.step([x.tokens for x in turns], [x.speaker for x in turns],
                                                                   state_h[live], state_c[live], self._actions(turns))
            for row, i in enumerate(live):
                out[i].append(probabilities[row])
        return [np.stack(p) for p in out]

    def _use_int8(self) -> None:
        """The int8 twin of the fast step, if it agrees with the float one on the probe (``INT8_TOLERANCE``, and
        ``INT8_AGREEMENT`` of the turns keep their act, or their set of actions); float32 stays otherwise."""
        float_step = self.fast
        int8_step = float_step.quantized()
        reference = np.concatenate(self._probe_steps(float_step))
        quantized = np.concatenate(self._probe_steps(int8_step))
        worst = float(np.abs(quantized - reference).max())
        if self.multi_label:
            same = ((quantized >= self.thresholds) == (reference >= self.thresholds)).all(axis=-1)
        else:
            same = quantized.argmax(-1) == reference.argmax(-1)
        agreement = float(same.mean())
        float_step.vectors.clear()  # the probe's turns are no user's
        int8_step.vectors.clear()
        if record_int8(self.fast_check, self.directory, worst, agreement, "turns' answers"):
            self.fast = int8_step

    def _build_fast_path(self, use_cache: bool) -> None:
        """The fast step from the SavedModel's weights (or the cache's: ``training.common.fast_cache``), checked
        against the SavedModel's steps on the probe conversations (or the cache's record of them) before it serves."""
        from training.common import fast_cache

        entry = fast_cache.entry_for(self.directory, PROBE_CODE) if use_cache else None
        cached = fast_cache.load(entry) if entry is not None else None
        if cached is not None:
            self._zero_state = (cached.reference["zero_state_h"], cached.reference["zero_state_c"])
        build = fast_encoder.FastEncoderDialogStep if self.word_pieces is not None else fast_dialog.fast_dialog_step
        fast, reason = build_fast_model(self.directory, build, cached.weights if cached else self.saved_model,
                                        self.metadata)
        if fast is None:
            logger.info("%s: no fast step (%s); stepping through TensorFlow", self.directory, reason)
            self.fast_check = {"runtime": "tensorflow", "reason": reason}
            self._require_saved_model()
            return
        reference = cached.reference if cached else self._probe_reference()
        self.fast_check = accept(self.directory, self._probe_difference(fast, reference),
                                 "fast step's probabilities or state", "probe dialogs", len(PROBE_DIALOGS))
        self.fast = fast
        configs = self.metadata.get("config")  # an ensemble's: one per member, whose variables are kept apart
        members = [fast_dialog.member_variables_name(i) for i in range(len(configs))] if isinstance(configs, list) else []
        fast_cache.settle(entry, cached, self.directory, self.fast_check, None if cached else self.saved_model, reference,
                          members)

    def _probe_turns(self, t: int) -> tuple[list[int], list[DialogTurnInput]]:
        """The probe conversations still going at turn ``t`` and their turns, as the model reads them."""
        actions = self.labels[:3] if self.multi_label else None
        live = [i for i, d in enumerate(PROBE_DIALOGS) if t < len(d)]
        return live, self.model_turns([DialogTurnInput(PROBE_DIALOGS[i][t][1], PROBE_DIALOGS[i][t][0], actions)
                                       for i in live])

    def _probe_reference(self) -> dict[str, np.ndarray]:
        """The SavedModel's steps on every probe conversation at once, fewer sessions as the shorter ones end: each
        turn's probabilities and new states, and the zero state."""
        reference = {"zero_state_h": self._zero_state[0], "zero_state_c": self._zero_state[1]}
        state_h, state_c = self.zero_state(len(PROBE_DIALOGS))
        for t in range(max(len(d) for d in PROBE_DIALOGS)):
            live, turns = self._probe_turns(t)
            outputs = self._step_tensorflow(turns, state_h[live], state_c[live])
            state_h[live], state_c[live] = outputs["state_h"], outputs["state_c"]
            reference.update({f"probabilities_{t}": outputs["probabilities"], f"state_h_{t}": outputs["state_h"],
                              f"state_c_{t}": outputs["state_c"]})
        return reference

    def _probe_difference(self, fast, reference: dict[str, np.ndarray]) -> float:
        """The fast step streamed over the probe from its own states, against the SavedModel's steps: each turn's
        probabilities and new state are compared, so a drift would add up and show."""
        state_h, state_c = self.zero_state(len(PROBE_DIALOGS))
        worst = 0.0
        for t in range(max(len(d) for d in PROBE_DIALOGS)):
            live, turns = self._probe_turns(t)
            probabilities, new_h, new_c = fast.step([x.tokens for x in turns], [x.speaker for x in turns],
                                                    state_h[live], state_c[live], self._actions(turns))
            worst = max(worst, max_difference([probabilities, new_h, new_c], [
                reference[f"probabilities_{t}"], reference[f"state_h_{t}"], reference[f"state_c_{t}"]]))
            state_h[live], state_c[live] = new_h, new_c
        return worst

    def action_bits(self, actions: Sequence[str] | None) -> np.ndarray:
        """Action labels -> bits ``[L]``; labels the model does not know are left out."""
        bits = np.zeros(len(self.labels), dtype=np.float32)
        for action in actions or ():
            if action in self.label_index:
                bits[self.label_index[action]] = 1.0
        return bits

    def predict(self, dialogs: Sequence[Sequence[DialogTurnInput]], max_turns_per_call: int = 4096) -> list[np.ndarray]:
        """Probabilities ``[D, L]`` for each dialog (``serve``), batched by length; results in input order."""
        if self.word_pieces is not None:
            flat = self.model_turns([turn for dialog in dialogs for turn in dialog])
            starts = np.cumsum([0] + [len(d) for d in dialogs])
            dialogs = [flat[starts[i]:starts[i + 1]] for i in range(len(dialogs))]
        tf = import_tensorflow()
        order = sorted(range(len(dialogs)), key=lambda i: len(dialogs[i]))
        results: list[np.ndarray | None] = [None] * len(dialogs)
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and (end - start + 1) * len(dialogs[order[end]]) <= max_turns_per_call:
                end += 1
            rows = [dialogs[i] for i in order[start:end]]
            turns = max(len(d) for d in rows)
            words = max((len(t.tokens) for d in rows for t in d), default=0)
            tokens = np.full((len(rows), turns, words), PAD_TOKEN, dtype=object)
            speakers = np.full((len(rows), turns), PAD_TOKEN, dtype=object)
            for r, dialog in enumerate(rows):
                for t, turn in enumerate(dialog):
                    tokens[r, t, :len(turn.tokens)] = turn.tokens
                    speakers[r, t] = turn.speaker
            args = [tf.constant(tokens, tf.string), tf.constant(speakers, tf.string),
                    tf.constant([len(d) for d in rows], tf.int32)]
            if self.multi_label:
                actions = np.zeros((len(rows), turns, len(self.labels)), dtype=np.float32)
                for r, dialog in enumerate(rows):
                    for t, turn in enumerate(dialog):
                        actions[r, t] = self.action_bits(turn.previous_actions)
                args.append(tf.constant(actions))
            probabilities = self.saved_model.serve(*args)["probabilities"].numpy()
            for r, i in enumerate(order[start:end]):
                results[i] = probabilities[r, :len(dialogs[i])]
            start = end
        return results  # type: ignore[return-value]

    def zero_state(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """``batch_size`` sessions' first state ``[B, H]`` each (the exported ``zero_state``'s row, repeated)."""
        if self._zero_state is None:
            self._require_saved_model()
        return tuple(np.repeat(row, batch_size, axis=0) for row in self._zero_state)  # type: ignore[return-value]

    def _actions(self, turns: Sequence[DialogTurnInput]) -> np.ndarray | None:
        return np.stack([self.action_bits(t.previous_actions) for t in turns]) if self.multi_label else None

    def model_turns(self, turns: Sequence[DialogTurnInput]) -> list[DialogTurnInput]:
        """Turns as the SavedModel reads them: an encoder model's words split into its pieces (``piece_turns``'s
        rule); any other model's as they are."""
        if self.word_pieces is None:
            return list(turns)
        pieces = self.word_pieces.split_many([t.tokens for t in turns])
        return [DialogTurnInput(turn_pieces(p, self.max_words), t.speaker, t.previous_actions) for p, t in zip(pieces, turns)]

    def encode_turn(self, turn: DialogTurnInput) -> np.ndarray | None:
        """An encoder model's vector of one turn ``[hidden]``, for ``step(..., turn_vectors=)``: the service encodes
        each turn in its request's thread and steps many sessions' turns at once. None where the model has no fast
        encoder (``step`` then takes the turn as it is)."""
        if self.fast is None or not hasattr(self.fast, "encode"):
            return None
        tokens = self.model_turns([turn])[0].tokens
        return None if PAD_TOKEN in tokens else self.fast.encode([tokens])[0]

    def step(self, turns: Sequence[DialogTurnInput], state_h: np.ndarray, state_c: np.ndarray,
             turn_vectors: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """One turn for each of ``len(turns)`` sessions, stacked states ``[B, H]`` in -> outputs and new states.
        ``turn_vectors [B, hidden]``: the turns already encoded (``encode_turn``)."""
        if turn_vectors is not None and self.fast is not None:
            probabilities, state_h, state_c = self.fast.step_encoded(turn_vectors, [t.speaker for t in turns], state_h,
                                                                     state_c, self._actions(turns))
            return self._outputs(probabilities, state_h, state_c)
        turns = self.model_turns(turns)
        if self.fast is None or any(PAD_TOKEN in t.tokens for t in turns):
            return self._step_tensorflow(turns, state_h, state_c)
        probabilities, state_h, state_c = self.fast.step([t.tokens for t in turns], [t.speaker for t in turns],
                                                         state_h, state_c, self._actions(turns))
        return self._outputs(probabilities, state_h, state_c)

    def _outputs(self, probabilities: np.ndarray, state_h: np.ndarray, state_c: np.ndarray) -> dict[str, np.ndarray]:
        """The fast step's answers with the SavedModel's other outputs, from the same probabilities."""
        outputs = {"probabilities": probabilities, "state_h": state_h, "state_c": state_c}
        if self.multi_label:
            outputs["predicted"] = probabilities >= self.thresholds
        else:
            best = probabilities.argmax(axis=-1)
            outputs["labels"] = np.array([self.labels[k].encode() for k in best], dtype=object)
            outputs["scores"] = probabilities.max(axis=-1)
        return outputs

    def _step_tensorflow(self, turns: Sequence[DialogTurnInput], state_h: np.ndarray,
                         state_c: np.ndarray) -> dict[str, np.ndarray]:
        tf = import_tensorflow()
        args = [tf.constant(pad_tokens([t.tokens for t in turns]), tf.string),
                tf.constant(np.array([t.speaker for t in turns], dtype=object), tf.string),
                tf.constant(state_h, tf.float32), tf.constant(state_c, tf.float32)]
        if self.multi_label:
            args.append(tf.constant(self._actions(turns)))
        return {name: value.numpy() for name, value in self.saved_model.step(*args).items()}

    def decide(self, probabilities: np.ndarray) -> list[str] | str:
        """One turn's probabilities ``[L]`` -> its act, or its set of actions (tuned thresholds)."""
        if self.multi_label:
            return [self.labels[i] for i in np.flatnonzero(probabilities >= self.thresholds)]
        return self.labels[int(np.argmax(probabilities))]

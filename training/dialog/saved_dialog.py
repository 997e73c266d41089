"""An exported dialog SavedModel as a Python object: whole dialogs, or one turn per session from a given state.

Used by evaluation and by the service, so both call the model as a deployed consumer would. It needs
TensorFlow and the model directory only: no trainer, model builder or scorer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf

from training.common import artifacts
from training.common.saved_model import pad_tokens
from training.common.tokenizer import tokenizer_for
from training.common.vocab import PAD_TOKEN


@dataclass
class DialogTurnInput:
    tokens: list[str]
    speaker: str
    previous_actions: list[str] | None = None  # dialog-action: the system's previous actions (None: none)


class SavedDialogModel:
    def __init__(self, model_dir: str | Path, metadata: dict | None = None):
        self.directory = Path(model_dir)
        self.metadata = metadata if metadata is not None else artifacts.read_metadata(self.directory)
        self.saved_model = tf.saved_model.load(str(self.directory))
        self.labels: list[str] = list(self.metadata["labels"])
        # label -> its name, for the labels that have one (SwDA's acts: "qy" -> "Yes-No-Question")
        self.label_names: dict[str, str] = dict(self.metadata.get("label_names") or {})
        self.label_index = {label: i for i, label in enumerate(self.labels)}
        self.multi_label: bool = bool(self.metadata.get("multi_label"))
        self.task: str = self.metadata.get("task", "dialog-act")
        self.state_size: int = int(self.metadata["state_size"])
        self.tokenizer = tokenizer_for(self.metadata)  # how this model's turns were cut into words in training
        thresholds = self.metadata.get("thresholds")
        self.thresholds = np.array(thresholds if thresholds else [0.5] * len(self.labels), dtype=np.float32)

    def action_bits(self, actions: Sequence[str] | None) -> np.ndarray:
        """Action labels -> bits ``[L]``; labels the model does not know are left out."""
        bits = np.zeros(len(self.labels), dtype=np.float32)
        for action in actions or ():
            if action in self.label_index:
                bits[self.label_index[action]] = 1.0
        return bits

    def predict(self, dialogs: Sequence[Sequence[DialogTurnInput]], max_turns_per_call: int = 4096) -> list[np.ndarray]:
        """Probabilities ``[D, L]`` for each dialog (``serve``), batched by length; results in input order."""
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
        state = self.saved_model.zero_state(tf.constant(batch_size, tf.int32))
        return state["state_h"].numpy(), state["state_c"].numpy()

    def step(self, turns: Sequence[DialogTurnInput], state_h: np.ndarray, state_c: np.ndarray) -> dict[str, np.ndarray]:
        """One turn for each of ``len(turns)`` sessions, stacked states ``[B, H]`` in -> outputs and new states."""
        args = [tf.constant(pad_tokens([t.tokens for t in turns]), tf.string),
                tf.constant(np.array([t.speaker for t in turns], dtype=object), tf.string),
                tf.constant(state_h, tf.float32), tf.constant(state_c, tf.float32)]
        if self.multi_label:
            args.append(tf.constant(np.stack([self.action_bits(t.previous_actions) for t in turns])))
        return {name: value.numpy() for name, value in self.saved_model.step(*args).items()}

    def decide(self, probabilities: np.ndarray) -> list[str] | str:
        """One turn's probabilities ``[L]`` -> its act, or its set of actions (tuned thresholds)."""
        if self.multi_label:
            return [self.labels[i] for i in np.flatnonzero(probabilities >= self.thresholds)]
        return self.labels[int(np.argmax(probabilities))]

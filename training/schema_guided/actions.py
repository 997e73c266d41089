"""Next actions in a service's own terms: an action model's ``ACT(slot)`` labels mapped onto a service's slots by what
their descriptions say.

An action model trained on SGD predicts labels over the slots of the services it was trained on (``REQUEST(city)``,
``OFFER(restaurant_name)``). For a turn of a service, each label's slot is matched to the service's own slot whose
description is nearest (cosine of the schema-guided encoder's vectors of "name : description"):

    model label ACT(x)  ->  ACT(s*)   s* = x if the service has a slot named x, else argmax_s cos(v_x, e_s)
    labels without a slot of a schema (GOODBYE, REQ_MORE, INFORM_COUNT(count), OFFER_INTENT(intent)) stay as they are

where ``v_x`` is the mean vector of slot ``x`` over the training schemas that have it, and ``e_s`` the vector of the
service's slot ``s``. A service's candidate labels are ``ACT(s)`` for every act the model knows and every slot ``s`` of
the service, plus the labels without a slot; a candidate's score is the highest probability of the model labels that
map to it, and it is predicted when one of those is (each at its own tuned threshold). The previous system actions a
turn takes as input go the other way: ``ACT(s)`` -> the model label ``ACT(x)`` whose slot is nearest to ``s``.

This reads the schema but is not trained to: it is the bridge from a model with a fixed label list to the service's
names, and its accuracy on unseen services is measured (``seqtag evaluate ... --schemas``), not assumed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

LABEL = re.compile(r"^([A-Z_]+)\((.*)\)$")
NOT_A_SLOT = {"", "intent", "count"}  # slots of SGD acts that name no slot of a schema


def split_label(label: str) -> tuple[str, str]:
    match = LABEL.match(label)
    return (match.group(1), match.group(2)) if match else (label, "")


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-9)


@dataclass
class ActionMap:
    """One (action model, service) pair: model label index -> candidate index, and back."""

    candidates: list[str]  # the service's labels, in a fixed order
    forward: np.ndarray  # int[L]: the candidate each model label maps to (-1: none)
    backward: dict[str, str]  # candidate -> the model label fed back for it

    def scores(self, probabilities: np.ndarray) -> np.ndarray:
        """Model probabilities ``[L]`` -> candidate scores ``[C]`` (the highest of the labels mapped to each)."""
        out = np.zeros(len(self.candidates), np.float32)
        mapped = self.forward >= 0
        np.maximum.at(out, self.forward[mapped], probabilities[mapped])
        return out

    def decide(self, predicted: Sequence[str], label_index: dict[str, int]) -> list[str]:
        """The model's predicted labels -> the service's (sorted, unique)."""
        return sorted({self.candidates[self.forward[label_index[label]]] for label in predicted
                       if self.forward[label_index[label]] >= 0})

    def to_model(self, actions: Sequence[str]) -> list[str]:
        """The service's actions (e.g. the system's previous ones) -> model labels; unknown ones are dropped."""
        return sorted({self.backward[a] for a in actions if a in self.backward})


def source_slot_vectors(encodings: Sequence) -> dict[str, np.ndarray]:
    """slot name -> the unit mean of its vectors over the training services' encodings (``ServiceEncoding``)."""
    sums: dict[str, list[np.ndarray]] = {}
    for encoding in encodings:
        for name, vector in zip(encoding.all_slots, _unit(encoding.all_vectors)):
            sums.setdefault(name, []).append(vector)
    return {name: _unit(np.mean(vectors, axis=0)) for name, vectors in sums.items()}


def build_action_map(labels: Sequence[str], sources: dict[str, np.ndarray], encoding, trained: bool = False) -> ActionMap:
    """``labels``: the action model's; ``sources``: ``source_slot_vectors``; ``encoding``: the service's. ``trained``:
    the model was trained on this very schema, so a label naming another service's slot is a mistake of the model
    and is dropped rather than mapped."""
    slots = list(encoding.all_slots)
    targets = _unit(encoding.all_vectors) if slots else np.zeros((0, 1), np.float32)
    acts = sorted({split_label(l)[0] for l in labels if split_label(l)[1] not in NOT_A_SLOT})
    fixed = sorted(l for l in labels if split_label(l)[1] in NOT_A_SLOT)
    candidates = [*fixed, *(f"{act}({slot})" for act in acts for slot in slots)]
    index = {c: i for i, c in enumerate(candidates)}
    forward = np.full(len(labels), -1, np.int64)
    nearest: dict[str, str] = {}
    for i, label in enumerate(labels):
        act, slot = split_label(label)
        if slot in NOT_A_SLOT:
            forward[i] = index[label]
            continue
        if not slots:
            continue
        if slot in slots:
            target = slot
        elif trained:
            continue
        elif slot in sources:
            target = slots[int(np.argmax(targets @ sources[slot]))]
        else:
            continue
        nearest[label] = target
        forward[i] = index[f"{act}({target})"]
    backward = {label: label for label in fixed}
    names = [n for n in sources]
    source_matrix = np.stack([sources[n] for n in names]) if names else np.zeros((0, 1), np.float32)
    model_labels = set(labels)
    for act in acts:
        own = [j for j, n in enumerate(names) if f"{act}({n})" in model_labels]
        for s, slot in enumerate(slots):
            if f"{act}({slot})" in model_labels:
                backward[f"{act}({slot})"] = f"{act}({slot})"
            elif own:
                best = own[int(np.argmax(source_matrix[own] @ targets[s]))]
                backward[f"{act}({slot})"] = f"{act}({names[best]})"
    return ActionMap(candidates, forward, backward)

"""Scores of dialog models (scikit-learn): dialog acts (one label a turn) and system actions (a set a turn).

``evaluate_dialog_model`` always scores the exported SavedModel (``SavedDialogModel``), never the training
object, so the figures are those a deployed model gives.

Only turns with a gold label count (``Turn.labels is not None``). A gold label the model does not know
counts as wrong: it is scored under its own name, so a model cannot look better by ignoring it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, f1_score
from sklearn.preprocessing import MultiLabelBinarizer

from training.common.tokenizer import Tokenizer
from training.dialog.data import Dialog
from training.dialog.saved_dialog import DialogTurnInput, SavedDialogModel


def act_metrics(gold: Sequence[str], predicted: Sequence[str]) -> dict:
    """Accuracy, macro-F1 over the gold labels, and per-label precision/recall/F1/support."""
    labels = sorted(set(gold))
    report = classification_report(gold, predicted, labels=labels, output_dict=True, zero_division=0)
    return {"accuracy": float(accuracy_score(gold, predicted)),
            "macro_f1": float(f1_score(gold, predicted, labels=labels, average="macro", zero_division=0)),
            "utterances": len(gold),
            "per_label": {label: {k: float(v) for k, v in report[label].items()} for label in labels}}


def action_metrics(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict:
    """Micro- and macro-F1 over act(slot) labels, exact-set match, and a per-label report."""
    binarizer = MultiLabelBinarizer()
    binarizer.fit([*gold, *predicted])
    y_true, y_pred = binarizer.transform(gold), binarizer.transform(predicted)
    classes = list(binarizer.classes_)
    in_gold = [i for i, _ in enumerate(classes) if y_true[:, i].any()]
    report = classification_report(y_true, y_pred, labels=list(range(len(classes))), target_names=classes,
                                   output_dict=True, zero_division=0)
    exact = float(np.mean([set(g) == set(p) for g, p in zip(gold, predicted)])) if gold else 0.0
    return {"micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
            "macro_f1": float(f1_score(y_true, y_pred, labels=in_gold, average="macro", zero_division=0)),
            "exact_match": exact, "turns": len(gold),
            "per_label": {label: {k: float(v) for k, v in report[label].items()} for label in classes}}


def format_dialog_report(metrics: dict, top: int = 15) -> str:
    """A readable summary: headline figures, then the most frequent labels' scores."""
    if "accuracy" in metrics:
        lines = [f"accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  over {metrics['utterances']} utterances"]
    else:
        lines = [f"micro-F1 {metrics['micro_f1']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  "
                 f"exact match {metrics['exact_match']:.4f}  over {metrics['turns']} turns"]
    served = metrics.get("served_path")
    if served:
        cache = served.get("turn_vector_cache")
        lines.append(f"streamed through the service's step: {served['runtime']}, {served['precision']}"
                     + (f", turn vector cache hit rate {cache['hit_rate']:.3f}" if cache else ""))
    lines.append(f"{'label':<32} {'precision':>9} {'recall':>9} {'F1':>9} {'support':>9}")
    by_support = sorted(metrics["per_label"].items(), key=lambda item: -item[1]["support"])
    for label, scores in by_support[:top]:
        lines.append(f"{label:<32} {scores['precision']:9.3f} {scores['recall']:9.3f} {scores['f1-score']:9.3f} "
                     f"{int(scores['support']):9d}")
    return "\n".join(lines)


def tune_thresholds(probabilities: np.ndarray, targets: np.ndarray, min_support: int = 10) -> tuple[np.ndarray, float]:
    """Per-label thresholds that maximize each label's F1 on ``probabilities [N, L]`` vs bits ``targets [N, L]``.

    Labels with fewer than ``min_support`` positives use one global threshold (the one maximizing
    micro-F1 over all labels), since a threshold tuned on a handful of examples would overfit them.
    Returns (thresholds [L], the global threshold).
    """
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2)

    def f1(tp, fp, fn):
        return 2 * tp / np.maximum(2 * tp + fp + fn, 1)

    positive = targets > 0.5
    best_global, best_global_f1 = 0.5, -1.0
    per_label_f1 = np.full((len(grid), targets.shape[1]), -1.0)
    for g, threshold in enumerate(grid):
        predicted = probabilities >= threshold
        tp = (predicted & positive).sum(0)
        fp = (predicted & ~positive).sum(0)
        fn = (~predicted & positive).sum(0)
        per_label_f1[g] = f1(tp, fp, fn)
        micro = f1(tp.sum(), fp.sum(), fn.sum())
        if micro > best_global_f1:
            best_global, best_global_f1 = float(threshold), float(micro)
    thresholds = np.full(targets.shape[1], best_global, dtype=np.float32)
    supported = positive.sum(0) >= min_support
    thresholds[supported] = grid[np.argmax(per_label_f1[:, supported], axis=0)]
    return thresholds, best_global


def dialog_inputs(dialog: Dialog, multi_label: bool, tokenizer: Tokenizer) -> list[DialogTurnInput]:
    """A read dialog as model inputs, its turns cut into words by ``tokenizer`` (the model's); for actions, each
    turn gets the previous turn's gold actions (what the system did), as in training."""
    inputs, previous = [], None
    for turn in dialog.turns:
        tokens = [token.text for token in tokenizer.tokenize(turn.text)]
        inputs.append(DialogTurnInput(tokens, turn.speaker, list(previous or ()) if multi_label else None))
        previous = turn.labels
    return inputs


def streamed_probabilities(model: SavedDialogModel, dialogs: Sequence[Sequence[DialogTurnInput]],
                           sessions: int = 64) -> list[np.ndarray]:
    """Each dialog's probabilities ``[T, L]`` as the service answers them: ``sessions`` conversations open at once,
    each turn stepped (``SavedDialogModel.step``, the fast step the service runs) with the turns of the others that
    are at it, from each session's own state; a conversation that ends makes room for the next."""
    results: list[list[np.ndarray]] = [[] for _ in dialogs]
    queue = list(range(len(dialogs)))[::-1]
    open_: list[int] = []  # dialog indices being streamed
    state_h, state_c = model.zero_state(sessions)
    slots: dict[int, int] = {}  # dialog -> its row of the state
    free = list(range(sessions))[::-1]
    while queue or open_:
        while queue and free:
            dialog = queue.pop()
            if not dialogs[dialog]:
                continue
            slots[dialog] = free.pop()
            state_h[slots[dialog]] = 0.0
            state_c[slots[dialog]] = 0.0
            open_.append(dialog)
        if not open_:
            break
        rows = [slots[d] for d in open_]
        out = model.step([dialogs[d][len(results[d])] for d in open_], state_h[rows], state_c[rows])
        state_h[rows], state_c[rows] = out["state_h"], out["state_c"]
        for row, dialog in enumerate(open_):
            results[dialog].append(out["probabilities"][row])
        for dialog in [d for d in open_ if len(results[d]) == len(dialogs[d])]:
            open_.remove(dialog)
            free.append(slots.pop(dialog))
    return [np.stack(r) if r else np.zeros((0, len(model.labels)), np.float32) for r in results]


def evaluate_dialog_model(model: SavedDialogModel, dialogs: Sequence[Dialog], with_predictions: bool = False,
                          streamed: bool = False) -> dict:
    """Dialog-act or action metrics over the labelled turns; ``with_predictions`` adds ``gold`` and
    ``predicted`` (one label, or a list of labels, per turn). ``streamed``: the turns go through the step the
    service runs (``streamed_probabilities``), not the SavedModel's whole-dialog ``serve``."""
    inputs = [dialog_inputs(d, model.multi_label, model.tokenizer) for d in dialogs]
    probabilities = streamed_probabilities(model, inputs) if streamed else model.predict(inputs)
    gold, predicted = [], []
    for dialog, dialog_probabilities in zip(dialogs, probabilities):
        for turn, turn_probabilities in zip(dialog.turns, dialog_probabilities):
            if turn.labels is None:
                continue
            gold.append(list(turn.labels) if model.multi_label else turn.labels[0])
            predicted.append(model.decide(turn_probabilities))
    metrics = action_metrics(gold, predicted) if model.multi_label else act_metrics(gold, predicted)
    if with_predictions:
        metrics.update(gold=gold, predicted=predicted)
    return metrics

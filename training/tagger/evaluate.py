"""Evaluation of an exported tagger on gold-tagged sentences: token accuracy, per-tag P/R/F1, OOV split.

Always runs on the exported SavedModel (``SavedTagger``), never on the training object, so the figures
are those a deployed model gives. A token is out-of-vocabulary (OOV) when the model's word vocabulary
maps it to the unknown id (its character features still see it).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from training.tagger.data import TaggedSentence
from training.tagger.saved_tagger import SavedTagger


def _accuracy(correct: np.ndarray, selected: np.ndarray) -> dict[str, Any]:
    n = int(selected.sum())
    return {"tokens": n, "accuracy": float(correct[selected].mean()) if n else None}


def evaluate_tagger(tagger: SavedTagger, sentences: Sequence[TaggedSentence], batch_size: int = 256,
                    with_predictions: bool = False) -> dict[str, Any]:
    """Accuracy (all, OOV, in-vocabulary), macro-F1 and per-tag figures; ``with_predictions`` adds the
    flat ``gold`` and ``predicted`` tag lists (for a confusion matrix)."""
    if not sentences:
        raise ValueError("no sentences to evaluate on")
    token_lists = [list(s.words) for s in sentences]
    start = time.perf_counter()
    predictions = tagger.tag(token_lists, batch_size=batch_size)
    seconds = time.perf_counter() - start
    gold = np.array([t for s in sentences for t in s.tags], dtype=object)
    predicted = np.array([t for p in predictions for t in p.tags], dtype=object)
    oov = np.concatenate(tagger.unknown_word_mask(token_lists, batch_size=batch_size))
    correct = gold == predicted

    labels = sorted(set(gold) | set(predicted))
    precision, recall, f1, support = precision_recall_fscore_support(gold, predicted, labels=labels, zero_division=0)
    per_tag = {label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
               for label, p, r, f, s in zip(labels, precision, recall, f1, support)}
    metrics = {
        "accuracy": float(correct.mean()),
        "tokens": int(gold.size),
        "sentences": len(sentences),
        "macro_f1": float(np.mean([v["f1"] for v in per_tag.values() if v["support"] > 0])),
        "oov": _accuracy(correct, oov),
        "in_vocabulary": _accuracy(correct, ~oov),
        "per_tag": per_tag,
        "seconds": seconds,
        "tokens_per_second": gold.size / seconds if seconds > 0 else None,
    }
    if with_predictions:
        metrics.update(gold=gold.tolist(), predicted=predicted.tolist())
    return metrics


def format_report(metrics: dict[str, Any], title: str = "") -> str:
    """A readable table of ``evaluate_tagger``'s figures."""
    def pct(value):
        return "   n/a" if value is None else f"{100 * value:6.2f}"

    lines = [title] if title else []
    lines += [f"accuracy        {pct(metrics['accuracy'])} %  over {metrics['tokens']} tokens, {metrics['sentences']} sentences",
              f"in-vocabulary   {pct(metrics['in_vocabulary']['accuracy'])} %  ({metrics['in_vocabulary']['tokens']} tokens)",
              f"out-of-vocab    {pct(metrics['oov']['accuracy'])} %  ({metrics['oov']['tokens']} tokens)",
              f"macro F1        {pct(metrics['macro_f1'])} %",
              f"speed           {metrics['tokens_per_second'] or 0:,.0f} tokens/s",
              "",
              f"{'tag':<10}{'precision':>10}{'recall':>10}{'F1':>10}{'support':>10}"]
    for label, row in metrics["per_tag"].items():
        lines.append(f"{label:<10}{pct(row['precision']):>10}{pct(row['recall']):>10}{pct(row['f1']):>10}{row['support']:>10}")
    return "\n".join(lines)

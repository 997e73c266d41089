"""Scores of a schema-guided span tagger on SGD turns: exact-label span F1 overall, on the turns of services training
had and of services it lacked (its zero-shot figure), unlabelled (boundaries only), and per slot label.

A span is right when its first word, end and label all match a gold span of its turn. "Services training had" are the
ones in the model's ``schemas.json`` (the schemas it was trained with).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

Spans = Sequence[tuple[str, int, int]]


def prf(matched: int, gold: int, predicted: int) -> dict[str, Any]:
    precision = matched / predicted if predicted else 0.0
    recall = matched / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "spans": gold, "predicted_spans": predicted}


def span_metrics(gold: Sequence[Spans], predicted: Sequence[Spans], services: Sequence[str],
                 trained_services: set[str]) -> dict[str, Any]:
    """gold, predicted: per turn, spans (label, first, end); services: per turn, its service."""
    groups: dict[str, list[int]] = {"all": list(range(len(gold))),
                                    "seen_services": [i for i, s in enumerate(services) if s in trained_services],
                                    "unseen_services": [i for i, s in enumerate(services) if s not in trained_services]}

    def scores(rows: list[int], labelled: bool = True) -> dict[str, Any]:
        key = (lambda s: tuple(s)) if labelled else (lambda s: tuple(s[1:]))
        matched = sum(len({key(s) for s in gold[i]} & {key(s) for s in predicted[i]}) for i in rows)
        return prf(matched, sum(len(gold[i]) for i in rows), sum(len(predicted[i]) for i in rows))

    metrics = {**scores(groups["all"]), "turns": len(gold), "unlabelled": scores(groups["all"], labelled=False)}
    for name in ("seen_services", "unseen_services"):
        rows = groups[name]
        metrics[name] = {**scores(rows), "turns": len(rows), "unlabelled_f1": scores(rows, labelled=False)["f1"],
                         "services": sorted({services[i] for i in rows})}
    matched: Counter = Counter()
    gold_count: Counter = Counter()
    predicted_count: Counter = Counter()
    for g, p in zip(gold, predicted):
        gold_set, predicted_set = set(map(tuple, g)), set(map(tuple, p))
        gold_count.update(s[0] for s in gold_set)
        predicted_count.update(s[0] for s in predicted_set)
        matched.update(s[0] for s in gold_set & predicted_set)
    metrics["per_label"] = {label: {**prf(matched[label], gold_count[label], predicted_count[label]),
                                    "support": gold_count[label]}
                            for label in sorted(gold_count | predicted_count, key=lambda l: -gold_count[l])}
    return metrics


def format_schema_span_report(metrics: dict[str, Any], title: str = "", top: int = 20) -> str:
    def pct(value: float) -> str:
        return f"{100 * value:.2f}"

    lines = [title] if title else []
    lines.append(f"span F1 (exact label) {pct(metrics['f1'])}  P {pct(metrics['precision'])}  R {pct(metrics['recall'])}"
                 f"  ({metrics['spans']} gold spans, {metrics['turns']} turns); boundaries only "
                 f"{pct(metrics['unlabelled']['f1'])}")
    for name, what in (("seen_services", "services training had"), ("unseen_services", "services training lacked")):
        m = metrics[name]
        lines.append(f"  {what}: F1 {pct(m['f1'])}, boundaries {pct(m['unlabelled_f1'])} ({m['spans']} spans, "
                     f"{m['turns']} turns, {len(m['services'])} services)")
    for label, m in list(metrics["per_label"].items())[:top]:
        lines.append(f"    {label:32s} F1 {pct(m['f1'])}  ({m['support']})")
    return "\n".join(lines)

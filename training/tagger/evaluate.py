"""Evaluation of an exported tagger on gold-tagged sentences: token accuracy, per-tag P/R/F1, OOV split; of a span
model: span precision / recall / F1 (seqeval, exact label and boundaries; boundaries only; by label and by whether
training saw the label or the sentence's condition); and of a tokenizer (with a tagger behind it) on raw text
against the gold words.

Always runs on the exported SavedModel (``SavedTagger``), never on the training object, so the figures
are those a deployed model gives. A token is out-of-vocabulary (OOV) when the model's word vocabulary
maps it to the unknown id (its character features still see it).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from training.tagger.data import TaggedSentence
from training.tagger.saved_tagger import SavedTagger
from training.tagger.spans import OUTSIDE, parse_tag, tags_to_spans


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


# --- raw text: tokenize, split sentences and tag, then align with the gold words (the CoNLL 2018 shared task's way)


@dataclass(frozen=True)
class RawText:
    """A text to tokenize, with its gold words: character spans, tags, and the spans of its sentences."""

    text: str
    word_spans: tuple[tuple[int, int], ...]
    tags: tuple[str, ...]
    sentence_spans: tuple[tuple[int, int], ...]


def raw_texts(sentences: Sequence[TaggedSentence], paragraphs: bool = True) -> list[RawText]:
    """Each sentence's ``# text`` alone, or (``paragraphs``) the texts of each paragraph's sentences joined by a
    space, paragraphs starting at ``# newpar`` / ``# newdoc``. Sentences without a text the words follow are left out."""
    groups: list[list[TaggedSentence]] = []
    for sentence in sentences:
        if sentence.text is None or not sentence.word_spans:
            continue
        if not paragraphs or sentence.new_paragraph or not groups:
            groups.append([])
        groups[-1].append(sentence)
    texts = []
    for group in groups:
        text, spans, tags, sentence_spans = "", [], [], []
        for sentence in group:
            offset = len(text) + (1 if text else 0)
            text = f"{text} {sentence.text}" if text else sentence.text
            spans += [(offset + start, offset + end) for start, end in sentence.word_spans]
            tags += sentence.tags
            sentence_spans.append((offset + sentence.word_spans[0][0], offset + sentence.word_spans[-1][1]))
        texts.append(RawText(text, tuple(spans), tuple(tags), tuple(sentence_spans)))
    return texts


def span_scores(matched: int, gold: int, system: int) -> dict[str, Any]:
    precision = matched / system if system else 0.0
    recall = matched / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "gold": gold, "system": system, "matched": matched}


def evaluate_raw_text(texts: Sequence[RawText], tokenizer, tagger: SavedTagger | None = None,
                      batch_size: int = 256) -> dict[str, Any]:
    """Words and sentences of ``tokenizer`` against the gold ones: a system word counts when its character span is
    a gold word's (EWT's multiword tokens split into their words' characters, so spans compare exactly). With a
    ``tagger``, each system sentence is tagged and ``upos`` scores the aligned words whose tag is the gold one:
    F1 over gold and system words, as the CoNLL 2018 shared task scores UPOS from raw text, and the accuracy
    on aligned words."""
    start = time.perf_counter()
    split = [tokenizer.sentences(t.text) for t in texts]
    seconds = time.perf_counter() - start
    words, sentences, tagged_correct = Counter(), Counter(), 0
    system_sentences = [[token.text for token in sentence] for parts in split for sentence in parts]
    predictions = iter(tagger.tag(system_sentences, batch_size=batch_size)) if tagger is not None else None
    for text, parts in zip(texts, split):
        gold = dict(zip(text.word_spans, text.tags))
        system = {}
        for sentence in parts:
            tags = next(predictions).tags if predictions is not None else [None] * len(sentence)
            system.update({(token.start, token.end): tag for token, tag in zip(sentence, tags)})
        aligned = gold.keys() & system.keys()
        words.update(gold=len(gold), system=len(system), matched=len(aligned))
        tagged_correct += sum(gold[span] == system[span] for span in aligned)
        system_sentence_spans = {(s[0].start, s[-1].end) for s in parts}
        sentences.update(gold=len(text.sentence_spans), system=len(system_sentence_spans),
                         matched=len(set(text.sentence_spans) & system_sentence_spans))
    result = {"tokenizer": tokenizer.name, "texts": len(texts), "characters": sum(len(t.text) for t in texts),
              "words": span_scores(words["matched"], words["gold"], words["system"]),
              "sentences": span_scores(sentences["matched"], sentences["gold"], sentences["system"]),
              "tokenizer_seconds": seconds}
    if tagger is not None:
        result["upos"] = {**span_scores(tagged_correct, words["gold"], words["system"]),
                          "aligned_accuracy": tagged_correct / words["matched"] if words["matched"] else None}
    return result


# --- span models ---


def _span_scores(gold: list[list[str]], predicted: list[list[str]], scheme: str) -> dict[str, Any]:
    """seqeval's strict span scores (a span counts when its label and both ends are right)."""
    from seqeval.metrics import f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2, IOBES

    mode = {"scheme": IOB2 if scheme == "bio" else IOBES, "mode": "strict", "zero_division": 0}
    spans = sum(len(tags_to_spans(tags, scheme)) for tags in gold)
    if not spans and not any(t != OUTSIDE for tags in predicted for t in tags):
        return {"precision": None, "recall": None, "f1": None, "spans": 0}
    return {"precision": float(precision_score(gold, predicted, **mode)), "recall": float(recall_score(gold, predicted, **mode)),
            "f1": float(f1_score(gold, predicted, **mode)), "spans": spans}


def _relabel(tags: list[str], scheme: str, keep=None, label: str | None = None) -> list[str]:
    """Tags with spans of labels outside ``keep`` dropped (O), or every label renamed ``label``."""
    out = []
    for tag in tags:
        prefix, name = parse_tag(tag, scheme)
        if prefix == OUTSIDE or (keep is not None and name not in keep):
            out.append(OUTSIDE)
        else:
            out.append(f"{prefix}-{label or name}")
    return out


def evaluate_spans(tagger: SavedTagger, sentences: Sequence[TaggedSentence], batch_size: int = 256,
                   with_predictions: bool = False) -> dict[str, Any]:
    """A span model on gold-tagged sentences (each with its condition, if any): ``precision``, ``recall``, ``f1``
    (exact label and boundaries), ``spans`` (gold), ``unlabelled`` (boundaries only, any label), ``per_label``,
    ``seen_labels`` / ``unseen_labels`` (gold labels the model was trained on, or not: it cannot find those), and
    ``seen_conditions`` / ``unseen_conditions`` (sentences whose condition, e.g. SGD service, training had)."""
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2, IOBES

    if not sentences:
        raise ValueError("no sentences to evaluate on")
    scheme = tagger.metadata.get("scheme", "bio")
    start = time.perf_counter()
    predictions = tagger.tag([list(s.words) for s in sentences], batch_size=batch_size,
                             conditions=[s.condition for s in sentences])
    seconds = time.perf_counter() - start
    gold = [list(s.tags) for s in sentences]
    predicted = [p.tags for p in predictions]
    model_labels = {parse_tag(t, scheme)[1] for t in tagger.labels} - {""}
    gold_labels = {parse_tag(t, scheme)[1] for tags in gold for t in tags} - {""}
    report = classification_report(gold, predicted, mode="strict", scheme=IOB2 if scheme == "bio" else IOBES,
                                   output_dict=True, zero_division=0)
    per_label = {label: {"precision": float(r["precision"]), "recall": float(r["recall"]), "f1": float(r["f1-score"]),
                         "support": int(r["support"])}
                 for label, r in sorted(report.items(), key=lambda item: -item[1]["support"]) if " avg" not in label}
    trained_conditions = set(tagger.metadata.get("conditions") or [])
    seen = [i for i, s in enumerate(sentences) if s.condition in trained_conditions]
    unseen = [i for i, s in enumerate(sentences) if s.condition not in trained_conditions]
    metrics = {
        **_span_scores(gold, predicted, scheme),
        "sentences": len(sentences),
        "predicted_spans": sum(len(p.spans or ()) for p in predictions),
        "unlabelled": _span_scores([_relabel(t, scheme, label="SPAN") for t in gold],
                                   [_relabel(t, scheme, label="SPAN") for t in predicted], scheme),
        "seen_labels": _span_scores([_relabel(t, scheme, keep=model_labels) for t in gold],
                                    [_relabel(t, scheme, keep=model_labels) for t in predicted], scheme),
        "unseen_labels": {**_span_scores([_relabel(t, scheme, keep=gold_labels - model_labels) for t in gold],
                                         [_relabel(t, scheme, keep=gold_labels - model_labels) for t in predicted],
                                         scheme), "labels": sorted(gold_labels - model_labels)},
        "per_label": per_label,
        "seconds": seconds,
    }
    if trained_conditions:
        for name, rows in (("seen_conditions", seen), ("unseen_conditions", unseen)):
            subset = _span_scores([gold[i] for i in rows], [predicted[i] for i in rows], scheme)
            unlabelled = _span_scores([_relabel(gold[i], scheme, label="SPAN") for i in rows],
                                      [_relabel(predicted[i], scheme, label="SPAN") for i in rows], scheme)
            conditions = sorted({sentences[i].condition or "" for i in rows})
            metrics[name] = {**subset, "sentences": len(rows), "unlabelled_f1": unlabelled["f1"], "conditions": conditions}
    if with_predictions:
        metrics.update(gold=gold, predicted=predicted)
    return metrics


def format_span_report(metrics: dict[str, Any], title: str = "", top: int = 20) -> str:
    def pct(value):
        return "   n/a" if value is None else f"{100 * value:6.2f}"

    lines = [title] if title else []
    lines.append(f"span F1 {pct(metrics['f1'])} %  (P {pct(metrics['precision'])}, R {pct(metrics['recall'])}) over "
                 f"{metrics['spans']} spans, {metrics['sentences']} sentences")
    lines.append(f"boundaries only, any label: F1 {pct(metrics['unlabelled']['f1'])} %")
    for name in ("seen_conditions", "unseen_conditions"):
        if name in metrics:
            m = metrics[name]
            lines.append(f"{name.replace('_', ' '):18} F1 {pct(m['f1'])} %  boundaries {pct(m['unlabelled_f1'])} %  "
                         f"({m['spans']} spans, {len(m['conditions'])} conditions)")
    lines.append(f"labels never trained on: {len(metrics['unseen_labels']['labels'])} "
                 f"({metrics['unseen_labels']['spans']} gold spans)")
    lines += ["", f"{'label':<28}{'precision':>10}{'recall':>10}{'F1':>10}{'support':>10}"]
    for label, row in list(metrics["per_label"].items())[:top]:
        lines.append(f"{label:<28}{pct(row['precision']):>10}{pct(row['recall']):>10}{pct(row['f1']):>10}{row['support']:>10}")
    return "\n".join(lines)

"""Evaluation of an exported tagger on gold-tagged sentences: token accuracy, per-tag P/R/F1, OOV split; and of
a tokenizer (with a tagger behind it) on raw text against the gold words.

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

"""Span tagging: BIO/BIOES conversions, the readers (SGD spans, CoNLL-2003 columns) on inline samples, constrained
decoding (never an ill-formed sequence; the exported graph's decoder equals the NumPy one), and a tiny span model
trained, exported and scored end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from training.cli import main
from training.common.errors import DataFormatError
from training.tagger.saved_tagger import SavedTagger
from training.tagger.serving_graph import constrained_viterbi, spans_of
from training.tagger.spans import (SpanDecoder, constrained_viterbi as numpy_viterbi, parse_tag, read_conll_columns, read_sgd_spans,
                                   spans_to_tags, tags_to_spans, transition_constraints)


@pytest.mark.parametrize("scheme, tags", [
    ("bio", ["B-city", "I-city", "O", "B-time", "B-time", "I-time"]),
    ("bioes", ["B-city", "E-city", "O", "S-time", "B-time", "E-time"]),
])
def test_tags_and_spans_round_trip(scheme, tags):
    spans = [("city", 0, 2), ("time", 3, 4), ("time", 4, 6)]
    assert tags_to_spans(tags, scheme) == spans
    assert spans_to_tags(6, spans, scheme) == tags


def test_ill_formed_tags_are_read_leniently_and_bad_tags_refused():
    assert tags_to_spans(["O", "I-city", "I-city", "B-x"], "bio") == [("city", 1, 3), ("x", 3, 4)]
    assert tags_to_spans(["B-a", "I-b"], "bio") == [("a", 0, 1), ("b", 1, 2)]
    with pytest.raises(ValueError, match="not a BIO tag"):
        parse_tag("E-city", "bio")
    with pytest.raises(ValueError, match="not a BIOES tag"):
        parse_tag("city", "bioes")


SGD = [{"dialogue_id": "1", "services": ["Restaurants_2"], "turns": [
    {"speaker": "USER", "utterance": "A table for 2 in San Jose. At half past 11?", "service": "Restaurants_2",
     "actions": [], "spans": [["number_of_seats", 12, 13], ["location", 17, 25], ["time", 30, 42]]},
    {"speaker": "SYSTEM", "utterance": "Booked at Sai's T.", "service": "Restaurants_2", "actions": [],
     "spans": [["restaurant_name", 10, 17]]},  # "Sai's T" does not end on a token boundary ("T." stays whole)
    {"speaker": "USER", "utterance": "Thanks!", "service": "Restaurants_2", "actions": [], "spans": []}]}]


def test_sgd_spans_become_tags_over_the_tokenizers_tokens(tmp_path):
    path = tmp_path / "sgd.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in SGD), encoding="utf-8")
    sentences, report = read_sgd_spans(path)
    first = sentences[0]
    assert first.words == ("A", "table", "for", "2", "in", "San", "Jose", ".", "At", "half", "past", "11", "?")
    assert tags_to_spans(list(first.tags), "bio") == [("number_of_seats", 3, 4), ("location", 5, 7), ("time", 9, 12)]
    assert first.condition == "Restaurants_2" and [s.words for s in sentences[1:]] == [("Thanks", "!")]
    # the misaligned span is counted and its turn left out, never moved onto neighbouring tokens
    assert (report.spans, report.misaligned_spans, report.left_out_sentences) == (3, 1, 1)
    assert "Sai's T" in report.examples[0]
    # the legacy tokenizer glues "Jose." (and splits only a text's final period): the first turn's location is
    # what it misses
    _, legacy = read_sgd_spans(path, tokenizer="nltk-treebank")
    assert legacy.misaligned_spans == 1 and "'San Jose'" in legacy.examples[0]


@pytest.mark.parametrize("turn, reason", [
    ({"speaker": "USER", "utterance": 3}, "'utterance' must be a string, found a number"),
    ({"speaker": "USER", "utterance": "hi", "spans": [["x", 0, 9]]}, "each span must be"),
    ({"speaker": "USER", "utterance": "hi", "spans": "none"}, "'spans' must be a list"),
])
def test_bad_sgd_turns_name_file_and_line(tmp_path, turn, reason):
    path = tmp_path / "sgd.jsonl"
    path.write_text(json.dumps(SGD[0]) + "\n" + json.dumps({"turns": [turn]}) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=f"sgd.jsonl:2: turn 0: {reason}"):
        read_sgd_spans(path)


CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP I-ORG
rejects VBZ B-VP O
German JJ B-NP I-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""


def test_conll_2003_columns_iob1_read_as_iob2(tmp_path):
    path = tmp_path / "ner.txt"
    path.write_text(CONLL, encoding="utf-8")
    sentences = read_conll_columns(path)
    assert [s.words for s in sentences] == [("EU", "rejects", "German", "call", "."), ("Peter", "Blackburn")]
    # IOB1's sentence-initial I-ORG starts a span: read as B-ORG, the same spans
    assert sentences[0].tags == ("B-ORG", "O", "B-MISC", "O", "O") and sentences[1].tags == ("B-PER", "I-PER")
    bioes = read_conll_columns(path, "bioes")
    assert bioes[1].tags == ("B-PER", "E-PER") and bioes[0].tags[0] == "S-ORG"
    path.write_text(CONLL.replace("I-MISC", "X-MISC"), encoding="utf-8")
    with pytest.raises(DataFormatError, match="ner.txt:5: 'X-MISC' is not a BIO tag"):
        read_conll_columns(path)
    path.write_text("lonely\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="ner.txt:1: expected a token and its tag"):
        read_conll_columns(path)


@pytest.mark.parametrize("scheme", ["bio", "bioes"])
def test_constrained_decoding_never_returns_an_ill_formed_sequence(scheme):
    labels = ["a", "b"]
    tags = ["O"] + [f"{p}-{x}" for x in labels for p in ("BIES" if scheme == "bioes" else "BI")]
    allowed, start, end = transition_constraints(tags, scheme)
    rng = np.random.default_rng(7)
    lengths = np.array([1, 2, 5, 9, 9, 3], np.int32)
    probabilities = rng.dirichlet(np.full(len(tags), 0.3), size=(6, 9)).astype(np.float32)
    # the likeliest tag alone often spells an I- that continues nothing; the decoder never does
    assert any(tags_to_spans([tags[k] for k in row], scheme) and spans_to_tags(len(row), tags_to_spans(
        [tags[k] for k in row], scheme), scheme) != [tags[k] for k in row] for row in probabilities.argmax(-1))
    graph = constrained_viterbi(tf.constant(probabilities), tf.constant(lengths), allowed, start, end).numpy()
    for row, length in enumerate(lengths):
        best = numpy_viterbi(probabilities[row, :length], allowed, start, end)
        assert graph[row, :length].tolist() == best
        decoded = [tags[k] for k in best]
        assert spans_to_tags(length, tags_to_spans(decoded, scheme), scheme) == decoded  # well-formed
    # the exported graph's spans are the ones the decoded tags spell
    chosen = np.take_along_axis(probabilities, graph[..., None], -1)[..., 0]
    begins = [parse_tag(t, scheme)[0] in ("B", "S") for t in tags]
    insides = [t != "O" for t in tags]
    out = {k: v.numpy() for k, v in spans_of(tf.constant(graph), tf.constant(lengths), tf.constant(chosen), begins,
                                             insides, [parse_tag(t, scheme)[1] for t in tags]).items()}
    for row, length in enumerate(lengths):
        expected = tags_to_spans([tags[k] for k in graph[row, :length]], scheme)
        found = [(out["span_labels"][row, k].decode(), int(out["span_starts"][row, k]), int(out["span_ends"][row, k]))
                 for k in range(out["span_count"][row])]
        assert found == expected
        # the serving fast path's NumPy decoder gives the same tags, probabilities and spans
        ids, probs, spans = SpanDecoder(tags, scheme).decode(probabilities[row, :length])
        assert ids == graph[row, :length].tolist()
        np.testing.assert_allclose(probs, chosen[row, :length])
        assert [s[:3] for s in spans] == found
        np.testing.assert_allclose([s[3] for s in spans], out["span_scores"][row, :len(found)], atol=1e-6)
        for k, (_, first, last) in enumerate(expected):
            assert out["span_scores"][row, k] == pytest.approx(chosen[row, first:last].mean())


TINY = ["--word-dim", "8", "--char-dim", "4", "--char-hidden", "4", "--hidden", "8", "--layers", "1",
        "--batch-size", "4", "--epochs", "2", "--min-word-count", "1", "--quiet"]


@pytest.mark.parametrize("condition", ["first-token", "embedding"])
def test_a_tiny_span_model_trains_exports_and_scores(tmp_path, condition, capsys):
    dialogs = [{"dialogue_id": str(i), "turns": [
        {"speaker": "USER", "utterance": f"Book a table in {city} at {hour} pm.", "service": service, "actions": [],
         "spans": [[slot, 16, 16 + len(city)], ["time", 20 + len(city), 23 + len(city) + len(hour)]]}]}
        for i, (city, hour, service, slot) in enumerate(
            [("Paris", "7", "Restaurants_1", "city"), ("Rome", "8", "Restaurants_2", "location")] * 6)]
    path = tmp_path / "sgd.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in dialogs), encoding="utf-8")
    assert main(["train", "spans", "--format", "sgd", "--train", str(path), "--dev", str(path), "--out",
                 str(tmp_path / "slots"), "--checkpoint", str(tmp_path / "ck"), "--condition", condition, *TINY]) == 0
    model = SavedTagger(tmp_path / "slots" / "1")
    metadata = model.metadata
    assert (metadata["task"], metadata["scheme"], metadata["condition"]) == ("spans", "bio", condition)
    assert metadata["conditions"] == ["Restaurants_1", "Restaurants_2"] and metadata["export_check"]
    assert {"f1", "precision", "recall", "spans", "unlabelled", "seen_conditions"} <= set(metadata["metrics"]["dev"])
    tagged = model.tag([["Book", "a", "table", "in", "Rome", "at", "8", "pm", "."]] * 2,
                       conditions=["Restaurants_2", None])
    for result in tagged:
        assert spans_to_tags(9, [(s.label, s.start, s.end) for s in result.spans], "bio") == result.tags
        assert all(0 < s.score <= 1 for s in result.spans)
    # The fast path (ONNX Runtime, the condition as an input, Viterbi and spans in NumPy) answers as the SavedModel.
    fast = SavedTagger(tmp_path / "slots" / "1", runtime="onnx")
    assert fast.runtime == "onnx"
    sentences = [["Book", "a", "table", "in", "Rome", "at", "8", "pm", "."], ["Book", "a", "table", "in", "Paris"],
                 ["Thanks", "!"], ["in", "Paris", "at", "7", "pm", "in", "Rome", "at", "8", "pm"]] * 2
    conditions = ["Restaurants_2", None, "Restaurants_1", "Restaurants_1", "Hotels_9", "", None, "Restaurants_2"]
    for batch_size in (8, 1):
        for ours, saved in zip(fast.tag(sentences, batch_size=batch_size, conditions=conditions),
                               model.tag(sentences, conditions=conditions)):
            np.testing.assert_allclose(ours.probabilities, saved.probabilities, atol=1e-5)
            np.testing.assert_allclose(ours.scores, saved.scores, atol=1e-5)
            assert ours.tags == saved.tags
            assert [(x.label, x.start, x.end) for x in ours.spans] == [(x.label, x.start, x.end) for x in saved.spans]
            np.testing.assert_allclose([x.score for x in ours.spans], [x.score for x in saved.spans], atol=1e-5)
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tmp_path / "slots"), "--data", str(path), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["spans"] == 24 and metrics["format"] == "sgd" and 0 <= metrics["f1"] <= 1
    assert metrics["seen_conditions"]["sentences"] == 12 and metrics["unseen_labels"]["labels"] == []

"""Scoring on raw text: paragraphs rebuilt from ``# text``, words aligned by characters, UPOS on aligned words."""

from __future__ import annotations

import json

import pytest

from training.cli import main
from training.common.tokenizer import get_tokenizer
from training.tagger.data import read_conllu
from training.tagger.evaluate import evaluate_raw_text, evaluate_tagger, raw_texts
from training.tagger.saved_tagger import SavedTagger

from conftest import export_random_tagger

SAMPLE = """# newdoc id = d1
# newpar id = p1
# text = I don't live in San Jose.
1\tI\t_\tPRON\t_\t_\t0\t_\t_\t_
2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdo\t_\tAUX\t_\t_\t0\t_\t_\t_
3\tn't\t_\tPART\t_\t_\t0\t_\t_\t_
4\tlive\t_\tVERB\t_\t_\t0\t_\t_\t_
5\tin\t_\tADP\t_\t_\t0\t_\t_\t_
6\tSan\t_\tPROPN\t_\t_\t0\t_\t_\t_
7\tJose\t_\tPROPN\t_\t_\t0\t_\t_\tSpaceAfter=No
8\t.\t_\tPUNCT\t_\t_\t0\t_\t_\t_

# text = Can you help?
1\tCan\t_\tAUX\t_\t_\t0\t_\t_\t_
2\tyou\t_\tPRON\t_\t_\t0\t_\t_\t_
3\thelp\t_\tVERB\t_\t_\t0\t_\t_\tSpaceAfter=No
4\t?\t_\tPUNCT\t_\t_\t0\t_\t_\t_

# newpar id = p2
# text = Dr. Li arrived.
1\tDr.\t_\tPROPN\t_\t_\t0\t_\t_\t_
2\tLi\t_\tPROPN\t_\t_\t0\t_\t_\t_
3\tarrived\t_\tVERB\t_\t_\t0\t_\t_\tSpaceAfter=No
4\t.\t_\tPUNCT\t_\t_\t0\t_\t_\t_

"""


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    path = tmp_path_factory.mktemp("raw") / "sample.conllu"
    path.write_text(SAMPLE, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tagger_dir(sample, tmp_path_factory):
    sentences = [(s.words, s.tags) for s in read_conllu(sample)]
    return export_random_tagger(tmp_path_factory.mktemp("raw-tagger") / "pos", sentences)[4]


def test_paragraphs_are_rebuilt_with_every_word_at_its_characters(sample):
    sentences = read_conllu(sample)
    assert [s.new_paragraph for s in sentences] == [True, False, True]
    paragraphs = raw_texts(sentences)
    assert [p.text for p in paragraphs] == ["I don't live in San Jose. Can you help?", "Dr. Li arrived."]
    first = paragraphs[0]
    assert [first.text[a:b] for a, b in first.word_spans] == [w for s in sentences[:2] for w in s.words]
    assert [first.text[a:b] for a, b in first.sentence_spans] == ["I don't live in San Jose.", "Can you help?"]
    assert len(raw_texts(sentences, paragraphs=False)) == 3


def test_words_and_sentences_aligned_by_characters(sample):
    paragraphs = raw_texts(read_conllu(sample))
    right = evaluate_raw_text(paragraphs, get_tokenizer("ud-english"))
    assert right["words"]["f1"] == 1.0 and right["sentences"]["f1"] == 1.0 and right["words"]["gold"] == 16
    # The legacy tokenizer glues "Jose." and keeps each paragraph one sentence: 13 of 16 gold words, 15 of its
    # own; no sentence of the first paragraph, the second paragraph's one.
    legacy = evaluate_raw_text(paragraphs, get_tokenizer("nltk-treebank"))
    assert (legacy["words"]["matched"], legacy["words"]["gold"], legacy["words"]["system"]) == (14, 16, 15)
    assert (legacy["sentences"]["matched"], legacy["sentences"]["system"]) == (1, 2)


def test_raw_text_upos_equals_gold_token_accuracy_when_the_words_are_right(sample, tagger_dir):
    """With every word and sentence found, tagging raw text is tagging the gold words: the same accuracy."""
    sentences = read_conllu(sample)
    tagger = SavedTagger(tagger_dir)
    raw = evaluate_raw_text(raw_texts(sentences), tagger.tokenizer, tagger)
    assert raw["upos"]["aligned_accuracy"] == pytest.approx(evaluate_tagger(tagger, sentences)["accuracy"])
    assert raw["upos"]["f1"] == pytest.approx(raw["upos"]["aligned_accuracy"])  # nothing unaligned


def test_evaluate_raw_text_cli(sample, tagger_dir, capsys):
    assert main(["evaluate", "--model", str(tagger_dir), "--data", str(sample), "--raw-text", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["tokenizer"] == "ud-english"  # the model's (its metadata)
    assert metrics["paragraphs"]["words"]["f1"] == 1.0 and metrics["single_sentences"]["texts"] == 3
    assert 0 <= metrics["paragraphs"]["upos"]["f1"] <= 1
    assert main(["evaluate", "--model", str(tagger_dir), "--data", str(sample), "--raw-text", "--json",
                 "--tokenizer", "nltk-treebank"]) == 0
    assert json.loads(capsys.readouterr().out)["paragraphs"]["words"]["f1"] < 1.0
    assert main(["evaluate", "--model", str(tagger_dir), "--data", str(sample), "--tokenizer", "ud-english"]) == 2
    assert "--tokenizer goes with --raw-text" in capsys.readouterr().err

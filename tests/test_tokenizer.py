"""The tokenizers: UD English conventions on words and sentences, exact offsets, the legacy one kept for the
models trained on it, which model reads with which, and the lexicon learnt from a treebank."""

import pytest

from training.common.tokenizer import (DEFAULT_TOKENIZER, LEGACY_TOKENIZER, TOKENIZERS, get_tokenizer, tokenize,
                                       tokenizer_for)
from training.tagger.data import read_conllu
from training.tagger.tokenizer_lexicon import learn_lexicon


@pytest.mark.parametrize("text, tokens", [
    ("I don't know.", ["I", "do", "n't", "know", "."]),
    ("We'll see, can't we?", ["We", "'ll", "see", ",", "ca", "n't", "we", "?"]),
    ("John's car is gonna cost $5.50!", ["John", "'s", "car", "is", "gon", "na", "cost", "$", "5.50", "!"]),
    ("Mail john.doe@example.com or see https://example.com/a?b=1.",
     ["Mail", "john.doe@example.com", "or", "see", "https://example.com/a?b=1", "."]),
    ("  Café naïve   ", ["Café", "naïve"]),
    ("", []),
    # sentence-internal periods: the words of the issue that found the legacy tokenizer's fault
    ("I live in San Jose. Can you help?", ["I", "live", "in", "San", "Jose", ".", "Can", "you", "help", "?"]),
    ("It was 4.5. He arrived.", ["It", "was", "4.5", ".", "He", "arrived", "."]),
    # EWT: hyphens between letters split, except after the prefixes it keeps; punctuation runs and emoticons whole
    ("Moqtada al-Sadr sent an e-mail!!", ["Moqtada", "al", "-", "Sadr", "sent", "an", "e-mail", "!!"]),
    ("Great :) see you at 5pm...", ["Great", ":)", "see", "you", "at", "5", "pm", "..."]),
    ("Dr. Smith and Mr. Jones of the U.S. (etc.)", ["Dr.", "Smith", "and", "Mr.", "Jones", "of", "the", "U.S.",
                                                    "(", "etc.", ")"]),
    ("and/or 11/28/2000 713-853-3989", ["and", "/", "or", "11/28/2000", "713-853-3989"]),
])
def test_ud_english_conventions(text, tokens):
    assert [t.text for t in tokenize(text)] == tokens
    assert [t.text for t in get_tokenizer("ud-english").tokenize(text)] == tokens


@pytest.mark.parametrize("text, sentences", [
    ("I live in San Jose. Can you help?", [["I", "live", "in", "San", "Jose", "."], ["Can", "you", "help", "?"]]),
    ("Dr. Smith arrived. He left!! \"Why?\" she asked.",
     [["Dr.", "Smith", "arrived", "."], ["He", "left", "!!"], ["\"", "Why", "?", "\"", "she", "asked", "."]]),
    ("no punctuation at all\n\nbut a blank line", [["no", "punctuation", "at", "all"], ["but", "a", "blank", "line"]]),
    # EWT's web text starts many sentences in lower case: terminal punctuation ends one before any word
    ("Wait... what? ok", [["Wait", "..."], ["what", "?"], ["ok"]]),
    ("   ", []),
])
def test_ud_english_sentences(text, sentences):
    split = get_tokenizer(DEFAULT_TOKENIZER).sentences(text)
    assert [[t.text for t in sentence] for sentence in split] == sentences
    assert [t for sentence in split for t in sentence] == tokenize(text)  # the same tokens, grouped


def test_the_legacy_tokenizer_is_kept_as_it_was_for_the_models_trained_on_it():
    legacy = get_tokenizer(LEGACY_TOKENIZER)
    # NLTK's Treebank tokenizer splits only the final period: the fault the default tokenizer fixes
    assert [t.text for t in legacy.tokenize("I live in San Jose. Can you help?")] == [
        "I", "live", "in", "San", "Jose.", "Can", "you", "help", "?"]
    assert [[t.text for t in s] for s in legacy.sentences("One. Two.")] == [["One.", "Two", "."]]


@pytest.mark.parametrize("name", TOKENIZERS)
@pytest.mark.parametrize("text", ["He said \"hi\" -- twice...", "«Ünïcode» ''quoted'' `x`", "a\tb\nc  d", "((a))",
                                  "x.com/a. (see: 3-4)!? ~_~ e-mails;and/or"])
def test_offsets_point_into_the_text(name, text):
    tokens = get_tokenizer(name).tokenize(text)
    assert tokens
    for token in tokens:
        assert text[token.start:token.end] == token.text and token.text.strip() == token.text
    assert [t.start for t in tokens] == sorted(t.start for t in tokens)


def test_each_model_reads_raw_text_with_the_tokenizer_it_records():
    assert tokenizer_for({"kind": "dialog", "tokenizer": "ud-english"}).name == "ud-english"
    assert tokenizer_for({"kind": "tagger", "tokenizer": "nltk-treebank"}).name == "nltk-treebank"
    # exported before models recorded it: a dialog model was trained on the legacy tokenizer's words and keeps
    # them; a tagger learnt from gold words, so raw text gets the default
    assert tokenizer_for({"kind": "dialog"}).name == LEGACY_TOKENIZER
    assert tokenizer_for({"kind": "tagger"}).name == DEFAULT_TOKENIZER
    with pytest.raises(KeyError, match="unknown tokenizer 'whitespace'; known: ud-english, nltk-treebank"):
        tokenizer_for({"kind": "tagger", "tokenizer": "whitespace"})


LEXICON_SAMPLE = """# text = Dr. Li cannot e-mail al-Sadr.
1\tDr.\t_\tPROPN\t_\t_\t0\t_\t_\t_
2\tLi\t_\tPROPN\t_\t_\t0\t_\t_\t_
3-4\tcannot\t_\t_\t_\t_\t_\t_\t_\t_
3\tcan\t_\tAUX\t_\t_\t0\t_\t_\t_
4\tnot\t_\tPART\t_\t_\t0\t_\t_\t_
5\te-mail\t_\tVERB\t_\t_\t0\t_\t_\t_
6\tal\t_\tPROPN\t_\t_\t0\t_\t_\t_
7\t-\t_\tPUNCT\t_\t_\t0\t_\t_\t_
8\tSadr\t_\tPROPN\t_\t_\t0\t_\t_\tSpaceAfter=No
9\t.\t_\tPUNCT\t_\t_\t0\t_\t_\t_

"""


def test_the_lexicon_is_learnt_from_gold_words(tmp_path):
    path = tmp_path / "sample.conllu"
    path.write_text(LEXICON_SAMPLE * 2, encoding="utf-8")
    lexicon = learn_lexicon(read_conllu(path), min_count=2)
    assert lexicon["abbreviations"] == ["Dr"]
    assert lexicon["joined_prefixes"] == ["e"]  # e-mail kept whole twice; al-Sadr split
    assert lexicon["exceptions"]["cannot"] == [3, 3]  # the rules keep "cannot" whole; EWT cuts it
    assert "al-sadr." not in lexicon["exceptions"]  # the rules already cut it as the treebank does

"""The service's tokenizer: UD English conventions and exact character offsets."""

import pytest

from training.common.tokenizer import tokenize


@pytest.mark.parametrize("text, tokens", [
    ("I don't know.", ["I", "do", "n't", "know", "."]),
    ("We'll see, can't we?", ["We", "'ll", "see", ",", "ca", "n't", "we", "?"]),
    ("John's car is gonna cost $5.50!", ["John", "'s", "car", "is", "gon", "na", "cost", "$", "5.50", "!"]),
    ("Mail john.doe@example.com or see https://example.com/a?b=1.",
     ["Mail", "john.doe@example.com", "or", "see", "https://example.com/a?b=1", "."]),
    ("  Café naïve   ", ["Café", "naïve"]),
    ("", []),
])
def test_ud_english_conventions(text, tokens):
    assert [t.text for t in tokenize(text)] == tokens


@pytest.mark.parametrize("text", ["He said \"hi\" -- twice...", "«Ünïcode» ''quoted'' `x`", "a\tb\nc  d", "((a))"])
def test_offsets_point_into_the_text(text):
    tokens = tokenize(text)
    assert tokens
    for token in tokens:
        assert text[token.start:token.end] == token.text and token.text.strip() == token.text
    assert [t.start for t in tokens] == sorted(t.start for t in tokens)

"""Property tests (Hypothesis): the tokenizer on any Unicode text, the data readers on any bytes.

- the tokenizer never fails, each token is exactly the text between its offsets, tokens come in order
  without overlapping, hold no whitespace at their ends, and every non-whitespace character is in one;
- every reader, given garbage (random bytes, near-miss lines, random JSON), returns its records or raises
  the documented ``DataFormatError`` naming the file: never another exception.
"""

import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from training.common.errors import DataFormatError
from training.common.tokenizer import TOKENIZERS, get_tokenizer
from training.dialog.data import read_dialogs
from training.tagger.data import read_conllu

from reliability import record

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Text that looks like what the tokenizer meets (words, clitics, URLs, punctuation, odd spaces) and any Unicode.
TEXTY = st.one_of(
    st.text(),
    st.lists(st.sampled_from(["don't", "can't", "I'll", "John's", "gonna", "U.S.", "e-mail", "http://x.org/a?b=1",
                              "a.b@c.de", "\"", "''", "``", "...", "--", "(", ")", "?", "!", ",", " ", "\t", "\n",
                              "\u00a0", "\u2019", "café", "日本語", "😀", "\u200b", "0.5", "$", "%", ":)", "5pm", "Dr.",
                              "al-Sadr", "!!", "\n\n", "etc.", "cannot", ".", "A"]),
             max_size=30).map("".join),
)


def test_tokenizer_offsets_cover_the_text():
    examples = []

    @PROPERTY_SETTINGS
    @given(TEXTY)
    def tokenize_anything(text):
        examples.append(text)
        for name in TOKENIZERS:
            tokenizer = get_tokenizer(name)
            tokens = tokenizer.tokenize(text)
            previous_end = 0
            for token in tokens:
                assert token.text and token.text == text[token.start:token.end]
                assert token.text == token.text.strip()
                assert previous_end <= token.start < token.end <= len(text)
                previous_end = token.end
            covered = {i for token in tokens for i in range(token.start, token.end)}
            assert all(ch.isspace() for i, ch in enumerate(text) if i not in covered)
            sentences = tokenizer.sentences(text)  # the same tokens, grouped, no sentence empty
            assert all(sentences) and [t for sentence in sentences for t in sentence] == tokens

    tokenize_anything()
    record("properties-tokenizer", 11, "Both tokenizers (words and sentences) on any Unicode text and text made of clitics, URLs, odd spaces "
           "(Hypothesis)", f"{len(examples)} texts", "0 failures: each token is the text between its offsets, "
           "in order; only whitespace left out")


def lines_of(alphabet_lines):
    return st.lists(alphabet_lines, max_size=12).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))


SWDA_LINES = lines_of(st.one_of(st.text(alphabet="AB|sdqy% \t{}", max_size=20),
                                st.builds("{}|{}|{}".format, st.sampled_from(["A", "B", "", "C "]), st.text(max_size=15),
                                          st.sampled_from(["sd", "b", "", "qy^d", " "]))))
CONLLU_LINES = lines_of(st.one_of(st.text(alphabet=string.digits + "-._\t #=ab", max_size=40),
                                  st.builds("\t".join, st.lists(st.sampled_from(["1", "2", "1-2", "3.1", "_", "dog", "NOUN",
                                                                                  "", "0", "root"]),
                                                                min_size=8, max_size=11))))
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.sampled_from(["turns", "speaker", "text", "label", "labels", "id",
                                                              "dialogue_id", "utterance", "frames", "actions", "act",
                                                              "slot", "values", "service"]), children, max_size=5),
                           max_leaves=25)
JSON_LINES = st.lists(JSON_VALUES.map(json.dumps), max_size=6).map(lambda lines: "\n".join(lines).encode())

GARBAGE = {
    "swda": st.one_of(st.binary(max_size=200), SWDA_LINES),
    "conllu": st.one_of(st.binary(max_size=200), CONLLU_LINES),
    "sgd": st.one_of(st.binary(max_size=200), JSON_LINES),
    "jsonl": st.one_of(st.binary(max_size=200), JSON_LINES),
}


@pytest.mark.parametrize("data_format", sorted(GARBAGE))
def test_readers_raise_only_their_documented_error(data_format, tmp_path):
    path = tmp_path / ("0001.txt" if data_format == "swda" else "data")

    examples = []

    @PROPERTY_SETTINGS
    @given(GARBAGE[data_format])
    def read_garbage(content):
        examples.append(content)
        path.write_bytes(content)
        try:
            records = read_conllu(path) if data_format == "conllu" else read_dialogs(path, data_format)
        except DataFormatError as error:
            assert str(path) in str(error)  # the message names the file (and the line, where there is one)
        else:
            assert isinstance(records, list)

    read_garbage()
    record(f"properties-reader-{data_format}", 12, f"The {data_format} reader on random bytes, near-miss lines and "
           "random JSON (Hypothesis)", f"{len(examples)} files", "0 tracebacks: DataFormatError naming the file, or records")

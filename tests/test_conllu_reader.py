"""CoNLL-U reading: comments, multiword tokens, empty nodes, XPOS, and errors that name file and line."""

import pytest

from training.common.errors import DataFormatError
from training.tagger.data import read_conllu

SAMPLE = """# sent_id = 1
# text = I don't know.
1-2\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
1\tdo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_
2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_
3\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\t_
3.1\tknow\tknow\tVERB\tVB\t_\t_\t_\t3:conj\t_
4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\tSpaceAfter=No

# sent_id = 2
1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_
"""


def write(tmp_path, text, name="sample.conllu"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_words_and_upos_skipping_multiword_tokens_and_empty_nodes(tmp_path):
    sentences = read_conllu(write(tmp_path, SAMPLE))
    assert [s.words for s in sentences] == [("do", "n't", "know", "."), ("Hi",)]
    assert [s.tags for s in sentences] == [("AUX", "PART", "VERB", "PUNCT"), ("INTJ",)]


def test_xpos_by_option(tmp_path):
    sentences = read_conllu(write(tmp_path, SAMPLE), tag_column="xpos")
    assert sentences[0].tags == ("VBP", "RB", "VB", ".")


def test_windows_line_endings_and_extra_blank_lines(tmp_path):
    text = "\n\n" + SAMPLE.replace("\n", "\r\n") + "\r\n\r\n"
    assert len(read_conllu(write(tmp_path, text))) == 2


@pytest.mark.parametrize("bad_line, reason", [
    ("3\tknow\tknow\tVERB", "expected 10 tab-separated columns, found 4"),
    ("x\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\t_", "not a valid ID"),
    ("7\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\t_", "out of sequence, expected 3"),
    ("3\tknow\tknow\t_\tVB\t_\t0\troot\t_\t_", "missing UPOS"),
    ("3\tknow\tknow\tVERB\tVB\t_\tfoo\troot\t_\t_", "head"),
])
def test_malformed_line_names_file_and_line(tmp_path, bad_line, reason):
    lines = SAMPLE.split("\n")
    assert lines[5].startswith("3\tknow")
    lines[5] = bad_line
    path = write(tmp_path, "\n".join(lines))
    with pytest.raises(DataFormatError) as caught:
        read_conllu(path)
    assert caught.value.line == 6
    assert str(caught.value).startswith(f"{path}:6: ")
    assert reason in str(caught.value)


def test_invalid_utf8_and_missing_file(tmp_path):
    path = tmp_path / "latin1.conllu"
    path.write_bytes(SAMPLE.replace("know", "kn\u00f6w").encode("latin-1"))
    with pytest.raises(DataFormatError, match="latin1.conllu:.*not valid UTF-8"):
        read_conllu(path)
    with pytest.raises(DataFormatError, match="missing.conllu: cannot open"):
        read_conllu(tmp_path / "missing.conllu")


def test_real_treebank_slice(ewt_slices):
    train, _ = ewt_slices
    sentences = read_conllu(train)
    assert len(sentences) == 300
    tags = {t for s in sentences for t in s.tags}
    assert {"NOUN", "VERB", "PUNCT", "DET"} <= tags and "_" not in tags
    assert all(len(s.words) == len(s.tags) > 0 for s in sentences)

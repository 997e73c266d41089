"""``seqtag tag``: corpus annotation on one machine (training.annotate), its formats and its bad input, and its
CoNLL-U output checked by UD's own validator and the CoNLL 2018 scorer (PyPI ``udtools``) against ``seqtag
evaluate --raw-text``."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import sys
from pathlib import Path

import pytest

from training.cli import main

REPO = Path(__file__).resolve().parents[1]
TEXT = ("I don't like it. Dr. Smith went to Washington!\nHe's gonna win, isn't he?\n\n"
        "Second paragraph:   it's fine.\n")


def tag(args: list[str], capsys) -> tuple[int, str, str]:
    status = main(["tag", "-q", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def conllu_sentences(text: str) -> list[list[str]]:
    return [block.split("\n") for block in text.strip("\n").split("\n\n") if block.strip()]


@pytest.fixture(scope="module")
def pos_model(random_tagger_dir, tmp_path_factory) -> Path:
    return random_tagger_dir


def test_text_to_conllu_as_ud_writes_it(pos_model, tmp_path, capsys):
    source = tmp_path / "doc.txt"
    source.write_text(TEXT, encoding="utf-8")
    status, out, _ = tag(["--model", str(pos_model), "--precision", "float32", str(source)], capsys)
    assert status == 0
    sentences = conllu_sentences(out)
    assert sentences[0][0] == f"# newdoc id = {source}" and sentences[0][1] == "# newpar"
    assert sentences[3][0] == "# newpar" and sentences[3][1].startswith("# sent_id = ")  # the second paragraph
    assert sum("# newpar" in s for s in sentences) == 2 and sum(any(l.startswith("# newdoc") for l in s) for s in sentences) == 1
    first = sentences[0]
    assert "# text = I don't like it." in first
    rows = [line.split("\t") for line in first if not line.startswith("#")]
    assert [r[0] for r in rows] == ["1", "2-3", "2", "3", "4", "5", "6"]
    assert rows[1][1] == "don't" and [rows[2][1], rows[3][1]] == ["do", "n't"]  # EWT's multiword token
    assert rows[5][9] == "SpaceAfter=No" and rows[2][9] == "_"  # "it" before "."; the MWT's words carry no SpaceAfter
    labels = set(json.loads((pos_model / "metadata.json").read_text())["labels"])
    assert all(r[3] in labels for r in rows if "-" not in r[0]) and all(r[6] == "_" for r in rows)  # no made-up tree
    texts = [line[len("# text = "):] for s in sentences for line in s if line.startswith("# text = ")]
    assert texts == ["I don't like it.", "Dr. Smith went to Washington!", "He's gonna win, isn't he?",
                     "Second paragraph: it's fine."]
    gonna = [line.split("\t")[1] for line in sentences[2] if not line.startswith("#")]
    assert gonna[:5] == ["He's", "He", "'s", "gonna", "gon"]
    ids = [line for s in sentences for line in s if line.startswith("# sent_id")]
    assert len(set(ids)) == len(ids) == 4 and all(" " not in i[len("# sent_id = "):] and "/" not in i[12:] for i in ids)


def test_stdin_gzip_and_directories_give_the_same_sentences(pos_model, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text(TEXT, encoding="utf-8")
    with gzip.open(folder / "sub" / "b.txt.gz", "wt", encoding="utf-8") as handle:
        handle.write(TEXT)
    (folder / ".hidden").write_text("not this", encoding="utf-8")
    model = ["--model", str(pos_model), "--precision", "float32"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(TEXT.encode("utf-8"))))
    status, from_stdin, _ = tag(model, capsys)
    assert status == 0 and "# newdoc id = stdin" in from_stdin
    out = tmp_path / "out/"
    status, _, _ = tag([*model, str(folder), "-o", str(out) + "/"], capsys)
    assert status == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["a.txt.conllu", "sub/b.txt.gz.conllu"]

    def body(text: str) -> list[str]:  # the sentences without the comments that name the document
        return [line for line in text.split("\n") if not line.startswith(("# newdoc", "# sent_id"))]

    for path in out.rglob("*.conllu"):
        assert body(path.read_text(encoding="utf-8")) == body(from_stdin)


def test_jsonl_in_and_out_with_character_offsets_and_spans(pos_model, random_span_tagger_dir, tmp_path, capsys):
    source = tmp_path / "turns.jsonl"
    records = [{"id": "t1", "text": "Book a table in San Jose at 7 pm.\n\nIt's late."}, {"text": "Play Hey Jude"}]
    source.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    status, out, _ = tag(["--model", str(pos_model), "--model", str(random_span_tagger_dir), "--service", "Restaurants_1",
                          "--precision", "float32", "--output-format", "jsonl", str(source)], capsys)
    assert status == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["doc"] for line in lines] == ["t1", "t1", f"{source}:2"]
    assert [line["paragraph"] for line in lines] == [1, 2, 1]
    for line in lines:
        text = records[0]["text"] if line["doc"] == "t1" else records[1]["text"]
        assert text[line["start"]:line["end"]] == line["text"]
        assert all(text[w["start"]:w["end"]] == w["text"] and "upos" in w and "slots" in w for w in line["words"])
    assert lines[1]["multiword_tokens"] == [{"text": "It's", "start": 35, "end": 39, "words": [0, 2]}]
    for line in lines:
        for span in line.get("spans", {}).get("slots", []):
            words = line["words"][span["words"][0]:span["words"][1]]
            assert span["start"] == words[0]["start"] and span["end"] == words[-1]["end"]
            assert words[0]["slots"] == f"B-{span['label']}"


def test_conllu_input_keeps_its_tokens_and_columns(pos_model, random_span_tagger_dir, ewt_files, tmp_path, capsys):
    from tests.conftest import first_sentences

    source = tmp_path / "gold.conllu"
    source.write_text(first_sentences(ewt_files[1], 30), encoding="utf-8")
    status, out, _ = tag(["--model", str(pos_model), "--model", str(random_span_tagger_dir), "--service", "Music_1",
                          "--precision", "float32", str(source)], capsys)
    assert status == 0
    gold_lines = source.read_text(encoding="utf-8").strip("\n").split("\n")
    our_lines = out.strip("\n").split("\n")
    assert len(gold_lines) == len(our_lines)
    for gold, ours in zip(gold_lines, our_lines):
        g, o = gold.split("\t"), ours.split("\t")
        if len(g) != 10 or not g[0].isdigit():
            assert gold == ours  # comments, multiword token lines
            continue
        assert g[:3] + g[4:9] == o[:3] + o[4:9]  # FORM, LEMMA, XPOS, FEATS, HEAD, DEPREL, DEPS as they were
        kept = [a for a in g[9].split("|") if a != "_"]
        assert [a for a in o[9].split("|") if not a.startswith("slots=") and a != "_"] == kept
        assert all(a.split("=")[1][:2] in ("B-", "I-") for a in o[9].split("|") if a.startswith("slots="))


def test_processes_write_the_same_bytes_in_input_order(pos_model, tmp_path, capsys, monkeypatch):
    import training.annotate.inputs as inputs

    monkeypatch.setattr(inputs, "SHARD_CHARS", 200)  # many shards, so that order is at stake
    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.txt")
        files[-1].write_text("\n\n".join(f"Paragraph {j} of file {i}. It has two sentences." for j in range(40)),
                             encoding="utf-8")
    outputs = []
    for processes in ("1", "2"):
        target = tmp_path / f"out-{processes}.conllu"
        status, _, _ = tag(["--model", str(pos_model), "--precision", "float32", "--processes", processes,
                            *map(str, files), "-o", str(target)], capsys)
        assert status == 0
        outputs.append(target.read_bytes())
    assert outputs[0] == outputs[1]
    ids = [line for line in outputs[0].decode().split("\n") if line.startswith("# sent_id")]
    assert len(ids) == 3 * 40 * 2 and ids[0].endswith("0.txt-p1-s1") and ids[-1].endswith("2.txt-p40-s2")


def test_bad_input_names_the_file_and_line_and_keeps_what_was_written(pos_model, tmp_path, capsys, caplog):
    good, bad, binary, malformed = (tmp_path / n for n in ("1-good.txt", "2-bad.txt", "3-binary.txt", "bad.conllu"))
    good.write_text("A good sentence.\n", encoding="utf-8")
    bad.write_bytes(b"fine line\nline two \xff\xfe broken\n")
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    malformed.write_text("# sent_id = 1\n1\tHello\t_\t_\t_\t_\t_\t_\t_\t_\n2\tthere\t_\n\n", encoding="utf-8")
    target = tmp_path / "out.conllu"
    model = ["--model", str(pos_model), "--precision", "float32"]
    status, _, err = tag([*model, str(good), str(bad), "-o", str(target)], capsys)
    assert status == 2 and f"{bad}:2: invalid UTF-8 (byte 0xff at column 10)" in err
    assert "# text = A good sentence." in target.read_text(encoding="utf-8")  # what came before stays written
    status, _, err = tag([*model, str(binary)], capsys)
    assert status == 2 and f"{binary}:3: a NUL byte: a binary file, not text" in err
    status, _, err = tag([*model, str(malformed)], capsys)
    assert status == 2 and f"{malformed}:3: malformed CoNLL-U line: 3 tab-separated columns, expected 10" in err
    status, out, err = tag([*model, "--skip-bad", str(good), str(bad), str(binary)], capsys)
    assert status == 0 and "# text = A good sentence." in out and out.count("# newdoc") == 1
    assert f"skipped {bad}:2: invalid UTF-8" in caplog.text and f"skipped {binary}:3: a NUL byte: a binary file" in caplog.text
    status, _, err = tag([*model, str(tmp_path / "missing-*.txt")], capsys)
    assert status == 2 and "no such file" in err


def test_conll18_scorer_agrees_with_evaluate_raw_text(shipped_pos_fast_path, ewt_files, tmp_path, capsys):
    """The shipped POS model on the raw text of 400 EWT dev sentences: UD's validator passes the output at level 1,
    and the CoNLL 2018 scorer's Words, Sentences and UPOS F1 are ``seqtag evaluate --raw-text``'s."""
    from benchmarks.raw_text_scores import conll18_scores, validate_level1, write_raw_text
    from tests.conftest import first_sentences
    from training.tagger.cli import evaluate_raw_text

    gold, text, out = tmp_path / "gold.conllu", tmp_path / "raw.txt", tmp_path / "tagged.conllu"
    gold.write_text(first_sentences(ewt_files[1], 400), encoding="utf-8")
    write_raw_text(gold, text)
    model = REPO / "models" / "pos"
    status, _, _ = tag(["--model", str(model), "--precision", "float32", str(text), "-o", str(out)], capsys)
    assert status == 0
    assert validate_level1(out) == (0, validate_level1(out)[1]) and "PASSED" in validate_level1(out)[1]
    output = out.read_text(encoding="utf-8")
    assert "_\t_\t_\t_\t_" in output and "\troot\t" not in output  # the placeholder tree is in the scoring copy only
    scores = conll18_scores(gold, output)
    from training.common.artifacts import resolve_model_dir

    ours = evaluate_raw_text(resolve_model_dir(model), gold)["paragraphs"]
    for scorer, key in (("Words", "words"), ("Sentences", "sentences"), ("UPOS", "upos")):
        assert scores[scorer]["f1"] == pytest.approx(ours[key]["f1"], abs=1e-9), scorer
    assert scores["Tokens"]["f1"] > 0.98 and scores["Words"]["f1"] > 0.98 and scores["UPOS"]["f1"] > 0.9


def test_ray_needs_a_directory_and_files(pos_model, tmp_path, capsys):
    status, _, err = tag(["--model", str(pos_model), "--ray", "auto", str(tmp_path)], capsys)
    assert status == 2 and "-o DIR" in err


def test_a_checked_fast_path_is_kept_and_the_next_process_tags_without_tensorflow(pos_model, tmp_path, monkeypatch):
    import subprocess

    from training.common import fast_cache
    from training.tagger.saved_tagger import SavedTagger

    monkeypatch.setenv("SEQTAG_CACHE_DIR", str(tmp_path / "cache"))
    first = SavedTagger(pos_model, runtime="onnx", fast_cache=True)
    assert "cache" not in first.fast_check and first.fast_check["max_difference"] <= 1e-5
    second = SavedTagger(pos_model, runtime="onnx", fast_cache=True)
    assert second.fast_check["cache"].startswith(str(tmp_path / "cache"))
    assert second.fast_check["max_difference"] == first.fast_check["max_difference"]  # the check it was written after
    sentences = [["The", "dog", "barks", "."], ["A", "cat", "sleeps", "at", "12:30", "!"]]
    assert [t.tags for t in second.tag(sentences)] == [t.tags for t in first.tag(sentences)]
    probe = ("import sys; from training.annotate.annotator import Annotator, AnnotatorSpec; "
             f"a = Annotator(AnnotatorSpec(({str(pos_model)!r},), precision='float32')); "
             "print('tensorflow' in sys.modules, a.models[0].tagger.fast_check.get('cache') is not None)")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "SEQTAG_CACHE_DIR": str(tmp_path / "cache")})
    assert run.stdout.split() == ["False", "True"], run.stderr[-2000:]
    # a changed version is another key: checked against its SavedModel again
    copy = tmp_path / "pos" / "1"
    shutil.copytree(pos_model, copy)
    metadata = json.loads((copy / "metadata.json").read_text())
    (copy / "metadata.json").write_text(json.dumps({**metadata, "note": "changed"}))
    assert fast_cache.cache_key(copy) != fast_cache.cache_key(pos_model)  # and so the entry
    assert "cache" not in SavedTagger(copy, runtime="onnx", fast_cache=True).fast_check

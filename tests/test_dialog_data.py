"""Dialog corpus readers: SwDA lines, SGD next-action targets, generic JSONL labels, and errors naming file and line."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from training.common.errors import DataFormatError
from training.dialog.data import (FORMATS, Dialog, Turn, action_label, find_label_names, read_dialogs, read_jsonl,
                                  read_label_names, read_sgd, read_swda)

from conftest import DATA

SWDA = DATA / "swda"
SGD_DEV = DATA / "sgd" / "sgd-dev.jsonl"


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path, *records):
    """Write one JSON record per line; a string record is written as is (blank or broken lines)."""
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    return write(path, "\n".join(lines) + "\n")


def sgd_turn(speaker, utterance, *actions):
    return {"speaker": speaker, "utterance": utterance, "actions": [list(a) for a in actions], "spans": []}


# --- action labels and dispatch ----------------------------------------------------------------


def test_action_label():
    assert action_label("REQUEST", "city") == "REQUEST(city)"
    assert action_label("GOODBYE", "") == "GOODBYE"
    with pytest.raises(ValueError):
        action_label("", "city")


@pytest.mark.parametrize("fmt, name, text", [
    ("swda", "c.txt", "A|hi|sd\n"),
    ("sgd", "d.jsonl", json.dumps({"turns": [sgd_turn("USER", "hi"), sgd_turn("SYSTEM", "yo", ("GOODBYE", ""))]})),
    ("jsonl", "d.jsonl", json.dumps({"turns": [{"text": "hi", "label": "greet"}]})),
])
def test_read_dialogs_dispatches_on_format(tmp_path, fmt, name, text):
    path = write(tmp_path / name, text)
    expected = {"swda": read_swda, "sgd": read_sgd, "jsonl": read_jsonl}[fmt](path)
    assert fmt in FORMATS
    assert read_dialogs(path, fmt) == expected
    assert expected[0].turns[0].text == "hi"


def test_unknown_format_names_the_choices(tmp_path):
    path = write(tmp_path / "c.txt", "A|hi|sd\n")
    with pytest.raises(ValueError, match="swda, sgd, jsonl") as caught:
        read_dialogs(path, "conll")
    assert "'conll'" in str(caught.value)
    assert not isinstance(caught.value, DataFormatError)


# --- SwDA --------------------------------------------------------------------------------------


def test_swda_file_speakers_texts_tags(tmp_path):
    path = write(tmp_path / "2005.txt", "A|Okay.|bk\nB|So what do you think?|qw\nA| Well, | I don't know |sv\n")
    [dialog] = read_swda(path)
    assert dialog == Dialog("2005", (Turn("A", "Okay.", ("bk",)), Turn("B", "So what do you think?", ("qw",)),
                                     Turn("A", "Well, | I don't know", ("sv",))), f"{path}:1")


def test_swda_utterance_with_bars_and_empty_utterance(tmp_path):
    [dialog] = read_swda(write(tmp_path / "c.txt", "A|a|b|c|sd\nB||b\nA|  |%\n"))
    assert [t.text for t in dialog.turns] == ["a|b|c", "", ""]
    assert [t.labels for t in dialog.turns] == [("sd",), ("b",), ("%",)]


def test_swda_blank_lines_crlf_and_bom(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes("\ufeffA|Hi there.|fp\r\n\r\n   \r\nB|Hello.\u2028Yes.|fp\r\n\r\n".encode("utf-8"))
    [dialog] = read_swda(path)
    assert dialog.turns == (Turn("A", "Hi there.", ("fp",)), Turn("B", "Hello.\u2028Yes.", ("fp",)))


@pytest.mark.parametrize("bad_line, reason", [
    ("A|no tag", "speaker|utterance|tag"),
    ("no bars at all", "speaker|utterance|tag"),
    ("|hello|sd", "empty speaker"),
    ("A|hello|", "empty dialog-act tag"),
    ("A|hello|  ", "empty dialog-act tag"),
])
def test_swda_bad_line_names_file_and_line(tmp_path, bad_line, reason):
    path = write(tmp_path / "file.txt", f"A|one|sd\n\n{bad_line}\nB|two|sd\n")
    with pytest.raises(DataFormatError, match=re.escape(reason)) as caught:
        read_swda(path)
    assert "file.txt:3: " in str(caught.value)
    assert caught.value.line == 3


def test_swda_directory_reads_txt_files_sorted_by_name(tmp_path):
    write(tmp_path / "b.txt", "A|second|sd\n")
    write(tmp_path / "a.txt", "A|first|sd\nB|more|b\n")
    write(tmp_path / "notes.md", "not a conversation")
    (tmp_path / "sub.txt").mkdir()  # a directory that looks like a file is not read
    dialogs = read_swda(tmp_path)
    assert [d.dialog_id for d in dialogs] == ["a", "b"]
    assert [len(d.turns) for d in dialogs] == [2, 1]
    assert dialogs[1].source == f"{tmp_path / 'b.txt'}:1"


def test_swda_directory_without_txt_files(tmp_path):
    write(tmp_path / "notes.md", "A|hi|sd\n")
    with pytest.raises(DataFormatError, match="no .txt") as caught:
        read_swda(tmp_path)
    assert caught.value.path == str(tmp_path)


@pytest.mark.parametrize("text", ["", "\n\n  \r\n"])
def test_swda_file_without_turns_names_the_file(tmp_path, text):
    write(tmp_path / "a.txt", "A|hi|sd\n")
    write(tmp_path / "empty.txt", text)
    with pytest.raises(DataFormatError, match="no utterances") as caught:
        read_swda(tmp_path)
    assert caught.value.path == str(tmp_path / "empty.txt")


def test_swda_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"A|fine|sd\nB|caf\xe9|sd\n")
    with pytest.raises(DataFormatError, match="UTF-8") as caught:
        read_swda(path)
    assert str(caught.value).startswith(f"{path}:2: ")


def test_swda_missing_path(tmp_path):
    with pytest.raises(DataFormatError, match="no such file"):
        read_swda(tmp_path / "nope")


# --- SGD ---------------------------------------------------------------------------------------


def test_sgd_labels_are_the_actions_of_the_next_system_turn(tmp_path):
    dialogue = {"dialogue_id": "1_00000", "services": ["Restaurants_2"], "turns": [
        sgd_turn("SYSTEM", "Welcome.", ("GREET", "")),  # before any USER turn: ignored
        sgd_turn("USER", "Book a table.", ("INFORM_INTENT", "intent")),
        sgd_turn("SYSTEM", "Where and when?", ("REQUEST", "time"), ("REQUEST", "city"), ("REQUEST", "city")),
        sgd_turn("USER", "San Jose."),
        sgd_turn("USER", "At noon."),
        sgd_turn("SYSTEM", "Done. Bye.", ("NOTIFY_SUCCESS", ""), ("GOODBYE", "")),
        sgd_turn("USER", "Thanks!"),
    ]}
    path = jsonl(tmp_path / "sgd.jsonl", dialogue)
    [dialog] = read_sgd(path)
    assert dialog.dialog_id == "1_00000"
    assert dialog.source == f"{path}:1"
    assert dialog.turns == (
        Turn("USER", "Book a table.", ("REQUEST(city)", "REQUEST(time)")),
        Turn("USER", "San Jose.", ()),  # the user spoke again: the system did nothing
        Turn("USER", "At noon.", ("GOODBYE", "NOTIFY_SUCCESS")),
        Turn("USER", "Thanks!", None),  # the dialogue ends on the user: reply unknown
    )


def test_sgd_only_the_first_of_two_system_turns_is_the_target(tmp_path):
    path = jsonl(tmp_path / "sgd.jsonl", {"turns": [
        sgd_turn("USER", "hi"), sgd_turn("SYSTEM", "a", ("OFFER", "x")), sgd_turn("SYSTEM", "b", ("GOODBYE", ""))]})
    assert read_sgd(path)[0].turns == (Turn("USER", "hi", ("OFFER(x)",)),)


def test_sgd_blank_lines_and_default_ids(tmp_path):
    one = {"turns": [sgd_turn("USER", "a"), sgd_turn("SYSTEM", "b", ("REQ_MORE", ""))]}
    path = jsonl(tmp_path / "dev.jsonl", "", one, "   ", dict(one, dialogue_id="x"))
    dialogs = read_sgd(path)
    assert [(d.dialog_id, d.source) for d in dialogs] == [("dev:2", f"{path}:2"), ("x", f"{path}:4")]


def test_sgd_bad_json_names_the_line(tmp_path):
    good = {"turns": [sgd_turn("USER", "a")]}
    path = jsonl(tmp_path / "sgd.jsonl", good, "", '{"turns": [', good)
    with pytest.raises(DataFormatError, match="not valid JSON") as caught:
        read_sgd(path)
    assert str(caught.value).startswith(f"{path}:3: ")


@pytest.mark.parametrize("record, reason", [
    ([1, 2], "expected a JSON object"),
    ({"dialogue_id": "d"}, "'turns' must be a list"),
    ({"turns": {"speaker": "USER"}}, "'turns' must be a list"),
    ({"turns": []}, "'turns' is empty"),
    ({"turns": ["hello"]}, "turn 0 is a string"),
    ({"dialogue_id": 7, "turns": [sgd_turn("USER", "a")]}, "'dialogue_id' must be a non-empty string"),
    ({"turns": [sgd_turn("BOT", "a")]}, "'speaker' must be"),
    ({"turns": [sgd_turn("user", "a")]}, "'speaker' must be"),
    ({"turns": [{"speaker": "USER", "actions": []}]}, "'utterance' must be a string, found missing"),
    ({"turns": [sgd_turn("USER", "a"), sgd_turn("SYSTEM", None)]}, "turn 1: 'utterance' must be a string"),
    ({"turns": [{"speaker": "USER", "utterance": "a"}]}, "'actions' must be a list, found missing"),
    ({"turns": [sgd_turn("USER", "a"), dict(sgd_turn("SYSTEM", "b"), actions="INFORM")]}, "'actions' must be a list"),
    ({"turns": [sgd_turn("USER", "a"), sgd_turn("SYSTEM", "b", ("INFORM",))]}, "[act, slot]"),
    ({"turns": [sgd_turn("USER", "a"), sgd_turn("SYSTEM", "b", ("INFORM", "x", "y"))]}, "[act, slot]"),
    ({"turns": [sgd_turn("USER", "a"), sgd_turn("SYSTEM", "b", ("INFORM", 3))]}, "[act, slot]"),
    ({"turns": [sgd_turn("USER", "a"), sgd_turn("SYSTEM", "b", ("", "x"))]}, "[act, slot]"),
    ({"turns": [sgd_turn("USER", "a"), {"speaker": "SYSTEM", "utterance": "b", "actions": ["INFORM"]}]},
     "[act, slot]"),
    ({"turns": [sgd_turn("SYSTEM", "hello", ("GOODBYE", ""))]}, "no USER turn"),
])
def test_sgd_invalid_dialogue_names_file_and_line(tmp_path, record, reason):
    good = {"turns": [sgd_turn("USER", "a"), sgd_turn("SYSTEM", "b", ("GOODBYE", ""))]}
    path = jsonl(tmp_path / "sgd.jsonl", good, record)
    with pytest.raises(DataFormatError, match=re.escape(reason)) as caught:
        read_sgd(path)
    assert str(caught.value).startswith(f"{path}:2: ")


@pytest.mark.parametrize("text", ["", "\n \n\n"])
def test_sgd_file_without_dialogues(tmp_path, text):
    path = write(tmp_path / "sgd.jsonl", text)
    with pytest.raises(DataFormatError, match="no dialogs") as caught:
        read_sgd(path)
    assert caught.value.path == str(path)


def test_sgd_invalid_utf8_and_directory(tmp_path):
    path = tmp_path / "sgd.jsonl"
    path.write_bytes(b'\n{"turns": [{"speaker": "USER", "utterance": "caf\xe9", "actions": []}]}\n')
    with pytest.raises(DataFormatError, match="UTF-8") as caught:
        read_sgd(path)
    assert caught.value.line == 2
    with pytest.raises(DataFormatError, match="directory"):
        read_sgd(tmp_path)


# --- generic JSONL -----------------------------------------------------------------------------


def test_jsonl_single_multi_and_unlabelled_turns(tmp_path):
    path = jsonl(tmp_path / "mine.jsonl", {"id": "d1", "turns": [
        {"speaker": "A", "text": "hi", "label": "greet"},
        {"speaker": "B", "text": "hello, what city?", "labels": ["request", "greet", "request"]},
        {"speaker": "A", "text": "no idea"},
        {"speaker": "B", "text": "ok", "labels": []},
        {"text": "no speaker", "label": None, "future_field": {"x": 1}},
    ]}, "", {"turns": [{"speaker": "A", "text": "bye", "label": "bye"}]})
    first, second = read_jsonl(path)
    assert first == Dialog("d1", (Turn("A", "hi", ("greet",)), Turn("B", "hello, what city?", ("greet", "request")),
                                  Turn("A", "no idea", None), Turn("B", "ok", ()), Turn("", "no speaker", None)),
                           f"{path}:1")
    assert (second.dialog_id, second.source) == ("mine:3", f"{path}:3")


@pytest.mark.parametrize("record, reason", [
    ({"turns": [{"text": "a", "label": "x", "labels": ["x"]}]}, "both 'label' and 'labels'"),
    ({"id": "d"}, "'turns' must be a list of turn objects (missing)"),
    ({"turns": []}, "'turns' is empty"),
    ({"turns": "a b c"}, "'turns' must be a list"),
    ({"turns": [["A", "hi"]]}, "turn 0 is a list"),
    ({"id": ["d"], "turns": [{"text": "a"}]}, "'id' must be a non-empty string"),
    ({"turns": [{"speaker": "A"}]}, "'text' must be a string, found missing"),
    ({"turns": [{"text": "a"}, {"text": 5}]}, "turn 1: 'text' must be a string, found a number"),
    ({"turns": [{"speaker": None, "text": "a"}]}, "'speaker' must be a string, found null"),
    ({"turns": [{"text": "a", "label": 3}]}, "'label' must be a non-empty string"),
    ({"turns": [{"text": "a", "label": ""}]}, "'label' must be a non-empty string"),
    ({"turns": [{"text": "a", "labels": "x"}]}, "'labels' must be a list of strings"),
    ({"turns": [{"text": "a", "labels": ["x", 1]}]}, "'labels' must hold non-empty strings"),
    ({"turns": [{"text": "a", "labels": ["x", ""]}]}, "'labels' must hold non-empty strings"),
    ('"just a string"', "expected a JSON object"),
    ("{'single': 'quotes'}", "not valid JSON"),
])
def test_jsonl_invalid_dialog_names_file_and_line(tmp_path, record, reason):
    path = jsonl(tmp_path / "mine.jsonl", {"turns": [{"text": "fine"}]}, "", record)
    with pytest.raises(DataFormatError, match=re.escape(reason)) as caught:
        read_jsonl(path)
    assert str(caught.value).startswith(f"{path}:3: ")


def test_jsonl_empty_file(tmp_path):
    with pytest.raises(DataFormatError, match="no dialogs"):
        read_jsonl(write(tmp_path / "mine.jsonl", "\n"))


# --- the real corpora --------------------------------------------------------------------------


def test_real_swda_val_files(tmp_path):
    if not (SWDA / "val").is_dir():
        pytest.skip(f"SwDA not found under {DATA}")
    allowed = set((SWDA / "labels.txt").read_text(encoding="utf-8").split())
    sources = sorted((SWDA / "val").glob("*.txt"))[:2]
    for source in sources:
        shutil.copy(source, tmp_path / source.name)
    dialogs = read_swda(tmp_path)
    assert [d.dialog_id for d in dialogs] == [s.stem for s in sources]
    for dialog, source in zip(dialogs, sources):
        lines = [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
        assert len(dialog.turns) == len(lines) > 10
        assert {t.speaker for t in dialog.turns} <= {"A", "B"}
        for turn, line in zip(dialog.turns, lines):
            assert turn.labels is not None and len(turn.labels) == 1
            assert turn.labels[0] in allowed
            assert line == f"{turn.speaker}|{turn.text}|{turn.labels[0]}"


@pytest.fixture(scope="module")
def sgd_dev():
    if not SGD_DEV.is_file():
        pytest.skip(f"SGD not found under {DATA}")
    return read_sgd(SGD_DEV)


def test_real_sgd_dev(sgd_dev):
    assert len(sgd_dev) > 1000
    assert len({d.dialog_id for d in sgd_dev}) == len(sgd_dev)
    label = re.compile(r"[A-Z][A-Z_]*(\([^()\s]+\))?")
    seen = set()
    for dialog in sgd_dev:
        assert dialog.turns and dialog.turns[0].speaker == "USER"
        assert all(t.speaker == "USER" for t in dialog.turns)
        # SGD dialogues end on a SYSTEM goodbye, so every user turn has a known target.
        assert all(t.labels is not None for t in dialog.turns)
        for turn in dialog.turns:
            assert list(turn.labels) == sorted(set(turn.labels))
            seen.update(turn.labels)
    assert all(label.fullmatch(x) for x in seen), sorted(x for x in seen if not label.fullmatch(x))
    assert {"GOODBYE", "REQ_MORE"} <= seen and any(x.startswith("REQUEST(") for x in seen)


def test_real_sgd_dev_first_dialogue_matches_the_raw_json(sgd_dev):
    with SGD_DEV.open(encoding="utf-8") as handle:
        raw = json.loads(handle.readline())
    turns = raw["turns"]
    users = [i for i, t in enumerate(turns) if t["speaker"] == "USER"]
    dialog = sgd_dev[0]
    assert dialog.dialog_id == raw["dialogue_id"]
    assert [t.text for t in dialog.turns] == [turns[i]["utterance"] for i in users]
    first = users[0]
    assert turns[first + 1]["speaker"] == "SYSTEM"
    expected = sorted({f"{a}({s})" if s else a for a, s in turns[first + 1]["actions"]})
    assert list(dialog.turns[0].labels) == expected


def test_swda_label_names_from_its_label_map():
    label_map = DATA / "swda" / "label_map.txt"
    if not label_map.is_file():
        pytest.skip(f"{label_map} not found")
    names = read_label_names(label_map)
    tags = (DATA / "swda" / "labels.txt").read_text(encoding="utf-8").split()
    assert set(names) == set(tags) and len(names) == 41  # every act of the corpus has its name
    assert names["qy"] == "Yes-No-Question" and names["sd"] == "Statement-non-opinion" and names["b"] == "Acknowledge (Backchannel)"
    assert names["ar"] == "Reject"  # its line has a stray third field ("Reject|ar|344")
    assert find_label_names(DATA / "swda" / "train") == names  # beside the training directory
    assert find_label_names(DATA / "swda") == names  # or in it


def test_label_map_lines_and_errors(tmp_path):
    good = tmp_path / "data" / "label_map.txt"
    good.parent.mkdir()
    good.write_bytes(b"\xef\xbb\xbfGreeting|greet\r\n\nFarewell | bye |extra\n")
    assert read_label_names(good) == {"greet": "Greeting", "bye": "Farewell"}
    assert find_label_names(good.parent / "dialogs.jsonl") == {"greet": "Greeting", "bye": "Farewell"}
    assert find_label_names(tmp_path / "elsewhere" / "x.jsonl") is None
    for text, line, reason in (("Greeting|greet\nno code here\n", 2, "expected 'name|code'"),
                               ("|greet\n", 1, "expected 'name|code'"),
                               ("Greeting|greet\nHello|greet\n", 2, "named twice"),
                               ("\n\n", None, "no 'name|code' lines")):
        bad = tmp_path / "label_map.txt"
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(DataFormatError) as error:
            read_label_names(bad)
        assert error.value.line == line and reason in str(error.value) and "label_map.txt" in str(error.value)

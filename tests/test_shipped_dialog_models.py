"""The shipped ``models/dialog-act`` and ``models/dialog-action``: metadata, size, and their dev figures
reproduced by ``seqtag evaluate`` on the corpora beside the repository."""

import json

import numpy as np
import pytest

from training.cli import main
from training.common import artifacts
from training.dialog.saved_dialog import DialogTurnInput, SavedDialogModel

from conftest import DATA, REPO

SHIPPED = {
    # name: (data, format, headline metric, floor it must reach, count key)
    "dialog-act": (DATA / "swda" / "val", "swda", "accuracy", 0.80, "utterances"),  # issue 18's target
    "dialog-action": (DATA / "sgd" / "sgd-dev.jsonl", "sgd", "micro_f1", 0.76, "turns"),  # issue 18's target
}


@pytest.fixture(scope="module", params=sorted(SHIPPED))
def shipped(request):
    directory = artifacts.resolve_model_dir(REPO / "models" / request.param)
    return request.param, directory, artifacts.read_metadata(directory)


def test_metadata_is_complete_and_small(shipped):
    name, directory, metadata = shipped
    data, fmt, metric, floor, _ = SHIPPED[name]
    assert metadata["name"] == name and metadata["kind"] == "dialog" and metadata["task"] == name
    # one trained model's training command, or an ensemble's export command and each member's training command
    members = metadata.get("ensemble", [metadata])
    assert len(members) == 1 or metadata["command"].startswith("seqtag export --from-checkpoint ")
    assert all(member["command"].startswith(f"seqtag train {name} ") for member in members)
    assert metadata["libraries"]["keras"] == "3.13.2"
    assert metadata["metrics"]["dev"][metric] >= floor
    for split in ("train", "dev"):
        assert len(metadata["data"][split]["sha256"]) == 64


def test_evaluate_reproduces_the_recorded_dev_figures(shipped, capsys):
    name, directory, metadata = shipped
    data, fmt, metric, floor, count = SHIPPED[name]
    if not data.exists():
        pytest.skip(f"{data} not found")
    assert main(["evaluate", "--model", str(directory.parent), "--data", str(data), "--format", fmt, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result[metric] >= floor
    assert result[metric] == pytest.approx(metadata["metrics"]["dev"][metric], abs=1e-6)
    assert result[count] == metadata["metrics"]["dev"][count]


def test_streams_a_conversation():
    model = SavedDialogModel(artifacts.resolve_model_dir(REPO / "models" / "dialog-act"))
    state_h, state_c = model.zero_state(1)
    acts = []
    for speaker, text in (("A", "Do you have any pets?"), ("B", "Yes, we have two cats. They are great company."),
                          ("A", "Uh-huh.")):
        tokens = [token.text for token in model.tokenizer.tokenize(text)]  # as the service reads a turn
        result = model.step([DialogTurnInput(tokens, speaker)], state_h, state_c)
        state_h, state_c = result["state_h"], result["state_c"]
        acts.append(result["labels"][0].decode())
    assert acts[0] in ("qy", "qo", "qw", "qy^d") and acts[2] in ("b", "aa", "ba", "bk")


def test_the_act_model_names_its_acts(tmp_path):
    """The serving models/dialog-act carries SwDA's act names (label_map.txt), one per label, and the service answers
    each turn's act with its name."""
    from service import create_app
    from training.dialog.data import read_label_names

    directory = artifacts.resolve_model_dir(REPO / "models" / "dialog-act")
    metadata = artifacts.read_metadata(directory)
    assert set(metadata["label_names"]) == set(metadata["labels"])
    label_map = DATA / "swda" / "label_map.txt"
    if label_map.is_file():
        assert metadata["label_names"] == read_label_names(label_map)
    assert metadata["label_names"]["qy"] == "Yes-No-Question" and metadata["label_names"]["b"] == "Acknowledge (Backchannel)"
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "dialog-act").symlink_to(REPO / "models" / "dialog-act")
    app = create_app({"models_dir": str(tmp_path / "models"), "poll_interval_seconds": 0, "request_log": False})
    try:
        client = app.test_client()
        session = client.post("/v1/dialogs", json={"model": "dialog-act"}).get_json()["session_id"]
        for text in ("Do you have any pets?", "Uh-huh.", "Yes, two cats.", "Uh-huh."):
            answer = client.post(f"/v1/dialogs/{session}/turns", json={"text": text, "speaker": "A"}).get_json()
            assert answer["label_name"] == metadata["label_names"][answer["label"]], answer
        status = client.get("/v1/models/dialog-act").get_json()  # what runs it: the defaults, int8 and the cache
        cache = status["turn_vector_cache"]
        assert (status["runtime"], status["precision"]) == ("onnx", "int8"), status
        assert cache["hits"] >= 1 and cache["misses"] >= 3 and cache["turns"] == cache["misses"], cache
    finally:
        app.extensions["seqtag.registry"].close()


def test_the_int8_encoder_answers_each_turn_alone_and_as_the_float_one_does():
    """The service's default for the encoder act model (SEQTAG_ENCODER_PRECISION=int8): within the int8 check's
    tolerance of the float step over streamed SwDA val conversations; a turn's answer does not depend on the other
    sessions' turns in its call (each takes its own int8 call), nor on the cache, nor on where it was encoded (the
    service encodes each turn in its request's thread, then steps the sessions together)."""
    from training.common.fast_path import INT8_AGREEMENT, INT8_TOLERANCE
    from training.dialog.data import read_dialogs
    from training.dialog.evaluate import dialog_inputs, streamed_probabilities

    directory = artifacts.resolve_model_dir(REPO / "models" / "dialog-act")
    float_model = SavedDialogModel(directory, runtime="onnx", precision="float32")
    int8_model = SavedDialogModel(directory, runtime="onnx", precision="int8", cached_turns=0)
    assert (float_model.precision, int8_model.precision) == ("float32", "int8"), int8_model.fast_check
    assert int8_model.fast_check["int8_agreement"] >= INT8_AGREEMENT
    inputs = [dialog_inputs(d, False, int8_model.tokenizer) for d in read_dialogs(DATA / "swda" / "val", "swda")[:3]]
    reference = np.concatenate(streamed_probabilities(float_model, inputs, sessions=3))
    quantized = np.concatenate(streamed_probabilities(int8_model, inputs, sessions=3))
    assert len(reference) > 300 and np.abs(quantized - reference).max() <= INT8_TOLERANCE
    assert (quantized.argmax(-1) == reference.argmax(-1)).mean() >= INT8_AGREEMENT

    turns = [DialogTurnInput(t.tokens, t.speaker) for t in inputs[0][:3]]
    h, c = int8_model.zero_state(3)
    alone = int8_model.step(turns[:1], h[:1], c[:1])["probabilities"][0]
    beside = int8_model.step(turns, h, c)["probabilities"][0]
    assert np.array_equal(alone, beside)
    vectors = np.stack([int8_model.encode_turn(turn) for turn in turns])
    encoded_first = int8_model.step(turns, h, c, turn_vectors=vectors)
    stepped = int8_model.step(turns, h, c)
    for key in ("probabilities", "state_h", "state_c", "scores"):
        assert np.array_equal(encoded_first[key], stepped[key]), key
    assert list(encoded_first["labels"]) == list(stepped["labels"])
    cached = int8_model.fast.with_cache(16)
    first, again = (int8_model.step(turns[:1], h[:1], c[:1])["probabilities"][0] for _ in range(2))
    assert np.array_equal(first, alone) and np.array_equal(again, alone)
    assert cached.vectors.stats()["hits"] == 1


def test_evaluate_streamed_reports_the_served_path(tmp_path, capsys):
    """``seqtag evaluate --streamed`` scores what the service answers (its step, at a precision) and says what ran
    it; the flags that do not go together are refused with a message."""
    conversations = DATA / "swda" / "val"
    sample = tmp_path / "val"
    sample.mkdir()
    first = sorted(conversations.glob("*.txt"))[:1]
    if not first:
        pytest.skip("no SwDA val files")
    for path in first:
        (sample / path.name).symlink_to(path)
    act = str(REPO / "models" / "dialog-act")
    assert main(["evaluate", "--model", act, "--data", str(sample), "--format", "swda", "--streamed", "--precision",
                 "int8", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["served_path"]["precision"] == "int8" and metrics["served_path"]["runtime"] == "onnx"
    cache = metrics["served_path"]["turn_vector_cache"]
    assert cache["hits"] + cache["misses"] == metrics["utterances"] > 50
    assert main(["evaluate", "--model", act, "--data", str(sample), "--precision", "int8"]) == 2
    assert "--precision goes with --raw-text (taggers), --streamed (dialog models) or a schema-guided span model" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(REPO / "models" / "pos"), "--data", str(sample), "--streamed"]) == 2
    assert "--streamed streams dialog turns" in capsys.readouterr().err


def test_words_split_one_by_one_give_the_pieces_of_the_whole_turn():
    """``WordPieces`` keeps each word's pieces (a served turn costs lookups): split a word at a time, turns of SwDA val
    and awkward text give exactly the library's pieces for the whole turn, and the schema-guided rows (piece ids, each
    word's first piece) are the ones its word ids give, cut included."""
    from training.common.tokenizer import tokenizer_for
    from training.common.word_pieces import WordPieces
    from training.schema_guided.pieces import piece_rows

    lines = sorted((DATA / "swda" / "val").iterdir())[0].read_text(encoding="utf-8", errors="replace").splitlines()[:300]
    lines += ["Ünïcödé naïve café \u200b ＦＵＬＬ", "a" * 150, "[CLS] hello [SEP]", "日本語 😀", ""]
    tokenizer = tokenizer_for({"kind": "tagger"})
    turns = [[t.text for t in tokenizer.tokenize(line)] for line in lines]
    turns += [["", "x", ""], ["\u0007"], ["a", "\u200b"], ["\u200b", "b", "\u0007"], []]
    for name in ("dialog-act", "slots"):
        path = artifacts.resolve_model_dir(REPO / "models" / name) / "word_pieces.json"
        pieces, library = WordPieces.from_file(path), WordPieces.from_file(path).tokenizer
        for turn in turns + turns:  # the second time from the kept words
            whole = library.encode(turn, is_pretokenized=True, add_special_tokens=False).tokens if turn else []
            assert pieces.split(turn) == whole, turn
        vocabulary = pieces.vocabulary
        for max_pieces in (8, 64):
            for words, (ids, starts) in zip(turns, piece_rows(pieces, turns, max_pieces)):
                encoded = library.encode(words or ["."], is_pretokenized=True, add_special_tokens=False)
                assert ids == [vocabulary["[CLS]"], *encoded.ids[:max_pieces - 2], vocabulary["[SEP]"]]
                firsts = {}
                for position, word in enumerate(encoded.word_ids[:max_pieces - 2], start=1):
                    firsts.setdefault(word, position)
                expected, last = [], 1
                for w in range(len(words)):
                    last = firsts.get(w, last)
                    expected.append(last if w in firsts or w < max(firsts, default=-1) else -1)
                assert starts == expected, words

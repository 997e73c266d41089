"""Pretrained vectors: each table format a user may have (written here, tiny), errors that name file and line,
the rows a model keeps, and models that carry them: words training never saw get their table row from the
exported model alone, which equals the Keras model."""

from __future__ import annotations

import json

import msgpack
import numpy as np
import pytest
import tensorflow as tf

from training.cli import main
from training.common.errors import ConfigError, DataFormatError
from training.common.saved_model import pad_tokens
from training.common.vectors import VectorTable, lookup_key, murmurhash64a, read_vectors, select
from training.dialog.evaluate import dialog_inputs
from training.dialog.saved_dialog import SavedDialogModel
from training.dialog.trainer import load_checkpoint as load_dialog_checkpoint
from training.tagger.saved_tagger import SavedTagger
from training.tagger.trainer import load_tagger_checkpoint
from training.tagger.vocab import encode_pretrained, encode_words

TABLE = {"the": [0.1, 0.2, 0.3], "dog": [0.5, -0.25, 1.0], "cat": [0.4, -0.2, 0.9], "kitten": [0.45, -0.1, 0.8],
         "barks": [-1.0, 0.0, 0.125], "sleeps": [0.3, 0.3, -0.3], ".": [0.0, 0.0, 0.01]}


def write_text_table(path, header=True):
    lines = [f"{len(TABLE)} 3"] if header else []
    lines += [f"{word} {' '.join(str(v) for v in values)}" for word, values in TABLE.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("header", [True, False])
def test_text_tables_with_or_without_a_header(tmp_path, header):
    table = read_vectors(str(write_text_table(tmp_path / "v.txt", header)))
    assert table.words == list(TABLE) and table.dimensions == 3 and table.casing == "lower"
    np.testing.assert_allclose(table.matrix[table.rows[1]], TABLE["dog"])
    assert table.source["kind"] == "text" and len(table.source["sha256"]) == 64


@pytest.mark.parametrize("line, reason", [
    ("dog 0.5 0.1", "2 values, expected 3"),
    ("dog 0.5 x 0.1", "not a number: 'x'"),
    ("dog 0.5 inf 0.1", "a value is not finite"),
    ("dog", "expected a word and its values"),
])
def test_a_bad_line_is_named_with_its_number(tmp_path, line, reason):
    path = tmp_path / "v.txt"
    path.write_text("the 0.1 0.2 0.3\n\ncat 0.4 -0.2 0.9\n" + line + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=f"v.txt:4: {reason}"):
        read_vectors(str(path))
    path.write_bytes(b"the 0.1 0.2 0.3\ncaf\xe9 1 2 3\n")
    with pytest.raises(DataFormatError, match="v.txt:2: not valid UTF-8"):
        read_vectors(str(path))


def test_npy_matrix_with_its_words_beside_it(tmp_path):
    np.save(tmp_path / "v.npy", np.array(list(TABLE.values()), np.float32))
    with pytest.raises(DataFormatError, match="v.words.txt"):
        read_vectors(str(tmp_path / "v.npy"))
    (tmp_path / "v.words.txt").write_text("\n".join(TABLE) + "\n", encoding="utf-8")
    table = read_vectors(str(tmp_path / "v.npy"))
    assert table.words == list(TABLE) and table.source["kind"] == "npy"
    (tmp_path / "v.words.txt").write_text("\n".join(list(TABLE)[:-1]) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="6 words for the 7 rows"):
        read_vectors(str(tmp_path / "v.npy"))
    (tmp_path / "v.words.txt").write_text("the\n \n" + "\n".join(list(TABLE)[2:]) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="v.words.txt:2"):
        read_vectors(str(tmp_path / "v.npy"))


def test_murmurhash_is_spacys():
    # spacy.strings.hash_string of these, computed with spaCy 3.8.18
    assert murmurhash64a("dog".encode()) == 7562983679033046312
    assert murmurhash64a("apple".encode()) == 8566208034543834098
    assert murmurhash64a("Café".encode()) == 6806715258286457036


def test_spacy_vectors_directory_with_shared_rows(tmp_path):
    """spaCy prunes a table by letting words share rows; a cased table falls back to the lower-cased word."""
    vocab = tmp_path / "pipeline" / "vocab"
    vocab.mkdir(parents=True)
    matrix = np.array([[1, 0], [0, 1], [0.5, 0.5]], np.float32)
    with open(vocab / "vectors", "wb") as handle:  # spaCy writes it without the .npy suffix
        np.save(handle, matrix)
    rows = {"Dog": 0, "dog": 0, "puppy": 0, "cat": 1, "the": 2}
    (vocab / "key2row").write_bytes(msgpack.packb({murmurhash64a(w.encode()): r for w, r in rows.items()}))
    (vocab / "strings.json").write_text(json.dumps(["the", "Dog", "dog", "cat", "puppy", "unhashed"]), encoding="utf-8")
    table = read_vectors(str(tmp_path / "pipeline"))
    assert sorted(table.words) == sorted(rows) and table.casing == "cased"
    kept, record = select(table, ["Dog", "CAT", "ferret"], top=0)
    assert record["kept_rows"] == 2 and record["training_vocabulary_covered"] == 2  # Dog, and CAT as cat
    np.testing.assert_allclose(kept.matrix[kept.id("Dog")], [1, 0])
    np.testing.assert_allclose(kept.matrix[kept.id("CAT")], [0, 1])  # cased lookup, then lower-cased
    assert kept.id("ferret") == 1 and kept.id("puppy") == 1  # not kept: top=0 keeps only training words
    with pytest.raises(DataFormatError, match="not a spaCy vectors directory"):
        read_vectors(str(tmp_path))


def test_select_keeps_training_words_and_the_most_frequent(tmp_path):
    table = read_vectors(str(write_text_table(tmp_path / "v.txt")))
    kept, record = select(table, ["Sleeps", "zebra"], top=2, float16=True)
    assert kept.keys == ("the", "dog", "sleeps")  # the two most frequent and the training word the table has
    assert record["coverage"] == 0.5 and record["kept_words"] == 3 and record["stored_as"] == "float16"
    assert kept.id("SLEEPS") == kept.ids[2] and kept.id("zebra") == 1 and lookup_key("Dog", "lower") == "dog"
    np.testing.assert_array_equal(kept.matrix[:2], 0)  # padding and unknown rows
    assert kept.matrix[kept.id("barks")].sum() == 0  # not kept
    with pytest.raises(ConfigError, match="no such file or directory"):
        read_vectors(str(tmp_path / "missing.txt"))


def test_growing_a_kept_table_shares_rows_as_selecting_does():
    """spaCy's tables prune similar words onto one row: a kept table grown to more words (``--vectors-top``) must
    share rows as ``select`` would have, not give each added word a copy of its row."""
    matrix = np.arange(12, dtype=np.float32).reshape(4, 3)
    table = VectorTable(["the", "dog", "cat", "puppy", "kitten", "a"], np.array([0, 1, 2, 1, 2, 3]), matrix, "cased", {})
    kept, _ = select(table, ["dog"], top=1)  # the, dog
    trained = kept.matrix.copy()
    trained[kept.id("dog")] += 100.0  # fine-tuned: an added word that shares dog's table row gets the trained row
    grown, rows = kept.resized(trained, ["dog"], top=6, trained_top=1, table=table)
    direct, _ = select(table, ["dog"], top=6)
    assert rows.shape == direct.matrix.shape == (2 + 4, 3)  # one row per distinct table row, as selecting keeps them
    assert grown.id("puppy") == grown.id("dog") and grown.id("kitten") == grown.id("cat") != grown.id("dog")
    np.testing.assert_array_equal(rows[grown.id("puppy")], matrix[1] + 100.0)
    for word in ("the", "cat", "kitten", "a"):
        np.testing.assert_array_equal(rows[grown.id(word)], direct.matrix[direct.id(word)])


TRAIN = [[("The", "DET"), ("dog", "NOUN"), ("barks", "VERB"), (".", "PUNCT")],
         [("The", "DET"), ("cat", "NOUN"), ("sleeps", "VERB"), (".", "PUNCT")]] * 4


def conllu(sentences):
    return "\n\n".join("\n".join(f"{i}\t{w}\t_\t{t}\t_\t_\t0\t_\t_\t_" for i, (w, t) in enumerate(s, 1))
                       for s in sentences) + "\n\n"


TINY_TAGGER = ["--word-dim", "4", "--char-dim", "4", "--char-hidden", "4", "--hidden", "6", "--layers", "1",
               "--epochs", "1", "--batch-size", "4", "--min-word-count", "1", "--quiet"]


@pytest.mark.parametrize("trainable", ["false", "true"])
def test_a_tagger_with_vectors_gives_unseen_words_their_rows_and_equals_keras(tmp_path, trainable):
    data = tmp_path / "train.conllu"
    data.write_text(conllu(TRAIN), encoding="utf-8")
    table = write_text_table(tmp_path / "v.txt")
    assert main(["train", "pos", "--train", str(data), "--dev", str(data), "--out", str(tmp_path / "pos"),
                 "--checkpoint", str(tmp_path / "ck"), "--vectors", str(table), "--vectors-top", "4",
                 "--vectors-trainable", trainable, *TINY_TAGGER]) == 0
    metadata = json.loads((tmp_path / "pos" / "1" / "metadata.json").read_text())
    record = metadata["vectors"]
    assert (record["spec"], record["dimensions"], record["coverage"]) == (str(table), 3, 1.0)
    assert record["sha256"] and record["licence"] and metadata["config"]["vectors_trainable"] == (trainable == "true")

    model, vocabs, config, _ = load_tagger_checkpoint(tmp_path / "ck")
    tagger = SavedTagger(tmp_path / "pos" / "1")
    # "kitten" never occurs in training: its word id is unknown, but the table gives it a row of its own
    sentences = [["The", "kitten", "sleeps", "."], ["A", "DOG", "barks", "loudly", "."], ["cat"]]
    ids = tagger.input_ids(sentences)
    for row, sentence in enumerate(sentences):
        expected = encode_pretrained(sentence, vocabs)
        np.testing.assert_array_equal(ids["pretrained_ids"][row, :len(sentence)], expected)
    kitten = ids["pretrained_ids"][0, 1]
    assert ids["word_ids"][0, 1] == 1 and kitten > 1  # unknown to training, known to the table
    layer = model.get_layer("sentence_tagger").get_layer("pretrained_embedding")
    # fine-tuned rows are rounded to float16 when training ends; frozen ones are the table's, as float16
    assert layer.get_weights()[0].dtype == np.float16 and not layer.trainable
    assert record["stored_as"] == "float16"  # what the export holds, fine-tuned or not
    if trainable == "false":
        np.testing.assert_array_equal(layer.get_weights()[0][kitten], np.float16(TABLE["kitten"]))
    probabilities = tagger._serve(tf.constant(pad_tokens(sentences)))["probabilities"].numpy()
    fast = SavedTagger(tmp_path / "pos" / "1", runtime="onnx")  # the fast path reads the table's rows too
    assert fast.runtime == "onnx"
    fast_results = fast.tag(sentences)
    for row, sentence in enumerate(sentences):
        word_ids, char_ids = encode_words(sentence, vocabs, config.max_word_length)
        inputs = {"word_ids": word_ids[None], "char_ids": char_ids[None],
                  "pretrained_ids": encode_pretrained(sentence, vocabs)[None]}
        expected = np.asarray(model(inputs, training=False)[0])
        np.testing.assert_allclose(probabilities[row, :len(sentence)], expected, atol=1e-5)
        np.testing.assert_allclose(fast_results[row].probabilities, expected, atol=1e-5)


def test_a_dialog_model_with_vectors_streams_as_it_serves_and_equals_keras(tmp_path):
    dialogs = [{"id": f"d{i}", "turns": [{"speaker": "A", "text": "the dog barks.", "label": "s"},
                                         {"speaker": "B", "text": "the cat sleeps?", "label": "q"}]} for i in range(6)]
    data = tmp_path / "dialogs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in dialogs), encoding="utf-8")
    table = write_text_table(tmp_path / "v.txt")
    assert main(["train", "dialog-act", "--train", str(data), "--dev", str(data), "--format", "jsonl",
                 "--out", str(tmp_path / "act"), "--checkpoint", str(tmp_path / "ck"), "--vectors", str(table),
                 "--word-dim", "4", "--utterance-hidden", "3", "--turn-hidden", "5", "--epochs", "1",
                 "--min-word-count", "1", "--quiet"]) == 0
    model = SavedDialogModel(tmp_path / "act" / "1")
    assert model.metadata["vectors"]["kept_words"] == len(TABLE) and model.metadata["vectors"]["stored_as"] == "float16"
    keras_model, vocabs, config, _, _ = load_dialog_checkpoint(tmp_path / "ck")
    # a conversation with a word only the table knows ("kitten"), streamed turn by turn and served whole
    from training.dialog.data import Dialog, Turn
    conversation = Dialog("c", (Turn("A", "the kitten sleeps.", ("s",)), Turn("B", "a dog barks?", ("q",)),
                                Turn("A", "cat", ("s",))), "test")
    inputs = dialog_inputs(conversation, False, model.tokenizer)
    whole = model.predict([inputs])[0]
    fast = SavedDialogModel(tmp_path / "act" / "1", runtime="onnx")  # the fast step reads the table's rows too
    assert fast.runtime == "onnx"
    for stepper in (model, fast):
        state_h, state_c = stepper.zero_state(1)
        for turn, expected in zip(inputs, whole):
            out = stepper.step([turn], state_h, state_c)
            state_h, state_c = out["state_h"], out["state_c"]
            np.testing.assert_allclose(out["probabilities"][0], expected, atol=1e-5)
    from training.dialog.batching import pad_dialogs
    from training.dialog.trainer import encode_dialogs, tokenize_dialogs
    encoded = encode_dialogs([conversation], tokenize_dialogs([conversation], config.tokenizer), vocabs, config)
    assert encoded[0].pretrained_ids[0, 2] > 1  # "kitten": the start marker, "the", then it
    batch_inputs, _, _ = pad_dialogs(encoded, False)
    np.testing.assert_allclose(np.asarray(keras_model(batch_inputs, training=False)[0]), whole, atol=1e-5)


def test_export_prunes_the_table_to_fewer_frequent_words_and_still_equals_keras(tmp_path):
    """``seqtag export --vectors-top N`` keeps the training words and the table's first N: the way N is measured
    on one trained model. A word only the cut rows knew ("kitten") becomes unknown to the table; training words
    keep their rows, and the export reproduces the pruned model (its probe is checked). And back up: the same
    checkpoint exported with a larger N gets the table's next words ("puppy", which training never kept)."""
    data = tmp_path / "train.conllu"
    data.write_text(conllu(TRAIN), encoding="utf-8")
    table = tmp_path / "v.txt"  # TABLE and one more word after the first 4
    rows = {**TABLE, "puppy": [0.42, -0.15, 0.85]}
    table.write_text(f"{len(rows)} 3\n" + "".join(f"{w} {' '.join(map(str, v))}\n" for w, v in rows.items()),
                     encoding="utf-8")
    assert main(["train", "pos", "--train", str(data), "--dev", str(data), "--out", str(tmp_path / "pos"),
                 "--checkpoint", str(tmp_path / "ck"), "--vectors", str(table), "--vectors-top", "4",
                 *TINY_TAGGER]) == 0
    for top in ("1", "8"):
        assert main(["export", "--from-checkpoint", str(tmp_path / "ck"), "--out", str(tmp_path / "pos"),
                     "--vectors-top", top]) == 0
    full, pruned, grown = (SavedTagger(tmp_path / "pos" / str(v)) for v in (1, 2, 3))
    assert pruned.metadata["vectors"]["resized_to_top"] == 1 and pruned.metadata["export_check"]["items"] > 0
    assert full.metadata["vectors"]["kept_words"] == 7  # the first 4 and the 3 other training words
    assert pruned.metadata["vectors"]["kept_words"] == 6  # "the" (the first) and the 5 other training words
    assert grown.metadata["vectors"]["kept_words"] == 8 and grown.metadata["export_check"]["items"] > 0
    sentence = [["The", "kitten", "sleeps", "."], ["The", "puppy", "sleeps", "."]]
    full_ids, pruned_ids, grown_ids = (m.input_ids(sentence)["pretrained_ids"][:, 1] for m in (full, pruned, grown))
    assert full_ids[0] > 1 and pruned_ids[0] == 1 and grown_ids[0] > 1  # kitten: kept, cut, kept
    assert full_ids[1] == 1 and pruned_ids[1] == 1 and grown_ids[1] > 1  # puppy: only the grown table has it
    keep = [0, 2, 3]  # the training words' rows are the same vectors in all three
    for other in (pruned, grown):
        np.testing.assert_array_equal(full.tag([["The", "cat", "sleeps", "."]])[0].probabilities[keep],
                                      other.tag([["The", "cat", "sleeps", "."]])[0].probabilities[keep])


def test_dialog_exports_prune_the_table_and_an_ensemble_prunes_each_member(tmp_path, capsys):
    """``seqtag export --vectors-top N`` on dialog checkpoints: a single model keeps its training words' rows (the
    same answers where only they occur) and loses the cut rows ("kitten"); in an ensemble each member is pruned as it
    would be alone (a member without a table is kept as it is), and the ensemble averages exactly what its members
    answer alone. This is how two models with tables fit one version's size."""
    dialogs = [{"id": f"d{i}", "turns": [{"speaker": "A", "text": "the dog barks.", "label": "s"},
                                         {"speaker": "B", "text": "the cat sleeps?", "label": "q"}]} for i in range(6)]
    data = tmp_path / "dialogs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in dialogs), encoding="utf-8")
    table = write_text_table(tmp_path / "v.txt")
    out = tmp_path / "act"
    common = ["--train", str(data), "--dev", str(data), "--format", "jsonl", "--out", str(out), "--word-dim", "4",
              "--utterance-hidden", "3", "--turn-hidden", "5", "--epochs", "1", "--min-word-count", "1", "--quiet"]
    # version 1: the whole kept table (its first 4 words and the training words); version 2: no table
    assert main(["train", "dialog-act", *common, "--checkpoint", str(tmp_path / "ck1"), "--vectors", str(table),
                 "--vectors-top", "4", "--vectors-trainable", "true", "--seed", "1"]) == 0
    assert main(["train", "dialog-act", *common, "--checkpoint", str(tmp_path / "ck2")]) == 0
    assert main(["export", "--from-checkpoint", str(tmp_path / "ck1"), "--out", str(out), "--vectors-top", "1"]) == 0  # 3
    assert main(["export", "--from-checkpoint", str(tmp_path / "ck2"), "--out", str(out), "--vectors-top", "1"]) == 2
    assert "prunes a vector table: this checkpoint has none" in capsys.readouterr().err
    # an ensemble: the member with a table pruned, the member without kept as it is (version 4)
    assert main(["export", "--from-checkpoint", str(tmp_path / "ck1"), str(tmp_path / "ck2"), "--out", str(out),
                 "--vectors-top", "1"]) == 0
    full, plain, pruned, ensemble = (SavedDialogModel(out / str(v)) for v in (1, 2, 3, 4))
    assert [m.get("vectors", {}).get("resized_to_top") for m in ensemble.metadata["ensemble"]] == [1, None]
    assert full.metadata["vectors"]["kept_words"] == len(TABLE)
    assert pruned.metadata["vectors"]["resized_to_top"] == 1 and pruned.metadata["export_check"]["items"] > 0
    assert pruned.metadata["vectors"]["kept_words"] == 6  # "the" (the first) and the 5 other training words in it
    from training.dialog.data import Dialog, Turn

    def answers(model, text):
        conversation = Dialog("c", (Turn("A", text, ("s",)), Turn("B", "a dog barks?", ("q",))), "test")
        return model.predict([dialog_inputs(conversation, False, model.tokenizer)])[0]

    np.testing.assert_allclose(answers(pruned, "the cat sleeps."), answers(full, "the cat sleeps."), atol=1e-6)
    assert np.abs(answers(pruned, "the kitten sleeps.") - answers(full, "the kitten sleeps.")).max() > 1e-4
    for text in ("the kitten sleeps.", "the cat sleeps."):
        np.testing.assert_allclose(answers(ensemble, text), (answers(pruned, text) + answers(plain, text)) / 2,
                                   atol=1e-5)

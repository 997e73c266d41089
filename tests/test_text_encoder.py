"""The pretrained utterance encoder: word pieces, the port of a published BERT into Keras, and a dialog model that
reads turns with it, from training to the service (a tiny BERT written by the test, no download)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("keras_hub", reason="the [encoder] extra (keras-hub) is not installed")

from training.common.errors import ConfigError  # noqa: E402
from training.common.text_encoder import EncoderShape, PretrainedEncoder, build_text_encoder, port_weights  # noqa: E402
from training.common.word_pieces import WordPieces, turn_pieces  # noqa: E402

from conftest import TINY_DIALOGS  # noqa: E402
from tiny_bert import reference_pooled, tiny_vocabulary, write_tiny_bert  # noqa: E402


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return write_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert")


def test_word_pieces_split_words_as_the_published_tokenizer(tiny_bert):
    pieces = WordPieces.from_file(tiny_bert / "tokenizer.json")
    assert pieces.split(["Cats", "weather", "Weather!"]) == ["cat", "##s", "weather", "weather", "!"]
    assert pieces.split(["Café"]) == ["c", "##a", "##f", "##e"]  # BERT's uncased normalizer strips the accent
    assert pieces.split([]) == [] and pieces.split_many([["hi"], [], ["yes"]]) == [["hi"], [], ["yes"]]
    # A special token typed in a turn is text, not the marker.
    assert pieces.split(["[CLS]"]) == ["[", "c", "##l", "##s", "]"]
    assert turn_pieces(["a", "b", "c", "d"], 4) == ["a", "b", "[SEP]"]  # [CLS] + 2 pieces + [SEP] = max_words


def test_kept_pieces_split_what_they_lack_into_shorter_ones(tiny_bert):
    pieces = WordPieces.from_file(tiny_bert / "tokenizer.json")
    kept = pieces.kept(["cat", "##s"])
    assert "weather" not in kept.vocabulary and "[SEP]" in kept.vocabulary and "##z" in kept.vocabulary
    assert kept.split(["cats", "weather"]) == ["cat", "##s", "w", "##e", "##a", "##t", "##h", "##e", "##r"]
    assert kept.split(["é"]) == ["e"]  # accents are stripped before the lookup
    reread = WordPieces(json.loads(kept.to_json()))
    assert reread.split(["cats", "weather"]) == kept.split(["cats", "weather"])


def test_a_bad_encoder_directory_is_named(tmp_path, tiny_bert):
    with pytest.raises(ConfigError, match="no config.json"):
        PretrainedEncoder.read(tmp_path)
    partial = write_tiny_bert(tmp_path / "partial")
    (partial / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="partial: no model.safetensors"):
        PretrainedEncoder.read(partial)
    broken = write_tiny_bert(tmp_path / "gpt")
    (broken / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ConfigError, match=r"config.json: model_type 'gpt2'"):
        PretrainedEncoder.read(broken)
    (broken / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (broken / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": {}}}))
    with pytest.raises(ConfigError, match=r"tokenizer.json: not a WordPiece tokenizer"):
        PretrainedEncoder.read(broken)
    with pytest.raises(ConfigError, match="encoder_layers must be in 1..2"):
        PretrainedEncoder.read(tiny_bert).shape(3, 16)


@pytest.mark.parametrize("prefixed", [False, True])
def test_port_matches_a_numpy_bert(tmp_path, prefixed):
    """Kept rows in a new order, the first of two layers, padded turns of different lengths (one of them all
    padding): the Keras encoder equals the architecture computed in NumPy (keras-hub's tanh GELU), and the published
    one (exact GELU) to the approximation's gap."""
    folder = write_tiny_bert(tmp_path / "bert", prefixed=prefixed, seed=3)
    pretrained = PretrainedEncoder.read(folder)
    vocabulary = tiny_vocabulary()
    rows = [0, 1, 2, 3, *range(len(vocabulary) - 1, 4, -1)]  # the model's id -> the published row
    encoder = build_text_encoder(pretrained.shape(1, 8), len(rows))
    port_weights(encoder, pretrained, rows)
    ids = np.array([[2, 7, 9, 30, 3, 0, 0], [2, 5, 3, 0, 0, 0, 0], [2, 4, 8, 12, 16, 20, 3], [0] * 7], dtype=np.int32)
    ours = np.asarray(encoder(ids, training=False))
    expected = reference_pooled(folder, np.asarray(rows)[ids] * (ids > 0), layers=1)
    np.testing.assert_allclose(ours[:3], expected[:3], atol=1e-5)
    published = reference_pooled(folder, np.asarray(rows)[ids] * (ids > 0), layers=1, approximate_gelu=False)
    np.testing.assert_allclose(ours[:3], published[:3], atol=2e-3)
    np.testing.assert_array_equal(ours[3], 0.0)  # a turn with no pieces pools to zeros, not NaN


def test_a_shape_that_does_not_fit_is_named(tmp_path):
    folder = write_tiny_bert(tmp_path / "bert")
    pretrained = PretrainedEncoder.read(folder)
    encoder = build_text_encoder(EncoderShape(layers=1, heads=2, hidden=16, intermediate=16, positions=12), 10)
    with pytest.raises(ConfigError, match=r"model.safetensors: embeddings.word_embeddings.weight has shape"):
        port_weights(encoder, pretrained, list(range(10)))


def tiny_dialogs():
    from training.dialog.data import Dialog, Turn

    return [Dialog(f"d{i}", tuple(Turn(s, t, (label,)) for s, t, label in turns), "inline")
            for i, turns in enumerate(TINY_DIALOGS * 3)]


@pytest.fixture(scope="module")
def encoder_run(tmp_path_factory, tiny_bert):
    """A dialog-act model over the tiny BERT, trained in both stages and exported (float32 and float16)."""
    from training.dialog.config import DialogConfig
    from training.dialog.export import export_dialog_model, round_weights
    from training.dialog.encoder_training import train_encoder_dialog_model
    from training.dialog.trainer import keras_probabilities

    dialogs = tiny_dialogs()
    config = DialogConfig(utterance_encoder=str(tiny_bert), encoder_layers=1, encoder_licence="test-only", max_words=8,
                          speaker_dim=3, turn_hidden=8, min_word_count=1, epochs=2, encoder_batch=4, encoder_warmup=2,
                          encoder_learning_rate=1e-3, learning_rate=0.01)
    result = train_encoder_dialog_model(config, dialogs, dialogs[:2])
    root = tmp_path_factory.mktemp("encoder-models") / "dialog-act"
    exports = {}
    for stored in ("float32", "float16"):
        model = result.model if stored == "float32" else round_weights(result.model)  # rounded in place, after
        expected = keras_probabilities(model, result.vocabs, config, dialogs)
        _, directory = export_dialog_model(model, result.vocabs, config, None, root,
                                           {"task": "dialog-act", "encoder": result.encoder}, weights=stored)
        exports[stored] = (directory, expected)
    return result, dialogs, exports


def test_the_one_stage_trainer_refuses_an_encoder_config(tiny_bert):
    from training.dialog.config import DialogConfig
    from training.dialog.trainer import train_dialog_model

    with pytest.raises(ConfigError, match="two stages"):
        train_dialog_model(DialogConfig(utterance_encoder=str(tiny_bert)), tiny_dialogs(), tiny_dialogs())


def test_the_encoder_model_trains_in_two_stages_and_records_its_encoder(encoder_run, tiny_bert):
    from training.common.artifacts import read_metadata, sha256_file

    result, _, exports = encoder_run
    directory = exports["float32"][0]
    record = result.encoder
    assert record["sha256"] == sha256_file(tiny_bert / "model.safetensors") and record["licence"] == "test-only"
    assert record["layers"] == "first 1 of 2" and record["pieces_kept"] == len(result.vocabs.words)
    assert [e["epoch"] for e in record["fine_tuning"]["epochs"]] == [1]
    assert len(result.history) >= 1 and 0.0 <= result.best_dev_score <= 1.0
    metadata = read_metadata(directory)
    assert metadata["encoder"]["sha256"] == record["sha256"] and metadata["word_pieces"] == "word_pieces.json"
    assert (directory / "word_pieces.json").is_file()
    # The encoder's weights left its published values (stage 1 trained it); its pooler, unused, did not move.
    from training.dialog.model import utterance_encoder

    trained = utterance_encoder(result.model)
    assert not trained.get_layer("bert").get_layer("pooled_dense").trainable


@pytest.mark.parametrize("stored", ["float32", "float16"])
def test_the_export_reads_text_as_the_keras_model(encoder_run, stored):
    """The SavedModel (words split into pieces by SavedDialogModel) equals the Keras model, and streaming turn by
    turn from the zero state (the fast ONNX step, as the service streams) equals the whole dialogs (the SavedModel's
    ``serve``), with batch != turns both ways. 5e-5, not 1e-5: the two pad a
    turn's pieces to different lengths (each to its own batch's longest turn), so oneDNN sums the attention and
    LayerNorm in another order, and this random BERT's LayerNorms magnify that (a trained one's export check reads
    4e-7)."""
    from training.dialog.evaluate import dialog_inputs
    from training.dialog.saved_dialog import DialogTurnInput, SavedDialogModel

    _, dialogs, exports = encoder_run
    directory, expected = exports[stored]
    model = SavedDialogModel(directory, runtime="onnx")  # as the service loads it: the ONNX step, checked at load
    assert model.runtime == "onnx" and model.fast_check["max_difference"] <= 1e-5, model.fast_check
    exported = model.predict([dialog_inputs(d, False, model.tokenizer) for d in dialogs])
    for a, b in zip(expected, exported):
        np.testing.assert_allclose(a, b, atol=5e-5)
    for batch in (dialogs[:1], dialogs[:5]):  # 1 session x 4 turns; 5 sessions of 3 or 4 turns
        h, c = model.zero_state(len(batch))
        whole = model.predict([dialog_inputs(d, False, model.tokenizer) for d in batch])
        for t in range(max(len(d.turns) for d in batch)):
            live = [i for i, d in enumerate(batch) if t < len(d.turns)]
            turns = [DialogTurnInput([x.text for x in model.tokenizer.tokenize(batch[i].turns[t].text)],
                                     batch[i].turns[t].speaker) for i in live]
            out = model.step(turns, h[live], c[live])
            h[live], c[live] = out["state_h"], out["state_c"]
            for row, i in enumerate(live):
                np.testing.assert_allclose(out["probabilities"][row], whole[i][t], atol=5e-5)


def test_the_float16_export_stores_every_weight_in_float16(encoder_run):
    import tensorflow as tf

    _, _, exports = encoder_run
    stored = tf.saved_model.load(str(exports["float16"][0])).stored_variables
    assert len(stored) > 20 and all(v.dtype == tf.float16 for v in stored if v.dtype.is_floating)


def test_the_service_streams_turns_through_the_encoder_model(tmp_path, encoder_run):
    """Served as a user would serve it: without the training extras (no keras-hub) in the process."""
    import os
    import shutil
    import subprocess
    import sys
    import textwrap

    from test_install import BLOCK_TRAIN_EXTRA

    directory = encoder_run[2]["float32"][0]
    shutil.copytree(directory, tmp_path / "models" / "dialog-act" / "1")
    script = BLOCK_TRAIN_EXTRA + textwrap.dedent(f"""
        import json
        from service import create_app

        client = create_app({{"models_dir": {str(tmp_path / "models")!r}, "poll_interval_seconds": 0}}).test_client()
        labels = set(json.load(open({str(directory / "metadata.json")!r}))["labels"])
        session = client.post("/v1/dialogs", json={{"model": "dialog-act"}}).json["session_id"]
        for text in ("Do you have any pets?", "Yes, two cats. [CLS] [SEP]", "Naïve 猫 uh-huh"):
            answer = client.post(f"/v1/dialogs/{{session}}/turns", json={{"text": text, "speaker": "A"}})
            assert answer.status_code == 200 and answer.json["label"] in labels, answer.json
        assert not BLOCKED & {{name.split(".")[0] for name in sys.modules}}
        print("streamed without keras-hub")
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "streamed without keras-hub" in result.stdout


def test_fine_tuning_survives_batches_at_the_longest_turn(tiny_bert):
    """Every turn as long as max_words allows: the batches' shape guard pads the second batch one step beyond the
    first (``ShapeGuardedBatches``), past max_words, and the encoder has position rows for it."""
    from training.common.text_encoder import position_rows
    from training.dialog.config import DialogConfig
    from training.dialog.encoder_training import fine_tune_encoder, pooled_vectors
    from training.dialog.vocab import EncodedDialog

    config = DialogConfig(utterance_encoder=str(tiny_bert), encoder_layers=1, max_words=8, encoder_batch=2,
                          encoder_warmup=1, min_word_count=1)
    pretrained = PretrainedEncoder.read(tiny_bert)
    shape = pretrained.shape(1, config.max_words)
    assert shape.positions == position_rows(8) == 16
    encoder = build_text_encoder(shape, 20)
    rng = np.random.default_rng(0)
    full = [EncodedDialog(rng.integers(2, 20, size=(4, 8)).astype(np.int32), np.ones(4, np.int32),
                          rng.integers(0, 3, size=4).astype(np.int32), np.ones(4, np.float32)) for _ in range(3)]
    record = fine_tune_encoder(encoder, config, 3, full, full[:1])
    assert record["batches_per_epoch"] == 6 and 0.0 <= record["epochs"][0]["dev_one_utterance"] <= 1.0
    vectors = pooled_vectors(encoder, full)
    assert [v.shape for v in vectors] == [(4, 8)] * 3 and np.isfinite(np.concatenate(vectors)).all()

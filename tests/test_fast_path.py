"""The fast path (ONNX Runtime's fused LSTM kernels, built from a version's weights): the same answers as the Keras
model and the SavedModel to 1e-5 on real data, the same ids as training's preprocessing, and a version whose fast
path disagrees is rejected by the service like a broken one."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tensorflow as tf

from service.registry import ModelRegistry, StepRequest
from service.settings import ServiceSettings
from training.common import artifacts, fast_path
from training.common.fast_path import FastPathMismatch, graph_lowercase
from training.dialog.data import read_dialogs
from training.dialog.evaluate import dialog_inputs
from training.dialog.saved_dialog import DialogTurnInput, SavedDialogModel
from training.tagger.config import TaggerConfig
from training.tagger.data import read_conllu
from training.tagger.export import export_tagger
from training.tagger.model import build_tagger
from training.tagger.saved_tagger import SavedTagger
from training.tagger.vocab import TaggerVocabs, encode_words

from conftest import DATA, EWT_DEV, REPO, export_random_dialog_model

MESSY = ["İstanbul", "ÅNGSTRÖM", "ǅemal", "ﬁnance", "Σίσυφος", "ΣΊΣΥΦΟΣ", "2024-11-23", "🙂🙂", "a" * 40, "x\u0301",
         "\u2c2fABC", "Ⱟ", "ꟀΣ", "Übermäßig"]


def test_graph_lowercase_is_tensorflows():
    """Python's lower() and the exported graphs' tf.strings.lower differ on letters newer than TensorFlow's ICU;
    the fast path must lower-case as the graph does, final sigma and dotted I included."""
    words = MESSY + ["Hello", "ΟΔΟΣ", "ΟΔΟΣ\u2c2f", "\u2c2fΟΔΟΣ", "ŁÓDŹ", "Ǆǅǆ"]
    expected = [w.decode("utf-8") for w in tf.strings.lower(tf.constant(words), encoding="utf-8").numpy()]
    assert [graph_lowercase(w) for w in words] == expected
    assert "\u2c2f".lower() != expected[words.index("Ⱟ")]  # the case that makes it necessary


@pytest.mark.parametrize("char_encoder", ["bilstm", "cnn"])
def test_tagger_fast_path_equals_keras_and_saved_model(ewt_slices, tmp_path, char_encoder):
    """Real sentences of 1 to 42 words in unsorted mixed-length batches, and one at a time: the fast path gives the
    Keras model's probabilities and the SavedModel's, and the same ids as training's preprocessing."""
    train = read_conllu(ewt_slices[0])
    sentences = [list(s.words) for s in read_conllu(ewt_slices[1])][:40]
    sentences.append(MESSY)
    config = TaggerConfig(word_dim=8, char_dim=6, char_hidden=6, hidden=10, layers=2, max_word_length=12,
                          char_encoder=char_encoder)
    vocabs = TaggerVocabs.build(train, min_word_count=1)
    model = build_tagger(config, len(vocabs.words), len(vocabs.chars), len(vocabs.tags))
    _, directory = export_tagger(model, vocabs, config, tmp_path / "pos", {"task": "pos"})
    fast = SavedTagger(directory, runtime="onnx")
    assert fast.runtime == "onnx" and fast.fast_check["max_difference"] <= 1e-5
    reference = SavedTagger(directory).tag(sentences, batch_size=16)
    # The Keras model's probabilities, in one padded batch (padding never changes a token's output:
    # tests/test_model.py), sliced to each sentence's length.
    encoded = [encode_words(sentence, vocabs, config.max_word_length) for sentence in sentences]
    longest = max(len(word_ids) for word_ids, _ in encoded)
    word_batch = np.zeros((len(encoded), longest), dtype=encoded[0][0].dtype)
    widest = max(char_ids.shape[1] for _, char_ids in encoded)
    char_batch = np.zeros((len(encoded), longest, widest), dtype=encoded[0][1].dtype)
    for row, (word_ids, char_ids) in enumerate(encoded):
        word_batch[row, :len(word_ids)] = word_ids
        char_batch[row, :char_ids.shape[0], :char_ids.shape[1]] = char_ids
    batch = np.asarray(model({"word_ids": word_batch, "char_ids": char_batch}, training=False))
    expected = [batch[row, :len(sentence)] for row, sentence in enumerate(sentences)]
    for batch_size in (16, 1):
        for index, (result, saved) in enumerate(zip(fast.tag(sentences, batch_size=batch_size), reference)):
            np.testing.assert_allclose(result.probabilities, expected[index], atol=1e-5)
            np.testing.assert_allclose(result.probabilities, saved.probabilities, atol=1e-5)
            assert result.tags == saved.tags
    for sentence, (word_ids, char_ids) in zip(sentences, encoded):
        for t, token in enumerate(sentence):
            got_word, _, got_chars = fast.fast.token_ids(token)
            assert got_word == word_ids[t] and list(got_chars) == char_ids[t][char_ids[t] != 0].tolist()


@pytest.fixture(scope="module")
def shipped_pos():
    return SavedTagger(artifacts.resolve_model_dir(REPO / "models" / "pos"), runtime="onnx")


def test_shipped_tagger_fast_path_equals_saved_model_on_ewt_dev(shipped_pos):
    if not EWT_DEV.is_file():
        pytest.skip(f"{EWT_DEV} not found")
    sentences = [list(s.words) for s in read_conllu(EWT_DEV)][:600]
    assert shipped_pos.runtime == "onnx"
    fast = shipped_pos.tag(sentences, batch_size=64)
    saved = shipped_pos._tag_tensorflow(sentences, 64)
    for a, b in zip(fast, saved):
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
        assert a.tags == b.tags
    for sentence, b in zip(sentences[:40], saved):  # a lone sentence, as most requests are
        np.testing.assert_allclose(shipped_pos.tag([sentence])[0].probabilities, b.probabilities, atol=1e-5)


def stream(model: SavedDialogModel, dialogs) -> list[np.ndarray]:
    """Every conversation through ``step``, one call per turn index holding the sessions still talking."""
    state_h, state_c = model.zero_state(len(dialogs))
    outputs = [[] for _ in dialogs]
    for t in range(max(len(d) for d in dialogs)):
        live = [i for i, d in enumerate(dialogs) if t < len(d)]
        result = model.step([dialogs[i][t] for i in live], state_h[live], state_c[live])
        state_h[live], state_c[live] = result["state_h"], result["state_c"]
        for row, i in enumerate(live):
            outputs[i].append(result["probabilities"][row])
    return [np.stack(o) for o in outputs]


@pytest.mark.parametrize("name, data, fmt", [("dialog-act", DATA / "swda" / "val", "swda"),
                                             ("dialog-action", DATA / "sgd" / "sgd-dev.jsonl", "sgd")])
def test_shipped_dialog_fast_step_streams_as_the_saved_model_serves(name, data, fmt):
    """Real conversations of different lengths streamed together through the fast step give the SavedModel's
    whole-dialog probabilities (``serve``) turn after turn."""
    if not data.exists():
        pytest.skip(f"{data} not found")
    model = SavedDialogModel(artifacts.resolve_model_dir(REPO / "models" / name), runtime="onnx")
    assert model.runtime == "onnx"
    conversations = [dialog_inputs(d, model.multi_label, model.tokenizer) for d in read_dialogs(data, fmt)[:12]]
    conversations = [c[:6 + 4 * i] for i, c in enumerate(conversations)]  # sessions that end at different turns
    assert len({len(c) for c in conversations}) > 1
    for streamed, expected in zip(stream(model, conversations), model.predict(conversations)):
        np.testing.assert_allclose(streamed, expected, atol=1e-5)


def test_dialog_fast_step_with_turn_features_beside_the_state(tmp_path):
    _, _, _, _, directory = export_random_dialog_model(tmp_path / "act", classifier_input="state+turn", max_words=5)
    model = SavedDialogModel(directory, runtime="onnx")
    assert model.runtime == "onnx"
    conversations = [[DialogTurnInput("Do you have any pets at home ?".split(), "A"), DialogTurnInput([], "B"),
                      DialogTurnInput(["Yes", "."], "stranger")], [DialogTurnInput(["Oh", ",", "nice"], "B")]]
    for streamed, expected in zip(stream(model, conversations), model.predict(conversations)):
        np.testing.assert_allclose(streamed, expected, atol=1e-5)


# --- a fast path that disagrees: the version is rejected ---


def _skewed(original):
    """``saved_model_weights`` with one bias moved by 0.01: a fast graph that is almost, but not, the model."""
    def weights(saved_model):
        found = dict(original(saved_model))
        role = next(r for r in found if r[2] == "bias" and r[0] in ("bilstm_1", "turn_lstm"))
        found[role] = found[role] + 0.01
        return found
    return weights


@pytest.mark.parametrize("kind", ["tagger", "dialog"])
def test_a_version_whose_fast_path_disagrees_is_rejected(tmp_path, monkeypatch, random_tagger_dir, random_dialog_dirs,
                                                          kind):
    from training.dialog import fast_dialog
    from training.tagger import fast_tagger

    source, name = (random_tagger_dir, "pos") if kind == "tagger" else (random_dialog_dirs["dialog-act"], "act")
    shutil.copytree(source, tmp_path / "models" / name / "1")
    settings = {"models_dir": str(tmp_path / "models"), "poll_interval_seconds": 0, "dialog_sessions": False}
    module = fast_tagger if kind == "tagger" else fast_dialog
    with monkeypatch.context() as patch:
        patch.setattr(module, "saved_model_weights", _skewed(module.saved_model_weights))
        registry = ModelRegistry(ServiceSettings(**settings), settle_seconds=0)
        registry.refresh(initial=True)
        status = registry.status(name)
        assert status["state"] == "UNAVAILABLE" and status["versions"][0]["state"] == "REJECTED"
        assert "FastPathMismatch" in status["versions"][0]["error"]
        registry.close()
        # The same weights served by TensorFlow alone load: it is the fast path that was refused.
        registry = ModelRegistry(ServiceSettings(**settings, runtime="tensorflow"), settle_seconds=0)
        registry.refresh(initial=True)
        assert registry.get(name).version == 1
        registry.close()
    registry = ModelRegistry(ServiceSettings(**settings), settle_seconds=0)  # the fast path as built: it serves
    registry.refresh(initial=True)
    served = registry.get(name)
    reader = served.tagger or served.dialog
    assert reader.runtime == "onnx"
    if kind == "dialog":
        state = np.zeros(reader.state_size, np.float32)
        result = served.step([StepRequest(DialogTurnInput(["Hi", "!"], "A"), state, state)])[0]
        reference = reader._step_tensorflow([DialogTurnInput(["Hi", "!"], "A")], state[None], state[None])
        np.testing.assert_allclose(result.probabilities, reference["probabilities"][0], atol=1e-5)
    registry.close()


def test_a_wrong_gate_order_is_caught(tmp_path, monkeypatch, random_tagger_dir):
    """Keras orders an LSTM's gates i, f, c, o and ONNX i, o, f, c: a graph written in Keras's order never serves."""
    monkeypatch.setattr(fast_path, "onnx_lstm_weights",
                        lambda k, r, b: (k.T.copy(), r.T.copy(), np.concatenate([b, np.zeros_like(b)])))
    with pytest.raises(FastPathMismatch, match="differ from the SavedModel's"):
        SavedTagger(random_tagger_dir, runtime="onnx")


def test_runtime_setting_is_checked():
    assert ServiceSettings.load({"runtime": "tensorflow"}).runtime == "tensorflow"
    assert ServiceSettings.load({}, environ={}).runtime == "onnx"
    with pytest.raises(ValueError, match="SEQTAG_RUNTIME"):
        ServiceSettings.load({}, environ={"SEQTAG_RUNTIME": "tensorrt"})
    defaults = ServiceSettings.load({}, environ={})
    assert (defaults.encoder_precision, defaults.cached_turns) == ("int8", 4096)
    assert ServiceSettings.load({}, environ={"SEQTAG_ENCODER_PRECISION": "float32"}).encoder_precision == "float32"
    with pytest.raises(ValueError, match="SEQTAG_ENCODER_PRECISION"):
        ServiceSettings.load({}, environ={"SEQTAG_ENCODER_PRECISION": "int4"})
    with pytest.raises(ValueError, match="SEQTAG_CACHED_TURNS"):
        ServiceSettings.load({"cached_turns": -1}, environ={})


def test_the_service_imports_no_trainer_model_builder_or_scorer(tmp_path, random_tagger_dir, random_dialog_dirs):
    """Serving, fast path included, loads only the exported-model readers and the shared core."""
    import subprocess
    import sys

    shutil.copytree(random_tagger_dir, tmp_path / "pos" / "1")
    shutil.copytree(random_dialog_dirs["dialog-action"], tmp_path / "action" / "1")
    script = ("import sys; from service import create_app; "
              f"app = create_app({{'models_dir': {str(tmp_path)!r}, 'poll_interval_seconds': 0}}); "
              "registry = app.extensions['seqtag.registry']; "
              "assert registry.get('pos').tagger.runtime == 'onnx' and registry.get('action').dialog.runtime == 'onnx'; "
              "print(' '.join(sorted(m for m in sys.modules if m.startswith('training.'))))")
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    loaded = completed.stdout.split()
    assert "training.tagger.fast_tagger" in loaded and "training.dialog.fast_dialog" in loaded
    forbidden = [m for m in loaded if m.startswith(("training.tagger.", "training.dialog."))
                 and m.rsplit(".", 1)[-1] in ("trainer", "model", "evaluate", "export", "reexport", "serving_graph",
                                              "cli", "batching")]
    assert forbidden == []

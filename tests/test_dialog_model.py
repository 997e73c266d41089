"""Dialog models end to end on small real slices: train and export with the CLI, then stream turn by turn.

- ``step`` fed turn by turn (several sessions of different lengths in one call) gives ``serve``'s outputs;
- a Keras ``stateful=True`` twin of the turn LSTM, stepped one turn at a time and reset, does too;
- the SavedModel's own string preprocessing gives the Keras model's outputs on training's encoding;
- ``seqtag evaluate`` prints the figures; a bad data file exits 2 naming file and line.
"""

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from training.cli import main
from training.dialog.batching import pad_dialogs
from training.dialog.data import read_dialogs
from training.dialog.evaluate import dialog_inputs
from training.dialog.model import dialog_parts
from training.dialog.saved_dialog import SavedDialogModel
from training.dialog.trainer import load_checkpoint
from training.dialog.vocab import encode_dialog, turn_tokens

from conftest import DATA

SWDA = DATA / "swda"
SGD = DATA / "sgd"
TINY = ["--word-dim", "8", "--utterance-hidden", "6", "--speaker-dim", "3", "--turn-hidden", "10", "--epochs", "2",
        "--batch-turns", "256", "--quiet"]


@pytest.fixture(scope="module")
def swda_slices(tmp_path_factory):
    if not SWDA.is_dir():
        pytest.skip(f"SwDA not found under {DATA}")
    root = tmp_path_factory.mktemp("swda")
    shutil.copy(SWDA / "label_map.txt", root / "label_map.txt")  # the acts' names, beside train/ as in the corpus
    for split, count in (("train", 4), ("val", 2)):
        (root / split).mkdir()
        for source in sorted((SWDA / split).glob("*.txt"))[:count]:
            shutil.copy(source, root / split / source.name)
    return root / "train", root / "val"


@pytest.fixture(scope="module")
def sgd_slices(tmp_path_factory):
    if not SGD.is_dir():
        pytest.skip(f"SGD not found under {DATA}")
    root = tmp_path_factory.mktemp("sgd")
    for split, count in (("train", 60), ("dev", 12)):
        with open(SGD / f"sgd-{split}.jsonl", encoding="utf-8") as source:
            (root / f"{split}.jsonl").write_text("".join(next(source) for _ in range(count)), encoding="utf-8")
    return root / "train.jsonl", root / "dev.jsonl"


def train(task, data, fmt, tmp_path_factory, *options):
    out = tmp_path_factory.mktemp(task) / task
    checkpoint = out.parent / "checkpoint"
    argv = ["train", task, "--train", str(data[0]), "--dev", str(data[1]), "--format", fmt, "--out", str(out),
            "--checkpoint", str(checkpoint), *TINY, *options]
    assert main(argv) == 0
    return out / "1", checkpoint


@pytest.fixture(scope="module")
def act_model(swda_slices, tmp_path_factory):
    # the output layer also sees the turn's features here; the action model keeps the default (state only)
    return train("dialog-act", swda_slices, "swda", tmp_path_factory, "--classifier-input", "state+turn")


@pytest.fixture(scope="module")
def action_model(sgd_slices, tmp_path_factory):
    return train("dialog-action", sgd_slices, "sgd", tmp_path_factory)


@pytest.fixture(params=["act", "action"])
def trained(request, act_model, action_model, swda_slices, sgd_slices):
    if request.param == "act":
        return act_model, read_dialogs(swda_slices[1], "swda")
    return action_model, read_dialogs(sgd_slices[1], "sgd")


def weight_bytes(version) -> int:
    """Bytes of a version's stored weights."""
    return sum(f.stat().st_size for f in (Path(version) / "variables").glob("variables.data-*"))


def stream(model: SavedDialogModel, dialogs) -> list[np.ndarray]:
    """Every dialog turn by turn through ``step``, all sessions in one call per turn index."""
    inputs = [dialog_inputs(d, model.multi_label, model.tokenizer) for d in dialogs]
    state_h, state_c = model.zero_state(len(dialogs))
    outputs = [[] for _ in dialogs]
    for t in range(max(len(d) for d in inputs)):
        live = [i for i, d in enumerate(inputs) if t < len(d)]  # sessions still talking: fewer as t grows
        result = model.step([inputs[i][t] for i in live], state_h[live], state_c[live])
        state_h[live], state_c[live] = result["state_h"], result["state_c"]
        for row, i in enumerate(live):
            outputs[i].append(result["probabilities"][row])
    return [np.stack(o) for o in outputs]


@pytest.mark.parametrize("runtime", ["tensorflow", "onnx"])
def test_step_by_step_equals_whole_dialogs(trained, runtime):
    """The SavedModel's step, and the fast step built from its weights (ONNX Runtime; classifier input state+turn
    for acts, state only and previous actions for actions), streamed with sessions of different lengths in each
    call, give the SavedModel's whole-dialog probabilities."""
    (directory, _), dialogs = trained
    model = SavedDialogModel(directory, runtime=runtime)
    assert model.runtime == runtime
    dialogs = dialogs[:8]
    assert len({len(d.turns) for d in dialogs}) > 1  # sessions of different lengths share each step call
    whole = model.predict([dialog_inputs(d, model.multi_label, model.tokenizer) for d in dialogs])
    for streamed, expected in zip(stream(model, dialogs), whole):
        assert streamed.shape == expected.shape
        np.testing.assert_allclose(streamed, expected, atol=1e-5)


def test_serving_preprocessing_matches_training_encoding(trained):
    (directory, checkpoint), dialogs = trained
    keras_model, vocabs, config, _, _ = load_checkpoint(checkpoint)
    model = SavedDialogModel(directory)
    dialogs = dialogs[:3]
    encoded = [encode_dialog(d, [turn_tokens(t.text) for t in d.turns], vocabs, config.max_words, config.multi_label)
               for d in dialogs]
    inputs, _, _ = pad_dialogs(encoded, config.multi_label)
    expected = np.asarray(keras_model(inputs, training=False))
    for row, actual in enumerate(model.predict([dialog_inputs(d, model.multi_label, model.tokenizer) for d in dialogs])):
        np.testing.assert_allclose(actual, expected[row, :len(dialogs[row].turns)], atol=1e-5)


def test_stateful_keras_twin_reproduces_the_outputs_and_resets(trained):
    """The seeds' semantics: a stateful LSTM stepped one turn at a time, ``reset_states()`` between dialogs."""
    (_, checkpoint), dialogs = trained
    keras_model, vocabs, config, _, _ = load_checkpoint(checkpoint)
    features_model, turn_lstm, output_layer = dialog_parts(keras_model)
    dialogs = dialogs[:3]
    encoded = [encode_dialog(d, [turn_tokens(t.text) for t in d.turns], vocabs, config.max_words, config.multi_label)
               for d in dialogs]
    inputs, _, _ = pad_dialogs(encoded, config.multi_label)
    expected = np.asarray(keras_model(inputs, training=False))
    features = np.asarray(features_model(inputs, training=False))  # [B, D, F]
    batch, turns = features.shape[:2]

    twin_input = keras.Input(batch_shape=(batch, 1, features.shape[-1]))
    twin_lstm = keras.layers.LSTM(config.turn_hidden, stateful=True, return_sequences=True)
    classifier_input = twin_lstm(twin_input)
    if config.classifier_input == "state+turn":
        classifier_input = keras.layers.Concatenate()([classifier_input, twin_input])
    twin = keras.Model(twin_input, keras.layers.TimeDistributed(output_layer)(classifier_input))
    twin_lstm.set_weights(turn_lstm.get_weights())
    for _ in range(2):  # the second pass after reset_states() must repeat the first
        outputs = np.concatenate([np.asarray(twin(features[:, t:t + 1])) for t in range(turns)], axis=1)
        for row, dialog in enumerate(dialogs):
            n = len(dialog.turns)  # past a dialog's end its row is padding, which the masked model skips
            np.testing.assert_allclose(outputs[row, :n], expected[row, :n], atol=1e-5)
        twin_lstm.reset_states()


def test_metadata_and_evaluate_cli(act_model, action_model, swda_slices, sgd_slices, capsys):
    for (directory, _), data, fmt, key, count in ((act_model, swda_slices[1], "swda", "accuracy", "utterances"),
                                                  (action_model, sgd_slices[1], "sgd", "micro_f1", "turns")):
        metadata = json.loads((directory / "metadata.json").read_text())
        assert metadata["kind"] == "dialog" and metadata["version"] == 1 and metadata["labels"]
        assert metadata["command"].startswith("seqtag train dialog-")
        assert main(["evaluate", "--model", str(directory.parent), "--data", str(data), "--format", fmt, "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result[key] == pytest.approx(metadata["metrics"]["dev"][key])
        assert result[count] == sum(1 for d in read_dialogs(data, fmt) for t in d.turns if t.labels is not None)
    action_metadata = json.loads((action_model[0] / "metadata.json").read_text())
    action_labels = action_metadata["labels"]
    assert all(label[0].isupper() for label in action_labels) and any("(" in label for label in action_labels)
    assert "label_names" not in action_metadata  # SGD has no label map


def test_act_models_carry_the_names_of_their_labels(act_model, swda_slices, tmp_path):
    """Training picks up label_map.txt beside the SwDA directory: each act the model knows has its name in the
    metadata, and so has the checkpoint (an export from it names them too). add_label_names does the same for
    a version exported before."""
    from training.dialog.cli import add_label_names
    from training.dialog.data import read_label_names

    names = read_label_names(swda_slices[0].parent / "label_map.txt")
    metadata = json.loads((act_model[0] / "metadata.json").read_text())
    assert metadata["label_names"] == {label: names[label] for label in metadata["labels"]}
    assert SavedDialogModel(act_model[0]).label_names["qy"] == "Yes-No-Question"
    out = tmp_path / "dialog-act"
    assert main(["export", "--from-checkpoint", str(act_model[1]), "--out", str(out)]) == 0
    assert json.loads((out / "1" / "metadata.json").read_text())["label_names"] == metadata["label_names"]
    # A version without names gets them written in, and nothing else changes.
    older = tmp_path / "older"
    shutil.copytree(act_model[0], older)
    del metadata["label_names"]
    (older / "metadata.json").write_text(json.dumps(metadata))
    assert add_label_names(older, swda_slices[0].parent / "label_map.txt") == {label: names[label] for label in metadata["labels"]}
    assert json.loads((older / "metadata.json").read_text()) == {**metadata, "label_names": SavedDialogModel(older).label_names}


def test_bad_dialog_file_is_a_clear_cli_error(tmp_path, swda_slices, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "0001.txt").write_text("A|Hello there.|fp\nB|no tag here\n", encoding="utf-8")
    assert main(["train", "dialog-act", "--train", str(bad), "--dev", str(swda_slices[1]), "--out",
                 str(tmp_path / "m"), *TINY]) == 2
    assert "0001.txt:2" in capsys.readouterr().err


def test_init_from_checkpoint_goes_on_from_its_weights(act_model, swda_slices, tmp_path, capsys):
    directory, checkpoint = act_model
    out = tmp_path / "dialog-act"
    base = ["train", "dialog-act", "--train", str(swda_slices[0]), "--dev", str(swda_slices[1]), "--out", str(out),
            "--checkpoint", str(tmp_path / "checkpoint"), "--init-from", str(checkpoint), "--quiet"]
    # A learning rate too small to move any weight: the model that comes out is the checkpoint's.
    assert main([*base, "--epochs", "1", "--learning-rate", "1e-12"]) == 0
    dialogs = read_dialogs(swda_slices[1], "swda")
    before, after = SavedDialogModel(directory), SavedDialogModel(out / "1")
    assert after.labels == before.labels
    inputs = [dialog_inputs(d, False, before.tokenizer) for d in dialogs]
    for old, new in zip(before.predict(inputs), after.predict(inputs)):
        np.testing.assert_allclose(new, old, atol=1e-5)
    metadata = json.loads((out / "1" / "metadata.json").read_text())
    assert metadata["training"]["initialized_from"]["checkpoint"] == str(checkpoint)
    assert metadata["training"]["initialized_from"]["command"].startswith("seqtag train dialog-act")
    assert metadata["config"]["learning_rate"] == 1e-12 and metadata["config"]["word_dim"] == 8

    # The architecture is the checkpoint's: asking for another one is a clear error, not a silent rebuild.
    capsys.readouterr()
    assert main([*base, "--word-dim", "16"]) == 2
    assert "--word-dim" in capsys.readouterr().err


def test_training_writes_reports(act_model, action_model):
    act_report, action_report = act_model[0] / "report", action_model[0] / "report"
    for report in (act_report, action_report):
        assert (report / "report.md").is_file() and (report / "per_label.md").read_text().startswith("| label |")
        assert (report / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (act_report / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"  # one act per turn
    assert not (action_report / "confusion_matrix.png").exists()  # sets of actions: per-label figures only


def test_ensemble_export_averages_its_members_and_streams(act_model, swda_slices, action_model, sgd_slices,
                                                          tmp_path_factory):
    """Two act models of different sizes and classifier inputs as one version: ``serve`` gives the mean of
    the members' probabilities, and ``step`` with the members' states side by side streams it."""
    other_dir, other_checkpoint = train("dialog-act", swda_slices, "swda", tmp_path_factory,
                                        "--turn-hidden", "12", "--seed", "7", "--epochs", "1")
    out = tmp_path_factory.mktemp("ensemble") / "dialog-act"
    assert main(["export", "--from-checkpoint", str(act_model[1]), str(other_checkpoint), "--out", str(out)]) == 0
    ensemble = SavedDialogModel(out / "1")
    metadata = ensemble.metadata
    assert ensemble.state_size == 10 + 12 and len(metadata["ensemble"]) == 2
    assert metadata["command"].startswith("seqtag export --from-checkpoint")
    assert metadata["metrics"]["dev"]["utterances"] > 0
    assert metadata["label_names"]["qy"] == "Yes-No-Question"  # the members' label names

    dialogs = read_dialogs(swda_slices[1], "swda")[:2]
    inputs = [dialog_inputs(d, False, ensemble.tokenizer) for d in dialogs]
    members = [SavedDialogModel(act_model[0]).predict(inputs), SavedDialogModel(other_dir).predict(inputs)]
    whole = ensemble.predict(inputs)
    for row, probabilities in enumerate(whole):
        np.testing.assert_allclose(probabilities, (members[0][row] + members[1][row]) / 2, atol=1e-5)
        assert np.abs(members[0][row] - members[1][row]).max() > 1e-3  # the members differ: the mean means something
    for streamed, expected in zip(stream(ensemble, dialogs), whole):
        np.testing.assert_allclose(streamed, expected, atol=1e-5)

    # each weight written once (the members' variable lists must not store copies)
    assert weight_bytes(out / "1") <= 1.05 * (weight_bytes(act_model[0]) + weight_bytes(other_dir))
    # The service's runtime: one fast graph per member, from the variables the export lists for it, checked at load.
    fast = SavedDialogModel(out / "1", runtime="onnx")
    assert fast.runtime == "onnx" and fast.fast_check["max_difference"] <= 1e-5
    for streamed, expected in zip(stream(fast, dialogs), whole):
        np.testing.assert_allclose(streamed, expected, atol=1e-5)

    # Multi-label: the averaged probabilities get thresholds tuned on dev (a model with itself keeps its own).
    out = tmp_path_factory.mktemp("ensemble") / "dialog-action"
    assert main(["export", "--from-checkpoint", str(action_model[1]), str(action_model[1]), "--out", str(out)]) == 0
    single = json.loads((action_model[0] / "metadata.json").read_text())
    np.testing.assert_allclose(json.loads((out / "1" / "metadata.json").read_text())["thresholds"],
                               single["thresholds"], atol=1e-6)
    assert SavedDialogModel(out / "1", runtime="onnx").runtime == "onnx"


def test_weight_averaging_is_what_dev_scores_and_what_is_kept(swda_slices):
    """``--ema-momentum``: dev scores the moving average of the weights and the best epoch's average is the model
    that comes back (not the raw weights, which follow the same path as a run without averaging)."""
    from training.dialog.config import DialogConfig
    from training.dialog.trainer import keras_probabilities, train_dialog_model

    train_dialogs, dev = read_dialogs(swda_slices[0], "swda"), read_dialogs(swda_slices[1], "swda")
    tiny = dict(task="dialog-act", word_dim=8, utterance_hidden=6, speaker_dim=3, turn_hidden=10, epochs=2,
                batch_turns=128, learning_rate=0.01)
    raw = train_dialog_model(DialogConfig(**tiny), train_dialogs, dev)
    averaged = train_dialog_model(DialogConfig(**tiny, ema_momentum=0.9), train_dialogs, dev)

    def accuracy(result):
        gold, predicted = [], []
        for dialog, probabilities in zip(dev, keras_probabilities(result.model, result.vocabs, result.config, dev)):
            for turn, row in zip(dialog.turns, probabilities):
                if turn.labels is not None and turn.labels[0] in result.vocabs.labels.items:
                    gold.append(result.vocabs.labels.id(turn.labels[0]))
                    predicted.append(int(row.argmax()))
        return np.mean(np.array(gold) == np.array(predicted))  # as training scores dev: over labels train has

    for result in (raw, averaged):
        assert accuracy(result) == pytest.approx(result.best_dev_score, abs=1e-9)
    difference = max(float(np.abs(a - b).max()) for a, b in zip(raw.model.get_weights(), averaged.model.get_weights()))
    assert difference > 1e-3
    with pytest.raises(Exception, match="ema_momentum"):
        DialogConfig(ema_momentum=1.0)


def test_float16_weights_halve_the_bytes_and_equal_the_rounded_model(act_model, action_model, swda_slices, sgd_slices,
                                                                    tmp_path):
    """``seqtag export --weights float16``: every float32 weight stored as float16 (half the bytes), the export equal
    to the Keras model with its weights so rounded, streaming as ``serve`` does, on TensorFlow and on the fast path."""
    from training.dialog.export import round_weights
    from training.dialog.trainer import keras_probabilities

    directory, checkpoint = act_model
    out = tmp_path / "dialog-act"
    assert main(["export", "--from-checkpoint", str(checkpoint), "--out", str(out), "--weights", "float16"]) == 0
    exported = SavedDialogModel(out / "1")
    metadata = exported.metadata
    assert metadata["weights_stored_as"] == "float16"
    assert metadata["export_check"]["max_abs_difference"] <= 1e-5  # against the rounded Keras model
    assert 0 < metadata["rounding"]["max_abs_difference_on_probe"] < 1e-2  # what rounding moved, recorded
    stored = exported.saved_model.stored_variables
    assert {v.dtype.name for v in stored if v.dtype.is_floating} == {"float16"}
    assert weight_bytes(out / "1") <= 0.6 * weight_bytes(directory)  # about half (a tiny model: plus alignment)

    dialogs = read_dialogs(swda_slices[1], "swda")
    model, vocabs, config, _, _ = load_checkpoint(checkpoint)
    rounded = keras_probabilities(round_weights(model), vocabs, config, dialogs)
    whole = exported.predict([dialog_inputs(d, False, exported.tokenizer) for d in dialogs])
    for got, expected in zip(whole, rounded):
        np.testing.assert_allclose(got, expected, atol=1e-5)
    for streamed, expected in zip(stream(exported, dialogs), whole):
        np.testing.assert_allclose(streamed, expected, atol=1e-5)
    fast = SavedDialogModel(out / "1", runtime="onnx")
    assert fast.runtime == "onnx" and fast.fast_check["max_difference"] <= 1e-5

    # An ensemble of action models, so stored: it streams on the fast path, its thresholds tuned on dev.
    ensemble_out = tmp_path / "dialog-action"
    assert main(["export", "--from-checkpoint", str(action_model[1]), str(action_model[1]), "--out", str(ensemble_out),
                 "--weights", "float16"]) == 0
    ensemble = SavedDialogModel(ensemble_out / "1", runtime="onnx")
    assert ensemble.runtime == "onnx" and ensemble.metadata["weights_stored_as"] == "float16"
    # two members at about half the bytes each (float32: twice the one model's)
    assert weight_bytes(ensemble_out / "1") <= 1.2 * weight_bytes(action_model[0])
    sgd = read_dialogs(sgd_slices[1], "sgd")[:3]
    for streamed, expected in zip(stream(ensemble, sgd),
                                  ensemble.predict([dialog_inputs(d, True, ensemble.tokenizer) for d in sgd])):
        np.testing.assert_allclose(streamed, expected, atol=1e-5)


def test_float16_weights_are_for_dialog_checkpoints(tmp_path, capsys):
    version = sorted(Path("models/pos").glob("[0-9]*"))[-1]
    assert main(["export", "--from", str(version), "--out", str(tmp_path / "pos"), "--weights", "float16"]) == 2
    assert "--weights float16" in capsys.readouterr().err

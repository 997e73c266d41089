"""Training beyond TensorFlow on one CPU: another Keras backend, mixed precision, tf.distribute, the cuDNN path.

The test process runs TensorFlow; what needs another backend or another device layout runs ``seqtag`` in a
subprocess (a Keras backend and TensorFlow's devices are fixed when a process starts).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA
from training_runs import REPO, max_weight_difference, run_seqtag, train_args, worker_pid


def test_two_workers_train_the_one_process_model_and_go_on_after_one_is_killed(torch_checkpoint, ewt_slices,
                                                                                tmp_path):
    """``seqtag train pos --workers 2`` (torchrun, gloo): each worker steps on half of every global batch of 16, and
    worker 1 gets SIGKILL once epoch 1 is backed up. torchrun starts both again, they go on from the backup, and the
    run ends with the weights the one-process torch run (``torch_checkpoint``, batch 16) ended with, to 1e-5, and the
    same dev history. The command then exports under TensorFlow (this process's backend), checked on the probe."""
    import signal
    import time

    from training.tagger.saved_tagger import SavedTagger

    single, single_log = torch_checkpoint
    assert not (single / "models" / "pos").exists(), "a torch run cannot write a SavedModel: it stops at its checkpoint"
    assert f"seqtag export --from-checkpoint {single / 'checkpoint'}" in single_log

    checkpoint, root = tmp_path / "checkpoint", tmp_path / "models" / "pos"
    args = [*train_args(ewt_slices, root, checkpoint, "--dropout", "0", "--batch-size", "8", "--workers", "2",
                        "--max-restarts", "1")]
    script = "import sys\nfrom training.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    launcher = subprocess.Popen([sys.executable, "-c", script, *args], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"})
    backup = checkpoint / "backup" / "training_metadata.json"  # rank 0's backup, every worker's state
    deadline = time.monotonic() + 240
    while not (backup.exists() and json.loads(backup.read_text() or "{}").get("epoch") == 1):
        assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()[0][-3000:]
        time.sleep(0.02)
    pid = worker_pid(1, str(checkpoint))
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    log = launcher.communicate(timeout=240)[0]
    assert launcher.returncode == 0, log[-3000:]
    assert "resumed after epoch 1" in log and not (checkpoint / "backup").exists()

    state = json.loads((checkpoint / "training.json").read_text())
    training = state["metadata"]["training"]
    assert training["backend"] == "torch" and training["strategy"] == "torch.distributed (gloo)"
    assert training["workers"] == 2 and training["global_batch"] == 16
    expected = json.loads((single / "checkpoint" / "training.json").read_text())["metadata"]["training"]["history"]
    for got, want in zip(training["history"], expected, strict=True):
        assert got["dev_accuracy"] == want["dev_accuracy"] and got["loss"] == pytest.approx(want["loss"], abs=1e-5)
    assert max_weight_difference(checkpoint, single / "checkpoint") < 1e-5

    # The export under TensorFlow of what torch trained: checked on the probe, scored on dev.
    metadata = json.loads((root / "1" / "metadata.json").read_text())
    assert metadata["export_check"]["trained_under"] == "torch" and metadata["export_check"]["max_abs_difference"] < 1e-5
    with np.load(checkpoint / "probe.npz") as arrays:
        trained = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
    exported = SavedTagger(root / "1").tag(state["probe"])
    assert len(trained) == len(exported) == 32
    assert max(float(np.abs(t - e.probabilities).max()) for t, e in zip(trained, exported)) < 1e-5
    best = max(r["dev_accuracy"] for r in training["history"])
    assert metadata["metrics"]["dev"]["accuracy"] == pytest.approx(best, abs=1e-6) and best > 0.4


def test_two_workers_train_the_one_process_dialog_action_model(tmp_path):
    """``seqtag train dialog-action --workers 2`` (torchrun, gloo) on 20 SGD dialogs, 2 epochs without dropout: the weights and the dev
    history of the one-process torch run with the same global batches (256 turns of whole dialogs), to 1e-5. The
    action model is the harder case for the loss: its system turns are real turns (the output mask keeps them) at
    weight 0, so each worker's share is counted in real turns, not in weighted ones."""
    sgd = DATA / "sgd"
    if not sgd.is_dir():
        pytest.skip(f"SGD not found under {DATA}")
    for split, count in (("train", 20), ("dev", 4)):
        with open(sgd / f"sgd-{split}.jsonl", encoding="utf-8") as source:
            (tmp_path / f"{split}.jsonl").write_text("".join(next(source) for _ in range(count)), encoding="utf-8")
    common = ["train", "dialog-action", "--train", str(tmp_path / "train.jsonl"), "--dev", str(tmp_path / "dev.jsonl"),
              "--format", "sgd", "--out", str(tmp_path / "models"), "--word-dim", "8", "--utterance-hidden", "6",
              "--speaker-dim", "3", "--turn-hidden", "10", "--epochs", "2", "--dropout", "0", "--quiet"]
    single = run_seqtag([*common, "--checkpoint", str(tmp_path / "single"), "--batch-turns", "256"], backend="torch")
    assert single.returncode == 0, single.stderr[-3000:]
    workers = run_seqtag([*common, "--checkpoint", str(tmp_path / "workers"), "--batch-turns", "128", "--workers", "2",
                          "--max-restarts", "0"], backend="torch")
    assert workers.returncode == 0, workers.stderr[-3000:]
    assert f"seqtag export --from-checkpoint {tmp_path / 'workers'}" in workers.stderr  # the launcher under torch

    training = json.loads((tmp_path / "workers" / "training.json").read_text())["metadata"]["training"]
    assert training["strategy"] == "torch.distributed (gloo)" and training["workers"] == 2
    assert training["global_batch"] == 256
    expected = json.loads((tmp_path / "single" / "training.json").read_text())["metadata"]["training"]["history"]
    # The logged loss is the workers' mean of their epoch means, which Keras weights batch by batch by the rows each
    # worker had: here the dialogs do not split evenly, so it differs a little from the one process's (the steps do not)
    for got, want in zip(training["history"], expected, strict=True):
        assert got["dev_score"] == want["dev_score"] and got["loss"] == pytest.approx(want["loss"], rel=0.01)
    assert max_weight_difference(tmp_path / "workers", tmp_path / "single") < 1e-5


def test_workers_shares_of_a_batch_give_the_whole_batch_loss():
    """``ShardedBatches``: the workers' rows are the batch's, in order, padded alike; the mean over workers of each
    one's masked mean loss (what Keras computes: sum of weighted losses over its unmasked tokens) is the whole
    batch's, whatever the split, even where a worker's share is empty (3 rows, 4 workers)."""
    from training.common.data_parallel import ShardedBatches
    from training.tagger.batching import BucketedBatches, EncodedSentence

    rng = np.random.default_rng(0)
    sentences = [EncodedSentence(rng.integers(2, 9, n).astype(np.int32), np.ones((n, 3), np.int32),
                                 rng.integers(0, 4, n).astype(np.int32)) for n in (1, 2, 3, 5, 8, 9, 9, 13, 4, 2, 6)]
    for world, batch in ((2, 4), (3, 5), (4, 3)):
        whole = BucketedBatches(sentences, batch, shuffle=False)
        shards = [ShardedBatches(BucketedBatches(sentences, batch, shuffle=False), rank, world) for rank in range(world)]
        for index in range(len(whole)):
            inputs, targets, weights = whole[index]
            losses = rng.random(weights.shape)
            expected = float((losses * weights).sum() / weights.sum())
            parts = [shard[index] for shard in shards]
            kept = [p for p in parts if p[2].any()]
            np.testing.assert_array_equal(np.concatenate([p[0]["word_ids"] for p in kept]), inputs["word_ids"])
            np.testing.assert_array_equal(np.concatenate([p[1] for p in kept]), targets)
            start, means = 0, []
            for part in parts:
                rows = len(part[1]) if part[2].any() else 0
                mask = (part[0]["word_ids"] != 0).astype(np.float32)
                here = losses[start:start + rows] if rows else np.zeros_like(mask)
                means.append(float((here * part[2]).sum() / mask.sum()))
                start += rows
            assert np.mean(means) == pytest.approx(expected, rel=1e-6)


def test_an_export_that_does_not_reproduce_the_trained_model_is_not_published(torch_checkpoint, tmp_path, capsys):
    from training.cli import main

    folder, _ = torch_checkpoint
    tampered = tmp_path / "checkpoint"
    tampered.mkdir()
    for name in ("training.json", "model.weights.h5"):
        (tampered / name).write_bytes((folder / "checkpoint" / name).read_bytes())
    with np.load(folder / "checkpoint" / "probe.npz") as arrays:
        probe = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
    probe[3] = probe[3] + 0.01  # as if a weight had been lost on the way between backends
    np.savez(tampered / "probe.npz", *probe)
    assert main(["export", "--from-checkpoint", str(tampered), "--out", str(tmp_path / "pos")]) == 1
    error = capsys.readouterr().err
    assert "does not reproduce the model trained under torch" in error and "nothing was published" in error
    assert not any(p.name.isdigit() for p in (tmp_path / "pos").iterdir())


def test_tf_distribute_is_refused_under_another_backend(monkeypatch):
    import keras

    from training.common.distribute import placement
    from training.common.errors import ConfigError

    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ConfigError, match="needs KERAS_BACKEND=tensorflow, not jax"):
        placement("mirrored")


def test_mirrored_mixed_precision_training_on_two_replicas(ewt_slices, tmp_path):
    """MirroredStrategy over two logical CPU devices (a GPU box gives it its GPUs), computing in bfloat16: the
    batch is per replica, the variables are mirrored, the checkpoint and the export get the float32 model."""
    two_devices = (
        "import tensorflow as tf\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
        "mirrored = tf.distribute.MirroredStrategy\n"
        "tf.distribute.MirroredStrategy = lambda: mirrored(['/cpu:0', '/cpu:1'])\n")
    result = run_seqtag(train_args(ewt_slices, tmp_path / "pos", tmp_path / "checkpoint", "--distribute", "mirrored",
                                   "--mixed-precision", "bfloat16"), prelude=two_devices)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "computing in mixed_bfloat16" in result.stderr
    metadata = json.loads((tmp_path / "pos" / "1" / "metadata.json").read_text())
    training = metadata["training"]
    assert training["strategy"] == "MirroredStrategy" and training["replicas"] == 2
    assert [d.rsplit("/", 1)[-1] for d in training["devices"]] == ["device:CPU:0", "device:CPU:1"]
    assert training["global_batch"] == 2 * 16
    assert training["mixed_precision"] == metadata["config"]["mixed_precision"] == "bfloat16"
    # float32 weights in the checkpoint; the export reproduces the float32 model on the probe.
    assert metadata["export_check"]["max_abs_difference"] < 1e-5
    assert metadata["metrics"]["dev"]["accuracy"] > 0.4


def test_mixed_precision_keeps_outputs_in_float32():
    import keras

    from training.common.distribute import precision
    from training.dialog.config import DialogConfig
    from training.dialog.model import build_dialog_model
    from training.tagger.config import TaggerConfig
    from training.tagger.model import build_tagger

    with precision("float16"):
        tagger = build_tagger(TaggerConfig(word_dim=8, char_dim=4, char_hidden=4, hidden=8, layers=1), 20, 10, 5)
        dialog = build_dialog_model(DialogConfig(word_dim=8, utterance_hidden=4, turn_hidden=8), 20, 4, 6)
    assert tagger.get_layer("sentence_tagger").get_layer("bilstm_1").compute_dtype == "float16"
    assert tagger.get_layer("sentence_tagger").get_layer("tag_probabilities").compute_dtype == "float32"
    assert dialog.get_layer("turn_lstm").compute_dtype == "float16"
    assert dialog.get_layer("label_probabilities").compute_dtype == "float32"
    probabilities = tagger({"word_ids": np.array([[3, 4, 0]]), "char_ids": np.ones((1, 3, 2), dtype="int32")})
    assert keras.backend.standardize_dtype(probabilities.dtype) == "float32"


def test_every_lstm_can_take_the_cudnn_path_on_real_batches(monkeypatch, ewt_slices, tmp_path):
    """What Keras checks before it runs an LSTM on cuDNN (under TensorFlow with a GPU), checked here on CPU:
    tanh/sigmoid, no recurrent dropout, no unroll, a bias, and masks that are right-padded with at least one
    step per row. The last fails a cuDNN run at its first batch with padding, so it is checked on real
    batches by spying on Keras's own check."""
    import importlib

    import keras
    # Keras's TensorFlow RNN module (its package also exports a function named ``rnn``, hence import_module).
    rnn = importlib.import_module("keras.src.backend.tensorflow.rnn")

    from training.dialog.batching import DialogBatches
    from training.dialog.config import DialogConfig
    from training.dialog.data import read_dialogs
    from training.dialog.model import build_dialog_model
    from training.dialog.trainer import encode_dialogs, tokenize_dialogs
    from training.dialog.vocab import DialogVocabs
    from training.tagger.batching import BucketedBatches
    from training.tagger.config import TaggerConfig
    from training.tagger.data import read_conllu
    from training.tagger.model import build_tagger
    from training.tagger.trainer import encode_sentences
    from training.tagger.vocab import TaggerVocabs

    masks = []

    def record_mask(mask):  # Keras's condition, evaluated eagerly: right-padded, no row without a step
        valid = not bool(rnn._has_fully_masked_sequence(mask)) and bool(rnn._is_sequence_right_padded(mask))
        masks.append((tuple(mask.shape), valid))
        raise NotImplementedError  # then Keras falls back to its own loop, as it does without a GPU

    def cudnn_ok_as_on_a_gpu(activation, recurrent_activation, unroll, use_bias, reset_after=None):
        return rnn._do_lstm_arguments_support_cudnn(activation, recurrent_activation, unroll, use_bias)

    monkeypatch.setattr(rnn, "cudnn_ok", cudnn_ok_as_on_a_gpu)
    monkeypatch.setattr(rnn, "_assert_valid_mask", record_mask)

    sentences = read_conllu(ewt_slices[1], "upos")
    config = TaggerConfig(word_dim=8, char_dim=4, char_hidden=4, hidden=8, layers=2)
    vocabs = TaggerVocabs.build(sentences, 1)
    tagger = build_tagger(config, len(vocabs.words), len(vocabs.chars), len(vocabs.tags))
    for source in sorted((DATA / "swda" / "val").glob("*.txt"))[:3]:
        (tmp_path / source.name).write_bytes(source.read_bytes())
    dialogs = read_dialogs(tmp_path, "swda")
    dialog_config = DialogConfig(word_dim=8, utterance_hidden=4, turn_hidden=8)
    tokens = tokenize_dialogs(dialogs, dialog_config.tokenizer)
    dialog_vocabs = DialogVocabs.build(dialogs, tokens, 1)
    dialog_model = build_dialog_model(dialog_config, len(dialog_vocabs.words), len(dialog_vocabs.speakers),
                                      len(dialog_vocabs.labels))

    lstms = [layer for model in (tagger, dialog_model) for layer in _all_layers(model) if isinstance(layer, keras.layers.LSTM)]
    assert len(lstms) == 2 * (1 + 2) + 2 + 1  # char BiLSTM, 2 sentence BiLSTMs; utterance BiLSTM, turn LSTM
    for lstm in lstms:
        assert rnn._do_lstm_arguments_support_cudnn(lstm.cell.activation, lstm.cell.recurrent_activation, lstm.unroll,
                                                    lstm.cell.use_bias), lstm.name
        assert lstm.cell.recurrent_dropout == 0 and lstm.use_cudnn == "auto", lstm.name

    # Batches of mixed lengths, as training makes them: padding words (no characters), padding turns.
    inputs, _, _ = BucketedBatches(encode_sentences(sentences, vocabs, config), 80, shuffle=False)[0]
    tagger(inputs, training=True)
    batch = DialogBatches(encode_dialogs(dialogs, tokens, dialog_vocabs, dialog_config), 10_000, False, shuffle=False)
    dialog_inputs, _, _ = batch[0]
    assert len(set(len(d.speaker_ids) for d in batch.dialogs)) > 1, "the dialogs must differ in length"
    dialog_model(dialog_inputs, training=True)
    # Each LSTM direction checked its mask once per call: char, 2 sentence layers x 2; utterance x 2, turns.
    assert len(masks) == 2 + 4 + 2 + 1
    assert all(valid for _, valid in masks), masks


def _all_layers(model):
    seen = set()
    for layer in _nested_layers(model):
        if id(layer) not in seen:
            seen.add(id(layer))
            yield layer


def _nested_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _nested_layers(layer)
        if hasattr(layer, "layer"):  # TimeDistributed wraps a model
            inner = layer.layer
            yield from _nested_layers(inner) if hasattr(inner, "layers") else [inner]
        if hasattr(layer, "forward_layer"):
            yield layer.forward_layer
            yield layer.backward_layer
        yield layer


def test_an_encoder_dialog_model_trained_under_torch_exports_under_tensorflow_and_agrees(tmp_path):
    """The pretrained utterance encoder (keras-hub's BertBackbone) and both training stages under torch; the
    export under TensorFlow must reproduce the probe torch computed, or it publishes nothing."""
    pytest.importorskip("keras_hub", reason="the [encoder] extra (keras-hub) is not installed")
    from conftest import TINY_DIALOGS
    from tiny_bert import write_tiny_bert
    from training.cli import main

    bert = write_tiny_bert(tmp_path / "tiny-bert")
    data = tmp_path / "dialogs.jsonl"
    data.write_text("".join(json.dumps({"id": f"d{i}", "turns": [{"speaker": s, "text": t, "label": label}
                                                                   for s, t, label in turns]}) + "\n"
                            for i, turns in enumerate(TINY_DIALOGS * 3)), encoding="utf-8")
    checkpoint, root = tmp_path / "checkpoint", tmp_path / "models" / "dialog-act"
    result = run_seqtag(["train", "dialog-act", "--train", str(data), "--dev", str(data), "--format", "jsonl",
                         "--out", str(root), "--checkpoint", str(checkpoint), "--utterance-encoder", str(bert),
                         "--encoder-layers", "1", "--max-words", "8", "--turn-hidden", "8", "--min-word-count", "1",
                         "--epochs", "2", "--encoder-batch", "4", "--encoder-warmup", "2", "--quiet"], backend="torch")
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((checkpoint / "training.json").read_text())
    assert state["metadata"]["training"]["backend"] == "torch" and state["metadata"]["encoder"]["layers"] == "first 1 of 2"
    assert main(["export", "--from-checkpoint", str(checkpoint), "--out", str(root)]) == 0
    metadata = json.loads((root / "1" / "metadata.json").read_text())
    assert metadata["export_check"]["trained_under"] == "torch" and metadata["word_pieces"] == "word_pieces.json"

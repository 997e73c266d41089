"""Export a trained dialog model as a SavedModel with whole-dialog and turn-by-turn signatures.

Vocabularies live inside (``StringLookup`` layers); token strings go in, as ``training.dialog.vocab``
encodes them for training (a test checks both encodings agree). Signatures, with L labels and H the
turn LSTM's units:

    serve(tokens string[B, D, W] ("" pads), speakers string[B, D], turns int32[B]
          (+ previous_actions float32[B, D, L] for dialog-action))
        -> probabilities float32[B, D, L]; dialog-act: labels string[B, D], scores float32[B, D];
           dialog-action: predicted bool[B, D, L] (probability >= the label's tuned threshold)
    step(tokens string[B, W], speakers string[B], state_h float32[B, H], state_c float32[B, H]
         (+ previous_actions float32[B, L]))
        -> the same outputs for one turn of each of B sessions, plus the new state_h, state_c
    zero_state(batch_size int32[]) -> state_h, state_c: zeros [batch_size, H], a new conversation's state

``step`` from the zero state, fed a dialog's turns one by one, gives ``serve``'s outputs (a test checks
it to 1e-5), so a server can stream a conversation by keeping only (h, c) per session.

A model with a pretrained utterance encoder (``DialogConfig.utterance_encoder``) reads word pieces: its ``tokens``
are each turn's pieces as ``training.dialog.vocab.piece_turns`` gives them (the first ``max_words - 2`` and
``[SEP]``; the start marker, BERT's ``[CLS]``, is added inside), not normalized. Its WordPiece tokenizer is written
beside the SavedModel (``word_pieces.json``, named by metadata's ``word_pieces``), and ``SavedDialogModel`` splits
words with it, as a TF Serving client would split them before calling.

``weights="float16"`` (``seqtag export --weights float16``) stores every float32 weight as float16, half the bytes,
and computes in float32 as before: the functions call the Keras layers statelessly (``stateless_call``) with the
stored values cast up. The model's weights are rounded to float16 first (``round_weights``), so the export still
equals the Keras model it was given to 1e-5; what the rounding costs shows in the dev figures of the export.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from training.common import artifacts
from training.common.graph_ops import PretrainedLookup, normalize_words_tf, string_lookup
from training.common.vectors import exported_record
from training.common.vocab import PAD_TOKEN, UNK_ID
from training.dialog.config import DialogConfig
from training.dialog.data import Dialog
from training.dialog.fast_dialog import member_variables_name
from training.dialog.model import dialog_parts
from training.dialog.vocab import TURN_START_ID, DialogVocabs

logger = logging.getLogger(__name__)

# (staging directory, its metadata) -> a record for the metadata; raises to publish nothing
Verify = Callable[[Path, dict], Any]

VOCAB_FILE = "vocab.json"
WORD_PIECES_FILE = "word_pieces.json"  # an encoder model's WordPiece tokenizer (training.common.word_pieces)

WEIGHT_DTYPES = ("float32", "float16")  # how an export stores the float32 weights (--weights)


def round_weights(model: keras.Model) -> keras.Model:
    """Round ``model``'s float32 weights to float16 values, in place: what a float16 export stores."""
    model.set_weights([w.astype(np.float16).astype(np.float32) if w.dtype == np.float32 else w
                       for w in model.get_weights()])
    return model


class StoredWeights:
    """A model's variables as the SavedModel stores them with ``weights="float16"``: a float16 ``tf.Variable`` (of the
    same name) for each float32 one, the others (frozen float16 vector rows, integer seeds) as they are."""

    def __init__(self, model: keras.Model):
        self.stored: dict[int, tf.Variable] = {}
        for variable in model.variables:
            if variable.dtype == "float32":
                self.stored[id(variable)] = tf.Variable(tf.cast(variable.value, tf.float16), trainable=False,
                                                        name=variable.path)
            else:
                self.stored[id(variable)] = variable.value

    def variables(self, model: keras.Model) -> list:
        return [self.stored[id(v)] for v in model.variables]

    def call(self, layer, *args, **kwargs):
        """``layer(*args, **kwargs)`` with the stored values, cast back to the variables' dtypes."""
        def values(variables):
            return [tf.cast(self.stored[id(v)], v.dtype) for v in variables]

        outputs, _ = layer.stateless_call(values(layer.trainable_variables), values(layer.non_trainable_variables),
                                          *args, **kwargs)
        return outputs


class DialogSignatures:
    """Builds ``serve``, ``step`` and ``zero_state`` around a trained dialog model."""

    def __init__(self, model: keras.Model, vocabs: DialogVocabs, config: DialogConfig, thresholds: Sequence[float] | None,
                 weights: str = "float32"):
        if weights not in WEIGHT_DTYPES:
            raise ValueError(f"weights must be one of {', '.join(WEIGHT_DTYPES)}, not {weights!r}")
        self.model = model
        # float16: the functions read these (stored) values, never the Keras model's float32 variables
        self.stored = StoredWeights(model) if weights == "float16" else None
        self.config = config
        self.features, self.turn_lstm, self.output_layer = dialog_parts(model)
        self.units = config.turn_hidden
        self.multi_label = config.multi_label
        self.n_labels = len(vocabs.labels)
        self.word_lookup = string_lookup(vocabs.words, "word_lookup")
        self.word_pieces = vocabs.word_pieces
        self.speaker_lookup = string_lookup(vocabs.speakers, "speaker_lookup")
        self.pretrained = PretrainedLookup(vocabs.pretrained) if vocabs.pretrained is not None else None
        self.labels = tf.constant(list(vocabs.labels.items), dtype=tf.string)
        self.threshold_list = list(thresholds) if thresholds is not None else None
        self.thresholds = tf.constant(thresholds if thresholds is not None else [0.5] * self.n_labels, tf.float32)
        self.word_ids(tf.constant([["build"]]))  # builds the lookup layers, which export needs
        self.speaker_ids(tf.constant(["build"]))

    # --- preprocessing, mirrored by training.dialog.vocab ---
    def word_ids(self, tokens: tf.Tensor) -> tf.Tensor:
        """Tokens ``[..., W]`` -> ``[..., min(W, max_words - 1) + 1]``: the start marker, then word ids."""
        tokens = tokens[..., :self.config.max_words - 1]
        if self.word_pieces is None:  # pieces are looked up as the encoder's tokenizer wrote them
            tokens = normalize_words_tf(tokens)
        ids = tf.cast(self.word_lookup(tokens), tf.int32)
        start = tf.fill(tf.concat([tf.shape(ids)[:-1], [1]], axis=0), TURN_START_ID)
        return tf.concat([start, ids], axis=-1)

    def pretrained_ids(self, tokens: tf.Tensor) -> tf.Tensor:
        """Tokens ``[..., W]`` -> the kept vector table's rows, aligned with ``word_ids`` (the marker: row 1)."""
        ids = self.pretrained.ids(tokens[..., :self.config.max_words - 1])
        return tf.concat([tf.fill(tf.concat([tf.shape(ids)[:-1], [1]], axis=0), UNK_ID), ids], axis=-1)

    def speaker_ids(self, speakers: tf.Tensor) -> tf.Tensor:
        """Speaker names -> ids; "" and unseen names are unknown (1), never padding."""
        return tf.where(speakers == PAD_TOKEN, UNK_ID, tf.cast(self.speaker_lookup(speakers), tf.int32))

    def _outputs(self, probabilities: tf.Tensor, real: tf.Tensor) -> dict[str, tf.Tensor]:
        if self.multi_label:
            predicted = (probabilities >= self.thresholds) & real[..., None]
            return {"probabilities": probabilities, "predicted": predicted}
        best = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {"probabilities": probabilities,
                "labels": tf.where(real, tf.gather(self.labels, best), tf.constant(PAD_TOKEN)),
                "scores": tf.where(real, tf.reduce_max(probabilities, axis=-1), 0.0)}

    # --- the model's probabilities, shared with ``EnsembleSignatures`` ---
    def dialog_probabilities(self, tokens, speakers, real, previous_actions=None) -> tf.Tensor:
        """Whole dialogs -> ``[B, D, L]``; ``real [B, D]`` marks the turns that are not padding."""
        inputs = {"word_ids": self.word_ids(tokens),
                  "speaker_ids": tf.where(real, self.speaker_ids(speakers), 0)}  # speaker id 0 marks padding turns
        if self.pretrained is not None:
            inputs["pretrained_ids"] = self.pretrained_ids(tokens)
        if self.config.multi_label:
            inputs["previous_actions"] = previous_actions
        return self._call(self.model, inputs, training=False)

    def _call(self, layer, *args, **kwargs):
        """A layer (or sub-model) of the model, with its own variables or the stored float16 ones."""
        if self.stored is None:
            return layer(*args, **kwargs)
        return self.stored.call(layer, *args, **kwargs)

    def step_probabilities(self, tokens, speakers, state_h, state_c, previous_actions=None):
        """One turn per session -> (probabilities ``[B, L]``, new state_h, new state_c)."""
        inputs = {"word_ids": self.word_ids(tokens)[:, None, :], "speaker_ids": self.speaker_ids(speakers)[:, None]}
        if self.pretrained is not None:
            inputs["pretrained_ids"] = self.pretrained_ids(tokens)[:, None, :]
        if self.config.multi_label:
            inputs["previous_actions"] = previous_actions[:, None, :]
        features = self._call(self.features, inputs, training=False)[:, 0]  # [B, F]
        output, (state_h, state_c) = self._call(self.turn_lstm.cell, features, [state_h, state_c], training=False)
        if self.config.classifier_input == "state+turn":
            output = tf.concat([output, features], axis=-1)  # as the model's "classifier_inputs" layer
        return self._call(self.output_layer, output), state_h, state_c  # [B, L], [B, H], [B, H]

    # --- signatures ---
    def serve(self, tokens, speakers, turns, previous_actions=None) -> dict[str, tf.Tensor]:
        real = tf.sequence_mask(turns, tf.shape(speakers)[1])  # [B, D]
        return self._outputs(self.dialog_probabilities(tokens, speakers, real, previous_actions), real)

    def step(self, tokens, speakers, state_h, state_c, previous_actions=None) -> dict[str, tf.Tensor]:
        probabilities, state_h, state_c = self.step_probabilities(tokens, speakers, state_h, state_c, previous_actions)
        return {**self._outputs(probabilities, tf.ones(tf.shape(speakers), tf.bool)),
                "state_h": state_h, "state_c": state_c}

    def zero_state(self, batch_size) -> dict[str, tf.Tensor]:
        zeros = tf.zeros(tf.stack([batch_size, self.units]), tf.float32)
        return {"state_h": zeros, "state_c": zeros}

    def trackables(self) -> list:
        return [self.word_lookup, self.speaker_lookup, *(self.pretrained.trackables() if self.pretrained else ())]

    def model_variables(self) -> list:
        """The TensorFlow variables the functions read, in the Keras model's order: its own (``.value``: a Keras
        variable would be written to the SavedModel a second time, doubling its size), or the stored float16 ones."""
        if self.stored is not None:
            return self.stored.variables(self.model)
        return [variable.value for variable in self.model.variables]

    def variable_collections(self) -> dict[str, list]:
        """Named lists of variables the SavedModel keeps as attributes (none for one float32 model; a float16
        one lists its stored variables, which the fast path reads)."""
        return {"stored_variables": self.model_variables()} if self.stored is not None else {}

    def write(self, directory: Path) -> None:
        multi = self.multi_label
        string = tf.string
        serve_spec = [tf.TensorSpec([None, None, None], string, name="tokens"), tf.TensorSpec([None, None], string, name="speakers"),
                      tf.TensorSpec([None], tf.int32, name="turns")]
        step_spec = [tf.TensorSpec([None, None], string, name="tokens"), tf.TensorSpec([None], string, name="speakers"),
                     tf.TensorSpec([None, self.units], tf.float32, name="state_h"),
                     tf.TensorSpec([None, self.units], tf.float32, name="state_c")]
        if multi:
            serve_spec.append(tf.TensorSpec([None, None, self.n_labels], tf.float32, name="previous_actions"))
            step_spec.append(tf.TensorSpec([None, self.n_labels], tf.float32, name="previous_actions"))
        archive = keras.export.ExportArchive()
        for trackable in self.trackables():
            archive.track(trackable)
        for name, variables in self.variable_collections().items():
            archive.add_variable_collection(name, variables)
        archive.add_endpoint("serve", tf.function(self.serve, input_signature=serve_spec))
        archive.add_endpoint("step", tf.function(self.step, input_signature=step_spec))
        archive.add_endpoint("zero_state", tf.function(self.zero_state, input_signature=[tf.TensorSpec([], tf.int32, name="batch_size")]))
        archive.write_out(str(directory), verbose=False)


class EnsembleSignatures(DialogSignatures):
    """Several trained dialog models as one: the same signatures, the members' probabilities averaged.

    Each member keeps its own vocabularies and turn LSTM; the ensemble's state is the members' states side
    by side (``state_h [B, H1 + H2 + ...]``), so ``step`` streams exactly as a single model does and a
    server needs no change. Members must share the task and the label list.
    """

    def __init__(self, members: Sequence[DialogSignatures], thresholds: Sequence[float] | None):
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two models")
        first = members[0]
        for member in members[1:]:
            if member.config.task != first.config.task:
                raise ValueError(f"ensemble members differ in task: {first.config.task} and {member.config.task}")
            if member.config.tokenizer != first.config.tokenizer:  # one text, one way to cut it into words
                raise ValueError(f"ensemble members differ in tokenizer: {first.config.tokenizer} and "
                                 f"{member.config.tokenizer}")
            if not bool(tf.reduce_all(member.labels == first.labels)) or member.n_labels != first.n_labels:
                raise ValueError("ensemble members must have the same labels in the same order")
        self.members = list(members)
        self.config = first.config
        self.multi_label = first.multi_label
        self.n_labels = first.n_labels
        self.labels = first.labels
        self.units = sum(member.units for member in members)
        self.threshold_list = list(thresholds) if thresholds is not None else None
        self.thresholds = tf.constant(thresholds if thresholds is not None else [0.5] * self.n_labels, tf.float32)

    def trackables(self) -> list:
        return [trackable for member in self.members for trackable in member.trackables()]

    def variable_collections(self) -> dict[str, list]:
        """Each member's variables as ``member_<i>_variables``: in the SavedModel's flat list the members' weights
        share names, and the fast path (``training.dialog.fast_dialog``) needs to know whose each one is."""
        return {member_variables_name(i): member.model_variables() for i, member in enumerate(self.members)}

    def dialog_probabilities(self, tokens, speakers, real, previous_actions=None) -> tf.Tensor:
        return tf.add_n([m.dialog_probabilities(tokens, speakers, real, previous_actions)
                         for m in self.members]) / len(self.members)

    def step_probabilities(self, tokens, speakers, state_h, state_c, previous_actions=None):
        sizes = [member.units for member in self.members]
        outputs = [m.step_probabilities(tokens, speakers, h, c, previous_actions)
                   for m, h, c in zip(self.members, tf.split(state_h, sizes, axis=-1), tf.split(state_c, sizes, axis=-1))]
        probabilities = tf.add_n([p for p, _, _ in outputs]) / len(self.members)
        return probabilities, tf.concat([h for _, h, _ in outputs], -1), tf.concat([c for _, _, c in outputs], -1)


def export_dialog_model(model: keras.Model, vocabs: DialogVocabs, config: DialogConfig, thresholds: Sequence[float] | None,
                        model_root: str | Path, metadata: dict[str, Any],
                        dev_dialogs: Sequence[Dialog] | None = None, verify: Verify | None = None,
                        weights: str = "float32") -> tuple[int, Path]:
    """Write ``model_root/<next version>/``; with ``dev_dialogs``, the exported model is scored on them; ``verify``
    (staging directory, metadata) -> a record under ``export_check``, or an error that publishes nothing.
    ``weights="float16"`` stores the weights as float16: give a model already rounded (``round_weights``)."""
    record = {"state_size": config.turn_hidden, "word_vocabulary_size": len(vocabs.words),
              "speakers": list(vocabs.speakers.items[2:]), "config": config.to_dict(),
              "parameters": int(model.count_params()), "weights_stored_as": weights}
    if metadata.get("vectors"):
        record["vectors"] = exported_record(metadata["vectors"], [model])
    if vocabs.word_pieces is not None:
        record["word_pieces"] = WORD_PIECES_FILE
    return _export(DialogSignatures(model, vocabs, config, thresholds, weights), vocabs.to_dict(), record, model_root,
                   metadata, dev_dialogs, verify)


def export_dialog_ensemble(members: Sequence[tuple[keras.Model, DialogVocabs, DialogConfig]],
                           thresholds: Sequence[float] | None, model_root: str | Path, metadata: dict[str, Any],
                           dev_dialogs: Sequence[Dialog] | None = None, weights: str = "float32") -> tuple[int, Path]:
    """Several trained models as one version (``EnsembleSignatures``); the metadata lists each member."""
    if any(v.word_pieces is not None for _, v, _ in members):
        raise ValueError("models with an utterance encoder are not ensembled (each reads its own pieces)")
    signatures = EnsembleSignatures([DialogSignatures(m, v, c, None, weights) for m, v, c in members], thresholds)
    record = {"state_size": signatures.units,
              "word_vocabulary_size": [len(v.words) for _, v, _ in members],
              "speakers": sorted({s for _, v, _ in members for s in v.speakers.items[2:]}),
              "config": [c.to_dict() for _, _, c in members],
              "parameters": sum(int(m.count_params()) for m, _, _ in members), "weights_stored_as": weights}
    if metadata.get("vectors"):
        record["vectors"] = exported_record(metadata["vectors"], [m for m, _, _ in members])
    return _export(signatures, {"ensemble": [v.to_dict() for _, v, _ in members]}, record, model_root, metadata,
                   dev_dialogs)


def _export(signatures: DialogSignatures, vocab_record: dict, record: dict[str, Any], model_root: str | Path,
            metadata: dict[str, Any], dev_dialogs: Sequence[Dialog] | None, verify: Verify | None = None) -> tuple[int, Path]:
    from training.dialog.evaluate import evaluate_dialog_model  # evaluation loads what this module writes
    from training.dialog.saved_dialog import SavedDialogModel

    config = signatures.config
    thresholds = signatures.threshold_list

    def write(staging: Path) -> dict[str, Any]:
        signatures.write(staging)
        (staging / VOCAB_FILE).write_text(json.dumps(vocab_record, ensure_ascii=False), encoding="utf-8")
        if getattr(signatures, "word_pieces", None) is not None:
            (staging / WORD_PIECES_FILE).write_text(signatures.word_pieces.to_json(), encoding="utf-8")
        outputs = "labels, scores, probabilities" if not config.multi_label else "predicted, probabilities"
        written = {**metadata, "name": Path(model_root).name, "kind": "dialog", "task": config.task,
                   "multi_label": config.multi_label, "tokenizer": config.tokenizer, "format": "tf_saved_model",
                   "signatures": {"serve": f"tokens string[B, D, W], speakers string[B, D], turns int32[B]"
                                           f"{', previous_actions float32[B, D, L]' if config.multi_label else ''} -> {outputs}",
                                  "step": f"tokens string[B, W], speakers string[B], state_h, state_c float32[B, H]"
                                          f"{', previous_actions float32[B, L]' if config.multi_label else ''} -> {outputs}, state_h, state_c",
                                  "zero_state": "batch_size int32 -> state_h, state_c"},
                   "labels": [label.decode() for label in signatures.labels.numpy()], "thresholds": thresholds,
                   **record, "libraries": artifacts.library_versions()}
        if verify is not None:
            written["export_check"] = verify(staging, written)
        if dev_dialogs is not None:
            metrics = evaluate_dialog_model(SavedDialogModel(staging, written), dev_dialogs)
            written.setdefault("metrics", {})["dev"] = metrics
            logger.info("exported model on dev: %s", {k: v for k, v in metrics.items() if k != "per_label"})
        return written

    version, target = artifacts.write_new_version(model_root, write)
    logger.info("wrote %s (version %d)", target, version)
    return version, target

"""Train and export the schema-guided span tagger (``seqtag train spans --format sgd --schemas ...``).

1. Read the training turns and the schemas that describe their services; every turn's candidates are its service's
   span slots (``data.span_slots``).
2. Keep the encoder's word pieces that the training text and the training schemas use (and every ASCII character),
   as ``training.common.word_pieces`` does for the dialog models; port the encoder's first layers over them.
3. Run the frozen encoder once over every training turn and every slot description, and keep the states (float16).
4. Train the head (``model.build_span_head``) on those states; keep the epoch with the best span F1 on the dev turns of
   services training had. Dev's other services are the zero-shot check: never trained on, never used to choose.
5. Export encoder + head as one SavedModel (``encode_slots`` and ``emissions``, weights stored as float16), check it
   against the Keras model, score it on the whole dev file through ``SavedSchemaTagger``, and publish the version
   with its training schemas (``schemas.json``) and word pieces.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
from keras import ops

from training.common import artifacts
from training.common.service_schema import ServiceSchema
from training.common.text_encoder import PretrainedEncoder, build_text_encoder, port_weights
from training.common.word_pieces import WordPieces
from training.common.seeding import set_random_seed
from training.schema_guided.batching import EncodedTurns, SpanBatches
from training.schema_guided.config import SchemaSpanConfig
from training.schema_guided.data import SchemaTurn, describe_slot, read_schema_files, read_schema_turns, span_slots
from training.schema_guided.evaluate import span_metrics
from training.schema_guided.model import build_span_head
from training.schema_guided.pieces import pad_rows, piece_rows
from training.schema_guided.saved import span_decoder

logger = logging.getLogger(__name__)

ENCODE_BATCH = 256


class FrozenEncoder:
    """The encoder's first layers over the kept pieces: ``states(ids) -> [N, P, E]``, ``pooled(ids) -> [N, E]``."""

    def __init__(self, pretrained: PretrainedEncoder, config: SchemaSpanConfig, word_pieces: WordPieces):
        shape = pretrained.shape(config.encoder_layers, max(config.max_pieces, config.max_description_pieces))
        self.word_pieces = word_pieces
        rows = [pretrained.word_pieces.vocabulary[p] for p, _ in sorted(word_pieces.vocabulary.items(), key=lambda kv: kv[1])]
        self.model = build_text_encoder(shape, len(rows), dropout=0.0)  # pieces [N, P] -> pooled [N, E]
        port_weights(self.model, pretrained, rows)
        self.model.trainable = False
        states = self.model.get_layer("piece_pooling").input[0]  # [N, P, E], before the pooling
        self.both = keras.Model(self.model.input, [states, self.model.output], name="frozen_encoder")

    def encode(self, turns: Sequence[Sequence[str]], max_pieces: int) -> tuple[EncodedTurns, np.ndarray]:
        """Turns' states (length-sorted batches, returned in input order) and their pooled vectors."""
        rows = piece_rows(self.word_pieces, turns, max_pieces)
        states: list[np.ndarray | None] = [None] * len(turns)
        pooled = np.zeros((len(turns), self.model.output.shape[-1]), np.float32)
        order = sorted(range(len(turns)), key=lambda i: len(rows[i][0]))
        started = time.perf_counter()
        for begin in range(0, len(order), ENCODE_BATCH):
            batch = order[begin:begin + ENCODE_BATCH]
            ids, _ = pad_rows([rows[i] for i in batch])
            out_states, out_pooled = self.both(ids, training=False)
            out_states = np.asarray(out_states)
            for j, i in enumerate(batch):
                states[i] = out_states[j, :len(rows[i][0])].astype(np.float16)
            pooled[batch] = np.asarray(out_pooled)
            if begin // ENCODE_BATCH % 50 == 0:
                logger.info("encoded %d of %d turns (%.0f s)", begin + len(batch), len(turns), time.perf_counter() - started)
        offsets = np.concatenate([[0], np.cumsum([len(s) for s in states])]).astype(int).tolist()
        size = self.model.output.shape[-1]
        return EncodedTurns(np.concatenate(states) if states else np.zeros((0, size), np.float16), offsets, [starts for _, starts in rows]), pooled


def kept_pieces(pretrained: PretrainedEncoder, texts: Sequence[Sequence[str]], min_count: int, top: int) -> WordPieces:
    """The training text's pieces seen ``min_count`` times, then the vocabulary's first ``top`` (but its unused ones)."""
    counts = Counter(piece for pieces in pretrained.word_pieces.split_many(texts) for piece in pieces)
    first = [p for p, i in sorted(pretrained.word_pieces.vocabulary.items(), key=lambda kv: kv[1])
             if i < top and not p.startswith("[unused")]
    return pretrained.word_pieces.kept(list(dict.fromkeys([*(p for p, n in counts.most_common() if n >= min_count), *first])))


def slot_table(encoder: FrozenEncoder, schemas: dict[str, ServiceSchema], tokenizer, max_pieces: int
               ) -> dict[str, tuple[list[str], np.ndarray]]:
    """service -> (its span slots, their description vectors [K, E])."""
    texts, owners = [], []
    for name, schema in schemas.items():
        for slot in span_slots(schema):
            texts.append([t.text for t in tokenizer.tokenize(describe_slot(slot))])
            owners.append((name, slot.name))
    _, pooled = encoder.encode(texts, max_pieces)
    table: dict[str, tuple[list[str], list[np.ndarray]]] = {name: ([], []) for name in schemas}
    for (name, slot), vector in zip(owners, pooled):
        table[name][0].append(slot)
        table[name][1].append(vector)
    size = pooled.shape[-1]
    return {name: (slots, np.stack(vectors) if vectors else np.zeros((0, size), np.float32))
            for name, (slots, vectors) in table.items()}


def predict_spans(head: keras.Model, batches: SpanBatches) -> list[list[tuple[str, int, int]]]:
    """The head's decoded spans for every turn of ``batches`` (in turn order)."""
    predicted: list[list | None] = [None] * len(batches.turns)
    for index in range(len(batches)):
        inputs, _, _ = batches.padded_batch(index, batches.variable_shape(index))
        logits = np.asarray(head(inputs, training=False))
        for j, i in enumerate(batches.order[index]):
            turn = batches.turns[i]
            names = batches.slots[turn.service][0]
            tags = ("O", *(t for n in names for t in (f"B-{n}", f"I-{n}")))
            z = logits[j, :len(turn.words), :len(tags)]
            p = np.exp(z - z.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            predicted[i] = [(label, a, b) for label, a, b, _ in span_decoder(tags).decode(p)[2]]
    return predicted  # type: ignore[return-value]


def data_record(path: Path) -> dict[str, str]:
    return {"path": str(path), "sha256": artifacts.sha256_file(path)}


def sample_turns(turns: list[SchemaTurn], limit: int, seed: int) -> list[SchemaTurn]:
    if not limit or limit >= len(turns):
        return turns
    rows = np.random.default_rng(seed).choice(len(turns), size=limit, replace=False)
    return [turns[i] for i in sorted(rows)]


def train_schema_spans(config: SchemaSpanConfig, train_path: Path, dev_path: Path | None, schema_paths: Sequence[Path],
                       dev_schema_paths: Sequence[Path], out_root: Path, command: str, train_turns: int = 0,
                       dev_turns: int = 4000) -> tuple[int, Path]:
    started = time.time()
    set_random_seed(config.seed, keep_tensorflow_out=False)  # keras-hub: left as it is
    from training.common.tokenizer import get_tokenizer

    tokenizer = get_tokenizer(config.tokenizer)
    schemas = read_schema_files(schema_paths)
    dev_schemas = {**read_schema_files(dev_schema_paths), **schemas} if dev_schema_paths else dict(schemas)
    turns = sample_turns(read_schema_turns(train_path, schemas, config.tokenizer, only_candidates=True), train_turns,
                         config.seed)
    dev = read_schema_turns(dev_path, dev_schemas, config.tokenizer) if dev_path else []
    choose = sample_turns([t for t in dev if t.service in schemas], dev_turns, config.seed)  # seen services only
    logger.info("%d training turns (%d services), %d dev turns (%d to choose the epoch on)", len(turns), len(schemas),
                len(dev), len(choose))

    pretrained = PretrainedEncoder.read(config.encoder)
    descriptions = [[t.text for t in tokenizer.tokenize(describe_slot(s))] for sc in schemas.values() for s in sc.slots]
    word_pieces = kept_pieces(pretrained, [list(t.words) for t in turns] + descriptions, config.min_piece_count,
                              config.top_pieces)
    config.encoder_size = int(pretrained.config["hidden_size"])
    encoder = FrozenEncoder(pretrained, config, word_pieces)
    logger.info("kept %d of %d word pieces", len(word_pieces.vocabulary), len(pretrained.word_pieces.vocabulary))
    encoded, _ = encoder.encode([t.words for t in turns], config.max_pieces)
    choose_encoded, _ = encoder.encode([t.words for t in choose], config.max_pieces)
    slots = slot_table(encoder, dev_schemas, tokenizer, config.max_description_pieces)

    head = build_span_head(config)
    head.compile(keras.optimizers.Adam(config.learning_rate, clipnorm=5.0),
                 keras.losses.SparseCategoricalCrossentropy(from_logits=True), weighted_metrics=[])
    train = SpanBatches(turns, encoded, slots, config.batch_size, shuffle=True, seed=config.seed)
    choose_batches = SpanBatches(choose, choose_encoded, slots, 256, shuffle=False)
    history, best, best_weights = [], -1.0, None
    for epoch in range(1, config.epochs + 1):
        t0 = time.time()
        loss = head.fit(train, epochs=1, verbose=0).history["loss"][-1]
        f1 = (span_metrics([t.spans for t in choose], predict_spans(head, choose_batches), [t.service for t in choose],
                           set(schemas))["f1"] if choose else 0.0)  # no dev turn to choose on: the last epoch
        history.append({"epoch": epoch, "loss": round(float(loss), 5), "dev_span_f1": round(f1, 4),
                        "seconds": round(time.time() - t0, 1)})
        logger.info("epoch %d: loss %.4f, dev F1 (services training had) %.4f, %.0f s", epoch, loss, f1, time.time() - t0)
        if f1 >= best:
            best, best_weights = f1, head.get_weights()
        if config.max_minutes and time.time() - started > 60 * config.max_minutes:
            logger.info("stopping: --max-minutes %.0f reached", config.max_minutes)
            break
    head.set_weights(best_weights)

    from training.schema_guided.export import export_schema_tagger

    record = {
        # one entry per file, each {"path", "sha256"}: train, dev, schemas, dev_schemas (schemas_2, ... for more files)
        "data": {"train": data_record(train_path), **({"dev": data_record(dev_path)} if dev_path else {}),
                 **{f"schemas{'' if i == 0 else f'_{i + 1}'}": data_record(p) for i, p in enumerate(schema_paths)},
                 **{f"dev_schemas{'' if i == 0 else f'_{i + 1}'}": data_record(p) for i, p in enumerate(dev_schema_paths)}},
        "command": command,
        "training": {"turns": len(turns), "services": sorted(schemas), "history": history, "epochs_run": len(history),
                     "best_epoch": max(history, key=lambda h: h["dev_span_f1"])["epoch"],
                     "chosen_on": f"dev_span_f1: {len(choose)} dev turns of services training had",
                     "seconds": round(time.time() - started, 1), "backend": keras.backend.backend(),
                     "global_batch": config.batch_size},
        "encoder": pretrained.record(config.encoder_layers, config.encoder_licence),
    }
    record["encoder"]["pieces_kept"] = len(word_pieces.vocabulary)
    record["encoder"]["pieces_published"] = len(pretrained.word_pieces.vocabulary)
    return export_schema_tagger(encoder, head, config, word_pieces, schemas, record, out_root, dev, dev_schemas)

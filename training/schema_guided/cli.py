"""``seqtag train spans --format sgd --schemas ...`` and ``seqtag evaluate`` for schema-guided span models."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from typing import Sequence

from training.common import artifacts
from training.common.errors import ConfigError
from training.schema_guided.config import SchemaSpanConfig

logger = logging.getLogger("seqtag")


def command_train_schema_spans(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from training.schema_guided.trainer import train_schema_spans

    if args.format != "sgd":
        raise ConfigError("--schemas goes with --format sgd (schema-guided models read SGD dialogues)")
    if args.encoder is None:
        raise ConfigError("a schema-guided model needs --encoder DIR (a BERT directory, e.g. all-MiniLM-L6-v2)")
    config = SchemaSpanConfig(encoder=str(args.encoder), encoder_layers=args.encoder_layers,
                              encoder_licence=args.encoder_licence)
    for option in ("epochs", "batch_size", "learning_rate", "dropout", "seed", "max_minutes"):  # shared tagger options
        value = getattr(args, "config_" + option, None)  # (training.common.config names their destinations so)
        if value is not None:
            setattr(config, option, value)
    train_schema_spans(config, args.train, args.dev, args.schemas, args.dev_schemas, args.out,
                       shlex.join(["seqtag", *argv]), train_turns=args.train_turns)
    return 0


def command_evaluate_schema_spans(model_dir, args: argparse.Namespace) -> int:
    from training.schema_guided.data import read_schema_files, read_schema_turns
    from training.schema_guided.evaluate import format_schema_span_report, span_metrics
    from training.schema_guided.saved import SavedSchemaTagger

    if args.format != "sgd":
        raise ConfigError(f"{model_dir} is a schema-guided span model: it reads SGD dialogues (--format sgd)")
    # --precision int8: the service's int8 turn encoder (its fast path); float32: the SavedModel, the reference
    tagger = (SavedSchemaTagger(model_dir, runtime="onnx", precision="int8") if args.precision == "int8"
              else SavedSchemaTagger(model_dir))
    if tagger.precision != args.precision:
        raise ConfigError(f"{model_dir}: the int8 encoder failed its check at load ({tagger.fast_check})")
    schemas = {**read_schema_files(args.schemas), **tagger.shipped}  # a service training had keeps its own schema
    turns = read_schema_turns(args.data, schemas, tagger.config["tokenizer"])
    encodings = {name: tagger.encode_service(schema) for name, schema in schemas.items()}
    tagged = tagger.tag([t.words for t in turns], conditions=[encodings[t.service] for t in turns])
    metrics = span_metrics([t.spans for t in turns], [[(s.label, s.start, s.end) for s in r.spans] for r in tagged],
                           [t.service for t in turns], tagger.trained_services)
    print(json.dumps(metrics) if args.json else format_schema_span_report(metrics, f"{model_dir} on {args.data}"))
    return 0


def command_evaluate_actions(model_dir, args: argparse.Namespace) -> int:
    """An action model on SGD dialogues, each turn answered in its service's own labels (``actions.ActionMap``, with the
    schema-guided span model ``--schema-encoder`` reading the schemas): micro-F1 overall, on dialogues whose services
    training had, on dialogues whose services it lacked, and on dialogues that mix both."""
    from training.common.jsonl import json_objects
    from training.common.service_schema import schema_digest
    from training.dialog.data import read_sgd
    from training.dialog.evaluate import action_metrics, format_dialog_report
    from training.dialog.saved_dialog import DialogTurnInput, SavedDialogModel
    from training.schema_guided.actions import build_action_map, source_slot_vectors
    from training.schema_guided.data import read_schema_files
    from training.schema_guided.saved import SavedSchemaTagger

    if args.format != "sgd":
        raise ConfigError("--schemas goes with --format sgd")
    if args.schema_encoder is None:
        raise ConfigError("an action model reads schemas through a schema-guided span model: give --schema-encoder "
                          "models/slots (a version with schema_guided in its metadata)")
    encoder_dir = artifacts.resolve_model_dir(args.schema_encoder)
    tagger = SavedSchemaTagger(encoder_dir)
    model = SavedDialogModel(model_dir)
    if not model.multi_label:
        raise ConfigError(f"{model_dir} is not an action model: --schemas maps next actions onto a service's slots")
    schemas = {**read_schema_files(args.schemas), **tagger.shipped}
    encodings = {name: tagger.encode_service(schema) for name, schema in schemas.items()}
    sources = source_slot_vectors([encodings[name] for name in tagger.shipped])
    maps = {name: build_action_map(model.labels, sources, encodings[name],
                                   trained=name in tagger.shipped and schema_digest(tagger.shipped[name]) == schema_digest(schema))
            for name, schema in schemas.items()}
    dialogs = read_sgd(args.data)
    services = []  # per dialogue: each USER turn's service, and the dialogue's services
    for number, record in json_objects(args.data):
        user = [t.get("service", "") for t in record["turns"] if t.get("speaker") == "USER"]
        missing = sorted({s for s in user if s not in maps})
        if missing:
            raise ConfigError(f"{args.data}:{number}: no schema for {', '.join(missing)} (give --schemas FILE)")
        services.append((user, record.get("services") or sorted(set(user))))
    inputs = []
    for dialog, (user, _) in zip(dialogs, services):
        previous, turns = None, []
        for turn, service in zip(dialog.turns, user):
            tokens = [t.text for t in model.tokenizer.tokenize(turn.text)]
            turns.append(DialogTurnInput(tokens, turn.speaker, maps[service].to_model(previous or ())))
            previous = turn.labels  # the system's actions (gold), in the service's names
        inputs.append(turns)
    groups: dict[str, tuple[list, list]] = {g: ([], []) for g in ("seen_services", "unseen_services", "mixed_services")}
    raw: dict[str, list] = {g: [] for g in groups}  # the model's own labels, no schema read: what it answered before
    trained = set(tagger.shipped)

    def group_of(names: list[str]) -> str:  # a dialogue by whether training had its services
        seen = [n in trained for n in names]
        return "seen_services" if all(seen) else "unseen_services" if not any(seen) else "mixed_services"

    dialog_groups = [group_of(names) for _, names in services]
    for dialog, (user, _), group, probabilities in zip(dialogs, services, dialog_groups, model.predict(inputs)):
        for turn, service, p in zip(dialog.turns, user, probabilities):
            if turn.labels is None:
                continue
            groups[group][0].append(list(turn.labels))
            groups[group][1].append(maps[service].decide(model.decide(p), model.label_index))
    gold = [g for gs, _ in groups.values() for g in gs]
    predicted = [p for _, ps in groups.values() for p in ps]
    metrics = action_metrics(gold, predicted)
    for name, (g, p) in groups.items():
        if g:
            sub = action_metrics(g, p)
            metrics[name] = {k: sub[k] for k in ("micro_f1", "macro_f1", "exact_match", "turns")}
    # The same model without the schemas: its own labels, and the previous actions fed as the data names them (what a
    # session answered before services were read from schemas), on the same turns.
    plain_inputs = [[DialogTurnInput(t.tokens, t.speaker, list(previous or ())) for t, previous in
                     zip(turns, [None, *[turn.labels for turn in dialog.turns[:-1]]])]
                    for dialog, turns in zip(dialogs, inputs)]
    for dialog, group, probabilities in zip(dialogs, dialog_groups, model.predict(plain_inputs)):
        raw[group] += [model.decide(p) for turn, p in zip(dialog.turns, probabilities) if turn.labels is not None]
    metrics["without_schemas"] = {"micro_f1": action_metrics(gold, [p for g in groups for p in raw[g]])["micro_f1"],
                                  **{g: action_metrics(groups[g][0], raw[g])["micro_f1"] for g in groups if raw[g]}}
    metrics["schema_encoder"] = str(encoder_dir)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(format_dialog_report(metrics))
        for name in groups:
            if name in metrics:
                print(f"  {name}: micro-F1 {metrics[name]['micro_f1']:.4f} over {metrics[name]['turns']} turns "
                      f"(without the schemas: {metrics['without_schemas'][name]:.4f})")
        print(f"  without the schemas, all: {metrics['without_schemas']['micro_f1']:.4f}")
    return 0

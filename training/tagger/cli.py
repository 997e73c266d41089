"""``seqtag train pos``, the export of a tagger checkpoint and the evaluation of a tagger: the tagger wing's commands.

``training.cli`` builds the ``seqtag`` parser and dispatches here. Training writes a checkpoint (weights,
vocabularies, the training record and a probe) before it exports, so an export that fails can be run again
from the checkpoint without retraining.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Sequence

from training.common import artifacts
from training.common.config import add_config_options
from training.common.errors import ConfigError
from training.tagger.config import TaggerConfig

logger = logging.getLogger("seqtag")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One ``--option`` per TaggerConfig field (but the task, which the command names), typed from its default;
    unset ones stay None."""
    add_config_options(parser.add_argument_group("model and run options (defaults: the shipped POS model's)"),
                       [f for f in dataclasses.fields(TaggerConfig) if f.name != "task"])


SPAN_FORMATS = ("sgd", "conll")


def add_train_parser(tasks) -> None:
    """``seqtag train pos`` and ``seqtag train spans``."""
    from training.common import data_parallel

    for task, what, data in (("pos", "a part-of-speech tagger on CoNLL-U files", "CoNLL-U"),
                             ("spans", "a span tagger (slots, entities) on SGD dialogues or CoNLL-2003-style columns",
                              "span")):
        parser = tasks.add_parser(task, help=what)
        parser.add_argument("--train", required=True, type=Path, help=f"{data} training file")
        parser.add_argument("--dev", required=True, type=Path, help=f"{data} dev file (early stopping)")
        if task == "spans":
            parser.add_argument("--format", choices=SPAN_FORMATS, default="conll",
                                help="sgd: Schema-Guided Dialogue JSONL (slot spans of every turn, its service as the "
                                     "condition); conll: one token a line, the tag (BIO or BIOES) in the last column")
        parser.add_argument("--out", required=True, type=Path,
                            help=f"model directory, e.g. models/{'pos' if task == 'pos' else 'slots'} (gets a new version)")
        parser.add_argument("--config", type=Path, help="JSON file of options (command-line options override it)")
        parser.add_argument("--checkpoint", type=Path,
                            help=f"where to keep the trained weights before export (default: checkpoints/{task}-<time>)")
        parser.add_argument("--quiet", action="store_true", help="no progress bar")
        parser.add_argument("--tensorboard", type=Path, metavar="DIR", help="write TensorBoard logs here")
        data_parallel.add_workers_options(parser, "sentences")
        if task == "spans":
            guided = parser.add_argument_group("schema-guided (--format sgd --schemas): a model that reads each service's "
                                               "slot descriptions, so it serves services training never saw")
            guided.add_argument("--schemas", nargs="+", type=Path, metavar="FILE",
                                help="SGD schema files describing the training services (schema-train.json)")
            guided.add_argument("--dev-schemas", nargs="+", type=Path, default=[], metavar="FILE",
                                help="schema files of the dev services (schema-dev.json); scored, never trained on")
            guided.add_argument("--encoder", type=Path, metavar="DIR",
                                help="a BERT directory (config.json, model.safetensors, tokenizer.json): all-MiniLM-L6-v2")
            guided.add_argument("--encoder-layers", type=int, default=3, help="its first layers kept, frozen (default 3)")
            guided.add_argument("--encoder-licence", default="", help="the encoder's licence, for the model card")
            guided.add_argument("--train-turns", type=int, default=0, metavar="N",
                                help="a seeded sample of N training turns (0: all; the encoder pass is the cost)")
        _add_config_options(parser)


def read_sentences(path: Path, config: TaggerConfig, data_format: str) -> tuple[list, dict | None]:
    """A task's gold sentences: (sentences, what the span reader left out, or None)."""
    if config.task == "pos":
        from training.tagger.data import read_conllu

        return read_conllu(path, config.tag_column), None
    from training.tagger.spans import read_conll_columns, read_sgd_spans

    if data_format == "sgd":
        sentences, report = read_sgd_spans(path, config.scheme, config.tokenizer)
        return sentences, report.to_dict()
    return read_conll_columns(path, config.scheme), None


def resolve_config(args: argparse.Namespace) -> TaggerConfig:
    values = TaggerConfig.from_json_file(args.config).to_dict() if args.config else TaggerConfig().to_dict()
    for name in TaggerConfig.field_names():
        override = getattr(args, "config_" + name, None)
        if override is not None:
            values[name] = override
    values["task"] = args.task
    return TaggerConfig.from_dict(values)


def data_file_record(path: Path, sentences) -> dict:
    return {"path": str(path), "sha256": artifacts.sha256_file(path), "sentences": len(sentences),
            "tokens": sum(len(s.words) for s in sentences)}


def command_train(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from training.common import data_parallel
    from training.common.checkpoint import default_directory, exports_here
    from training.common.distribute import placement
    from training.tagger.trainer import save_tagger_checkpoint, train_tagger

    if getattr(args, "schemas", None):
        from training.schema_guided.cli import command_train_schema_spans

        if args.workers > 1 or args.ray:
            raise ConfigError("--workers trains taggers (pos, spans without --schemas) for now")
        return command_train_schema_spans(args, argv)
    config = resolve_config(args)
    data_parallel.check_workers_options(args, config.mixed_precision)
    if data_parallel.launches(args):
        return data_parallel.run_workers(args, argv, config.task, lambda checkpoint: export_checkpoint(checkpoint, args.out))
    where = placement(config.distribute)
    data_format = getattr(args, "format", "conllu")
    train, train_report = read_sentences(args.train, config, data_format)
    dev, dev_report = read_sentences(args.dev, config, data_format)
    logger.info("train: %d sentences from %s; dev: %d sentences from %s", len(train), args.train, len(dev), args.dev)
    verbose = 0 if args.quiet or not sys.stdout.isatty() else 1
    # rank 0 backs up every epoch; a restarted group goes on from there
    backup = data_parallel.backup_directory(args.checkpoint) if where.collective is not None else None
    result = train_tagger(config, train, dev, verbose=verbose, tensorboard_dir=args.tensorboard, placement=where,
                          backup_dir=backup)
    if where.collective is not None:
        where.collective.close()  # the workers' last collective is behind them
    metadata = checkpoint_metadata(result, where, data_format, (args.train, train, train_report),
                                   (args.dev, dev, dev_report), shlex.join(["seqtag", *argv]))
    if not where.writes:  # a data-parallel worker of rank > 0: rank 0 writes the one checkpoint
        return 0
    checkpoint = args.checkpoint or default_directory(config.task)
    save_tagger_checkpoint(result, checkpoint, metadata, dev)
    if not exports_here(checkpoint, args.out):
        return 0
    return export_checkpoint(checkpoint, args.out, dev, args.dev)


def checkpoint_metadata(result, where, data_format: str, train: tuple, dev: tuple, command: str) -> dict:
    """A trained tagger's metadata, as its checkpoint and then its export record it. ``train`` and ``dev``: (path,
    sentences, what the span reader left out or None)."""
    from training.common.checkpoint import training_record

    config = result.config
    metadata = {
        "task": config.task,
        "data_format": data_format,
        "data": {"train": data_file_record(train[0], train[1]), "dev": data_file_record(dev[0], dev[1])},
        "command": command,
        # global batch in sentences
        "training": training_record(result, where, config.mixed_precision, config.batch_size * where.replicas),
    }
    if config.task == "pos":
        metadata["tag_column"] = config.tag_column
    conditions = sorted({s.condition for s in train[1] if s.condition})
    if conditions:
        metadata["conditions"] = conditions  # what the model was trained on (evaluation splits seen / unseen)
    for split, (_, _, report) in (("train", train), ("dev", dev)):
        if report is not None:
            metadata["data"][split]["spans"] = report
    if result.vectors is not None:
        metadata["vectors"] = result.vectors
    return metadata


def export_checkpoint(checkpoint_dir: Path, out: Path, dev=None, dev_path: Path | None = None,
                      command: str | None = None, vectors_top: int | None = None) -> int:
    """Export a tagger checkpoint (trained under any backend) as the next version of ``out``, published only if
    it reproduces the trained model's probe; scored on the dev file, with a report, when it is at hand.
    ``vectors_top`` resizes the kept vector table to that many of its most frequent words (``KeptVectors.resized``)."""
    from training.common.checkpoint import check_probe, probe_probabilities
    from training.tagger.export import export_tagger
    from training.tagger.saved_tagger import SavedTagger
    from training.tagger.trainer import load_tagger_checkpoint

    model, vocabs, config, state = load_tagger_checkpoint(checkpoint_dir)
    metadata = {**state["metadata"], **({"export_command": command} if command else {})}
    data_format = metadata.get("data_format", "conllu")
    if dev is None:
        record = metadata.get("data", {}).get("dev")
        if record and Path(record["path"]).is_file():
            dev_path = Path(record["path"])
            dev, _ = read_sentences(dev_path, config, data_format)
    expected = probe_probabilities(checkpoint_dir)
    backend = metadata.get("training", {}).get("backend", "unknown")
    if vectors_top is not None:  # the export must then reproduce the pruned model
        model, vocabs, metadata = resize_vectors(model, vocabs, config, metadata, vectors_top)
        expected = keras_probabilities(model, vocabs, config, state.get("probe", []), state.get("probe_conditions"))

    def verify(staging: Path, written: dict) -> dict | None:
        tagged = SavedTagger(staging, written).tag(state.get("probe", []), conditions=state.get("probe_conditions"))
        return check_probe(expected, [t.probabilities for t in tagged], backend)

    _, directory = export_tagger(model, vocabs, config, out, metadata, dev_sentences=dev, verify=verify)
    if dev_path is not None:
        evaluate_model(directory, dev_path, config.tag_column, report=directory / "report", data_format=data_format)
    print(directory)
    return 0


def resize_vectors(model, vocabs, config: TaggerConfig, metadata: dict, top: int):
    """A trained model with its kept vector table resized to the table's first ``top`` words and the training words
    (``KeptVectors.resized``), the training words read again from the training file its metadata names (checked
    by sha256), the table read again when it grows."""
    from training.common.layers import inference_config
    from training.tagger.model import set_pretrained
    from training.tagger.trainer import build_model

    if vocabs.pretrained is None:
        raise ConfigError("--vectors-top prunes a vector table: this checkpoint has none")
    record = metadata.get("data", {}).get("train", {})
    path = Path(record.get("path", ""))
    if not path.is_file() or artifacts.sha256_file(path) != record.get("sha256"):
        raise ConfigError(f"--vectors-top needs the training file the checkpoint names ({path}), unchanged")
    train, _ = read_sentences(path, config, metadata.get("data_format", "conllu"))
    matrix = model.get_layer("sentence_tagger").get_layer("pretrained_embedding").get_weights()[0]
    from training.common.vectors import resize_kept

    pruned, rows, metadata = resize_kept(vocabs.pretrained, matrix, {w for s in train for w in s.words}, top,
                                         config.vectors, config.vectors_top, metadata)
    new_vocabs = vocabs.with_pretrained(pruned)
    new_model = build_model(inference_config(config), new_vocabs)
    for layer in ("char_features", "sentence_tagger"):
        source, target = model.get_layer(layer), new_model.get_layer(layer)
        for old, new in zip(source.weights, target.weights):
            if tuple(old.shape) == tuple(new.shape):
                new.assign(old.numpy())
    set_pretrained(new_model, rows)
    return new_model, new_vocabs, metadata


def keras_probabilities(model, vocabs, config: TaggerConfig, sentences, conditions=None) -> list:
    """A Keras tagger's probabilities on token lists, as ``save_tagger_checkpoint`` computes its probe."""
    from training.tagger.data import TaggedSentence
    from training.tagger.trainer import conditioned, encode_sentences, predict_sentences

    filler = vocabs.tags.items[0]
    gold = [TaggedSentence(tuple(words), (filler,) * len(words), condition=(conditions or [None] * len(sentences))[i])
            for i, words in enumerate(sentences)]
    probabilities = predict_sentences(model, encode_sentences(conditioned(gold, config), vocabs, config))
    return [p[1:] for p in probabilities] if config.condition == "first-token" else probabilities


def reexport_version(source: Path, out: Path, command: str) -> int:
    """``seqtag export --from models/pos/<version>``: the version's weights through today's exporter."""
    from training.tagger.reexport import reexport

    _, directory = reexport(artifacts.resolve_model_dir(source), out, command)
    print(directory)
    return 0


def evaluate_model(model_dir: Path, data: Path, tag_column: str | None = None, batch_size: int = 256,
                   report: Path | None = None, data_format: str | None = None) -> dict:
    """A tagger's figures on a data file (CoNLL-U; span models: SGD or CoNLL columns); with ``report``, the
    report files written there too."""
    from training.tagger.saved_tagger import SavedTagger

    tagger = SavedTagger(model_dir)
    if tagger.spans:
        from training.tagger.config import TaggerConfig as Config
        from training.tagger.evaluate import evaluate_spans

        data_format = data_format or tagger.metadata.get("data_format", "conll")
        if data_format not in SPAN_FORMATS:
            raise ConfigError(f"{model_dir} is a span model: it reads --format {' or '.join(SPAN_FORMATS)}, not {data_format}")
        config = Config.from_dict({**tagger.metadata["config"], "task": "spans"})
        sentences, left_out = read_sentences(data, config, data_format)
        metrics = evaluate_spans(tagger, sentences, batch_size=batch_size, with_predictions=report is not None)
        metrics = {"model": str(model_dir), "data": str(data), "format": data_format, **metrics}
        if left_out is not None:
            metrics["left_out"] = left_out  # gold spans not on token boundaries: not scored, counted here
        if report is not None:
            from training.common.report import write_report

            metrics.pop("gold"), metrics.pop("predicted")
            write_report(report, f"{model_dir} on {data}", metrics, metrics["per_label"], None, None,
                         tagger.metadata.get("training", {}).get("history"))
        return metrics
    if data_format not in (None, "conllu"):
        raise ConfigError(f"{model_dir} is a tagger: it reads --format conllu, not {data_format}")
    from training.tagger.data import read_conllu
    from training.tagger.evaluate import evaluate_tagger

    tag_column = tag_column or tagger.metadata.get("tag_column", "upos")
    sentences = read_conllu(data, tag_column)
    metrics = evaluate_tagger(tagger, sentences, batch_size=batch_size, with_predictions=report is not None)
    metrics = {"model": str(model_dir), "data": str(data), "tag_column": tag_column, **metrics}
    if report is not None:
        from training.common.report import write_report

        gold, predicted = metrics.pop("gold"), metrics.pop("predicted")
        write_report(report, f"{model_dir} on {data} ({tag_column.upper()})", metrics, metrics["per_tag"], gold,
                     predicted, tagger.metadata.get("training", {}).get("history"))
    return metrics


def evaluate_raw_text(model_dir: Path, data: Path, tokenizer_name: str | None = None, batch_size: int = 256,
                      precision: str = "float32") -> dict:
    """A tagger on the raw text of a CoNLL-U file: its paragraphs (and, apart, its single sentences) tokenized, split
    into sentences and tagged, scored against the gold words."""
    from training.common.tokenizer import get_tokenizer, tokenizer_for
    from training.tagger.data import read_conllu
    from training.tagger.evaluate import evaluate_raw_text as score, raw_texts
    from training.tagger.saved_tagger import SavedTagger

    # int8: the fast path's int8 LSTMs, as seqtag tag runs them by default
    tagger = SavedTagger(model_dir, runtime="onnx", precision="int8") if precision == "int8" else SavedTagger(model_dir)
    tokenizer = get_tokenizer(tokenizer_name) if tokenizer_name else tokenizer_for(tagger.metadata)
    sentences = read_conllu(data, tagger.metadata.get("tag_column", "upos"))
    paragraphs = raw_texts(sentences, paragraphs=True)
    if not paragraphs:
        raise ConfigError(f"{data}: no sentence has a '# text' comment its words follow: there is no raw text to score")
    return {"model": str(model_dir), "data": str(data), "tokenizer": tokenizer.name,
            "paragraphs": score(paragraphs, tokenizer, tagger, batch_size),
            "single_sentences": score(raw_texts(sentences, paragraphs=False), tokenizer, tagger, batch_size)}


def format_raw_text_report(metrics: dict) -> str:
    lines = [f"{metrics['model']} on the raw text of {metrics['data']} (tokenizer {metrics['tokenizer']})",
             f"{'':18}{'words F1':>10}{'sentences F1':>14}{'UPOS F1':>10}{'UPOS aligned':>14}"]
    for unit in ("paragraphs", "single_sentences"):
        m = metrics[unit]
        lines.append(f"{unit.replace('_', ' '):18}{100 * m['words']['f1']:10.2f}{100 * m['sentences']['f1']:14.2f}"
                     f"{100 * m['upos']['f1']:10.2f}{100 * m['upos']['aligned_accuracy']:14.2f}")
    return "\n".join(lines)


def command_evaluate(model_dir: Path, args: argparse.Namespace) -> int:
    """``seqtag evaluate`` on a tagger: one JSON object (``--json``) or a readable table."""
    from training.tagger.evaluate import format_report, format_span_report

    if artifacts.read_metadata(model_dir).get("schema_guided"):
        from training.schema_guided.cli import command_evaluate_schema_spans

        return command_evaluate_schema_spans(model_dir, args)
    if args.raw_text:
        metrics = evaluate_raw_text(model_dir, args.data, args.tokenizer, args.batch_size, args.precision)
        print(json.dumps(metrics) if args.json else format_raw_text_report(metrics))
        return 0
    metrics = evaluate_model(model_dir, args.data, args.tag_column, args.batch_size, args.report, args.format)
    if args.json:
        print(json.dumps(metrics))
    elif "per_tag" in metrics:
        print(format_report(metrics, title=f"{model_dir} on {args.data} ({metrics['tag_column'].upper()})"))
    else:
        print(format_span_report(metrics, title=f"{model_dir} on {args.data}"))
    return 0

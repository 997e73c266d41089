"""The ``seqtag`` command line: ``seqtag train pos|dialog-act|dialog-action ...``, ``export`` and ``evaluate``.

``main(argv=None)`` returns an exit status, so tests call it in-process. Logs go to stderr; the only
thing written to stdout by ``evaluate --json`` is one JSON object. Bad input (a malformed data file,
an unknown option) exits with status 2 and a message that names the file and line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Sequence

# Before TensorFlow is imported anywhere below: no C++ info/warning chatter, no CUDA probe on CPU boxes.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from training import artifacts  # noqa: E402
from training.checkpoint import ExportMismatchError  # noqa: E402
from training.config import TaggerConfig  # noqa: E402
from training.errors import ConfigError, DataFormatError  # noqa: E402

logger = logging.getLogger("seqtag")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One ``--option`` per TaggerConfig field, typed from its default; unset ones stay None."""
    group = parser.add_argument_group("model and run options (defaults: the shipped model's)")
    for field in dataclasses.fields(TaggerConfig):
        kind = type(field.default)
        group.add_argument("--" + field.name.replace("_", "-"), dest="config_" + field.name, type=kind,
                           default=None, metavar=kind.__name__.upper(), help=f"default {field.default!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqtag", description="Train, export and evaluate seqtag models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model and export it as a new version")
    tasks = train.add_subparsers(dest="task", required=True)
    pos = tasks.add_parser("pos", help="a part-of-speech tagger on CoNLL-U files")
    pos.add_argument("--train", required=True, type=Path, help="CoNLL-U training file")
    pos.add_argument("--dev", required=True, type=Path, help="CoNLL-U dev file (early stopping)")
    pos.add_argument("--out", required=True, type=Path, help="model directory, e.g. models/pos (gets a new version)")
    pos.add_argument("--config", type=Path, help="JSON file of options (command-line options override it)")
    pos.add_argument("--checkpoint", type=Path,
                     help="where to keep the trained weights before export (default: checkpoints/pos-<time>)")
    pos.add_argument("--quiet", action="store_true", help="no progress bar")
    pos.add_argument("--tensorboard", type=Path, metavar="DIR", help="write TensorBoard logs here")
    _add_config_options(pos)
    from training.dialog_cli import add_train_parsers
    add_train_parsers(tasks)

    export = commands.add_parser("export", help="re-export a trained version, or export a dialog training checkpoint")
    source = export.add_mutually_exclusive_group(required=True)
    source.add_argument("--from", dest="source", type=Path, help="models/pos/<version> to re-export")
    source.add_argument("--from-checkpoint", dest="checkpoints", type=Path, nargs="+", metavar="CHECKPOINT",
                        help="a checkpoint written by 'seqtag train' (under any backend); several dialog checkpoints: "
                             "one version that averages their probabilities (an ensemble; it streams as one model)")
    export.add_argument("--out", required=True, type=Path, help="model directory that gets the new version")

    evaluate = commands.add_parser("evaluate", help="evaluate an exported model on a data file")
    evaluate.add_argument("--model", required=True, type=Path, help="models/<name> (highest version) or models/<name>/<version>")
    evaluate.add_argument("--data", required=True, type=Path, help="data file")
    evaluate.add_argument("--format", choices=["conllu", "swda", "sgd", "jsonl"],
                          help="data format (default: conllu for taggers, the training format for dialog models)")
    evaluate.add_argument("--tag-column", choices=["upos", "xpos"],
                          help="CoNLL-U column to compare with (default: the one the model was trained on)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    evaluate.add_argument("--batch-size", type=int, default=256, help="sentences per model call")
    evaluate.add_argument("--report", type=Path, metavar="DIR",
                          help="also write report.md, per_label.md and PNG plots (confusion matrix, learning curves) here")
    return parser


def resolve_config(args: argparse.Namespace) -> TaggerConfig:
    values = TaggerConfig.from_json_file(args.config).to_dict() if args.config else TaggerConfig().to_dict()
    for name in TaggerConfig.field_names():
        override = getattr(args, "config_" + name)
        if override is not None:
            values[name] = override
    return TaggerConfig.from_dict(values)


def data_file_record(path: Path, sentences) -> dict:
    return {"path": str(path), "sha256": artifacts.sha256_file(path), "sentences": len(sentences),
            "tokens": sum(len(s.words) for s in sentences)}


def command_train_pos(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from training.checkpoint import default_directory, exports_here, training_record
    from training.conllu_reader import read_conllu
    from training.distribute import placement
    from training.trainer import save_tagger_checkpoint, train_tagger

    config = resolve_config(args)
    where = placement(config.distribute)
    train = read_conllu(args.train, config.tag_column)
    dev = read_conllu(args.dev, config.tag_column)
    logger.info("train: %d sentences from %s; dev: %d sentences from %s", len(train), args.train, len(dev), args.dev)
    verbose = 0 if args.quiet or not sys.stdout.isatty() else 1
    result = train_tagger(config, train, dev, verbose=verbose, tensorboard_dir=args.tensorboard, placement=where)
    metadata = {
        "task": "pos",
        "tag_column": config.tag_column,
        "data": {"train": data_file_record(args.train, train), "dev": data_file_record(args.dev, dev)},
        "command": shlex.join(["seqtag", *argv]),
        # global batch in sentences
        "training": training_record(result, where, config.mixed_precision, config.batch_size * where.replicas),
    }
    checkpoint = args.checkpoint or default_directory("pos")
    save_tagger_checkpoint(result, checkpoint, metadata, dev)
    if not exports_here(checkpoint, args.out):
        return 0
    return export_tagger_checkpoint(checkpoint, args.out, dev, args.dev)


def export_tagger_checkpoint(checkpoint_dir: Path, out: Path, dev=None, dev_path: Path | None = None,
                             command: str | None = None) -> int:
    """Export a tagger checkpoint (trained under any backend) as the next version of ``out``, published only if
    it reproduces the trained model's probe; scored on the dev file, with a report, when it is at hand."""
    from training.checkpoint import check_probe, probe_probabilities
    from training.conllu_reader import read_conllu
    from training.export import export_tagger
    from training.saved_tagger import SavedTagger
    from training.trainer import load_tagger_checkpoint

    model, vocabs, config, state = load_tagger_checkpoint(checkpoint_dir)
    metadata = {**state["metadata"], **({"export_command": command} if command else {})}
    if dev is None:
        record = metadata.get("data", {}).get("dev")
        if record and Path(record["path"]).is_file():
            dev_path = Path(record["path"])
            dev = read_conllu(dev_path, config.tag_column)
    expected = probe_probabilities(checkpoint_dir)
    backend = metadata.get("training", {}).get("backend", "unknown")

    def verify(staging: Path, written: dict) -> dict | None:
        tagged = SavedTagger(staging).tag(state.get("probe", []))
        return check_probe(expected, [t.probabilities for t in tagged], backend)

    _, directory = export_tagger(model, vocabs, config, out, metadata, dev_sentences=dev, verify=verify)
    if dev_path is not None:
        evaluate_pos_model(directory, dev_path, config.tag_column, report=directory / "report")
    print(directory)
    return 0


def command_export(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from training.reexport import reexport, tf_only

    tf_only()
    if args.checkpoints:
        from training.checkpoint import read_state
        from training.dialog_cli import export_checkpoint

        command = shlex.join(["seqtag", *argv])
        kinds = {read_state(path)["kind"] for path in args.checkpoints}
        if kinds == {"pos"}:
            if len(args.checkpoints) > 1:
                raise ConfigError("ensembles are for dialog models: give one tagger checkpoint")
            return export_tagger_checkpoint(args.checkpoints[0], args.out, command=command)
        if kinds != {"dialog"}:
            raise ConfigError("the checkpoints mix kinds (" + ", ".join(sorted(kinds)) + "): give one kind")
        return export_checkpoint(args.checkpoints, args.out, command=command)
    _, directory = reexport(artifacts.resolve_model_dir(args.source), args.out, shlex.join(["seqtag", *argv]))
    print(directory)
    return 0


def evaluate_pos_model(model_dir: Path, data: Path, tag_column: str | None = None, batch_size: int = 256,
                       report: Path | None = None) -> dict:
    """A tagger's figures on a CoNLL-U file; with ``report``, the report files written there too."""
    from training.conllu_reader import read_conllu
    from training.evaluate import evaluate_tagger
    from training.saved_tagger import SavedTagger

    tagger = SavedTagger(model_dir)
    tag_column = tag_column or tagger.metadata.get("tag_column", "upos")
    sentences = read_conllu(data, tag_column)
    metrics = evaluate_tagger(tagger, sentences, batch_size=batch_size, with_predictions=report is not None)
    metrics = {"model": str(model_dir), "data": str(data), "tag_column": tag_column, **metrics}
    if report is not None:
        from training.report import write_report

        gold, predicted = metrics.pop("gold"), metrics.pop("predicted")
        write_report(report, f"{model_dir} on {data} ({tag_column.upper()})", metrics, metrics["per_tag"], gold,
                     predicted, tagger.metadata.get("training", {}).get("history"))
    return metrics


def command_evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import format_report

    model_dir = artifacts.resolve_model_dir(args.model)
    if artifacts.read_metadata(model_dir).get("kind") == "dialog":
        from training.dialog_cli import command_evaluate_dialog
        return command_evaluate_dialog(model_dir, args.data, args.format, args.json, args.report)
    if args.format not in (None, "conllu"):
        raise ConfigError(f"{model_dir} is a tagger: it reads --format conllu, not {args.format}")
    metrics = evaluate_pos_model(model_dir, args.data, args.tag_column, args.batch_size, args.report)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(format_report(metrics, title=f"{model_dir} on {args.data} ({metrics['tag_column'].upper()})"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "train":
            if args.task != "pos":
                from training.dialog_cli import command_train_dialog
                return command_train_dialog(args, argv)
            return command_train_pos(args, argv)
        if args.command == "export":
            return command_export(args, argv)
        return command_evaluate(args)
    except (DataFormatError, ConfigError, artifacts.ModelNotFoundError) as error:
        print(f"seqtag: error: {error}", file=sys.stderr)
        return 2
    except ExportMismatchError as error:  # not the user's input: the trained weights did not survive the trip
        print(f"seqtag: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

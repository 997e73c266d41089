"""The ``seqtag`` command line: ``seqtag train pos|spans|dialog-act|dialog-action ...``, ``export``, ``evaluate``,
``tag`` (annotate a corpus, ``training.annotate``), ``serve`` and ``cards``.

The one entry point: it builds the parser and dispatches to each wing's commands (``training.tagger.cli``,
``training.dialog.cli``) by task, by checkpoint kind or by the model's metadata. ``seqtag serve`` starts the
HTTP service (gunicorn with ``service.gunicorn_conf``, as ``make serve`` does) and needs no checkout. ``seqtag
cards`` writes the model cards (``docs/models/*.md``) from the models' metadata (``training.model_cards``).

The wings, Keras and the service are imported only by the commands that use them: ``seqtag serve`` hands the
process to gunicorn without loading TensorFlow first, and an install without the ``train`` extra (``pip
install seqtag``: serving only) says which extra a training command needs instead of failing on an import.

``main(argv=None)`` returns an exit status, so tests call it in-process. Logs go to stderr; the only
thing written to stdout by ``evaluate --json`` is one JSON object. Bad input (a malformed data file,
an unknown option) exits with status 2 and a message that names the file and line.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Sequence

# Before TensorFlow is imported anywhere below: no C++ info/warning chatter, no CUDA probe on CPU boxes.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from training.common import artifacts  # noqa: E402
from training.common.errors import ConfigError, DataFormatError  # noqa: E402

logger = logging.getLogger("seqtag")

# Libraries of the ``train`` extra (pyproject.toml) that training, export and evaluation import.
TRAIN_EXTRA_MODULES = {"sklearn": "scikit-learn", "conllu": "conllu", "matplotlib": "matplotlib",
                       "tensorboard": "tensorboard"}


def add_serve_parser(commands) -> argparse.ArgumentParser:
    serve = commands.add_parser(
        "serve", help="serve the models over HTTP (gunicorn, threaded workers; as 'make serve')",
        description="Serve every model under --models over HTTP: gunicorn with service/gunicorn_conf.py, the same "
                    "server as 'make serve'. Options not given come from the environment (PORT, SEQTAG_MODELS_DIR, "
                    "SEQTAG_WORKERS, SEQTAG_REDIS_URL; every other SEQTAG_* setting too).")
    serve.add_argument("--models", type=Path, metavar="DIR",
                       help="the models directory, <name>/<version>/ (default: $SEQTAG_MODELS_DIR, else ./models)")
    serve.add_argument("--port", type=int, metavar="N", help="port to listen on (default: $PORT, else 8000)")
    serve.add_argument("--workers", type=int, metavar="N",
                       help="gunicorn worker processes (default: $SEQTAG_WORKERS, else 1); more than one needs --redis-url")
    serve.add_argument("--redis-url", metavar="URL",
                       help="keep dialog sessions in this Redis, e.g. redis://localhost:6379/0 (default: "
                            "$SEQTAG_REDIS_URL, else in the process)")
    return serve


def add_cards_parser(commands) -> argparse.ArgumentParser:
    cards = commands.add_parser(
        "cards", help="write the model cards (docs/models/*.md) from the models' metadata.json",
        description="Render one Markdown model card per model under --models (every version: data and licences, "
                    "commands, dev metrics, training record, size and speed, known limits) and an index, into --out. "
                    "--check writes nothing and exits 1 naming each stale, missing or extra card.")
    cards.add_argument("--models", type=Path, default=Path("models"), metavar="DIR",
                       help="the models directory, <name>/<version>/ (default: models)")
    cards.add_argument("--out", type=Path, default=Path("docs/models"), metavar="DIR",
                       help="where the cards go (default: docs/models); hand-written notes are read from DIR/notes/<name>.md")
    cards.add_argument("--speed", type=Path, default=Path("docs/models/speed.json"), metavar="FILE",
                       help="in-process speed figures, written by benchmarks/model_speed.py --write (default: "
                            "docs/models/speed.json)")
    cards.add_argument("--check", action="store_true",
                       help="write nothing; exit 1 if a card is stale, missing or extra, 0 if all are up to date")
    return cards


def build_parser() -> argparse.ArgumentParser:
    from training.common.tokenizer import TOKENIZERS
    from training.dialog import cli as dialog_cli
    from training.tagger import cli as tagger_cli

    parser = argparse.ArgumentParser(prog="seqtag", description="Train, export, evaluate and serve seqtag models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model and export it as a new version")
    tasks = train.add_subparsers(dest="task", required=True)
    tagger_cli.add_train_parser(tasks)
    dialog_cli.add_train_parsers(tasks)

    from training.tagger.tune import add_tune_parser

    add_tune_parser(commands)

    export = commands.add_parser("export", help="re-export a trained version, or export a dialog training checkpoint")
    source = export.add_mutually_exclusive_group(required=True)
    source.add_argument("--from", dest="source", type=Path, help="models/pos/<version> to re-export")
    source.add_argument("--from-checkpoint", dest="checkpoints", type=Path, nargs="+", metavar="CHECKPOINT",
                        help="a checkpoint written by 'seqtag train' (under any backend); several dialog checkpoints: "
                             "one version that averages their probabilities (an ensemble; it streams as one model)")
    export.add_argument("--out", required=True, type=Path, help="model directory that gets the new version")
    export.add_argument("--vectors-top", type=int, metavar="N",
                        help="keep the vector table's N most frequent words (and all training words) instead of the "
                             "number training kept (rows training never touched): to measure N and fit a size limit "
                             "(an ensemble: each member's table)")

    export.add_argument("--weights", choices=("float32", "float16"), default="float32",
                        help="how the version stores its weights (dialog models): float16 halves their bytes (rounded "
                             "first, computed in float32; the dev figures are the rounded model's), e.g. to fit an "
                             "ensemble in a size limit")

    evaluate = commands.add_parser("evaluate", help="evaluate an exported model on a data file")
    evaluate.add_argument("--model", required=True, type=Path, help="models/<name> (highest version) or models/<name>/<version>")
    evaluate.add_argument("--data", required=True, type=Path, help="data file")
    evaluate.add_argument("--format", choices=["conllu", "conll", "swda", "sgd", "jsonl"],
                          help="data format (default: conllu for POS taggers, the training format for span and "
                               "dialog models)")
    evaluate.add_argument("--tag-column", choices=["upos", "xpos"],
                          help="CoNLL-U column to compare with (default: the one the model was trained on)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    evaluate.add_argument("--batch-size", type=int, default=256, help="sentences per model call")
    evaluate.add_argument("--schemas", nargs="+", type=Path, default=[], metavar="FILE",
                          help="schema-guided span models, --format sgd: schema files of the data's services (the model's "
                               "own are shipped with it); figures for services training had and lacked")
    evaluate.add_argument("--schema-encoder", type=Path, metavar="MODEL",
                          help="action models with --schemas: the schema-guided span model whose encoder reads the "
                               "schemas (models/slots)")
    evaluate.add_argument("--report", type=Path, metavar="DIR",
                          help="also write report.md, per_label.md and PNG plots (confusion matrix, learning curves) here")
    evaluate.add_argument("--raw-text", action="store_true",
                          help="taggers: tokenize each paragraph's # text, split its sentences and tag them, then score "
                               "words, sentences and UPOS against the gold words (CoNLL 2018's way)")
    evaluate.add_argument("--tokenizer", choices=TOKENIZERS,
                          help="with --raw-text: the tokenizer to score (default: the model's)")
    evaluate.add_argument("--precision", choices=("float32", "int8"), default="float32",
                          help="with --raw-text: the tagger as the service runs it (float32, default) or with int8 LSTMs, "
                               "as seqtag tag runs it by default; with --streamed: the encoder's precision; a schema-guided "
                               "span model: its turn encoder's, as the service runs it")
    evaluate.add_argument("--streamed", action="store_true",
                          help="dialog models: stream each conversation turn by turn through the step the service runs "
                               "(ONNX Runtime, 64 sessions at once), not the SavedModel's whole dialogs")
    add_tag_parser(commands)
    add_serve_parser(commands)
    add_cards_parser(commands)
    return parser


def command_serve(args: argparse.Namespace) -> int:
    """Replace this process with gunicorn configured by ``service.gunicorn_conf``, found as a module of the
    installed package (``-c python:...``), so it runs from anywhere, not only inside a checkout."""
    if importlib.util.find_spec("service.gunicorn_conf") is None or importlib.util.find_spec("gunicorn") is None:
        raise ConfigError("the service is not installed here: pip install seqtag")
    env = dict(os.environ)
    models = args.models if args.models is not None else Path(env.get("SEQTAG_MODELS_DIR") or "models")
    if not models.is_dir():
        raise ConfigError(f"{models}: no such models directory (give --models DIR, holding <name>/<version>/)")
    env["SEQTAG_MODELS_DIR"] = str(models.resolve())  # gunicorn's workers may start elsewhere
    for name, value in (("PORT", args.port), ("SEQTAG_WORKERS", args.workers), ("SEQTAG_REDIS_URL", args.redis_url)):
        if value is not None:
            env[name] = str(value)
    command = [sys.executable, "-m", "gunicorn", "-c", "python:service.gunicorn_conf"]
    logger.info("serving %s on port %s: %s", env["SEQTAG_MODELS_DIR"], env.get("PORT", "8000"), shlex.join(command))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, command, env)  # signals (SIGTERM, SIGHUP) now go to gunicorn's master itself
    return 0  # not reached


def add_tag_parser(commands) -> argparse.ArgumentParser:
    from training.annotate.cli import add_tag_parser as add

    return add(commands)


# Commands that need neither wing: parsed by their own parser, so that they do not import Keras and TensorFlow
# (seqtag tag imports TensorFlow only where it loads a model: a Ray driver never does).
LIGHT_COMMANDS = {"serve": add_serve_parser, "cards": add_cards_parser, "tag": add_tag_parser}


def _light_command(argv: Sequence[str]) -> str | None:
    return argv[0] if argv and argv[0] in LIGHT_COMMANDS else None


def command_cards(args: argparse.Namespace) -> int:
    """Write the model cards, or with ``--check`` say which are out of date (exit status 1)."""
    from training import model_cards

    if not args.models.is_dir():
        raise ConfigError(f"{args.models}: no such models directory (give --models DIR, holding <name>/<version>/)")
    if args.check:
        problems = model_cards.check_cards(args.models, args.out, args.speed)
        for problem in problems:
            print(problem, file=sys.stderr)
        if not problems:
            logger.info("%s: the model cards are up to date", args.out)
        return 1 if problems else 0
    model_cards.write_cards(args.models, args.out, args.speed)
    return 0


def command_export(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from training.common.checkpoint import read_state, require_tensorflow
    from training.dialog import cli as dialog_cli
    from training.tagger import cli as tagger_cli

    require_tensorflow()
    command = shlex.join(["seqtag", *argv])
    if not args.checkpoints:
        if args.weights != "float32":
            raise ConfigError("--weights float16 is for dialog checkpoints (--from-checkpoint)")
        return tagger_cli.reexport_version(args.source, args.out, command)
    kinds = {read_state(path)["kind"] for path in args.checkpoints}
    if kinds == {"tagger"}:
        if len(args.checkpoints) > 1:
            raise ConfigError("ensembles are for dialog models: give one tagger checkpoint")
        if args.weights != "float32":
            raise ConfigError("--weights float16 is for dialog models: a tagger stores float32 weights")
        return tagger_cli.export_checkpoint(args.checkpoints[0], args.out, command=command, vectors_top=args.vectors_top)
    if kinds != {"dialog"}:
        raise ConfigError("the checkpoints mix kinds (" + ", ".join(sorted(kinds)) + "): give one kind")
    return dialog_cli.export_checkpoint(args.checkpoints, args.out, command=command, vectors_top=args.vectors_top,
                                        weights=args.weights)


def command_evaluate(args: argparse.Namespace) -> int:
    from training.dialog import cli as dialog_cli
    from training.tagger import cli as tagger_cli

    model_dir = artifacts.resolve_model_dir(args.model)
    if args.tokenizer and not args.raw_text:
        raise ConfigError("--tokenizer goes with --raw-text")
    schema_guided = bool(artifacts.read_metadata(model_dir).get("schema_guided"))
    if args.precision != "float32" and not (args.raw_text or args.streamed or schema_guided):
        raise ConfigError("--precision goes with --raw-text (taggers), --streamed (dialog models) or a schema-guided "
                          "span model")
    if artifacts.read_metadata(model_dir).get("kind") == "dialog":
        if args.raw_text:
            raise ConfigError(f"{model_dir} is a dialog model: --raw-text scores taggers (dialog turns are raw text already)")
        if args.schemas:
            if args.streamed:
                raise ConfigError("--streamed goes without --schemas")
            from training.schema_guided.cli import command_evaluate_actions

            return command_evaluate_actions(model_dir, args)
        return dialog_cli.command_evaluate(model_dir, args.data, args.format, args.json, args.report,
                                           streamed=args.streamed, precision=args.precision)
    if args.streamed:
        raise ConfigError(f"{model_dir} is a tagger: --streamed streams dialog turns")
    return tagger_cli.command_evaluate(model_dir, args)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    light = _light_command(argv)
    if light is not None:
        # Only this command's parser: the full one imports the training wings, and with them Keras and
        # TensorFlow (seconds, and hundreds of MB), which gunicorn's workers load anyway and the cards never need.
        parser = argparse.ArgumentParser(prog="seqtag")
        LIGHT_COMMANDS[light](parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(argv)
        args.verbose = False
    else:
        try:
            args = build_parser().parse_args(argv)
        except ModuleNotFoundError as error:
            return _missing_extra(error)
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "serve":
            return command_serve(args)
        if args.command == "cards":
            return command_cards(args)
        if args.command == "tag":
            from training.annotate.cli import command_tag

            return command_tag(args)
        from training.common.checkpoint import ExportMismatchError
        from training.dialog import cli as dialog_cli
        from training.tagger import cli as tagger_cli
    except (DataFormatError, ConfigError, artifacts.ModelNotFoundError) as error:
        print(f"seqtag: error: {error}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        return _missing_extra(error)
    try:
        if args.command == "train":
            if args.task in ("pos", "spans"):
                return tagger_cli.command_train(args, argv)
            return dialog_cli.command_train(args, argv)
        if args.command == "tune":
            from training.tagger.tune import command_tune

            return command_tune(args, argv)
        if args.command == "export":
            return command_export(args, argv)
        return command_evaluate(args)
    except (DataFormatError, ConfigError, artifacts.ModelNotFoundError) as error:
        print(f"seqtag: error: {error}", file=sys.stderr)
        return 2
    except ExportMismatchError as error:  # not the user's input: the trained weights did not survive the trip
        print(f"seqtag: error: {error}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as error:
        return _missing_extra(error)


def _missing_extra(error: ModuleNotFoundError) -> int:
    """A library of the ``train`` extra is missing (a serving-only install): say how to add it."""
    top = (error.name or "").split(".")[0]
    if top not in TRAIN_EXTRA_MODULES:
        raise error
    print(f"seqtag: error: this command needs {TRAIN_EXTRA_MODULES[top]}, part of the 'train' extra, which this "
          f"install lacks (it serves only): pip install 'seqtag[train]' (in a checkout: make install-train)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

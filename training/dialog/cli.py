"""``seqtag train dialog-act|dialog-action``, the export of dialog checkpoints and dialog evaluation: the dialog
wing's commands (``training.cli`` builds the ``seqtag`` parser and dispatches here).

Training writes a checkpoint (weights, vocabularies, thresholds, the training record) before it exports,
so an export that fails can be run again from the checkpoint without retraining.
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
from training.dialog.config import DialogConfig
from training.dialog.data import FORMATS, find_label_names, read_dialogs

logger = logging.getLogger("seqtag")

DEFAULT_FORMATS = {"dialog-act": "swda", "dialog-action": "sgd"}


def add_train_parsers(tasks) -> None:
    from training.common import data_parallel

    for task, what in (("dialog-act", "a dialog-act tagger (one act per utterance, causal)"),
                       ("dialog-action", "a next-system-action predictor (a set of act(slot) labels per user turn)")):
        parser = tasks.add_parser(task, help=what)
        parser.add_argument("--train", required=True, type=Path, help="training dialogs (a SwDA directory or a JSONL file)")
        parser.add_argument("--dev", required=True, type=Path, help="dev dialogs (early stopping, thresholds)")
        parser.add_argument("--format", choices=FORMATS, default=DEFAULT_FORMATS[task], help="data format")
        parser.add_argument("--out", required=True, type=Path, help=f"model directory, e.g. models/{task}")
        parser.add_argument("--checkpoint", type=Path,
                            help="where to keep the trained weights before export (default: checkpoints/<task>-<time>)")
        parser.add_argument("--init-from", type=Path, metavar="CHECKPOINT",
                            help="go on training from this checkpoint's weights and vocabularies (run options such as "
                                 "--learning-rate may change; the architecture options are the checkpoint's)")
        parser.add_argument("--quiet", action="store_true", help="no progress bar")
        parser.add_argument("--tensorboard", type=Path, metavar="DIR", help="write TensorBoard logs here")
        data_parallel.add_workers_options(parser, "turns")
        add_config_options(parser.add_argument_group("model and run options"),
                           [f for f in dataclasses.fields(DialogConfig) if f.name != "task"])


def data_record(path: Path, dialogs) -> dict:
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    record = {"path": str(path), "dialogs": len(dialogs), "turns": sum(len(d.turns) for d in dialogs)}
    if path.is_dir():  # a directory of conversations: one digest over the files' names and digests
        import hashlib
        digest = hashlib.sha256("".join(f"{f.name}:{artifacts.sha256_file(f)}\n" for f in files).encode()).hexdigest()
        record.update({"sha256": digest, "sha256_of": "the lines '<file name>:<sha256>' of its *.txt files, sorted",
                       "files": len(files)})
    else:
        record["sha256"] = artifacts.sha256_file(path)
    return record


def command_train(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from training.common import data_parallel
    from training.common.checkpoint import default_directory, exports_here, training_record
    from training.common.distribute import placement
    from training.dialog.trainer import ARCHITECTURE_FIELDS, load_checkpoint, save_checkpoint, train_dialog_model

    overrides = {name: getattr(args, "config_" + name) for name in DialogConfig.field_names()
                 if getattr(args, "config_" + name, None) is not None}
    # How this run is spread over devices is this run's own (a checkpoint it goes on from does not choose).
    overrides.setdefault("distribute", "none")
    data_parallel.check_workers_options(args, overrides.get("mixed_precision", "none"))
    if args.workers > 1 or data_parallel.launched():
        # Not tried with workers: a backup and restart in the middle of the two stages, or of the averaged weights' swaps
        for option, default in (("utterance_encoder", ""), ("ema_momentum", 0.0)):
            if overrides.get(option, default) != default:
                raise ConfigError(f"--workers trains dialog models without --{option.replace('_', '-')} for now")
    if data_parallel.launches(args):
        return data_parallel.run_workers(args, argv, args.task, lambda checkpoint: export_checkpoint([checkpoint], args.out))
    where = placement(overrides["distribute"])
    init, previous = None, None
    if args.init_from:  # load_checkpoint refuses a directory that is not a checkpoint
        model, vocabs, checkpoint_config, _, previous = load_checkpoint(args.init_from)
        if checkpoint_config.task != args.task:
            raise ConfigError(f"{args.init_from}: a {checkpoint_config.task} checkpoint, not {args.task}")
        changed = [name for name in ARCHITECTURE_FIELDS if name in overrides and overrides[name] != getattr(checkpoint_config, name)]
        if changed:
            raise ConfigError(f"--init-from keeps the checkpoint's {', '.join('--' + n.replace('_', '-') for n in changed)}")
        config = DialogConfig.from_dict({**checkpoint_config.to_dict(), **overrides})
        init = (model, vocabs)
    else:
        config = DialogConfig.from_dict({"task": args.task, **overrides})
    train = read_dialogs(args.train, args.format)
    dev = read_dialogs(args.dev, args.format)
    verbose = 0 if args.quiet or not sys.stdout.isatty() else 1
    if config.utterance_encoder:  # two stages (training.dialog.encoder_training); keras-hub is an optional extra
        from training.dialog.encoder_training import train_encoder_dialog_model

        if init:
            raise ConfigError("--init-from is not supported with --utterance-encoder: train it again")
        result = train_encoder_dialog_model(config, train, dev, verbose=verbose, tensorboard_dir=args.tensorboard,
                                            placement=where)
    else:
        # rank 0 backs up every epoch; a restarted group goes on from there
        backup = data_parallel.backup_directory(args.checkpoint) if where.collective is not None else None
        result = train_dialog_model(config, train, dev, verbose=verbose, init=init, tensorboard_dir=args.tensorboard,
                                    placement=where, backup_dir=backup)
    if where.collective is not None:
        where.collective.close()  # the workers' last collective is behind them
        if not where.writes:  # rank 0 writes the one checkpoint
            return 0
    metadata = {
        "task": args.task, "data_format": args.format,
        "data": {"train": data_record(args.train, train), "dev": data_record(args.dev, dev)},
        "command": shlex.join(["seqtag", *argv]),
        # global batch in turns (about: batches are whole dialogs)
        "training": training_record(result, where, config.mixed_precision, config.batch_turns * where.replicas),
    }
    if result.encoder is not None:
        metadata["encoder"] = result.encoder
    if result.vectors is not None:
        metadata["vectors"] = result.vectors
    elif previous is not None and previous.get("vectors"):
        metadata["vectors"] = previous["vectors"]  # the checkpoint's table, kept in its weights
    names = find_label_names(args.train)  # SwDA's label_map.txt: the acts' names, kept with the checkpoint
    if names:
        metadata["label_names"] = names
    if previous is not None:  # the run this one went on from, and the runs before it
        metadata["training"]["initialized_from"] = {"checkpoint": str(args.init_from), "command": previous.get("command"),
                                                    "training": previous.get("training")}
    checkpoint = args.checkpoint or default_directory(args.task)
    save_checkpoint(result, checkpoint, metadata, dev)
    if not exports_here(checkpoint, args.out):
        return 0
    return export_checkpoint([checkpoint], args.out, dev)


def export_checkpoint(checkpoints: Sequence[Path], out: Path, dev=None, command: str | None = None,
                      vectors_top: int | None = None, weights: str = "float32") -> int:
    """Export one checkpoint, or several as one ensemble version; scored on the dev data when it is at hand. A
    single checkpoint's export is published only if it reproduces the trained model's probe (``training.common.checkpoint``).
    ``vectors_top`` resizes each model's kept vector table to the table's first ``vectors_top`` words and the model's
    training words (``resize_vectors``): how an ensemble of models with tables fits the size limit. ``weights``
    "float16": each model's weights are rounded to float16 and so stored (``training.dialog.export``); thresholds
    are tuned, and the export checked, on the rounded models."""
    from training.common.checkpoint import check_probe, probe_probabilities, read_state
    from training.dialog.evaluate import dialog_inputs
    from training.dialog.export import export_dialog_ensemble, export_dialog_model, round_weights
    from training.dialog.saved_dialog import SavedDialogModel
    from training.dialog.trainer import ensemble_thresholds, keras_probabilities, load_checkpoint, probe_dialogs

    loaded = [load_checkpoint(Path(checkpoint)) for checkpoint in checkpoints]
    if vectors_top is not None:
        resized, words = [], {}  # the members' training words, read once per data file and tokenizer
        for model, vocabs, config, thresholds, metadata in loaded:
            if vocabs.pretrained is not None or len(loaded) == 1:  # an ensemble's members without a table stay
                model, vocabs, metadata = resize_vectors(model, vocabs, config, metadata, vectors_top, words)
            resized.append((model, vocabs, config, thresholds, metadata))
        loaded = resized
    if weights == "float16":
        loaded = [(round_weights(m), v, c, t, meta) for m, v, c, t, meta in loaded]
    model, vocabs, config, thresholds, metadata = loaded[0]
    metadata = with_label_names(metadata, list(vocabs.labels.items))
    if dev is None:
        record = metadata.get("data", {}).get("dev")
        if record and Path(record["path"]).exists():
            dev = read_dialogs(record["path"], metadata.get("data_format", DEFAULT_FORMATS[config.task]))
    if len(loaded) == 1:
        if command:
            metadata = {**metadata, "export_command": command}
        expected = probe_probabilities(Path(checkpoints[0]))
        probe = probe_dialogs(read_state(Path(checkpoints[0])))
        if vectors_top is not None or weights != "float32":
            # the export must reproduce the resized or rounded model, its thresholds tuned again
            trained = expected
            expected = keras_probabilities(model, vocabs, config, probe)
            if weights != "float32" and trained is not None:
                difference = max((float(abs(a - b).max()) for a, b in zip(trained, expected) if a.size), default=0.0)
                metadata = {**metadata, "rounding": {"weights": weights, "max_abs_difference_on_probe": difference}}
                logger.info("float16 weights move the probe's probabilities by up to %.1e", difference)
            if config.multi_label and dev is not None:
                thresholds = ensemble_thresholds([(model, vocabs, config)], dev)
        backend = metadata.get("training", {}).get("backend", "unknown")

        def verify(staging: Path, written: dict) -> dict | None:
            exported_model = SavedDialogModel(staging, written)
            exported = exported_model.predict([dialog_inputs(d, config.multi_label, exported_model.tokenizer) for d in probe])
            return check_probe(expected, exported, backend)

        _, directory = export_dialog_model(model, vocabs, config, thresholds, out, metadata, dev_dialogs=dev,
                                           verify=verify, weights=weights)
    else:
        members = [(m, v, c) for m, v, c, _, _ in loaded]
        if config.multi_label:  # the averaged probabilities get their own thresholds
            if dev is None:
                raise ConfigError("an ensemble of dialog-action models needs its dev data (named in the checkpoints' "
                                  "metadata) to tune its thresholds")
            thresholds = ensemble_thresholds(members, dev)
        ensemble = {**{k: v for k, v in metadata.items() if k not in ("command", "training")},
                    "command": command or "seqtag export --from-checkpoint " + " ".join(map(str, checkpoints)),
                    "ensemble": [{"checkpoint": str(path), "command": meta.get("command"), "training": meta.get("training"),
                                  **({"vectors": meta["vectors"]} if meta.get("vectors") else {})}
                                 for path, (_, _, _, _, meta) in zip(checkpoints, loaded)]}
        _, directory = export_dialog_ensemble(members, thresholds, out, ensemble, dev_dialogs=dev, weights=weights)
    if dev is not None:
        evaluate_dialog(directory, dev, report=directory / "report")
    print(directory)
    return 0


def resize_vectors(model, vocabs, config: DialogConfig, metadata: dict, top: int, words_read: dict | None = None):
    """A trained dialog model with its kept vector table resized to the table's first ``top`` words and its training
    words (``KeptVectors.resized``). The training words are read again from the training data its metadata names
    (checked by sha256) and cut into words by its tokenizer; the table is read again when it grows.
    ``words_read`` keeps the words read, for the next member of an ensemble trained on the same data.
    -> (model, vocabularies, metadata with the resize recorded)."""
    from training.common.layers import inference_config
    from training.common.vectors import resize_kept
    from training.dialog.model import build_dialog_model, pretrained_rows, set_pretrained

    if vocabs.pretrained is None:
        raise ConfigError("--vectors-top prunes a vector table: this checkpoint has none")
    record = metadata.get("data", {}).get("train", {})
    key = (record.get("path", ""), record.get("sha256"), metadata.get("data_format", DEFAULT_FORMATS[config.task]),
           config.tokenizer)
    words_read = {} if words_read is None else words_read
    if key not in words_read:
        words_read[key] = _training_words(*key)
    words = words_read[key]
    pruned, rows, metadata = resize_kept(vocabs.pretrained, pretrained_rows(model), words, top, config.vectors,
                                         config.vectors_top, metadata)
    new_vocabs = vocabs.with_pretrained(pruned)
    new_model = build_dialog_model(inference_config(config), len(vocabs.words), len(vocabs.speakers), len(vocabs.labels),
                                   pruned.shape)
    for old, new in zip(model.weights, new_model.weights, strict=True):
        if tuple(old.shape) == tuple(new.shape):
            new.assign(old.numpy())
    set_pretrained(new_model, rows)
    return new_model, new_vocabs, metadata


def _training_words(path: str, sha256: str | None, data_format: str, tokenizer: str) -> frozenset[str]:
    """The words of the training data a checkpoint names (checked by sha256), cut by ``tokenizer``."""
    from training.dialog.trainer import tokenize_dialogs

    if not Path(path).exists():
        raise ConfigError(f"--vectors-top needs the training data the checkpoint names ({path})")
    train = read_dialogs(Path(path), data_format)
    if data_record(Path(path), train)["sha256"] != sha256:
        raise ConfigError(f"--vectors-top needs the training data the checkpoint names ({path}), unchanged: its sha256 differs")
    return frozenset(token for dialog in tokenize_dialogs(train, tokenizer) for turn in dialog for token in turn)


def with_label_names(metadata: dict, labels: Sequence[str]) -> dict:
    """``metadata`` with ``label_names`` (label -> name) for those of ``labels`` that have one: the names the
    checkpoint kept, else a ``label_map.txt`` beside the training data named in it (a checkpoint from before
    label names, or data moved since). Unchanged when there are none."""
    names = metadata.get("label_names")
    train = metadata.get("data", {}).get("train", {}).get("path")
    if not names and train and Path(train).exists():
        names = find_label_names(train)
    if not names:
        return metadata
    return {**metadata, "label_names": {label: names[label] for label in labels if label in names}}


def add_label_names(version_dir: str | Path, label_map: str | Path) -> dict[str, str]:
    """Write the names in ``label_map`` (``name|code`` lines) into an exported version's ``metadata.json``, for a
    version exported before models carried them (``models/dialog-act/1`` got them so)::

        .venv/bin/python -c "from training.dialog.cli import add_label_names; \\
            add_label_names('models/dialog-act/1', '../shared/data/swda/label_map.txt')"

    Returns the names written; the rest of the metadata is left as it was."""
    from training.dialog.data import read_label_names

    metadata = artifacts.read_metadata(version_dir)
    names = read_label_names(label_map)
    metadata["label_names"] = {label: names[label] for label in metadata["labels"] if label in names}
    artifacts.write_metadata(version_dir, metadata)
    return metadata["label_names"]


def evaluate_dialog(model_dir: Path, dialogs, data: Path | None = None, data_format: str | None = None,
                    report: Path | None = None, streamed: bool = False, precision: str = "float32") -> dict:
    """A dialog model's figures on ``dialogs``; with ``report``, the report files written there too. ``streamed``:
    turn by turn through the service's fast step, at ``precision``, with what ran it and its cache's hit rate."""
    from training.dialog.evaluate import evaluate_dialog_model
    from training.dialog.saved_dialog import SavedDialogModel

    model = SavedDialogModel(model_dir, runtime="onnx", precision=precision) if streamed else SavedDialogModel(model_dir)
    metrics = evaluate_dialog_model(model, dialogs, with_predictions=report is not None, streamed=streamed)
    if streamed:
        cache = getattr(model.fast, "vectors", None)
        metrics["served_path"] = {"runtime": model.runtime, "precision": model.precision,
                                  **({"turn_vector_cache": cache.stats()} if cache is not None else {})}
    metrics = {"model": str(model_dir), **({"data": str(data), "format": data_format} if data else {}), **metrics}
    if report is not None:
        from training.common.report import write_report

        gold, predicted = metrics.pop("gold"), metrics.pop("predicted")
        single = not model.multi_label  # a confusion matrix for one label per turn; per-label figures for sets
        write_report(report, f"{model_dir}" + (f" on {data}" if data else " on dev"), metrics, metrics["per_label"],
                     gold if single else None, predicted if single else None,
                     model.metadata.get("training", {}).get("history"))
    return metrics


def command_evaluate(model_dir: Path, data: Path, data_format: str | None, as_json: bool,
                     report: Path | None = None, streamed: bool = False, precision: str = "float32") -> int:
    from training.dialog.evaluate import format_dialog_report

    metadata = artifacts.read_metadata(model_dir)
    data_format = data_format or metadata.get("data_format", DEFAULT_FORMATS[metadata.get("task", "dialog-act")])
    if data_format not in FORMATS:
        raise ConfigError(f"--format for a dialog model must be one of {', '.join(FORMATS)}, not {data_format!r}")
    metrics = evaluate_dialog(model_dir, read_dialogs(data, data_format), data, data_format, report, streamed, precision)
    print(json.dumps(metrics) if as_json else format_dialog_report(metrics))
    return 0

"""``seqtag tune pos|spans``: K tagger trainings on Ray Tune with options drawn from a search space, weak trials
stopped early by ASHA on the dev score, the best trial's best epoch exported as the next version.

The engine and the table are ``training.common.sweep``'s; this module brings the tagger's trial: the training of
``seqtag train`` (the same readers, ``train_tagger``, the same checkpoint and metadata), which reports each epoch's
dev score (POS: token accuracy; spans: exact span F1) and keeps its best epoch as a checkpoint. The export is the
usual one (``export_checkpoint``: the probe check, the dev scores and report) of ``<sweep>/best``, the best trial's
checkpoint with the sweep's record (search space, draws, every trial's outcome) in its metadata under ``sweep``;
under another backend than TensorFlow, the command says how to export it, as ``seqtag train`` does.

Trials run in Ray's worker processes, under the Keras backend this command runs under (``KERAS_BACKEND``), one CPU
each unless told otherwise, so a 2-core machine runs 2 at once and a cluster as many as it has CPUs (or GPUs with
``--gpus-per-trial``). On a cluster every node needs seqtag and the data files at the same path, and the sweep's
directory must be one they all see (or Ray's storage URI).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
from pathlib import Path
from typing import Sequence

from training.common.errors import ConfigError
from training.tagger.config import TaggerConfig

logger = logging.getLogger("seqtag")

# Options a search space cannot draw: the sweep sets them (epochs is ASHA's horizon) or they change what is trained
FIXED_OPTIONS = ("task", "epochs", "distribute")


def add_tune_parser(commands) -> None:
    """``seqtag tune pos`` and ``seqtag tune spans``."""
    from training.tagger.cli import SPAN_FORMATS, _add_config_options

    tune = commands.add_parser("tune", help="sweep a tagger's options on Ray Tune (ASHA) and export the best trial")
    tasks = tune.add_subparsers(dest="task", required=True)
    for task, data in (("pos", "CoNLL-U"), ("spans", "span")):
        parser = tasks.add_parser(task, help=f"sweep a {'part-of-speech' if task == 'pos' else 'span'} tagger")
        parser.add_argument("--train", required=True, type=Path, help=f"{data} training file")
        parser.add_argument("--dev", required=True, type=Path, help=f"{data} dev file: what trials are compared on")
        if task == "spans":
            parser.add_argument("--format", choices=SPAN_FORMATS, default="conll",
                                help="sgd: Schema-Guided Dialogue JSONL; conll: one token a line, the tag last")
        parser.add_argument("--out", required=True, type=Path, help="model directory that gets the best trial as a new "
                                                                     "version")
        parser.add_argument("--search", required=True, type=Path, metavar="SPACE.json",
                            help='options to draw, e.g. {"learning_rate": {"loguniform": [0.001, 0.02]}, "hidden_size": '
                                 '{"choice": [64, 128]}} (choice, uniform, loguniform, randint)')
        parser.add_argument("--trials", required=True, type=int, metavar="K", help="how many trainings")
        parser.add_argument("--config", type=Path, help="JSON file of options every trial starts from")
        parser.add_argument("--ray", default="local", metavar="ADDRESS",
                            help="the Ray cluster: ADDRESS (ray start --head's), 'auto' (the one this machine is in) or "
                                 "'local' (default: one of this command's own)")
        parser.add_argument("--sweep-dir", type=Path, metavar="DIR",
                            help="the trials' checkpoints and trials.csv (default: checkpoints/tune-<task>-<time>)")
        parser.add_argument("--grace-epochs", type=int, default=1, metavar="N",
                            help="ASHA: no trial stops before N epochs (default 1)")
        parser.add_argument("--reduction-factor", type=int, default=2, metavar="R",
                            help="ASHA: at epochs N, N x R, N x R^2 ... a trial goes on if it is in the best 1/R (default 2)")
        parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="default 1")
        parser.add_argument("--gpus-per-trial", type=float, default=0.0, help="default 0")
        parser.add_argument("--quiet", action="store_true", help="accepted for symmetry with train (trials log to Ray)")
        _add_config_options(parser)


def command_tune(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from training.common import sweep
    from training.common.checkpoint import default_directory, exports_here
    from training.common.ray_cluster import connect
    from training.tagger.cli import export_checkpoint, resolve_config

    if args.trials < 1:
        raise ConfigError("--trials takes a positive number")
    if args.grace_epochs < 1 or args.reduction_factor < 2:
        raise ConfigError("--grace-epochs takes 1 or more, --reduction-factor 2 or more")
    base = resolve_config(args)
    space = sweep.read_search_space(args.search, TaggerConfig.field_names(), FIXED_OPTIONS)
    drawn = sweep.draw_trials(space, args.trials, base.seed)
    for number, options in enumerate(drawn):  # every draw is a valid config before anything starts
        try:
            TaggerConfig.from_dict({**base.to_dict(), **options})
        except (ConfigError, TypeError, ValueError) as error:
            raise ConfigError(f"{args.search}: trial {number} draws {options}: {error}") from None
    for path in (args.train, args.dev):
        if not path.is_file():
            raise ConfigError(f"{path}: no such file")
    directory = (args.sweep_dir or default_directory(f"tune-{base.task}")).resolve()
    if directory.exists() and any(directory.iterdir()):
        raise ConfigError(f"{directory}: the sweep directory must be new or empty")
    directory.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["seqtag", *argv])
    setup = {"base": base.to_dict(), "train": str(args.train.resolve()), "dev": str(args.dev.resolve()),
             "data_format": getattr(args, "format", "conllu"), "command": command}
    ray = connect(args.ray, {k: os.environ[k] for k in ("KERAS_BACKEND",) if k in os.environ})
    from ray import tune

    settings = sweep.SweepSettings(args.trials, base.epochs, args.grace_epochs, args.reduction_factor,
                                   args.cpus_per_trial, args.gpus_per_trial)
    try:
        records = sweep.run_sweep(tune.with_parameters(tagger_trial, setup=setup), drawn, settings, directory)
    finally:
        if args.ray == "local":
            ray.shutdown()
    table = sweep.write_table(records, directory / "trials.csv")
    logger.info("trials (%s):\n%s", directory / "trials.csv", table)
    best = sweep.best_trial(records)
    record = {"engine": f"Ray Tune {ray.__version__}", "search_space": space, "seed": base.seed,
              "scheduler": {"name": "ASHA", "grace_epochs": args.grace_epochs,
                            "reduction_factor": args.reduction_factor, "max_epochs": base.epochs},
              "best_trial": best.number, "trials": [r.row() for r in records], "directory": str(directory)}
    kept = sweep.keep_best(best, directory / "best", record)
    logger.info("best: trial %d, dev score %.4f at epoch %d: %s", best.number, best.best_score, best.best_epoch, kept)
    if not exports_here(kept, args.out):  # trained under another backend: the export is a command under TensorFlow
        return 0
    return export_checkpoint(kept, args.out, command=command)


def tagger_trial(config: dict, setup: dict) -> None:
    """One trial, in a Ray worker: ``seqtag train``'s training with the drawn options, reporting each epoch."""
    from training.common import sweep
    from training.common.distribute import Placement
    from training.tagger.cli import checkpoint_metadata, read_sentences
    from training.tagger.trainer import save_tagger_checkpoint, train_tagger

    number = config["number"]
    options = config["drawn"][number]
    tagger_config = TaggerConfig.from_dict({**setup["base"], **options})
    data_format = setup["data_format"]
    train_path, dev_path = Path(setup["train"]), Path(setup["dev"])
    train, train_report = read_sentences(train_path, tagger_config, data_format)
    dev, dev_report = read_sentences(dev_path, tagger_config, data_format)
    reports = sweep.EpochReports()
    where = Placement()

    def after_epoch(record: dict, snapshot) -> None:
        def keep(directory: Path) -> None:
            result = snapshot()
            metadata = checkpoint_metadata(result, where, data_format, (train_path, train, train_report),
                                           (dev_path, dev, dev_report), setup["command"])
            metadata["trial"] = {"number": number, "options": options}
            save_tagger_checkpoint(result, directory, metadata, dev)

        reports.report(record["epoch"], record["score"], record["stops"], keep)

    train_tagger(tagger_config, train, dev, placement=where, after_epoch=after_epoch)

"""Hyperparameter sweeps on Ray Tune: the search space file, the ASHA scheduler, the trials' table.

``seqtag tune`` (``training.tagger.tune``) runs K trainings of one model on a Ray cluster, each with options drawn
from a search space, and exports the best. What a task brings is its trial: a function that trains with the
drawn options and calls ``EpochReports.report`` after every epoch; the rest is here and knows no task.

- **The search space** is a JSON object, one entry per config option::

      {"learning_rate": {"loguniform": [0.001, 0.02]},
       "hidden_size": {"choice": [64, 128, 256]},
       "dropout": {"uniform": [0.1, 0.5]},
       "layers": {"randint": [1, 3]}}

  ``choice`` (a list of values), ``uniform`` and ``loguniform`` ([low, high], floats), ``randint`` ([low, high],
  integers, high included). The options are the ones ``seqtag train`` takes, under their config names; the
  command line's options are the base every trial starts from. ``--seed`` seeds the draws, so the same command
  draws the same trials.
- **Early stopping of weak trials**: ASHA (asynchronous successive halving, Li et al. 2020) on the dev score
  reported after each epoch. At epochs ``grace``, ``grace x r``, ``grace x r^2``, ... a trial goes on only if its
  score is in the best ``1/r`` of the scores trials had at that epoch; the others stop there. Trials run as the
  cluster's CPUs (or GPUs) allow, and ASHA does not wait for a rung to fill: a trial is never held up by a slower one.
- **What a trial keeps**: its best epoch so far, as a checkpoint reported to Ray Tune with that epoch's score
  (``keep_best``): Ray keeps one per trial, in the sweep's directory (or the storage a cluster's nodes share), so a
  trial that ASHA stopped still has its best epoch, and the sweep's best checkpoint is the best epoch of any trial.
- **The table**: ``trials.csv`` in the sweep's directory and a Markdown table in the log: each trial's options, its
  best dev score and epoch, how many epochs it ran and how it ended (``completed``, ``stopped by ASHA``, ``failed``).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from training.common.errors import ConfigError

logger = logging.getLogger(__name__)

DOMAINS = ("choice", "uniform", "loguniform", "randint")
SCORE = "dev_score"  # what trials report and ASHA compares (the task's dev metric: accuracy, span F1)


def read_search_space(path: Path, options: Sequence[str], fixed: Sequence[str] = ()) -> dict[str, dict]:
    """The search space in ``path`` -> {option: {domain: arguments}}, checked: known options (not ``fixed`` ones,
    which the sweep itself sets), known domains, arguments of the right shape. Errors name the file and the option."""
    try:
        space = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the search space: {error}") from None
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{path}: a search space is a JSON object of options, e.g. "
                          '{"learning_rate": {"loguniform": [0.001, 0.02]}}')
    for name, domain in space.items():
        where = f"{path}: {name!r}"
        if name in fixed:
            raise ConfigError(f"{where}: the sweep sets this option itself (give it on the command line)")
        if name not in options:
            raise ConfigError(f"{where}: not an option of this model; its options: {', '.join(sorted(options))}")
        if not isinstance(domain, dict) or len(domain) != 1 or next(iter(domain)) not in DOMAINS:
            raise ConfigError(f"{where}: give one of {', '.join(DOMAINS)}, e.g. {{\"choice\": [64, 128]}}")
        kind, arguments = next(iter(domain.items()))
        if kind == "choice":
            if not isinstance(arguments, list) or not arguments:
                raise ConfigError(f"{where}: choice takes a non-empty list of values")
            continue
        numbers = (int,) if kind == "randint" else (int, float)
        if (not isinstance(arguments, list) or len(arguments) != 2
                or not all(isinstance(a, numbers) and not isinstance(a, bool) for a in arguments)
                or arguments[0] > arguments[1]):
            raise ConfigError(f"{where}: {kind} takes [low, high], low <= high"
                              + (", integers" if kind == "randint" else ""))
        if kind == "loguniform" and arguments[0] <= 0:
            raise ConfigError(f"{where}: loguniform takes a positive low bound")
    return space


def draw_trials(space: dict[str, dict], trials: int, seed: int) -> list[dict[str, Any]]:
    """``trials`` draws from ``space``, the same for the same seed. Drawn here rather than by Ray Tune's search, so
    that the table, the tests and a rerun see the same options whatever order the trials ran in."""
    rng = random.Random(seed)
    drawn = []
    for _ in range(trials):
        options = {}
        for name, domain in space.items():
            kind, arguments = next(iter(domain.items()))
            if kind == "choice":
                options[name] = arguments[rng.randrange(len(arguments))]
            elif kind == "uniform":
                options[name] = rng.uniform(*arguments)
            elif kind == "loguniform":
                options[name] = math.exp(rng.uniform(math.log(arguments[0]), math.log(arguments[1])))
            else:
                options[name] = rng.randint(*arguments)
        drawn.append(options)
    return drawn


@dataclass(frozen=True)
class SweepSettings:
    trials: int  # how many trainings
    max_epochs: int  # each trial's epochs at most: ASHA's horizon
    grace_epochs: int = 1  # ASHA's first rung: no trial stops before this many epochs
    reduction_factor: int = 2  # ASHA keeps the best 1/r of the trials at each rung
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0


@dataclass
class TrialRecord:
    """One trial in the table."""

    number: int
    options: dict[str, Any]
    status: str  # completed, stopped by ASHA, failed
    epochs: int
    best_score: float | None
    best_epoch: int | None
    checkpoint: str | None = None  # its best epoch's checkpoint
    error: str | None = None

    def row(self) -> dict[str, Any]:
        return {"trial": self.number, **{f"option {k}": v for k, v in self.options.items()}, "status": self.status,
                "epochs": self.epochs, "best_epoch": self.best_epoch,
                "best_dev_score": None if self.best_score is None else round(self.best_score, 6)}


class EpochReports:
    """A trial's link to Ray Tune: ``report`` after each epoch gives the dev score to ASHA, and with a score better
    than the trial's best so far, also that epoch's checkpoint (``keep(directory)`` writes it)."""

    def __init__(self) -> None:
        self.best = -math.inf

    def report(self, epoch: int, score: float, last: bool, keep: Callable[[Path], None]) -> None:
        from ray import tune

        metrics = {SCORE: score, "epoch": epoch, "last": last}
        if score > self.best:
            self.best = score
            with tempfile.TemporaryDirectory(prefix="seqtag-trial-") as directory:
                keep(Path(directory))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        else:
            tune.report(metrics)


def run_sweep(trial: Callable[[dict], None], drawn: list[dict[str, Any]], settings: SweepSettings,
              directory: Path) -> list[TrialRecord]:
    """The trials (``trial(config)`` with ``config["options"]`` one of ``drawn``) on Ray Tune under ASHA, their
    checkpoints in ``directory`` -> one record per trial, in the order drawn."""
    import os

    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    # Tune warns when a trial's checkpoint is kept more often than every 5 s: tiny runs do, and it is harmless
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=settings.max_epochs,
                              grace_period=min(settings.grace_epochs, settings.max_epochs),
                              reduction_factor=settings.reduction_factor)
    resources = {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial}
    tuner = tune.Tuner(
        tune.with_resources(trial, resources),
        param_space={"number": tune.grid_search(list(range(len(drawn)))), "drawn": drawn},
        tune_config=tune.TuneConfig(metric=SCORE, mode="max", scheduler=scheduler, num_samples=1, reuse_actors=True),
        run_config=tune.RunConfig(
            name=directory.name, storage_path=str(directory.parent.resolve()), verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=SCORE,
                                                    checkpoint_score_order="max"),
            failure_config=tune.FailureConfig(max_failures=0)))
    logger.info("sweep: %d trials on Ray Tune (ASHA: grace %d epochs, keeps the best 1/%d, at most %d epochs), %s",
                len(drawn), settings.grace_epochs, settings.reduction_factor, settings.max_epochs,
                ", ".join(f"{v:g} {k}" for k, v in resources.items() if v))
    results = tuner.fit()
    records = []
    for result in results:
        number = result.config["number"]
        history = result.metrics_dataframe
        scores = [float(v) for v in history[SCORE]] if history is not None and SCORE in history else []
        last = bool(history["last"].iloc[-1]) if scores else False
        if result.error is not None:
            status = "failed"
        else:
            status = "completed" if last else "stopped by ASHA"
        best = max(range(len(scores)), key=scores.__getitem__) if scores else None
        records.append(TrialRecord(number, drawn[number], status, len(scores),
                                   scores[best] if best is not None else None, best + 1 if best is not None else None,
                                   result.checkpoint.path if result.checkpoint else None,
                                   str(result.error).splitlines()[0] if result.error is not None else None))
    return sorted(records, key=lambda r: r.number)


def best_trial(records: Sequence[TrialRecord]) -> TrialRecord:
    """The trial whose best epoch scored highest (ties: the first drawn), among those that kept a checkpoint."""
    kept = [r for r in records if r.checkpoint is not None and r.best_score is not None]
    if not kept:
        failures = "; ".join(f"trial {r.number}: {r.error}" for r in records if r.error)
        raise ConfigError("no trial finished an epoch" + (f" ({failures})" if failures else ""))
    return max(kept, key=lambda r: (r.best_score, -r.number))


def keep_best(best: TrialRecord, directory: Path, record: dict) -> Path:
    """The best trial's checkpoint copied to ``directory`` with the sweep's ``record`` in its metadata (``sweep``),
    so that its export, now or later, carries it -> ``directory``."""
    import shutil

    from training.common.checkpoint import STATE_FILE

    if directory.exists():
        shutil.rmtree(directory)
    shutil.copytree(best.checkpoint, directory)
    state = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
    state["metadata"]["sweep"] = record
    (directory / STATE_FILE).write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
    return directory


def write_table(records: Sequence[TrialRecord], path: Path) -> str:
    """``trials.csv`` at ``path`` -> the same table in Markdown."""
    rows = [r.row() for r in records]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, columns)
        writer.writeheader()
        writer.writerows(rows)

    def cell(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else ("" if value is None else str(value))

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)

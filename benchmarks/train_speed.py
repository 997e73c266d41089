"""Training speed of the shipped model settings, by Keras backend and device: one table.

    .venv/bin/python -m benchmarks.train_speed --backends tensorflow,torch,jax --models pos,dialog-act

Each (backend, model) pair runs in its own process (a Keras backend is fixed when a process starts) on real
training data: the whole EWT train file (POS) or the SwDA train conversations (dialog acts), batched as
``seqtag train`` batches them. ``--steps`` training steps are run ``--warmup`` times untimed (tracing, JAX's
compilation of every batch shape, cuDNN autotuning), then once timed: a steady-state rate; the epoch time is
the whole training set at that rate (dev scoring not included). A backend that is not installed gets a row
that says so.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

logger = logging.getLogger("benchmarks.train_speed")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_DATA = {"pos": DATA / "ud-english-ewt" / "en_ewt-ud-train.conllu", "dialog-act": DATA / "swda" / "train"}


def measure(model_name: str, data: Path, warmup: int, steps: int, mixed_precision: str) -> dict:
    """In this process's backend: timed training steps of the shipped settings on ``data``."""
    import keras
    import numpy as np

    from training.common.batching import shape_multiple
    from training.common.distribute import Placement, precision

    keras.utils.set_random_seed(1234)
    if model_name == "pos":
        from training.tagger.batching import BucketedBatches
        from training.tagger.config import TaggerConfig
        from training.tagger.data import read_conllu
        from training.tagger.model import build_tagger
        from training.tagger.trainer import encode_sentences
        from training.tagger.vocab import TaggerVocabs

        config = TaggerConfig(mixed_precision=mixed_precision)
        sentences = read_conllu(data, config.tag_column)
        vocabs = TaggerVocabs.build(sentences, config.min_word_count)
        batches = BucketedBatches(encode_sentences(sentences, vocabs, config), config.batch_size, shuffle=True, seed=1,
                                  multiple=shape_multiple())
        with precision(mixed_precision):
            model = build_tagger(config, len(vocabs.words), len(vocabs.chars), len(vocabs.tags))
        loss, units, unit_count = "sparse_categorical_crossentropy", "sentences", len(sentences)
        items, item_count = "tokens", sum(len(s.words) for s in sentences)
    else:
        from training.dialog.batching import DialogBatches
        from training.dialog.config import DialogConfig
        from training.dialog.data import read_dialogs
        from training.dialog.model import build_dialog_model
        from training.dialog.trainer import encode_dialogs, tokenize_dialogs
        from training.dialog.vocab import DialogVocabs

        config = DialogConfig(task="dialog-act", mixed_precision=mixed_precision)
        dialogs = read_dialogs(data, "swda")
        tokens = tokenize_dialogs(dialogs, config.tokenizer)
        vocabs = DialogVocabs.build(dialogs, tokens, config.min_word_count)
        batches = DialogBatches(encode_dialogs(dialogs, tokens, vocabs, config), config.batch_turns, False,
                                shuffle=True, seed=1, multiple=shape_multiple())
        with precision(mixed_precision):
            model = build_dialog_model(config, len(vocabs.words), len(vocabs.speakers), len(vocabs.labels))
        loss, units, unit_count = "sparse_categorical_crossentropy", "dialogs", len(dialogs)
        items, item_count = "turns", sum(len(d.turns) for d in dialogs)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=config.clipnorm), loss=loss,
                  jit_compile=False)

    def item_and_unit_counts(index: int) -> tuple[int, int]:
        _, _, weights = batches[index]  # padding has weight 0
        weights = np.asarray(weights)
        return int((weights > 0).sum()), weights.shape[0]

    timed = list(range(min(steps, len(batches))))
    counted = [item_and_unit_counts(i) for i in timed]
    prepared = [batches[i] for i in timed]  # batches built before the clock starts, as fit's workers would
    start = time.perf_counter()
    for _ in range(warmup):  # traces and compiles every shape of the timed steps
        for inputs, targets, weights in prepared:
            model.train_on_batch(inputs, targets, sample_weight=weights)
    warmup_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for inputs, targets, weights in prepared:
        model.train_on_batch(inputs, targets, sample_weight=weights)
    seconds = time.perf_counter() - start
    timed_items = sum(c[0] for c in counted)
    timed_units = sum(c[1] for c in counted)
    return {"backend": keras.backend.backend(), "devices": Placement().describe(mixed_precision)["devices"],
            "model": model_name, "mixed_precision": mixed_precision, "steps": len(timed),
            "warmup_seconds": warmup_seconds, "shapes": len({tuple(np.shape(b[0]["word_ids"])) for b in prepared}),
            "items": items, "items_per_second": timed_items / seconds, "units": units,
            "units_per_second": timed_units / seconds, "epoch_seconds": item_count / (timed_items / seconds),
            "train_units": unit_count}


def run_child(backend: str, model_name: str, args: argparse.Namespace) -> dict:
    python = dict(entry.split("=", 1) for entry in args.python_for).get(backend, sys.executable)
    command = [python, "-m", "benchmarks.train_speed", "--child", "--models", model_name,
               "--warmup", str(args.warmup), "--steps", str(args.steps), "--mixed-precision", args.mixed_precision,
               "--data", str(args.data or DEFAULT_DATA[model_name])]
    env = {**os.environ, "KERAS_BACKEND": backend}
    result = subprocess.run(command, cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        last = next((line for line in reversed(result.stderr.splitlines()) if line.strip()), "")
        reason = "not installed" if "No module named" in result.stderr else f"failed (exit {result.returncode}): {last[:200]}"
        return {"backend": backend, "model": model_name, "error": reason}
    return json.loads(lines[-1])


def format_table(rows: list[dict]) -> str:
    lines = ["| backend | device | model | precision | items/s | sentences or dialogs/s | epoch (min) |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['backend']} | | {row['model']} | | {row['error']} | | |")
            continue
        device = ", ".join(row["devices"])
        lines.append(f"| {row['backend']} | {device} | {row['model']} | {row['mixed_precision']} | "
                     f"{row['items_per_second']:,.0f} {row['items']}/s | {row['units_per_second']:,.1f} {row['units']}/s | "
                     f"{row['epoch_seconds'] / 60:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="tensorflow,torch,jax")
    parser.add_argument("--models", default="pos,dialog-act")
    parser.add_argument("--data", type=Path, help="training data (default: EWT train, SwDA train); one model only")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed passes over the timed steps first (tracing, compiling every shape, autotuning)")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps")
    parser.add_argument("--mixed-precision", default="none", choices=["none", "float16", "bfloat16"])
    parser.add_argument("--python-for", action="append", default=[], metavar="BACKEND=PYTHON",
                        help="the interpreter of another environment for one backend, e.g. jax=/opt/jax/bin/python")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON lines")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    models = args.models.split(",")
    if args.child:
        print(json.dumps(measure(models[0], args.data or DEFAULT_DATA[models[0]], args.warmup, args.steps,
                                 args.mixed_precision)))
        return 0
    rows = []
    for backend in args.backends.split(","):
        for model_name in models:
            logger.info("measuring %s under %s ...", model_name, backend)
            rows.append(run_child(backend, model_name, args))
            if args.json:
                print(json.dumps(rows[-1]))
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

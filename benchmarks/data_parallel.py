"""Data-parallel training against one process, in one run: the POS tagger's epoch on EWT train.

    .venv/bin/python -m benchmarks.data_parallel --workers 1,2 --rounds 1 [--tensorflow] [--ray ADDRESS]

Each variant is a real ``seqtag train pos`` with the shipped settings on the whole EWT train file, ``--epochs 1``,
under ``KERAS_BACKEND=torch`` (``--workers 1``: one process; ``--workers N``: N torchrun workers, each on
``--batch-size / N`` sentences of the same global batches). ``--tensorflow`` adds one TensorFlow process, this
machine's fastest path. ``--ray ADDRESS`` adds, for each N > 1, the same N workers on that Ray cluster (Ray Train;
start one with ``ray start --head``), to weigh its start-up against torchrun's. Variants alternate round by round;
the table gives medians of:

- the epoch's training time (the training record's epoch seconds: dev scoring not included);
- the start-up cost: the command's wall time less the epoch and the dev scoring (imports, reading and encoding
  the data, building the model, joining the workers' group; the export is skipped with ``--checkpoint`` only);
- what one step all-reduces: every trainable weight's gradient as float32, once per global batch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

logger = logging.getLogger("benchmarks.data_parallel")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ud-english-ewt"
GLOBAL_BATCH = 32  # the shipped POS model's batch (sentences)


def run_once(workers: int, backend: str, train: Path, dev: Path, folder: Path, ray: str | None = None) -> dict:
    """One ``seqtag train pos --epochs 1`` -> wall seconds, epoch seconds, dev seconds, global batch, parameters."""
    checkpoint = folder / f"{backend}-{workers}-{time.monotonic_ns()}"
    command = [sys.executable, "-m", "training.cli", "train", "pos", "--train", str(train), "--dev", str(dev),
               "--out", str(folder / "unused"), "--checkpoint", str(checkpoint), "--epochs", "1", "--quiet",
               "--batch-size", str(GLOBAL_BATCH // workers)]
    if workers > 1:
        command += ["--workers", str(workers)]
    if ray:
        command += ["--ray", ray]
    env = {**os.environ, "KERAS_BACKEND": backend}
    if backend == "torch":
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    record = json.loads((checkpoint / "training.json").read_text())["metadata"]["training"]
    epoch = record["history"][0]
    import h5py

    with h5py.File(checkpoint / "model.weights.h5") as weights:  # the model's weights, not the optimizer's
        sizes = []
        weights["layers"].visititems(lambda _, item: sizes.append(item.size) if isinstance(item, h5py.Dataset) else None)
    steps = -(-12544 // GLOBAL_BATCH)  # EWT train's sentences, for the per-step figure
    return {"wall": wall, "epoch": epoch["seconds"], "startup": wall - record["seconds"],
            "step_ms": 1000 * epoch["seconds"] / steps, "parameters": sum(sizes),
            "workers": record.get("workers", 1), "global_batch": record["global_batch"], "accuracy": epoch["dev_accuracy"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts under torch (default 1,2)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--tensorflow", action="store_true", help="also one TensorFlow process")
    parser.add_argument("--ray", metavar="ADDRESS", help="also each N > 1 on this Ray cluster (Ray Train)")
    parser.add_argument("--train", type=Path, default=DATA / "en_ewt-ud-train.conllu")
    parser.add_argument("--dev", type=Path, default=DATA / "en_ewt-ud-dev.conllu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    counts = [int(n) for n in args.workers.split(",")]
    variants = ([("torch", n, None) for n in counts] + [("torch", n, args.ray) for n in counts if args.ray and n > 1]
                + ([("tensorflow", 1, None)] if args.tensorflow else []))
    results: dict[tuple[str, int, str | None], list[dict]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            for backend, workers, ray in variants:  # alternating: the machine's drift falls on every variant alike
                figures = run_once(workers, backend, args.train, args.dev, Path(folder), ray)
                logger.info("round %d, %s x%d%s: %s", round_ + 1, backend, workers, " on Ray" if ray else "",
                            {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()})
                results[(backend, workers, ray)].append(figures)
    print(f"POS, EWT train, 1 epoch, global batch {GLOBAL_BATCH}, {os.cpu_count()} cores, medians of {args.rounds}")
    print("| backend | workers | launcher | epoch (s) | per step (ms) | start-up (s) | dev accuracy | gradients all-reduced per step |")
    print("|---|---|---|---|---|---|---|---|")
    for (backend, workers, ray), runs in results.items():
        median = {k: statistics.median(r[k] for r in runs) for k in ("epoch", "step_ms", "startup", "accuracy")}
        volume = runs[0]["parameters"] * 4 / 2**20 if workers > 1 else 0.0
        launcher = "Ray Train" if ray else ("torchrun" if workers > 1 else "-")
        print(f"| {backend} | {workers} | {launcher} | {median['epoch']:.0f} | {median['step_ms']:.0f} | {median['startup']:.1f} | "
              f"{median['accuracy']:.4f} | {volume:.1f} MiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

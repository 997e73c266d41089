"""One session's turn in process: the time of a dialog model version's ``step`` on the runtime the service uses.

    .venv/bin/python -m benchmarks.dialog_step --versions models/dialog-action/3,models/dialog-action/4 \
        --data ../shared/data/sgd/sgd-dev.jsonl --format sgd --dialogs 40 --rounds 5
    .venv/bin/python -m benchmarks.dialog_step --versions models/dialog-act/2,models/dialog-act/3@float32,models/dialog-act/3@int8

A version may name its encoder's precision (``@int8``, ``@float32``: ``SEQTAG_ENCODER_PRECISION``; default float32).
The turn vector cache is off (``--cached-turns 0``, the default) since the rounds replay the same turns: the figures
are the model's, as for turns never seen before.

Each version is loaded as the service loads it (``SavedDialogModel(runtime="onnx")``: the fast path where the
version has one, else TensorFlow). The same conversations are streamed turn by turn through each version, one
session (batch of 1), the versions taking turns round after round so that this machine's drift hits them alike;
every turn is timed (tokenization outside, as the service tokenizes before it steps). Printed: p50 and p99 of a
turn over all rounds, the median of the rounds' p50, and the ratio of each version's p50 to the first's.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import numpy as np

from training.dialog.data import read_dialogs
from training.dialog.evaluate import dialog_inputs
from training.dialog.saved_dialog import SavedDialogModel

logger = logging.getLogger("benchmarks.dialog_step")


def stream_times(model: SavedDialogModel, conversations) -> list[float]:
    """Seconds of each ``step`` call, streaming every conversation from the zero state, one session at a time."""
    times = []
    for turns in conversations:
        state_h, state_c = model.zero_state(1)
        for turn in turns:
            start = time.perf_counter()
            result = model.step([turn], state_h, state_c)
            times.append(time.perf_counter() - start)
            state_h, state_c = result["state_h"], result["state_c"]
    return times


def add_stream_options(parser: argparse.ArgumentParser, dialogs: int, rounds: int = 5) -> None:
    """The conversations streamed (``--data``, ``--format``, ``--dialogs`` per round) and ``--rounds``."""
    parser.add_argument("--data", default="../shared/data/swda/val")
    parser.add_argument("--format", default="swda")
    parser.add_argument("--dialogs", type=int, default=dialogs, help="conversations streamed per round")
    parser.add_argument("--rounds", type=int, default=rounds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", required=True,
                        help="comma-separated version directories (models/<name>/<n>), each with @int8 or @float32")
    parser.add_argument("--cached-turns", type=int, default=0, help="the turn vector cache's size (default 0: off)")
    add_stream_options(parser, dialogs=40)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    models = {}
    for spec in args.versions.split(","):
        path, _, precision = spec.partition("@")
        models[spec] = SavedDialogModel(path, runtime="onnx", precision=precision or "float32",
                                        cached_turns=args.cached_turns)
    dialogs = read_dialogs(args.data, args.format)[:args.dialogs]
    conversations = {path: [dialog_inputs(d, m.multi_label, m.tokenizer) for d in dialogs] for path, m in models.items()}
    for path, model in models.items():  # warm up: first calls build and cache
        stream_times(model, conversations[path][:2])

    times: dict[str, list[float]] = {path: [] for path in models}
    round_p50: dict[str, list[float]] = {path: [] for path in models}
    for _ in range(args.rounds):
        for path, model in models.items():
            taken = stream_times(model, conversations[path])
            times[path].extend(taken)
            round_p50[path].append(float(np.percentile(taken, 50)))

    first = next(iter(models))
    print(f"one session's turn, in process, {len(dialogs)} conversations x {args.rounds} rounds, versions alternating")
    print(f"{'version':<32} {'runtime':<16} {'turns':>6} {'p50 ms':>8} {'p99 ms':>8} {'median of round p50':>20} "
          f"{'x first':>8}")
    for path, model in models.items():
        p50, p99 = (float(np.percentile(times[path], q)) * 1e3 for q in (50, 99))
        median = statistics.median(round_p50[path]) * 1e3
        ratio = median / (statistics.median(round_p50[first]) * 1e3)
        print(f"{path:<32} {model.runtime + ' ' + model.precision:<16} {len(times[path]):>6} {p50:>8.3f} {p99:>8.3f} {median:>20.3f} "
              f"{ratio:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Tokens/s and one-sentence latency of an exported tagger called in-process (no HTTP), by runtime, beside the
spaCy tagger in ``../shared/peers`` measured in the same run.

    .venv/bin/python -m benchmarks.inprocess_tagging --model models/pos --spacy-python ../spacy-venv/bin/python

Each round measures every side in turn (our runtimes, then spaCy in its own interpreter, which waits for its
turn), so a drift of this shared machine's speed hits all of them alike; the figures are medians over rounds:

- length-sorted batches (``SavedTagger.tag`` sorts, as the service's batcher does; spaCy's ``nlp.pipe`` gets the
  same sentences in the same length order), tokens/s, for each ``--batch-sizes``;
- one sentence at a time (a lone request's latency), p50 and p99 over every sentence timed in every round; for the
  fast path also with its kept tokens forgotten before each sentence (every word's characters encoded again: the
  cost of a sentence of words never seen before).

Ratios against spaCy are printed beside (``nlp.pipe(batch_size=256)`` and ``nlp(Doc)`` one at a time).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import subprocess
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from training.common import artifacts  # noqa: E402
from training.common.saved_model import pad_tokens, set_tensorflow_threads  # noqa: E402
from training.tagger.data import read_conllu  # noqa: E402
from training.tagger.saved_tagger import SavedTagger  # noqa: E402

logger = logging.getLogger("benchmarks.inprocess_tagging")
REPO = Path(__file__).resolve().parents[1]

# Runs in the spaCy interpreter: JSON commands on stdin, one JSON answer a line on stdout.
SPACY_WORKER = r"""
import json, sys, time
import spacy
from spacy.tokens import Doc
nlp = spacy.load(sys.argv[1])
sentences = []
print(json.dumps({"version": spacy.__version__}), flush=True)
for line in sys.stdin:
    command = json.loads(line)
    if command["do"] == "load":
        sentences = command["sentences"]
        answer = {"sentences": len(sentences)}
    elif command["do"] == "batch":
        start = time.perf_counter()
        for doc in nlp.pipe((Doc(nlp.vocab, words=ws) for ws in sentences), batch_size=command["batch_size"]):
            pass
        answer = {"seconds": time.perf_counter() - start}
    elif command["do"] == "singles":
        latencies = []
        for ws in sentences[:command["count"]]:
            start = time.perf_counter()
            nlp(Doc(nlp.vocab, words=ws))
            latencies.append(time.perf_counter() - start)
        answer = {"latencies": latencies}
    print(json.dumps(answer), flush=True)
"""


class SpacyPeer:
    """The spaCy tagger in its own interpreter, asked to time passes over the sentences it was given."""

    def __init__(self, python: str, model: str):
        self.process = subprocess.Popen([python, "-c", SPACY_WORKER, model], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        self.version = self._answer()["version"]

    def _answer(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit("the spaCy worker stopped (is spaCy 3.8 installed in --spacy-python?)")
        return json.loads(line)

    def ask(self, **command) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def batch_rate(tagger: SavedTagger, sentences: list[list[str]], batch_size: int, conditions=None) -> float:
    """Tokens/s of one pass of ``SavedTagger.tag`` over the sentences (it sorts them by length, as the service's
    batcher does)."""
    tokens = sum(len(s) for s in sentences)
    start = time.perf_counter()
    tagger.tag(sentences, batch_size=batch_size, conditions=conditions)
    return tokens / (time.perf_counter() - start)


def single_latencies(tagger: SavedTagger, sentences: list[list[str]], conditions=None, forget: bool = False) -> list[float]:
    """Seconds of each sentence tagged alone (a lone request); ``forget``: the fast path's kept words forgotten
    before each (every word's characters encoded again)."""
    latencies = []
    for i, sentence in enumerate(sentences):
        if forget:
            tagger.fast.forget()
        start = time.perf_counter()
        tagger.tag([sentence], conditions=conditions[i:i + 1] if conditions else None)
        latencies.append(time.perf_counter() - start)
    return latencies


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/pos")
    parser.add_argument("--data", default="../shared/data/ud-english-ewt/en_ewt-ud-dev.conllu")
    parser.add_argument("--sentences", type=int, default=0, help="use only the first N sentences (0: all)")
    parser.add_argument("--runtimes", default="onnx,tensorflow", help="which of onnx, tensorflow to measure")
    parser.add_argument("--batch-sizes", default="64,256")
    parser.add_argument("--singles", type=int, default=400, help="sentences timed one at a time per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--unsorted", action="store_true", help="also measure unsorted batches of 32 (a naive caller)")
    parser.add_argument("--spacy-python", default=str(REPO.parent / "spacy-venv" / "bin" / "python"),
                        help="an interpreter with spaCy 3.8 (not a project dependency); '' to leave spaCy out")
    parser.add_argument("--spacy-model", default=str(REPO.parent / "shared" / "peers" / "spacy-ewt-tagger"))
    parser.add_argument("--inter-op-threads", type=int, default=2, help="as the service's SEQTAG_TF_INTER_OP_THREADS")
    parser.add_argument("--intra-op-threads", type=int, default=0, help="as SEQTAG_TF_INTRA_OP_THREADS (0: half the cores)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("training").setLevel(logging.WARNING)
    set_tensorflow_threads(args.inter_op_threads, args.intra_op_threads)

    directory = artifacts.resolve_model_dir(args.model)
    taggers = {runtime: SavedTagger(directory, runtime=runtime) for runtime in args.runtimes.split(",")}
    for runtime, tagger in taggers.items():
        if tagger.runtime != runtime:
            raise SystemExit(f"{directory} has no {runtime} path: {tagger.fast_check}")
    sentences = [list(s.words) for s in read_conllu(args.data)]
    if args.sentences:
        sentences = sentences[:args.sentences]
    random.Random(0).shuffle(sentences)
    tokens = sum(len(s) for s in sentences)
    by_length = sorted(sentences, key=len)
    singles = sentences[:args.singles]
    peer = None
    if args.spacy_python and Path(args.spacy_python).exists() and Path(args.spacy_model).exists():
        peer = SpacyPeer(args.spacy_python, args.spacy_model)
        peer.ask(do="load", sentences=by_length)
        peer.ask(do="batch", batch_size=256)  # warm-up
    elif args.spacy_python:
        logger.info("spaCy not measured: %s or %s is missing", args.spacy_python, args.spacy_model)
    for tagger in taggers.values():
        tagger.tag(sentences[:300], batch_size=64)  # warm-up: traces TensorFlow's function for common shapes
    logger.info("%s on %d sentences, %d tokens (%s), %d rounds; %d cores (os.sched_getaffinity), load average %s",
                directory, len(sentences), tokens, args.data, args.rounds, len(os.sched_getaffinity(0)),
                " ".join(f"{x:.1f}" for x in os.getloadavg()))

    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    rates: dict[tuple[str, str], list[float]] = {}
    latencies: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for runtime, tagger in taggers.items():
            for batch_size in batch_sizes:
                rates.setdefault((runtime, f"sorted {batch_size}"), []).append(batch_rate(tagger, sentences, batch_size))
            if args.unsorted:
                start = time.perf_counter()
                for i in range(0, len(sentences), 32):
                    chunk = sentences[i:i + 32]
                    if tagger.fast is not None:
                        tagger.fast.probabilities(chunk)
                    else:
                        tagger._serve(tf.constant(pad_tokens(chunk), dtype=tf.string))
                rates.setdefault((runtime, "unsorted 32"), []).append(tokens / (time.perf_counter() - start))
        if peer is not None:
            rates.setdefault(("spacy", "sorted 256"), []).append(tokens / peer.ask(do="batch", batch_size=256)["seconds"])
        for runtime, tagger in taggers.items():
            latencies.setdefault(runtime, []).extend(single_latencies(tagger, singles))
            if tagger.fast is not None:  # the same with nothing kept: every word's characters encoded again
                latencies.setdefault(f"{runtime}, no kept words", []).extend(single_latencies(tagger, singles, forget=True))
        if peer is not None:
            # spaCy times the same sentences in the same order (its list is sorted, so it gets them from us)
            peer.ask(do="load", sentences=singles)
            latencies.setdefault("spacy", []).extend(peer.ask(do="singles", count=len(singles))["latencies"])
            peer.ask(do="load", sentences=by_length)

    spacy_rate = statistics.median(rates[("spacy", "sorted 256")]) if peer is not None else None
    logger.info("")
    logger.info("%-34s %14s %14s", "batches (median of rounds)", "tokens/s", "x spaCy pipe")
    for (side, strategy), values in rates.items():
        rate = statistics.median(values)
        name = f"spaCy {peer.version} nlp.pipe, {strategy}" if side == "spacy" else f"{side}, {strategy}"
        ratio = f"{rate / spacy_rate:.2f}" if spacy_rate else "-"
        logger.info("%-34s %14.0f %14s", name, rate, ratio)
    logger.info("")
    logger.info("%-34s %9s %9s %14s", "one sentence at a time", "p50 ms", "p99 ms", "p50 x spaCy")
    spacy_p50 = percentile(latencies["spacy"], 0.5) if "spacy" in latencies else None
    for side, values in latencies.items():
        p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
        name = f"spaCy {peer.version} nlp(Doc)" if side == "spacy" else side
        logger.info("%-34s %9.2f %9.2f %14s", name, 1000 * p50, 1000 * p99, f"{p50 / spacy_p50:.2f}" if spacy_p50 else "-")
    if peer is not None:
        peer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Tokens/s of an exported tagger called in-process on real sentences (no HTTP), by batching strategy.

    .venv/bin/python -m benchmarks.inprocess_tagging --model models/pos --data ../shared/data/ud-english-ewt/en_ewt-ud-dev.conllu

Prints one row per strategy: length-sorted batches of several sizes (what the service's batcher does),
unsorted batches (a naive caller), and one sentence at a time (latency of a lone request).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from training.common import artifacts  # noqa: E402
from training.common.saved_model import set_tensorflow_threads  # noqa: E402
from training.tagger.data import read_conllu  # noqa: E402
from training.tagger.saved_tagger import SavedTagger  # noqa: E402

logger = logging.getLogger("benchmarks.inprocess_tagging")


def measure(tagger: SavedTagger, sentences, batch_size: int, sort: bool, repeats: int) -> tuple[float, float, float]:
    """Best and median tokens/s over ``repeats`` passes (this VM's speed drifts), and seconds per model call."""
    tokens = sum(len(s) for s in sentences)
    best, per_call, rates = 0.0, 0.0, []
    for _ in range(repeats):
        start = time.perf_counter()
        if sort:
            tagger.tag(sentences, batch_size=batch_size)
        else:
            for i in range(0, len(sentences), batch_size):
                chunk = sentences[i:i + batch_size]
                tagger._serve(tagger.pad(chunk))  # as a naive caller would: unsorted padding
        seconds = time.perf_counter() - start
        rates.append(tokens / seconds)
        if tokens / seconds > best:
            best, per_call = tokens / seconds, seconds / -(-len(sentences) // batch_size)
    return best, statistics.median(rates), per_call


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/pos")
    parser.add_argument("--data", default="../shared/data/ud-english-ewt/en_ewt-ud-dev.conllu")
    parser.add_argument("--sentences", type=int, default=0, help="use only the first N sentences (0: all)")
    parser.add_argument("--batch-sizes", default="16,64,256")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--unsorted", action="store_true", help="also measure unsorted batches (a naive caller)")
    parser.add_argument("--inter-op-threads", type=int, default=2, help="as the service's SEQTAG_TF_INTER_OP_THREADS (0: TensorFlow's own pools)")
    parser.add_argument("--intra-op-threads", type=int, default=0, help="as SEQTAG_TF_INTRA_OP_THREADS (0: half the cores)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.inter_op_threads:
        set_tensorflow_threads(args.inter_op_threads, args.intra_op_threads)

    tagger = SavedTagger(artifacts.resolve_model_dir(args.model))
    sentences = [list(s.words) for s in read_conllu(args.data)]
    if args.sentences:
        sentences = sentences[:args.sentences]
    random.Random(0).shuffle(sentences)
    tokens = sum(len(s) for s in sentences)
    tagger.tag(sentences[:300], batch_size=64)  # warm-up: traces the function for common shapes
    logger.info("%s on %d sentences, %d tokens (%s)", tagger.directory, len(sentences), tokens, args.data)
    logger.info("%-28s %12s %12s %14s", "strategy", "best tok/s", "median tok/s", "ms per call")
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        for sort in (True, False) if args.unsorted else (True,):
            best, median, per_call = measure(tagger, sentences, batch_size, sort, args.repeats)
            logger.info("%-28s %12.0f %12.0f %14.1f", f"batch {batch_size}, {'length-sorted' if sort else 'unsorted'}",
                        best, median, per_call * 1000)
    singles = sentences[:200]
    latencies = []
    for sentence in singles:
        start = time.perf_counter()
        tagger.tag([sentence])
        latencies.append(time.perf_counter() - start)
    latencies.sort()
    logger.info("%-28s %12.0f %12s %14.1f   (p50 %.1f ms, p99 %.1f ms)", "one sentence at a time",
                sum(len(s) for s in singles) / sum(latencies), "", statistics.mean(latencies) * 1000,
                latencies[len(latencies) // 2] * 1000, latencies[int(len(latencies) * 0.99)] * 1000)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``seqtag tag`` on one machine: sources -> shards -> one process or a pool of ``processes`` -> output in input order.

Memory stays flat: at most ``2 x processes`` shards are read and in flight at once, and each is written (and
flushed) as soon as every shard before it is. Each worker process (``spawn``: TensorFlow does not survive a fork)
loads the models once and gets ``cores / processes`` ONNX Runtime threads. A bad source stops the run with its
name and line, or, with ``skip_bad``, is left out with a warning; what was written before stays written.

Outputs: a stream (stdout, or one file), or a directory with one output file per source, named after it
(``corpus/a/b.txt`` given as ``corpus`` -> ``DIR/a/b.txt.conllu``; a file given by name -> ``DIR/b.txt.conllu``).
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, TextIO

from training.annotate import inputs
from training.annotate.annotator import Annotator, AnnotatorSpec, ShardResult
from training.annotate.inputs import Shard, Source
from training.common.errors import DataFormatError

logger = logging.getLogger(__name__)

_WORKER: Annotator | None = None


def _start_worker(spec: AnnotatorSpec, threads: int) -> None:
    global _WORKER
    os.environ["SEQTAG_ONNX_THREADS"] = str(threads)
    logging.getLogger().setLevel(logging.WARNING)
    _WORKER = Annotator(spec)


def _annotate_in_worker(shard: Shard) -> ShardResult:
    return _WORKER.annotate(shard)


@dataclass
class Totals:
    sources: int = 0
    skipped: list[str] = field(default_factory=list)
    documents: int = 0
    sentences: int = 0
    words: int = 0
    seconds: float = 0.0


def planned_shards(sources: list[Source], input_format: str, skip_bad: bool, totals: Totals,
                   with_text: bool = True) -> Iterator[tuple[Source, Shard]]:
    """Every source's shards in order (read lazily, one source checked before any of its shards is given)."""
    index = 0
    for source in sources:
        try:
            shards = inputs.plan_shards(source, input_format, index)
        except DataFormatError as error:
            if not skip_bad:
                raise
            logger.warning("skipped %s", error)
            totals.skipped.append(str(error))
            continue
        totals.sources += 1
        index += len(shards)
        for shard in (inputs.read_shards(shards) if with_text else shards):
            yield source, shard


def _progress(total_bytes: int | None, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, disable=quiet, file=sys.stderr,
                dynamic_ncols=True, desc="tagging", mininterval=0.5)


class _Outputs:
    """Where results go: one stream, or one file per source under a directory."""

    def __init__(self, stream: TextIO | None, directory: Path | None, suffix: str):
        self.stream, self.directory, self.suffix = stream, directory, suffix
        self.current: tuple[str, TextIO] | None = None

    def write(self, source: Source, text: str) -> None:
        if self.stream is not None:
            self.stream.write(text)
            self.stream.flush()
            return
        if self.current is None or self.current[0] != source.name:
            self.close()
            target = self.directory / f"{source.relative}.{self.suffix}"
            target.parent.mkdir(parents=True, exist_ok=True)
            self.current = (source.name, open(target, "w", encoding="utf-8"))
        self.current[1].write(text)
        self.current[1].flush()

    def close(self) -> None:
        if self.current is not None:
            self.current[1].close()
            self.current = None


def run_local(spec: AnnotatorSpec, sources: list[Source], stream: TextIO | None, directory: Path | None,
              processes: int = 1, skip_bad: bool = False, quiet: bool = False) -> Totals:
    totals = Totals()
    started = time.perf_counter()
    sizes = [_size(s) for s in sources]
    bar = _progress(sum(sizes) if None not in sizes else None, quiet)
    outputs = _Outputs(stream, directory, spec.output_format)

    def written(source: Source, result: ShardResult) -> None:
        outputs.write(source, result.output)
        totals.documents += result.documents
        totals.sentences += result.sentences
        totals.words += result.words
        bar.update(result.bytes_read)
        bar.set_postfix(docs=totals.documents, words_per_s=int(totals.words / max(time.perf_counter() - started, 1e-9)),
                        refresh=False)

    shards = planned_shards(sources, spec.input_format, skip_bad, totals)
    try:
        if processes <= 1:
            annotator = Annotator(spec)
            for source, shard in shards:
                written(source, annotator.annotate(shard))
        else:
            threads = max(1, len(os.sched_getaffinity(0)) // processes)
            context = multiprocessing.get_context("spawn")
            with context.Pool(processes, initializer=_start_worker, initargs=(spec, threads)) as pool:
                pending: collections.deque = collections.deque()
                for source, shard in shards:
                    pending.append((source, pool.apply_async(_annotate_in_worker, (shard,))))
                    while len(pending) > 2 * processes or (pending and pending[0][1].ready()):
                        source_done, result = pending.popleft()
                        written(source_done, result.get())
                while pending:
                    source_done, result = pending.popleft()
                    written(source_done, result.get())
    finally:
        outputs.close()
        bar.close()
    totals.seconds = time.perf_counter() - started
    return totals


def _size(source: Source) -> int | None:
    """Bytes of text a source holds, for the progress bar's ETA (a .gz file's uncompressed size is not known)."""
    if source.compressed:
        return None
    try:
        return source.path.stat().st_size
    except OSError:
        return None

"""Micro-batching: concurrent requests to one model version are coalesced into one model call.

TF Serving's two knobs: ``max_batch_size`` (sentences per model call) and ``batch_timeout`` (how long a
queued request may wait for company). A worker thread takes everything queued, up to the batch size,
sorts the sentences by length to cut padding, calls the model, and routes each result back to the
request it came from. A request larger than the batch size is cut into chunks.

With a timeout of 0 (the service's default) a batch is whatever queued while the model was busy with the
previous one: a lone request never waits for company, and batches grow with the load. On 2 cores this
served more requests/s at every concurrency than waiting 2 ms (``benchmarks/http_matrix.py``). A request
that finds the model idle and nothing queued runs the model in its own thread, handing nothing to the batcher's
thread and back (two thread wake-ups): with the fast path, a lone request cost 0.1-0.2 ms more with batching on
than off before (598 vs 711 requests/s at concurrency 1, one run), and costs the same now (537-819 vs 572-681
requests/s, 1.2-1.8 ms of server CPU a request either way, three alternating runs on a loaded machine); the
requests that arrive meanwhile queue and are batched as before.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

logger = logging.getLogger(__name__)

BatchFunction = Callable[[list[Sequence[str]]], list[Any]]  # sentences -> one result per sentence


@dataclass
class _Pending:
    sentences: list[Sequence[str]]
    future: Future = field(default_factory=Future)


class MicroBatcher:
    def __init__(self, function: BatchFunction, max_batch_size: int, timeout_seconds: float, name: str = "batcher",
                 on_call: Callable[[int], None] | None = None):
        self.function = function
        self.on_call = on_call  # told each model call's size (metrics)
        self.max_batch_size = max_batch_size
        self.timeout_seconds = timeout_seconds
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._closed = False
        self._lock = threading.Lock()
        self._model = threading.Condition()  # guards _busy: one model call at a time, by a caller or the thread
        self._busy = False
        self.batch_sizes: list[int] = []  # sentences per model call, most recent last (bounded)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, sentences: list[Sequence[str]]) -> list[Any]:
        """Results for ``sentences``, in order; blocks until they are computed."""
        if not sentences:
            return []
        pending = _Pending(list(sentences))
        with self._lock:
            if self._closed:  # a retired version finishing a request it had started: no batching
                return self.function(sentences)
            with self._model:
                alone = self.timeout_seconds <= 0 and not self._busy and self._queue.empty()
                self._busy = self._busy or alone
            if not alone:
                self._queue.put(pending)
        if alone:  # the model is idle and nobody waits: run it here, no hand-off to the batcher's thread and back
            try:
                self._process([pending])
            finally:
                self._release()
        return pending.future.result()

    def _release(self) -> None:
        with self._model:
            self._busy = False
            self._model.notify_all()

    def close(self) -> None:
        """Stop taking requests; those queued are still answered."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(None)

    def _collect(self, first: _Pending) -> tuple[list[_Pending], bool]:
        batch, size = [first], len(first.sentences)
        deadline = time.monotonic() + self.timeout_seconds
        while size < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
            size += len(item.sentences)
        return batch, False

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            with self._model:  # a caller may be running the model itself: its call ends first
                while self._busy:
                    self._model.wait()
                self._busy = True
            try:
                batch, stop = self._collect(first)
                self._process(batch)
            finally:
                self._release()
        # Closed: answer anything still queued.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self._process([item])

    def _process(self, batch: list[_Pending]) -> None:
        # Every sentence with its origin, sorted by length so each model call pads little.
        items = [(len(s), i, j) for i, p in enumerate(batch) for j, s in enumerate(p.sentences)]
        items.sort()
        results: list[list[Any]] = [[None] * len(p.sentences) for p in batch]
        try:
            for start in range(0, len(items), self.max_batch_size):
                chunk = items[start:start + self.max_batch_size]
                outputs = self.function([batch[i].sentences[j] for _, i, j in chunk])
                self.batch_sizes = (self.batch_sizes + [len(chunk)])[-1000:]
                if self.on_call is not None:
                    self.on_call(len(chunk))
                for (_, i, j), output in zip(chunk, outputs):
                    results[i][j] = output
        except Exception as error:  # the model failed: every request of the batch hears why
            logger.exception("model call failed")
            for pending in batch:
                pending.future.set_exception(error)
            return
        for pending, result in zip(batch, results):
            pending.future.set_result(result)

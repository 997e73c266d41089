"""The micro-batcher: coalescing, order, chunking, length sorting, errors, closing."""

import threading
import time

import pytest

from service.batcher import MicroBatcher


class RecordingModel:
    def __init__(self, delay=0.0, fail_on=None):
        self.calls = []
        self.delay = delay
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, sentences):
        with self.lock:
            self.calls.append([list(s) for s in sentences])
        if self.fail_on is not None and any(self.fail_on in s for s in sentences):
            raise RuntimeError("model failed")
        time.sleep(self.delay)
        return ["|".join(s) for s in sentences]


def test_concurrent_requests_are_coalesced_and_routed_back():
    model = RecordingModel(delay=0.02)
    batcher = MicroBatcher(model, max_batch_size=64, timeout_seconds=0.05)
    results = {}

    def client(i):
        results[i] = batcher.submit([[f"a{i}"], [f"b{i}", "x"]])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: [f"a{i}", f"b{i}|x"] for i in range(16)}
    assert len(model.calls) < 16  # fewer model calls than requests
    assert sum(len(c) for c in model.calls) == 32
    batcher.close()


def test_large_request_is_cut_into_sorted_chunks():
    model = RecordingModel()
    batcher = MicroBatcher(model, max_batch_size=4, timeout_seconds=0.0)
    sentences = [["w"] * n for n in (5, 1, 3, 2, 4, 6, 1, 2, 3, 7)]
    assert batcher.submit(sentences) == ["|".join(s) for s in sentences]
    assert all(len(call) <= 4 for call in model.calls)
    lengths = [len(s) for call in model.calls for s in call]
    assert lengths == sorted(lengths)  # the model saw sentences by length: little padding
    batcher.close()


def test_a_failing_call_fails_its_requests_and_the_batcher_goes_on():
    model = RecordingModel(fail_on="boom")
    batcher = MicroBatcher(model, max_batch_size=8, timeout_seconds=0.0)
    with pytest.raises(RuntimeError, match="model failed"):
        batcher.submit([["boom"]])
    assert batcher.submit([["fine"]]) == ["fine"]
    batcher.close()


def test_closed_batcher_still_answers():
    model = RecordingModel()
    batcher = MicroBatcher(model, max_batch_size=8, timeout_seconds=0.0)
    batcher.close()
    assert batcher.submit([["late", "request"]]) == ["late|request"]


def test_a_lone_request_runs_in_its_own_thread_and_those_arriving_meanwhile_are_batched():
    threads_seen = []
    model = RecordingModel(delay=0.1)
    original = model.__call__

    def recording(sentences):
        threads_seen.append(threading.current_thread().name)
        return original(sentences)

    batcher = MicroBatcher(recording, max_batch_size=64, timeout_seconds=0.0, name="the-batcher")
    assert batcher.submit([["alone"]]) == ["alone"]
    assert threads_seen == ["MainThread"]  # no hand-off to the batcher's thread
    results = {}

    def client(i):
        results[i] = batcher.submit([[f"s{i}"]])

    first = threading.Thread(target=client, args=(0,), name="first")
    first.start()
    time.sleep(0.03)  # the first request is running the model; these queue meanwhile
    others = [threading.Thread(target=client, args=(i,)) for i in range(1, 9)]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join()
    assert results == {i: [f"s{i}"] for i in range(9)}
    assert threads_seen[1] == "first" and set(threads_seen[2:]) == {"the-batcher"}
    assert len(model.calls) <= 4  # the eight that waited went in one or two calls, not eight
    batcher.close()

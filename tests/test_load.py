"""Load on a real gunicorn set up as docker-compose runs it (2 workers, sessions in a real Redis): 20,000 tag
requests at concurrency 32 and, at the same time, 2,000 dialog turns over 100 concurrent sessions. Zero
errors, every turn lands in its own session in order, and the service's memory after warm-up stays within
a stated bound.

The models are tiny untrained ones with the shipped models' signatures: this tests the service (threads,
batchers, sessions, Redis, memory), and small models let 22,000 requests fit the suite's time on 2 cores
(the shipped POS model takes ~3 ms of CPU per sentence; its speed is what ``benchmarks/`` measures).
"""

from __future__ import annotations

import http.client
import json
import shutil
import threading
import time

import pytest
from test_gunicorn_sessions import start, stop

from benchmarks.http_load import run_load
from benchmarks.http_matrix import rss_mib

from conftest import DATA, EWT_DEV
from reliability import percentile, record
from test_gunicorn import call, free_port, wait_until

TAG_REQUESTS, CONCURRENCY = 20_000, 32
SESSIONS, TURNS_PER_SESSION = 100, 20
# Resident memory of the master and both workers may grow by at most this much from the end of the warm-up
# to the end of the load: allocator pools and Python's arenas settle (+10 to +45 MiB measured here), while
# a leak of 7 KiB per request (a kept request body and its answer, say) would cross it.
RSS_GROWTH_BOUND_MIB = 150.0
SWDA_VAL = DATA / "swda" / "val"


@pytest.fixture(scope="module")
def corpora():
    if not EWT_DEV.is_file() or not SWDA_VAL.is_dir():
        pytest.skip(f"EWT dev or SwDA val not found under {DATA}")
    from training.dialog.data import read_dialogs
    from training.tagger.data import read_conllu

    sentences = [list(sentence.words) for sentence in read_conllu(EWT_DEV)]
    conversations = [d for d in read_dialogs(SWDA_VAL, "swda") if len(d.turns) >= TURNS_PER_SESSION]
    return sentences, conversations


def converse(port: int, conversation, turns: int, failures: list, latencies: list, lock: threading.Lock) -> str | None:
    """One client: opens a session and sends ``turns`` turns of ``conversation`` on one keep-alive connection;
    every answer must be 200 and carry the next turn number. Returns the session id."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Type": "application/json"}
    try:
        connection.request("POST", "/v1/dialogs", json.dumps({"model": "dialog-act"}), headers)
        response = connection.getresponse()
        body = json.loads(response.read())
        if response.status != 201:
            failures.append(("create", response.status, body))
            return None
        session_id = body["session_id"]
        for number, turn in enumerate(conversation.turns[:turns], start=1):
            start_time = time.perf_counter()
            connection.request("POST", f"/v1/dialogs/{session_id}/turns",
                               json.dumps({"text": turn.text, "speaker": turn.speaker}), headers)
            response = connection.getresponse()
            answer = json.loads(response.read())
            with lock:
                latencies.append(time.perf_counter() - start_time)
            if response.status != 200 or answer["turn"] != number:
                failures.append((session_id, number, response.status, answer))
                return session_id
        return session_id
    except (OSError, http.client.HTTPException, ValueError) as error:
        failures.append(("transport", type(error).__name__, str(error)))
        return None
    finally:
        connection.close()


def test_20000_tag_requests_and_2000_turns_over_100_sessions(tmp_path, corpora, redis_url, random_tagger_dir,
                                                             random_dialog_dirs):
    sentences, conversations = corpora
    models = tmp_path / "models"
    shutil.copytree(random_tagger_dir, models / "pos" / "1")
    shutil.copytree(random_dialog_dirs["dialog-act"], models / "dialog-act" / "1")
    port = free_port()
    process, log = start(tmp_path, {"PORT": str(port), "SEQTAG_MODELS_DIR": str(models), "SEQTAG_WORKERS": "2",
                                    "SEQTAG_THREADS": "16", "SEQTAG_REDIS_URL": redis_url,
                                    "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    bodies = [(json.dumps({"sentences": [sentence]}).encode(), len(sentence)) for sentence in sentences]
    try:
        wait_until(lambda: call(port, "/readyz")[0] == 200, 240, "readiness", process)
        # Warm-up: both workers answer tags and turns (the master does not say which worker gets which).
        warm_latencies, _, warm_errors, _ = run_load(f"http://127.0.0.1:{port}", "/v1/models/pos:tag", bodies,
                                                     CONCURRENCY, 300, 120)
        assert not warm_errors, warm_errors
        warm_failures: list = []
        warm_threads = [threading.Thread(target=converse, args=(port, conversations[i], 2, warm_failures, [],
                                                                 threading.Lock())) for i in range(8)]
        for thread in warm_threads:
            thread.start()
        for thread in warm_threads:
            thread.join()
        assert not warm_failures, warm_failures
        rss_after_warmup = rss_mib(process.pid)

        samples: list[float] = []
        done = threading.Event()

        def sample_memory():
            while not done.wait(0.5):
                samples.append(rss_mib(process.pid))

        tag_result: dict = {}

        def tag_load():
            tag_result["value"] = run_load(f"http://127.0.0.1:{port}", "/v1/models/pos:tag", bodies, CONCURRENCY,
                                           TAG_REQUESTS, 900)

        failures: list = []
        turn_latencies: list[float] = []
        lock = threading.Lock()
        session_ids: list = [None] * SESSIONS

        def client(index: int):
            session_ids[index] = converse(port, conversations[index % len(conversations)], TURNS_PER_SESSION,
                                          failures, turn_latencies, lock)

        threads = [threading.Thread(target=sample_memory), threading.Thread(target=tag_load)]
        threads += [threading.Thread(target=client, args=(i,)) for i in range(SESSIONS)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads[1:]:
            thread.join()
        seconds = time.perf_counter() - started
        done.set()
        threads[0].join()
        rss_after_load = rss_mib(process.pid)

        tag_latencies, tokens, tag_errors, tag_seconds = tag_result["value"]
        assert not tag_errors, tag_errors
        assert len(tag_latencies) == TAG_REQUESTS
        assert not failures, failures[:3]
        assert len(turn_latencies) == SESSIONS * TURNS_PER_SESSION
        # Every session holds exactly its own turns: none lost, none taken from another session.
        for session_id in session_ids:
            status, view = call(port, f"/v1/dialogs/{session_id}")
            assert status == 200 and view["turn"] == TURNS_PER_SESSION, (status, view)
            assert call(port, f"/v1/dialogs/{session_id}", None, method="DELETE")[0] == 204
        assert process.poll() is None
    finally:
        stop(process, log)
    server_log = (tmp_path / "gunicorn.log").read_text()
    assert "Traceback" not in server_log, server_log[-3000:]

    peak = max(samples + [rss_after_load])
    growth = rss_after_load - rss_after_warmup
    assert growth <= RSS_GROWTH_BOUND_MIB, (rss_after_warmup, rss_after_load)
    record("load-tagging", 20, "Tag requests (one EWT dev sentence each) at concurrency 32, with the dialog load below "
           "running at the same time; 2 workers x 16 threads, sessions in Redis, tiny models",
           f"{TAG_REQUESTS:,} requests, {tokens:,} tokens", "0 errors",
           f"{TAG_REQUESTS / tag_seconds:.0f} req/s, p50 {1000 * percentile(tag_latencies, 0.5):.0f} ms, "
           f"p99 {1000 * percentile(tag_latencies, 0.99):.0f} ms")
    record("load-dialogs", 21, f"Dialog turns over {SESSIONS} concurrent sessions (SwDA val conversations), "
           "each on its own keep-alive connection, during the tag load",
           f"{SESSIONS * TURNS_PER_SESSION:,} turns", "0 errors; every session at exactly its turn count",
           f"{SESSIONS * TURNS_PER_SESSION / seconds:.0f} turns/s, p50 {1000 * percentile(turn_latencies, 0.5):.0f} ms, "
           f"p99 {1000 * percentile(turn_latencies, 0.99):.0f} ms")
    record("load-memory", 22, "Service memory (master + 2 workers, RSS) from the end of a warm-up to the end of the load",
           f"sampled every 0.5 s over {seconds:.0f} s",
           f"bound: growth <= {RSS_GROWTH_BOUND_MIB:.0f} MiB",
           f"{rss_after_warmup:.0f} MiB after warm-up, peak {peak:.0f}, {rss_after_load:.0f} at the end "
           f"({growth:+.0f} MiB)")

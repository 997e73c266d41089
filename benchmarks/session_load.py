"""Streaming dialog turns over HTTP: turn latency and turns/s at several numbers of concurrent sessions,
with and without cross-session batching. Starts gunicorn itself (one worker, in-process sessions, or
``--redis-url`` with ``--workers``), replays real SwDA val conversations, one session per conversation.

    .venv/bin/python -m benchmarks.session_load --sessions 1,16,64

Loopback only; each run is bounded by ``--turns`` and ``--duration``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import signal
import threading
import time

from benchmarks.http_load import percentile
from benchmarks.http_matrix import rss_mib, start_server
from training.dialog.data import read_dialogs

logger = logging.getLogger("benchmarks.session_load")


def run_sessions(port: int, model: str, conversations, sessions: int, max_turns: int, duration: float):
    """``sessions`` clients, each replaying conversations turn by turn in its own session."""
    latencies, errors, lock = [], [], threading.Lock()
    deadline = time.monotonic() + duration
    budget = [max_turns]

    def take() -> bool:
        with lock:
            budget[0] -= 1
            return budget[0] >= 0 and time.monotonic() < deadline

    def client(index: int):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Content-Type": "application/json"}
        conversation = conversations[index % len(conversations)]
        connection.request("POST", "/v1/dialogs", json.dumps({"model": model}), headers)
        session_id = json.loads(connection.getresponse().read())["session_id"]
        turn = 0
        while take():
            if turn == len(conversation.turns):
                connection.request("POST", f"/v1/dialogs/{session_id}/reset", "{}", headers)
                connection.getresponse().read()
                turn = 0
            speaker, text = conversation.turns[turn].speaker, conversation.turns[turn].text
            start = time.perf_counter()
            connection.request("POST", f"/v1/dialogs/{session_id}/turns", json.dumps({"text": text, "speaker": speaker}),
                               headers)
            response = connection.getresponse()
            response.read()
            with lock:
                (latencies if response.status == 200 else errors).append(time.perf_counter() - start)
            turn += 1
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(sessions)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(latencies), len(errors), time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", default="models")
    parser.add_argument("--model", default="dialog-act")
    parser.add_argument("--data", default="../shared/data/swda/val")
    parser.add_argument("--format", default="swda")
    parser.add_argument("--sessions", default="1,16,64")
    parser.add_argument("--turns", type=int, default=2000, help="per run")
    parser.add_argument("--duration", type=float, default=40.0, help="seconds per run, at most")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--redis-url", default="", help="share sessions in Redis (needed for --workers > 1)")
    parser.add_argument("--batching", default="on,off")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    conversations = read_dialogs(args.data, args.format)
    logger.info("%s: %d worker(s) x %d threads, %s store, %d conversations from %s", args.model, args.workers,
                args.threads, "Redis" if args.redis_url else "in-process", len(conversations), args.data)
    logger.info("%-9s %8s %9s %8s %8s %8s %7s %9s", "batching", "sessions", "turns/s", "p50 ms", "p90 ms", "p99 ms",
                "errors", "RSS MiB")
    extra = {"SEQTAG_DIALOG_SESSIONS": "true", "SEQTAG_REDIS_URL": args.redis_url}
    for batching in [mode.strip() == "on" for mode in args.batching.split(",")]:
        process, port = start_server(args.models_dir, batching, args.workers, args.threads, extra_env=extra)
        try:
            run_sessions(port, args.model, conversations, 4, 100, 20)  # warm-up
            for sessions in [int(n) for n in args.sessions.split(",")]:
                latencies, errors, seconds = run_sessions(port, args.model, conversations, sessions, args.turns,
                                                          args.duration)
                logger.info("%-9s %8d %9.1f %8.1f %8.1f %8.1f %7d %9.0f", "on" if batching else "off", sessions,
                            len(latencies) / seconds, 1000 * percentile(latencies, 0.5),
                            1000 * percentile(latencies, 0.9), 1000 * percentile(latencies, 0.99), errors,
                            rss_mib(process.pid))
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The service's HTTP figures in one table: gunicorn started with and without micro-batching, loaded at
several concurrencies with real EWT dev sentences (one per request, or `--sentences-per-request`), and
the workers' RSS.

    .venv/bin/python -m benchmarks.http_matrix --requests 2000

Loopback only; every run is bounded by ``--requests`` and ``--duration``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from benchmarks.http_load import percentile, run_load
from training.tagger.data import read_conllu

logger = logging.getLogger("benchmarks.http_matrix")
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(root_pid: int) -> float:
    """Resident memory of a process and its children (gunicorn's master and workers), in MiB."""
    total = 0
    pids = [root_pid]
    children = Path(f"/proc/{root_pid}/task/{root_pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def start_server(models_dir: str, batching: bool, workers: int, threads: int, batch_timeout_ms: float | None = None,
                 extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "SEQTAG_HOST": "127.0.0.1", "SEQTAG_MODELS_DIR": models_dir,
           "SEQTAG_BATCHING": "true" if batching else "false", "SEQTAG_WORKERS": str(workers),
           "SEQTAG_DIALOG_SESSIONS": "false",  # tagging only, so several workers need no Redis
           "SEQTAG_THREADS": str(threads), "SEQTAG_ACCESS_LOG": "", "SEQTAG_POLL_INTERVAL_SECONDS": "0"}
    if batch_timeout_ms is not None:
        env["SEQTAG_BATCH_TIMEOUT_MS"] = str(batch_timeout_ms)
    env.update(extra_env or {})
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "service/gunicorn_conf.py"], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    return process, port
        except OSError:
            time.sleep(0.5)
    os.killpg(process.pid, signal.SIGTERM)
    raise SystemExit("the server did not become ready")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", default="models")
    parser.add_argument("--model", default="pos")
    parser.add_argument("--data", default="../shared/data/ud-english-ewt/en_ewt-ud-dev.conllu")
    parser.add_argument("--concurrency", default="1,8,16,32")
    parser.add_argument("--requests", type=int, default=2000, help="per run")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per run, at most")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--sentences-per-request", type=int, default=1)
    parser.add_argument("--batch-timeout-ms", type=float, default=None, help="the service's default unless given")
    parser.add_argument("--batching", default="on,off", help="which of on, off to run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    sentences = [list(s.words) for s in read_conllu(args.data)]
    k = args.sentences_per_request
    bodies = [(json.dumps({"sentences": sentences[i:i + k]}).encode(), sum(len(s) for s in sentences[i:i + k]))
              for i in range(0, len(sentences) - k + 1, k)]
    logger.info("%d worker(s) x %d threads, %d sentence(s) per request", args.workers, args.threads, k)
    path = f"/v1/models/{args.model}:tag"
    logger.info("%-9s %5s %9s %10s %8s %8s %8s %7s %9s", "batching", "conc", "req/s", "tokens/s", "p50 ms",
                "p90 ms", "p99 ms", "errors", "RSS MiB")
    for batching in [mode.strip() == "on" for mode in args.batching.split(",")]:
        process, port = start_server(args.models_dir, batching, args.workers, args.threads, args.batch_timeout_ms)
        try:
            run_load(f"http://127.0.0.1:{port}", path, bodies, 8, 200, 30)  # warm-up
            for concurrency in [int(c) for c in args.concurrency.split(",")]:
                latencies, tokens, errors, seconds = run_load(f"http://127.0.0.1:{port}", path, bodies, concurrency,
                                                              args.requests, args.duration)
                logger.info("%-9s %5d %9.1f %10.0f %8.1f %8.1f %8.1f %7d %9.0f", "on" if batching else "off",
                            concurrency, len(latencies) / seconds, tokens / seconds, 1000 * percentile(latencies, 0.5),
                            1000 * percentile(latencies, 0.9), 1000 * percentile(latencies, 0.99),
                            sum(errors.values()), rss_mib(process.pid))
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

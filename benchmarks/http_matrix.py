"""The service's HTTP figures against its own HTTP stack: ``wrk`` posts one real EWT dev sentence per request to
``:tag`` and, alternately in the same run, asks ``GET /healthz`` (routing, logging and metrics with no model), at
each concurrency; the tag rate is printed beside the /healthz rate and their ratio.

    apt-get install wrk      # Debian's package: a C load generator, one thread
    .venv/bin/python -m benchmarks.http_matrix --concurrency 1,16 --rounds 3

Each variant is a gunicorn started as ``make serve`` starts it (``service/gunicorn_conf.py``, ``models/``), with
the variant's environment on top (``--variants "defaults;SEQTAG_BATCHING=false"``: variants separated by ";",
settings by ","; ``CODE=DIR`` serves another checkout, e.g. ``git archive 8dd602d | tar -x -C /tmp/before``
for the figures before a change). All variants run at once and every round visits each in turn (healthz, then tag), so this
machine's drift hits them alike; the table gives medians over rounds. Loopback only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.wrk_load import require_wrk, run_wrk
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


def start_gunicorn(env_overrides: dict[str, str], timeout: float = 180) -> tuple[subprocess.Popen, int]:
    """gunicorn as ``make serve`` runs it, on a free loopback port, once /readyz answers 200. ``CODE=DIR`` among
    the overrides serves another checkout of seqtag (e.g. an older commit, ``git archive``d) with this venv."""
    port = free_port()
    env_overrides = dict(env_overrides)
    code = env_overrides.pop("CODE", str(REPO))
    env = {**os.environ, "PORT": str(port), "SEQTAG_HOST": "127.0.0.1",
           "SEQTAG_MODELS_DIR": os.environ.get("SEQTAG_MODELS_DIR", "models"), **env_overrides}
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "service/gunicorn_conf.py"], cwd=code, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server stopped at start (exit {process.returncode}) with {env_overrides}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    return process, port
        except OSError:
            time.sleep(0.5)
    stop(process)
    raise SystemExit("the server did not become ready")


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def parse_variants(spec: str) -> list[tuple[str, dict[str, str]]]:
    variants = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        settings = {} if part == "defaults" else dict(item.split("=", 1) for item in part.split(","))
        variants.append((part, settings))
    return variants


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pos")
    parser.add_argument("--data", default="../shared/data/ud-english-ewt/en_ewt-ud-dev.conllu")
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--seconds", type=float, default=10.0, help="per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sentences-per-request", type=int, default=1)
    parser.add_argument("--variants", default="defaults", help='e.g. "defaults;SEQTAG_BATCHING=false"')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    require_wrk()

    sentences = [list(s.words) for s in read_conllu(args.data)]
    k = args.sentences_per_request
    bodies = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False)
    with bodies:
        for i in range(0, len(sentences) - k + 1, k):
            bodies.write(json.dumps({"sentences": sentences[i:i + k]}) + "\n")
    tokens_per_request = sum(len(s) for s in sentences[:len(sentences) // k * k]) / (len(sentences) // k)

    variants = parse_variants(args.variants)
    servers = {}
    try:
        for name, settings in variants:
            servers[name] = start_gunicorn(settings)
            port = servers[name][1]
            run_wrk(f"http://127.0.0.1:{port}/v1/models/{args.model}:tag", "post_bodies.lua", 4, 3, [bodies.name])  # warm-up
        logger.info("%d sentence(s), %.1f tokens per request; %d cores, load average %s; %d rounds of %g s runs",
                    k, tokens_per_request, len(os.sched_getaffinity(0)), " ".join(f"{x:.1f}" for x in os.getloadavg()),
                    args.rounds, args.seconds)
        results: dict[tuple[str, int], dict[str, list]] = {}
        for round_number in range(args.rounds):
            for concurrency in [int(c) for c in args.concurrency.split(",")]:
                for name, (_, port) in servers.items():
                    base = f"http://127.0.0.1:{port}"
                    health = run_wrk(f"{base}/healthz", "post_bodies.lua", concurrency, args.seconds)
                    tag = run_wrk(f"{base}/v1/models/{args.model}:tag", "post_bodies.lua", concurrency, args.seconds,
                                  [bodies.name, str(round_number * 97)])
                    record = results.setdefault((name, concurrency), {})
                    for key, value in (("health", health.rate), ("tag", tag.rate), ("ratio", tag.rate / health.rate),
                                       ("p50", tag.p50_ms), ("p99", tag.p99_ms), ("tail", tag.p99_ms / tag.p50_ms),
                                       ("errors", tag.errors + tag.non_2xx + health.errors + health.non_2xx)):
                        record.setdefault(key, []).append(value)
        logger.info("%-40s %5s %10s %9s %9s %10s %8s %8s %9s %6s %8s", "variant", "conc", "healthz/s", "tag/s", "ratio",
                    "tokens/s", "p50 ms", "p99 ms", "p99/p50", "errors", "RSS MiB")
        for (name, concurrency), record in results.items():
            median = {key: statistics.median(values) for key, values in record.items()}
            logger.info("%-40s %5d %10.0f %9.0f %9.2f %10.0f %8.1f %8.1f %9.2f %6d %8.0f", name[:40], concurrency,
                        median["health"], median["tag"], median["ratio"], median["tag"] * tokens_per_request,
                        median["p50"], median["p99"], median["tail"], sum(record["errors"]),
                        rss_mib(servers[name][0].pid))
    finally:
        for process, _ in servers.values():
            stop(process)
        os.unlink(bodies.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

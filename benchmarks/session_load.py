"""Streaming dialog turns over HTTP: turns/s and turn latency at several numbers of concurrent sessions, driven by
``wrk`` (each connection a session: real SwDA val conversations, turn after turn, ``benchmarks/wrk/dialog_turns.lua``).

    apt-get install wrk redis-server      # Debian's packages; Redis only for variants that use it
    .venv/bin/python -m benchmarks.session_load --sessions 1,16,64 --rounds 3
    .venv/bin/python -m benchmarks.session_load --model dialog-action --slots slots --format sgd \
        --data ../shared/data/sgd/sgd-dev.jsonl --schemas ../shared/data/sgd/schema-dev.json
        # SGD: user turns with their service (registered from --schemas first); next actions and slots

Each variant is a gunicorn started as ``make serve`` starts it, with the variant's environment on top
(``--variants "defaults;SEQTAG_WORKERS=2,SEQTAG_REDIS_URL=auto"``: ``auto`` starts a local redis-server for it).
All variants run at once and each round visits them in turn, so this machine's drift hits them alike; the
table gives medians over rounds, with the same server's /healthz rate at the same concurrency beside. Before a
run the sessions are opened (one per connection) and afterwards deleted. Loopback only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import shutil
import statistics
import subprocess
import tempfile
import time

from benchmarks.http_matrix import free_port, parse_variants, rss_mib, start_gunicorn, stop
from benchmarks.wrk_load import require_wrk, run_wrk
from training.dialog.data import read_dialogs

logger = logging.getLogger("benchmarks.session_load")


def start_redis() -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("a variant asks for Redis: apt-get install redis-server")
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return process, f"redis://127.0.0.1:{port}/0"


def open_sessions(port: int, model: str, count: int, slots: str | None = None) -> list[str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    ids = []
    body = json.dumps({"model": model, **({"slots": slots} if slots else {})})
    for _ in range(count):
        connection.request("POST", "/v1/dialogs", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        ids.append(json.loads(response.read())["session_id"])
    connection.close()
    return ids


def register_services(port: int, path: str) -> int:
    """PUT every schema of an SGD schema file (a list): the services the turns name must be known."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    with open(path, encoding="utf-8") as handle:
        schemas = json.load(handle)
    for schema in schemas:
        connection.request("PUT", f"/v1/services/{schema['service_name']}", json.dumps(schema),
                           {"Content-Type": "application/json"})
        response = connection.getresponse()
        body = response.read()
        if response.status not in (200, 201):
            raise SystemExit(f"registering {schema['service_name']}: {response.status} {body[:200]!r}")
    connection.close()
    return len(schemas)


def close_sessions(port: int, ids: list[str]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for session_id in ids:
        connection.request("DELETE", f"/v1/dialogs/{session_id}")
        connection.getresponse().read()
    connection.close()


def turn_file(ids: list[str], conversations, offset: int) -> str:
    """Lines "<session id>\\t<turn body>": session i replays conversation offset + i, turn by turn."""
    handle = tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False)
    with handle:
        for i, session_id in enumerate(ids):
            for body in conversations[(offset + i) % len(conversations)]:
                handle.write(f"{session_id}\t{json.dumps(body)}\n")
    return handle.name


def read_conversations(path: str, data_format: str, with_service: bool) -> list[list[dict]]:
    """Each conversation as its turns' request bodies; SGD with ``with_service``: the user turns, each naming the
    service it is about (what a session with a span model answers slots for)."""
    if data_format == "sgd" and with_service:
        conversations = []
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                record = json.loads(line)
                conversations.append([{"text": t["utterance"], "speaker": "USER", "service": t["service"]}
                                      for t in record["turns"] if t["speaker"] == "USER"])
        return conversations
    return [[{"text": turn.text, "speaker": turn.speaker} for turn in dialog.turns]
            for dialog in read_dialogs(path, data_format)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dialog-act")
    parser.add_argument("--data", default="../shared/data/swda/val")
    parser.add_argument("--format", default="swda")
    parser.add_argument("--slots", help="a span model each session also answers slots with (SGD: each turn's service)")
    parser.add_argument("--schemas", help="an SGD schema file: its services are registered before the runs")
    parser.add_argument("--sessions", default="1,16,64")
    parser.add_argument("--seconds", type=float, default=10.0, help="per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default="defaults", help='e.g. "defaults;SEQTAG_WORKERS=2,SEQTAG_REDIS_URL=auto"')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    require_wrk()

    conversations = read_conversations(args.data, args.format, bool(args.slots))
    variants = parse_variants(args.variants)
    servers, redis_servers = {}, []
    try:
        for name, settings in variants:
            if settings.get("SEQTAG_REDIS_URL") == "auto":
                process, url = start_redis()
                redis_servers.append(process)
                settings = {**settings, "SEQTAG_REDIS_URL": url}
            if args.schemas and "SEQTAG_SERVICES_DIR" not in settings:  # registrations in a throwaway directory
                settings = {**settings, "SEQTAG_SERVICES_DIR": tempfile.mkdtemp(prefix="seqtag-bench-services-")}
            servers[name] = start_gunicorn(settings)
            port = servers[name][1]
            if args.schemas:
                logger.info("%s: registered %d services from %s", name, register_services(port, args.schemas), args.schemas)
            ids = open_sessions(port, args.model, 4, args.slots)
            path = turn_file(ids, conversations, 0)
            run_wrk(f"http://127.0.0.1:{port}", "dialog_turns.lua", 4, 3, [path])  # warm-up
            os.unlink(path)
            close_sessions(port, ids)
        logger.info("%s: %d conversations from %s; %d cores, load average %s; %d rounds of %g s runs", args.model,
                    len(conversations), args.data, len(os.sched_getaffinity(0)),
                    " ".join(f"{x:.1f}" for x in os.getloadavg()), args.rounds, args.seconds)
        results: dict[tuple[str, int], dict[str, list]] = {}
        for round_number in range(args.rounds):
            for sessions in [int(n) for n in args.sessions.split(",")]:
                for name, (_, port) in servers.items():
                    ids = open_sessions(port, args.model, sessions, args.slots)
                    path = turn_file(ids, conversations, round_number * sessions)
                    try:
                        turns = run_wrk(f"http://127.0.0.1:{port}", "dialog_turns.lua", sessions, args.seconds, [path])
                    finally:
                        os.unlink(path)
                        close_sessions(port, ids)
                    health = run_wrk(f"http://127.0.0.1:{port}/healthz", "post_bodies.lua", sessions, args.seconds / 2)
                    record = results.setdefault((name, sessions), {})
                    for key, value in (("turns", turns.rate), ("health", health.rate), ("p50", turns.p50_ms),
                                       ("p90", turns.p90_ms), ("p99", turns.p99_ms),
                                       ("errors", turns.errors + turns.non_2xx)):
                        record.setdefault(key, []).append(value)
        logger.info("%-48s %8s %9s %8s %8s %8s %10s %7s %8s", "variant", "sessions", "turns/s", "p50 ms", "p90 ms",
                    "p99 ms", "healthz/s", "errors", "RSS MiB")
        for (name, sessions), record in results.items():
            median = {key: statistics.median(values) for key, values in record.items()}
            logger.info("%-48s %8d %9.0f %8.1f %8.1f %8.1f %10.0f %7d %8.0f", name[:48], sessions, median["turns"],
                        median["p50"], median["p90"], median["p99"], median["health"], sum(record["errors"]),
                        rss_mib(servers[name][0].pid))
    finally:
        for process, _ in servers.values():
            stop(process)
        for process in redis_servers:
            process.terminate()
            process.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

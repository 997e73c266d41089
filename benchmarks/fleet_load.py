"""Dialog turns through HAProxy over one and two seqtag hosts sharing one Redis, and what a host's death costs.

    apt-get install wrk haproxy redis-server
    .venv/bin/python -m benchmarks.fleet_load [--model dialog-act] [--sessions 64] [--seconds 10] [--rounds 3]

1. **Throughput.** Two hosts (gunicorn as ``make serve`` starts it, one worker each, sessions in one Redis) behind
   HAProxy with ``service/haproxy.cfg``; "1 host" points both of its server lines at host a. wrk streams SwDA val
   turns through HAProxy (``benchmarks/wrk/dialog_turns.lua``, one session per connection), 1 and 2 hosts
   alternating, medians of ``--rounds``: turns/s, p50, p99.
2. **A host's death.** ``--kill-sessions`` Python clients stream numbered turns through HAProxy with the client
   loop of docs/deployment.md (a failed turn is sent again with its number); host a gets SIGKILL after
   ``--kill-after`` seconds. Printed: the time until HAProxy marks host a DOWN (its stats socket, polled every
   20 ms), the turns that needed a retry, the longest a turn waited, and any turn that failed.

On one machine the hosts share its cores: two hosts cannot give twice the turns/s here (see the closing remark it
prints); on two machines each host has its own.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.http_matrix import free_port, start_gunicorn, stop
from benchmarks.session_load import close_sessions, open_sessions, read_conversations, start_redis, turn_file
from benchmarks.wrk_load import require_wrk, run_wrk

logger = logging.getLogger("benchmarks.fleet_load")

REPO = Path(__file__).resolve().parents[1]


def start_haproxy(host_a: int, host_b: int, folder: Path) -> tuple[subprocess.Popen, int, Path]:
    """HAProxy with the repository's configuration and a stats socket added: (process, port, socket path)."""
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.path.exists(binary):
        raise SystemExit("apt-get install haproxy")
    stats = folder / "haproxy.sock"
    config = (REPO / "service" / "haproxy.cfg").read_text().replace(
        "global\n", f"global\n    stats socket {stats} mode 600 level admin\n", 1)
    (folder / "haproxy.cfg").write_text(config)
    port = free_port()
    env = {**os.environ, "SEQTAG_LB_BIND": f"127.0.0.1:{port}", "SEQTAG_HOST_A": f"127.0.0.1:{host_a}",
           "SEQTAG_HOST_B": f"127.0.0.1:{host_b}"}
    process = subprocess.Popen([binary, "-db", "-f", str(folder / "haproxy.cfg")], env=env,
                               stdout=subprocess.DEVNULL, stderr=open(folder / "haproxy.log", "w"))
    return process, port, stats


def server_states(stats: Path) -> dict[str, str]:
    """HAProxy's view of each server of the backend: name -> UP, DOWN, ..."""
    with socket.socket(socket.AF_UNIX) as connection:
        connection.connect(str(stats))
        connection.sendall(b"show stat\n")
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:] if line]
    return {row["svname"]: row["status"] for row in rows if row["pxname"] == "hosts" and row["svname"] not in
            ("BACKEND", "FRONTEND")}


def wait_ready(port: int, timeout: float = 300) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"nothing ready on port {port}")


def throughput(args, conversations, redis_url: str, folder: Path) -> None:
    hosts = [start_gunicorn({"SEQTAG_REDIS_URL": redis_url, "SEQTAG_CACHED_TURNS": "0"}) for _ in range(2)]
    balancers = {}
    try:
        ports = [port for _, port in hosts]
        for label, (a, b) in (("1 host", (ports[0], ports[0])), ("2 hosts", (ports[0], ports[1]))):
            where = folder / label.replace(" ", "-")  # a socket path with a space is not HAProxy's
            where.mkdir()
            process, port, _ = start_haproxy(a, b, where)
            wait_ready(port)
            balancers[label] = (process, port)
        results: dict[str, dict[str, list[float]]] = {}
        for round_number in range(args.rounds):
            for label, (_, port) in balancers.items():
                ids = open_sessions(port, args.model, args.sessions)
                path = turn_file(ids, conversations, round_number * args.sessions)
                try:
                    run = run_wrk(f"http://127.0.0.1:{port}", "dialog_turns.lua", args.sessions, args.seconds, [path])
                finally:
                    os.unlink(path)
                    close_sessions(port, ids)
                record = results.setdefault(label, {})
                for key, value in (("turns", run.rate), ("p50", run.p50_ms), ("p99", run.p99_ms),
                                   ("errors", run.errors + run.non_2xx)):
                    record.setdefault(key, []).append(value)
        logger.info("%-8s %8s %9s %8s %8s %7s", "hosts", "sessions", "turns/s", "p50 ms", "p99 ms", "errors")
        for label, record in results.items():
            logger.info("%-8s %8d %9.0f %8.1f %8.1f %7d", label, args.sessions, statistics.median(record["turns"]),
                        statistics.median(record["p50"]), statistics.median(record["p99"]), sum(record["errors"]))
    finally:
        for process, _ in balancers.values():
            process.terminate()
            process.wait(timeout=10)
        for process, _ in hosts:
            stop(process)


def host_death(args, conversations, redis_url: str, folder: Path) -> None:
    import http.client

    hosts = [start_gunicorn({"SEQTAG_REDIS_URL": redis_url}) for _ in range(2)]
    balancer, port, stats = start_haproxy(hosts[0][1], hosts[1][1], folder)
    tries: list[int] = []
    waits: list[float] = []
    failed: list[str] = []
    stop_streaming = threading.Event()

    def post(path: str, body: dict) -> tuple[int | None, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            return None, b""
        finally:
            connection.close()

    def stream(i: int) -> None:
        status, payload = post("/v1/dialogs", {"model": args.model})
        if status != 201:
            failed.append(f"open: {status}")
            return
        session_id = json.loads(payload)["session_id"]
        conversation = conversations[i % len(conversations)]
        for number, body in enumerate(conversation, start=1):
            if stop_streaming.is_set():
                return
            started, count = time.monotonic(), 0
            while True:
                count += 1
                status, payload = post(f"/v1/dialogs/{session_id}/turns", {**body, "turn": number})
                if status == 200:
                    break
                if status not in (None, 502, 503, 504) or count > 50:
                    failed.append(f"turn {number}: {status} {payload[:200]!r}")
                    return
                time.sleep(min(0.05 * count, 0.5))
            tries.append(count)
            waits.append(time.monotonic() - started)

    try:
        for _, host_port in hosts:
            wait_ready(host_port)
        wait_ready(port)
        threads = [threading.Thread(target=stream, args=(i,)) for i in range(args.kill_sessions)]
        for thread in threads:
            thread.start()
        time.sleep(args.kill_after)
        answered_before = len(tries)
        os.killpg(hosts[0][0].pid, signal.SIGKILL)
        killed = time.monotonic()
        while server_states(stats).get("host-a", "").startswith("UP"):
            time.sleep(0.02)
        marked_down = time.monotonic() - killed
        time.sleep(args.kill_after)
        stop_streaming.set()
        for thread in threads:
            thread.join(timeout=60)
        logger.info("host a killed after %d turns; HAProxy marked it DOWN %.2f s later (checks every 300 ms, 2 to "
                    "fall); %d turns in all, %d needed a retry (at most %d tries), longest wait %.2f s, %d failed%s",
                    answered_before, marked_down, len(tries), sum(t > 1 for t in tries), max(tries, default=0),
                    max(waits, default=0.0), len(failed), f": {failed[:3]}" if failed else "")
    finally:
        stop_streaming.set()
        balancer.terminate()
        balancer.wait(timeout=10)
        for process, _ in hosts:
            if process.poll() is None:
                stop(process)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dialog-act")
    parser.add_argument("--data", default="../shared/data/swda/val")
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kill-sessions", type=int, default=32)
    parser.add_argument("--kill-after", type=float, default=3.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    require_wrk()
    conversations = read_conversations(args.data, "swda", False)
    redis, redis_url = start_redis()
    try:
        with tempfile.TemporaryDirectory(prefix="seqtag-fleet-") as folder:
            logger.info("%s through HAProxy, %d cores, load average %s", args.model, len(os.sched_getaffinity(0)),
                        " ".join(f"{x:.1f}" for x in os.getloadavg()))
            throughput(args, conversations, redis_url, Path(folder))
            (Path(folder) / "kill").mkdir()
            host_death(args, conversations, redis_url, Path(folder) / "kill")
    finally:
        redis.terminate()
        redis.wait(timeout=10)
    logger.info("On one machine both hosts share its cores, HAProxy and wrk: a second host adds workers, not CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())

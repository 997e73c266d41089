"""A real gunicorn serving the app: tags over HTTP, swaps in a new version under load without a failed
request, and rejects a broken version while the old one serves on."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from test_registry import add_broken_version, add_version

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port, path, body=None, timeout=30, method=None, headers=None):
    """(status, JSON body or None when empty) of one request on a fresh connection."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                     headers={**({"Content-Type": "application/json"} if data else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = response.read()
            return response.status, json.loads(payload) if payload else None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_until(predicate, timeout, what, process=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the server exited with status {process.returncode}")
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def serve_shipped_models(tmp: Path, **extra_env):
    """Generator for module fixtures: a real gunicorn over the repository's ``models/``, logging to
    ``tmp/gunicorn.log``; yields (base URL, port, process) once it is ready, stops it afterwards."""
    port = free_port()
    env = {**os.environ, "PORT": str(port), "SEQTAG_HOST": "127.0.0.1", "SEQTAG_MODELS_DIR": str(REPO / "models"),
           "SEQTAG_POLL_INTERVAL_SECONDS": "0", "SEQTAG_THREADS": "4", "PROMETHEUS_MULTIPROC_DIR": str(tmp),
           "SEQTAG_SERVICES_DIR": str(tmp / "services"), **extra_env}
    log = open(tmp / "gunicorn.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "service/gunicorn_conf.py"], cwd=REPO, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: call(port, "/readyz")[0] == 200, 180, "gunicorn to be ready", process)
        yield f"http://127.0.0.1:{port}", port, process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


@pytest.fixture
def server(tmp_path, random_tagger_dir):
    models = tmp_path / "models"
    add_version(models / "pos", random_tagger_dir, 1)
    port = free_port()
    env = {**os.environ, "PORT": str(port), "SEQTAG_HOST": "127.0.0.1", "SEQTAG_MODELS_DIR": str(models),
           "SEQTAG_POLL_INTERVAL_SECONDS": "0.3", "SEQTAG_WORKERS": "2", "SEQTAG_THREADS": "4",
           "SEQTAG_KEEP_VERSIONS": "2",  # the previous version stays loaded: ?version=1 rolls back by request
           "SEQTAG_DIALOG_SESSIONS": "false",  # tagging only: several workers without Redis
           "SEQTAG_ACCESS_LOG": "", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    (tmp_path / "metrics").mkdir()
    log = open(tmp_path / "gunicorn.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "service/gunicorn_conf.py"],
                               cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: call(port, "/readyz")[0] == 200, 90, "gunicorn to be ready", process)
        yield port, models
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()
        print((tmp_path / "gunicorn.log").read_text()[-3000:])


def test_hot_swap_under_load_and_broken_version(server, random_tagger_dir):
    port, models = server
    status, body = call(port, "/v1/models/pos:tag", {"sentences": [["The", "dog", "barks", "."]]})
    assert status == 200 and body["model"]["version"] == 1 and len(body["results"][0]["tags"]) == 4

    failures, versions, stop = [], [], threading.Event()

    def client():
        while not stop.is_set():
            try:
                status, body = call(port, "/v1/models/pos:tag", {"sentences": [["A", "cat", "sleeps", "."]]})
                if status != 200 or len(body["results"][0]["tags"]) != 4:
                    failures.append((status, body))
                else:
                    versions.append(body["model"]["version"])
            except Exception as error:  # a dropped connection counts as a failure too
                failures.append(repr(error))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        add_version(models / "pos", random_tagger_dir, 2)
        # Both workers must switch: ask until several answers in a row come from version 2.
        wait_until(lambda: versions[-20:] == [2] * 20, 60, "version 2 to serve in every worker")
        add_broken_version(models / "pos", 3, random_tagger_dir)
        # rejected by the fast-path check in a child process (a TensorFlow import), while the clients go on
        def settled_in_every_worker() -> bool:  # several answers in a row: both workers
            return all({v["version"]: v["state"] for v in call(port, "/v1/models/pos")[1]["versions"]}
                       == {3: "REJECTED", 2: "AVAILABLE", 1: "AVAILABLE"} for _ in range(8))

        wait_until(settled_in_every_worker, 60, "version 3 to be rejected by every worker")
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not failures, failures[:5]
    assert versions.count(1) > 0 and versions.count(2) > 0 and versions[-1] == 2

    status, body = call(port, "/v1/models/pos")
    assert body["serving_version"] == 2
    assert {v["version"]: v["state"] for v in body["versions"]} == {3: "REJECTED", 2: "AVAILABLE", 1: "AVAILABLE"}
    status, body = call(port, "/v1/models/pos:tag?version=1", {"sentences": [["Hi"]]})
    assert status == 200 and body["model"]["version"] == 1  # rollback by request


def scrape(port) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        return response.read().decode()


def tag_requests_counted(text: str, status: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "seqtag_http_requests_total" and s.labels["route"].endswith(":tag")
               and s.labels["status"] == status)


def test_metrics_sum_both_workers(server, tmp_path, random_tagger_dir):
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    port, models = server

    def send(count: int) -> None:
        failures = []

        def client():
            for _ in range(count // 6):  # a new connection per request: the workers' accepts share them out
                if call(port, "/v1/models/pos:tag", {"sentences": [["A", "cat", "sleeps", "."]]})[0] != 200:
                    failures.append(1)

        threads = [threading.Thread(target=client) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures

    def shares() -> list[float]:
        """Each worker's own count of answered tag requests, read from its file alone."""
        counts = []
        for counter_file in sorted((tmp_path / "metrics").glob("counter_*.db")):
            alone = tmp_path / f"alone-{len(list(tmp_path.glob('alone-*')))}"
            alone.mkdir()
            shutil.copy(counter_file, alone)
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=str(alone))
            counts.append(tag_requests_counted(generate_latest(registry).decode(), "200"))
        return counts

    # /readyz answered by one worker does not mean the other has loaded its models: send until both
    # have taken requests (each worker's own file holds a share), then count.
    sent, deadline = 0, time.monotonic() + 120
    while True:
        send(30)
        sent += 30
        counts = shares()
        if len(counts) == 2 and all(count > 0 for count in counts):
            break
        assert time.monotonic() < deadline, f"only one worker took requests: {counts}"
    assert sum(counts) == sent
    assert call(port, "/v1/models/pos:tag", {"sentences": "no"})[0] == 400
    # Whichever worker answers the scrape, it reports every worker's requests.
    for _ in range(6):
        text = scrape(port)
        assert tag_requests_counted(text, "200") == sent
        assert tag_requests_counted(text, "400") == 1
    # A broken version is rejected by each worker: two failures in one scrape.
    add_broken_version(models / "pos", 2, random_tagger_dir)
    wait_until(lambda: 'seqtag_model_load_failures_total{model="pos"} 2.0' in scrape(port), 60,
               "both workers to count the rejection")
    loaded = [line for line in scrape(port).splitlines() if line.startswith("seqtag_model_version_loaded{")]
    assert len({line.split('pid="')[1].split('"')[0] for line in loaded}) == 2, loaded  # one series per live worker

    # The JSON request log reaches gunicorn's stderr (written by a writer thread, not the request's):
    # one line per request, with the client's own id.
    for n in range(3):
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/pos:tag",
                                         data=json.dumps({"sentences": [["Hi", "."]]}).encode(),
                                         headers={"Content-Type": "application/json", "X-Request-Id": f"trace-{n}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.headers["X-Request-Id"] == f"trace-{n}"

    def logged() -> dict[str, dict]:
        lines = [json.loads(line) for line in (tmp_path / "gunicorn.log").read_text().splitlines()
                 if line.startswith('{"time"')]
        return {line["request_id"]: line for line in lines if line["request_id"].startswith("trace-")}

    wait_until(lambda: len(logged()) == 3, 10, "the request lines in the log")
    assert all(line["status"] == 200 and line["route"] == "/v1/models/<model_name:name>:tag" for line in logged().values())

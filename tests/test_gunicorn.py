"""A real gunicorn serving the app: tags over HTTP, swaps in a new version under load without a failed
request, and rejects a broken version while the old one serves on."""

from __future__ import annotations

import json
import os
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


def call(port, path, body=None, timeout=30):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                     headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
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


@pytest.fixture
def server(tmp_path, random_tagger_dir):
    models = tmp_path / "models"
    add_version(models / "pos", random_tagger_dir, 1)
    port = free_port()
    env = {**os.environ, "PORT": str(port), "SEQTAG_HOST": "127.0.0.1", "SEQTAG_MODELS_DIR": str(models),
           "SEQTAG_POLL_INTERVAL_SECONDS": "0.3", "SEQTAG_WORKERS": "2", "SEQTAG_THREADS": "4",
           "SEQTAG_DIALOG_SESSIONS": "false",  # tagging only: several workers without Redis
           "SEQTAG_ACCESS_LOG": ""}
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
        time.sleep(3.0)
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

"""Faults injected into a real gunicorn under load: a worker killed with SIGKILL, Redis stopped and
restarted, corrupt and half-copied model versions, a version deleted under live sessions.

Clients run in threads while the fault happens: tag requests, and dialog sessions that each play a
conversation turn by turn as a careful chatbot back end does (every turn numbered, sent again after a 503
or a broken connection; a numbered turn is taken once). Afterwards every session's answers must equal the
offline ``serve`` outputs of its whole conversation: no turn lost, none taken twice, none from another
session. Tiny untrained models keep it fast; what is tested is the service around them.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from test_gunicorn_sessions import SENTENCES, start, stop, worker_pids

from training.dialog.saved_dialog import DialogTurnInput, SavedDialogModel

from conftest import start_redis
from reliability import percentile, record
from test_gunicorn import call, free_port, wait_until

TAG_SENTENCES = [["The", "dog", "barks", "."], ["A", "cat", "sleeps", "at", "12:30", "!"], ["Hello", "world"]]


@dataclass
class Outcome:
    started: float  # time.monotonic() when the request began
    status: int | None  # None: no HTTP answer (connection refused, reset or closed)
    code: str = ""  # the error code of a 4xx/5xx answer, or the transport error's name
    seconds: float = 0.0


def send(port: int, method: str, path: str, body=None, timeout: float = 30) -> tuple[Outcome, dict | None, dict]:
    """One request on a fresh connection -> (outcome, JSON body, headers)."""
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, json.dumps(body) if body is not None else None,
                           {"Content-Type": "application/json"} if body is not None else {})
        response = connection.getresponse()
        payload = response.read()
        data = json.loads(payload) if response.getheader("Content-Type", "").startswith("application/json") else None
        code = data["error"]["code"] if response.status >= 400 else ""
        return Outcome(started, response.status, code, time.monotonic() - started), data, dict(response.getheaders())
    except (OSError, http.client.HTTPException) as error:
        return Outcome(started, None, type(error).__name__, time.monotonic() - started), None, {}
    finally:
        connection.close()


class Traffic:
    """Background load until ``stop()``: ``taggers`` threads tagging, ``sessions`` threads each playing a
    conversation of ``turns`` turns at about one turn per ``pause`` seconds."""

    def __init__(self, port: int, taggers: int, sessions: int, turns: int, pause: float = 0.03, seed: int = 0):
        import random

        rng = random.Random(seed)
        self.port, self.pause = port, pause
        self.conversations = [[("AB"[t % 2], rng.choice(SENTENCES)) for t in range(turns)] for _ in range(sessions)]
        self.session_ids: list[str | None] = [None] * sessions
        self.answers: list[list[dict]] = [[] for _ in range(sessions)]
        self.tag_outcomes: list[Outcome] = []
        self.turn_outcomes: list[Outcome] = []
        self.errors: list = []  # anything a careful client would not expect
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=self._tag, daemon=True) for _ in range(taggers)]
        self.threads += [threading.Thread(target=self._converse, args=(i,), daemon=True) for i in range(sessions)]

    def start(self) -> "Traffic":
        for thread in self.threads:
            thread.start()
        return self

    def stop(self, timeout: float = 120) -> None:
        self._stop.set()
        for thread in self.threads:
            thread.join(timeout)
        assert not any(thread.is_alive() for thread in self.threads), "a client is stuck"

    def wait_for_conversations(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(len(a) == len(c) for a, c in zip(self.answers, self.conversations)):
                return
            time.sleep(0.1)
        raise AssertionError(f"conversations unfinished: {[len(a) for a in self.answers]}")

    def _tag(self) -> None:
        index = 0
        while not self._stop.is_set():
            outcome, data, _ = send(self.port, "POST", "/v1/models/pos:tag", {"sentences": [TAG_SENTENCES[index % 3]]})
            self.tag_outcomes.append(outcome)
            if outcome.status == 200 and len(data["results"][0]["tags"]) != len(TAG_SENTENCES[index % 3]):
                self.errors.append(("tag", data))
            index += 1

    def _converse(self, index: int) -> None:
        while self.session_ids[index] is None and not self._stop.is_set():
            outcome, data, _ = send(self.port, "POST", "/v1/dialogs", {"model": "dialog-act"})
            if outcome.status == 201:
                self.session_ids[index] = data["session_id"]
            elif outcome.status not in (None, 503):
                self.errors.append(("create", outcome))
            else:
                time.sleep(0.1)
        path = f"/v1/dialogs/{self.session_ids[index]}/turns"
        for number, (speaker, text) in enumerate(self.conversations[index], start=1):
            while not self._stop.is_set():  # this turn until it is answered: the same request every time
                outcome, data, headers = send(self.port, "POST", path, {"text": text, "speaker": speaker, "turn": number})
                self.turn_outcomes.append(outcome)
                if outcome.status == 200:
                    if data["turn"] != number:
                        self.errors.append(("turn number", index, number, data))
                    self.answers[index].append(data)
                    break
                if outcome.status == 503 and outcome.code == "sessions_unavailable" and headers.get("Retry-After"):
                    time.sleep(0.1)
                elif outcome.status is None:  # the worker died, or the server is restarting: send it again
                    time.sleep(0.05)
                else:
                    self.errors.append(("turn", index, number, outcome))
                    return
            time.sleep(self.pause)

    def check_against_offline(self, dialog_dir: Path) -> None:
        """Every session's answers are the offline model's outputs for its whole conversation."""
        model = SavedDialogModel(dialog_dir)
        offline = model.predict([[DialogTurnInput([t.text for t in model.tokenizer.tokenize(text)], speaker) for speaker, text in c]
                                 for c in self.conversations])
        for index, answers in enumerate(self.answers):
            served = np.array([[answer["scores"][label] for label in model.labels] for answer in answers])
            np.testing.assert_allclose(served, offline[index], atol=1e-5)


def models_tree(tmp_path: Path, random_tagger_dir: Path, random_dialog_dirs) -> Path:
    models = tmp_path / "models"
    shutil.copytree(random_tagger_dir, models / "pos" / "1")
    shutil.copytree(random_dialog_dirs["dialog-act"], models / "dialog-act" / "1")
    return models


def server_log(tmp_path: Path) -> str:
    return (tmp_path / "gunicorn.log").read_text()


def test_a_worker_killed_under_load(tmp_path, random_tagger_dir, random_dialog_dirs, redis_url):
    models = models_tree(tmp_path, random_tagger_dir, random_dialog_dirs)
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    process, log = start(tmp_path, {"PORT": str(port), "SEQTAG_MODELS_DIR": str(models), "SEQTAG_WORKERS": "2",
                                    "SEQTAG_THREADS": "4", "SEQTAG_REDIS_URL": redis_url,
                                    "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    try:
        wait_until(lambda: call(port, "/readyz")[0] == 200, 120, "readiness", process)
        wait_until(lambda: len(worker_pids(process.pid)) == 2, 60, "two workers", process)
        traffic = Traffic(port, taggers=4, sessions=16, turns=24, pause=0.1).start()
        wait_until(lambda: all(len(a) >= 4 for a in traffic.answers), 60, "sessions under way")
        before = worker_pids(process.pid)
        victim = sorted(before)[0]
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(worker_pids(process.pid)) == 2 and victim not in worker_pids(process.pid), 60,
                   "a replacement worker", process)
        replacement = (worker_pids(process.pid) - before).pop()
        # The replacement takes requests once it has loaded its models: its metrics file shows it counting.
        wait_until(lambda: any(str(replacement) in p.name for p in metrics_dir.glob("counter_*.db")), 120,
                   "the replacement worker to serve", process)
        replaced_after = time.monotonic() - killed_at
        traffic.wait_for_conversations(120)
        traffic.stop()
        assert process.poll() is None
        views = [call(port, f"/v1/dialogs/{session_id}") for session_id in traffic.session_ids]
    finally:
        stop(process, log)

    assert not traffic.errors, traffic.errors[:3]
    outcomes = traffic.tag_outcomes + traffic.turn_outcomes
    broken = [o for o in outcomes if o.status is None]
    # The only failures: requests the killed worker had accepted before it died. Anything sent after the
    # kill reached the other worker (or the replacement) and got its answer.
    assert all(o.started < killed_at + 0.05 for o in broken), [(o.started - killed_at, o.code) for o in broken]
    assert all(o.status == 200 or (o.status is None) for o in traffic.tag_outcomes)
    assert all(o.status in (200, None) for o in traffic.turn_outcomes)
    assert sum(o.started > killed_at for o in traffic.turn_outcomes) >= 16  # the sessions went on after the kill
    # No session lost: each is at its last turn, and its answers are the offline model's, turn for turn.
    assert all(status == 200 and view["turn"] == 24 for status, view in views), views
    traffic.check_against_offline(models / "dialog-act" / "1")
    log_text = server_log(tmp_path)
    assert f"(pid:{victim}) was sent SIGKILL" in log_text and "Traceback" not in log_text
    answered = sum(o.status == 200 for o in outcomes)
    record("fault-worker-kill", 30, "A worker killed with SIGKILL under load (2 workers, sessions in Redis): "
           "tag requests and 16 sessions streaming turns meanwhile",
           f"{len(outcomes):,} requests, {sum(len(a) for a in traffic.answers)} turns",
           f"{len(broken)} requests the dead worker held got no answer (sent again: taken once); "
           "0 sessions lost; 0 failures after the kill",
           f"replacement serving {replaced_after:.0f} s after the kill (it loads TensorFlow and its models); "
           f"{answered:,} answers 200")


def test_redis_stopped_and_restarted_under_load(tmp_path, random_tagger_dir, random_dialog_dirs):
    models = models_tree(tmp_path, random_tagger_dir, random_dialog_dirs)
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    redis_process, redis_port = start_redis(redis_dir, persistent=True)
    port = free_port()
    process, log = start(tmp_path, {"PORT": str(port), "SEQTAG_MODELS_DIR": str(models), "SEQTAG_WORKERS": "2",
                                    "SEQTAG_THREADS": "4", "SEQTAG_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
                                    "SEQTAG_REDIS_TIMEOUT_SECONDS": "1", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    try:
        wait_until(lambda: call(port, "/readyz")[0] == 200, 120, "readiness", process)
        traffic = Traffic(port, taggers=2, sessions=16, turns=30, pause=0.05).start()
        wait_until(lambda: all(len(a) >= 3 for a in traffic.answers), 60, "sessions under way")
        redis_process.terminate()  # SIGTERM: Redis stops (its append-only file is fsynced on every write)
        redis_process.wait(timeout=30)
        stopped_at = time.monotonic()
        # While it is down: the dialog routes answer 503 with Retry-After and change nothing; tagging works.
        time.sleep(1.0)
        outage = {"create": send(port, "POST", "/v1/dialogs", {"model": "dialog-act"}),
                  "show": send(port, "GET", f"/v1/dialogs/{traffic.session_ids[0]}"),
                  "tag": send(port, "POST", "/v1/models/pos:tag", {"sentences": [["A", "dog", "."]]}),
                  "ready": send(port, "GET", "/readyz"), "metrics": send(port, "GET", "/metrics")}
        time.sleep(2.0)
        turns_when_stopped = sum(len(a) for a in traffic.answers)
        restarting_at = time.monotonic()
        redis_process, _ = start_redis(redis_dir, port=redis_port, persistent=True)  # same files, same port
        traffic.wait_for_conversations(120)
        traffic.stop()
        after = [call(port, f"/v1/dialogs/{session_id}") for session_id in traffic.session_ids]
        assert process.poll() is None
    finally:
        stop(process, log)
        redis_process.terminate()
        redis_process.wait(timeout=30)

    for name in ("create", "show"):
        outcome, _, headers = outage[name]
        assert (outcome.status, outcome.code) == (503, "sessions_unavailable") and headers["Retry-After"] == "1", name
    assert [outage[name][0].status for name in ("tag", "ready", "metrics")] == [200, 200, 200]
    assert not traffic.errors, traffic.errors[:3]
    assert all(o.status == 200 for o in traffic.tag_outcomes), [o for o in traffic.tag_outcomes if o.status != 200][:3]
    # Sent and answered while Redis was down.
    during = [o for o in traffic.turn_outcomes if stopped_at <= o.started and o.started + o.seconds < restarting_at]
    assert during and all((o.status, o.code) == (503, "sessions_unavailable") for o in during), during[:3]
    # Every session came back from Redis's files with its turns, and went on: the offline model's answers.
    assert all(status == 200 and view["turn"] == 30 for status, view in after), after
    traffic.check_against_offline(models / "dialog-act" / "1")
    assert "Traceback" not in server_log(tmp_path)
    unavailable = [o.seconds for o in traffic.turn_outcomes if o.status == 503]
    record("fault-redis-restart", 31, "Redis stopped (SIGTERM) for 3 s and started again on its append-only file, "
           "under load: 16 sessions streaming turns, tag requests",
           f"{len(traffic.turn_outcomes):,} turn requests ({len(unavailable)} during the outage), "
           f"{len(traffic.tag_outcomes):,} tag requests",
           "0: turns answered 503 sessions_unavailable (Retry-After) meanwhile, sent again and taken once; "
           "all 16 sessions back; tagging 100 % answered",
           f"503 in p50 {1000 * percentile(unavailable, 0.5):.0f} ms, p99 {1000 * percentile(unavailable, 0.99):.0f} ms; "
           f"{turns_when_stopped} turns answered before the restart, all {sum(len(a) for a in traffic.answers)} after")


def test_corrupt_half_copied_and_deleted_versions(tmp_path, random_tagger_dir, random_dialog_dirs):
    models = models_tree(tmp_path, random_tagger_dir, random_dialog_dirs)
    port = free_port()
    process, log = start(tmp_path, {"PORT": str(port), "SEQTAG_MODELS_DIR": str(models), "SEQTAG_THREADS": "8",
                                    "SEQTAG_POLL_INTERVAL_SECONDS": "0.3", "SEQTAG_KEEP_VERSIONS": "2",
                                    "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})

    def versions(name):
        return {v["version"]: v["state"] for v in call(port, f"/v1/models/{name}")[1]["versions"]}

    def served_version():
        return call(port, "/v1/models/pos:tag", {"sentences": [["A", "dog", "."]]})[1]["model"]["version"]

    try:
        wait_until(lambda: call(port, "/readyz")[0] == 200, 120, "readiness", process)
        traffic = Traffic(port, taggers=4, sessions=0, turns=0).start()
        # A corrupt version: the variables are garbage. Rejected; version 1 serves on.
        corrupt = models / "pos" / "2"
        shutil.copytree(random_tagger_dir, corrupt)
        for path in (corrupt / "variables").glob("variables.data-*"):
            path.write_bytes(os.urandom(path.stat().st_size))
        wait_until(lambda: versions("pos").get(2) == "REJECTED", 60, "the corrupt version rejected", process)
        assert served_version() == 1
        # A half-copied version: the graph is there, the weights not yet. Not served; once the copy
        # completes (its files change), it is tried again, loads, and serves.
        half = models / "pos" / "3"
        half.mkdir()
        shutil.copy2(random_tagger_dir / "saved_model.pb", half / "saved_model.pb")
        shutil.copy2(random_tagger_dir / "metadata.json", half / "metadata.json")
        wait_until(lambda: versions("pos").get(3) == "REJECTED", 60, "the half-copied version rejected", process)
        assert served_version() == 1
        for item in random_tagger_dir.iterdir():
            if not (half / item.name).exists():
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, half / item.name)
        wait_until(lambda: served_version() == 3, 60, "the completed copy to serve", process)
        # A version deleted while sessions use it: their turns get 409, reset moves them to the serving version.
        session_id = call(port, "/v1/dialogs", {"model": "dialog-act"})[1]["session_id"]
        assert call(port, f"/v1/dialogs/{session_id}/turns", {"text": "Hi there.", "speaker": "A"})[0] == 200
        shutil.copytree(random_dialog_dirs["dialog-act"], models / "dialog-act" / "2")
        wait_until(lambda: versions("dialog-act").get(2) == "AVAILABLE", 60, "dialog-act version 2", process)
        assert call(port, f"/v1/dialogs/{session_id}/turns", {"text": "Still on one.", "speaker": "B"})[1]["turn"] == 2
        shutil.rmtree(models / "dialog-act" / "1")
        wait_until(lambda: 1 not in versions("dialog-act"), 60, "version 1 unloaded", process)
        gone = call(port, f"/v1/dialogs/{session_id}/turns", {"text": "Hello?", "speaker": "A"})
        assert gone[0] == 409 and gone[1]["error"]["code"] == "version_unloaded"
        assert call(port, f"/v1/dialogs/{session_id}")[1]["turn"] == 2  # the refused turn changed nothing
        reset = call(port, f"/v1/dialogs/{session_id}/reset", {})
        assert reset[0] == 200 and reset[1]["model"]["version"] == 2
        assert call(port, f"/v1/dialogs/{session_id}/turns", {"text": "Hello?", "speaker": "A"})[1]["turn"] == 1
        traffic.stop()
        assert process.poll() is None
    finally:
        stop(process, log)
    assert not traffic.errors, traffic.errors[:3]
    failed = [o for o in traffic.tag_outcomes if o.status != 200]
    assert not failed, failed[:3]
    log_text = server_log(tmp_path)
    assert "rejected pos/2" in log_text and "rejected pos/3" in log_text and "Traceback" not in log_text
    record("fault-versions", 32, "Model versions gone wrong under tag load: a corrupt one (random weights file), "
           "a half-copied one (graph without weights, then completed), a version deleted under a live session",
           f"{len(traffic.tag_outcomes):,} tag requests meanwhile",
           "0 failed requests; corrupt and half-copied versions rejected, version 1 serving; the completed copy "
           "served; the deleted version's session got 409 version_unloaded, then reset onto version 2",
           "")

"""Several hosts behind a real HAProxy, sharing a real Redis: dialog sessions stream SwDA val conversations through
the load balancer while one host is killed, and every session's answers equal the offline model's, with no turn lost
or applied twice (the client retries a failed turn with its ``turn`` number, as docs/deployment.md shows)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from training.dialog.data import read_dialogs
from training.dialog.saved_dialog import DialogTurnInput, SavedDialogModel

from conftest import DATA, REPO
from test_gunicorn import free_port, wait_until
from test_gunicorn_sessions import start, stop

SESSIONS, TURNS = 32, 8


def haproxy_binary() -> str:
    binary = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("haproxy is not installed (.ci/run installs it)")
        pytest.skip("haproxy is not installed: apt-get install haproxy")
    return binary


def request(port: int, method: str, path: str, body: dict | None = None,
            key: str | None = None) -> tuple[int | None, dict | None]:
    """(status, JSON answer) through one fresh connection, with the API key ``key`` if given; (None, None) when the
    connection fails, and the JSON is None when the answer is not JSON (HAProxy's own 502 and 503 pages)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    try:
        connection.request(method, path, json.dumps(body) if body is not None else None, headers)
        response = connection.getresponse()
        payload = response.read()
    except (OSError, http.client.HTTPException):
        return None, None
    finally:
        connection.close()
    try:
        return response.status, json.loads(payload)
    except ValueError:
        return response.status, None


def send_turn(port: int, session_id: str, number: int, body: dict, deadline: float) -> tuple[dict, int]:
    """The client's loop: the turn with its number, sent again on a failed connection or a 502/503/504 until it is
    answered (the service applies a numbered turn once and answers a repeat again). -> (answer, tries)."""
    tries = 0
    while True:
        tries += 1
        status, answer = request(port, "POST", f"/v1/dialogs/{session_id}/turns", {**body, "turn": number})
        if status == 200:
            return answer, tries
        if status not in (None, 502, 503, 504) or time.monotonic() > deadline:
            raise AssertionError(f"turn {number} of {session_id}: {status} {answer}")
        time.sleep(min(0.05 * tries, 0.5))


def start_fleet(tmp_path, models: dict[str, Path], redis_url: str, **settings: str):
    """Hosts a and b, each with its own models directory holding ``models`` (name -> version directory) as version 1
    (as on its own machine), sessions in ``redis_url``, behind HAProxy with the repository's configuration, all
    starting (wait for readiness with ``wait_for_fleet``) -> (hosts [(process, log, port)], HAProxy's process, its
    port)."""
    binary = haproxy_binary()
    hosts = []
    for name in ("a", "b"):
        for model, version_dir in models.items():
            shutil.copytree(version_dir, tmp_path / name / "models" / model / "1")
        port = free_port()
        process, log = start(tmp_path / name, {"PORT": str(port), "SEQTAG_MODELS_DIR": str(tmp_path / name / "models"),
                                               "SEQTAG_THREADS": "8", "SEQTAG_REDIS_URL": redis_url, **settings})
        hosts.append((process, log, port))
    lb_port = free_port()
    env = {**os.environ, "SEQTAG_LB_BIND": f"127.0.0.1:{lb_port}", "SEQTAG_HOST_A": f"127.0.0.1:{hosts[0][2]}",
           "SEQTAG_HOST_B": f"127.0.0.1:{hosts[1][2]}"}
    balancer = subprocess.Popen([binary, "-db", "-f", str(REPO / "service" / "haproxy.cfg")], env=env,
                                stdout=subprocess.DEVNULL, stderr=open(tmp_path / "haproxy.log", "w"))
    return hosts, balancer, lb_port


def wait_for_fleet(hosts, lb_port: int) -> None:
    for process, _, port in hosts:
        wait_until(lambda: request(port, "GET", "/readyz")[0] == 200, 120, "a host's readiness", process)
    wait_until(lambda: all(request(lb_port, "GET", "/readyz")[0] == 200 for _ in range(4)), 30, "the balancer")


def stop_fleet(hosts, balancer) -> None:
    balancer.terminate()
    balancer.wait(timeout=10)
    for process, log, _ in hosts:
        stop(process, log)


def test_a_host_killed_mid_stream_loses_no_turn_and_applies_none_twice(tmp_path, random_dialog_dirs, redis_url):
    hosts, balancer, lb_port = start_fleet(tmp_path, {"dialog-act": random_dialog_dirs["dialog-act"]}, redis_url)
    conversations = [dialog.turns[start:start + TURNS] for dialog in read_dialogs(DATA / "swda" / "val", "swda")
                     for start in range(0, 4 * TURNS, TURNS)][:SESSIONS]
    assert len(conversations) == SESSIONS
    answers: list[list[dict]] = [[] for _ in range(SESSIONS)]
    session_ids: list[str | None] = [None] * SESSIONS
    tries, failures = [], []
    answered = threading.Semaphore(0)
    try:
        wait_for_fleet(hosts, lb_port)
        deadline = time.monotonic() + 120

        def converse(i: int) -> None:
            try:
                status, session = request(lb_port, "POST", "/v1/dialogs", {"model": "dialog-act"})
                assert status == 201, (status, session)
                session_ids[i] = session["session_id"]
                for number, turn in enumerate(conversations[i], start=1):
                    answer, count = send_turn(lb_port, session["session_id"], number,
                                              {"text": turn.text, "speaker": turn.speaker}, deadline)
                    answers[i].append(answer)
                    tries.append(count)
                    answered.release()
            except AssertionError as error:
                failures.append((i, str(error)))

        threads = [threading.Thread(target=converse, args=(i,)) for i in range(SESSIONS)]
        for thread in threads:
            thread.start()
        for _ in range(SESSIONS * TURNS // 3):  # a third of the turns answered: host a dies, its worker mid-turn
            answered.acquire(timeout=60)
        killed_after = sum(len(a) for a in answers)  # turns answered when host a died
        os.killpg(hosts[0][0].pid, signal.SIGKILL)
        for thread in threads:
            thread.join(timeout=180)
        assert not failures, failures[:3]

        model = SavedDialogModel(tmp_path / "a" / "models" / "dialog-act" / "1")
        offline = model.predict([[DialogTurnInput([t.text for t in model.tokenizer.tokenize(turn.text)], turn.speaker)
                                  for turn in conversation] for conversation in conversations])
        for i, (conversation, expected) in enumerate(zip(conversations, offline)):
            assert [a["turn"] for a in answers[i]] == list(range(1, len(conversation) + 1))
            scores = np.array([[a["scores"][label] for label in model.labels] for a in answers[i]])
            np.testing.assert_allclose(scores, expected, atol=2e-6)  # 1e-5 and better: scores are rounded to 6 places
            shown = request(lb_port, "GET", f"/v1/dialogs/{session_ids[i]}")[1]
            assert shown["turn"] == len(conversation)  # no turn lost, none applied twice
        assert 0 < killed_after < SESSIONS * TURNS
        assert hosts[1][0].poll() is None  # the other host served on
        print(f"host a killed after {killed_after} of {SESSIONS * TURNS} turns; {sum(t > 1 for t in tries)} turns "
              f"needed a retry (at most {max(tries)} tries)")
    finally:
        stop_fleet(hosts, balancer)


def test_a_rolling_upgrade_keeps_sessions_on_their_version_and_fails_no_request(tmp_path, random_dialog_dirs,
                                                                                 redis_url):
    """Version 2 is published on host a, then on host b, while sessions stream through HAProxy. New sessions start
    on version 2 only once both hosts have it ("safe": every live worker has it loaded, service.fleet); until then
    on version 1, so no host ever lacks a session's version (no 409). Sessions keep their version to the end on
    either host, and no request fails."""
    hosts, balancer, lb_port = start_fleet(tmp_path, {"dialog-act": random_dialog_dirs["dialog-act"]}, redis_url,
                                           SEQTAG_POLL_INTERVAL_SECONDS="0.3")
    texts = [turn.text for dialog in read_dialogs(DATA / "swda" / "val", "swda")[:2] for turn in dialog.turns]
    failures, started_on, stop_streaming = [], {}, threading.Event()

    def stream(i: int) -> None:  # one session after another, each 6 turns, until told to stop
        while not stop_streaming.is_set():
            status, session = request(lb_port, "POST", "/v1/dialogs", {"model": "dialog-act"})
            if status != 201:
                failures.append(("open", status, session))
                return
            started_on[session["session_id"]] = session["model"]["version"]
            for number in range(1, 7):
                status, answer = request(lb_port, "POST", f"/v1/dialogs/{session['session_id']}/turns",
                                         {"text": texts[(7 * i + number) % len(texts)], "speaker": "AB"[number % 2],
                                          "turn": number})
                if status != 200:
                    failures.append(("turn", status, answer))
                    return
            status, shown = request(lb_port, "GET", f"/v1/dialogs/{session['session_id']}")
            if status != 200 or shown["model"]["version"] != started_on[session["session_id"]] or shown["turn"] != 6:
                failures.append(("end", status, shown))
                return

    def new_session_version() -> int:
        status, session = request(lb_port, "POST", "/v1/dialogs", {"model": "dialog-act"})
        assert status == 201, (status, session)
        return session["model"]["version"]

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(8)]
    try:
        wait_for_fleet(hosts, lb_port)
        for thread in threads:
            thread.start()
        shutil.copytree(random_dialog_dirs["dialog-act"], tmp_path / "a" / "models" / "dialog-act" / "2")
        wait_until(lambda: request(hosts[0][2], "GET", "/v1/models/dialog-act")[1]["serving_version"] == 2, 60,
                   "host a to serve version 2", hosts[0][0])
        time.sleep(1.0)  # several publications of host a's record: host b still lacks version 2
        assert {new_session_version() for _ in range(12)} == {1}  # not safe yet, on either host
        shutil.copytree(random_dialog_dirs["dialog-act"], tmp_path / "b" / "models" / "dialog-act" / "2")
        wait_until(lambda: all(new_session_version() == 2 for _ in range(6)), 60, "new sessions on version 2")
        time.sleep(1.0)  # sessions of both versions streaming over both hosts
        stop_streaming.set()
        for thread in threads:
            thread.join(timeout=60)
        assert not failures, failures[:3]
        assert set(started_on.values()) == {1, 2}  # the streams crossed the upgrade
    finally:
        stop_streaming.set()
        stop_fleet(hosts, balancer)


# --- service schemas and API keys across hosts ------------------------------------------------------------------

KEYS = {"chatbot": "chatbot-key-0123456789abcdef", "ops": "ops-key-0123456789abcdef0123"}


def test_a_service_registered_through_one_host_is_served_by_every_host(tmp_path, schema_model_dir, random_dialog_dirs,
                                                                      redis_url):
    """Both hosts carry the same API keys and a schema-guided span model, sharing one Redis (its database 3, so
    nothing here reaches the other tests). A schema registered through HAProxy is answered by each host at once, in
    its own slot names; replaced through host b, host a answers in the new names at its next request; deleted,
    neither knows it. A session opened on host a with one key streams on host b and stays hidden from another key
    there. Every host reports one API key configuration across the fleet."""
    from test_schema_guided import POTTERY, POTTERY_SPAN_TAGS

    chatbot, ops = KEYS["chatbot"], KEYS["ops"]
    hosts, balancer, lb_port = start_fleet(
        tmp_path, {"slots": schema_model_dir, "dialog-action": random_dialog_dirs["dialog-action"]},
        redis_url.rsplit("/", 1)[0] + "/3", SEQTAG_API_KEYS=",".join(f"{n}:{k}" for n, k in KEYS.items()),
        SEQTAG_WORKERS="1")
    ports = [port for _, _, port in hosts]
    sentence = {"texts": ["Fire it at 1200 degrees with a blue glaze."], "service": "Pottery_1", "top_k": 2}
    try:
        wait_for_fleet(hosts, lb_port)
        assert request(lb_port, "PUT", "/v1/services/Pottery_1", POTTERY)[0] == 401  # keys on: no key, no write
        for port in ports:
            status, answer = request(port, "POST", "/v1/models/slots:tag", sentence, chatbot)
            assert status == 404 and answer["error"]["code"] == "unknown_service", answer

        status, registered = request(lb_port, "PUT", "/v1/services/Pottery_1", POTTERY, chatbot)
        assert status == 201, registered
        tagged = []
        for port in ports:  # no waiting: each host reads the registration at its next request
            status, shown = request(port, "GET", "/v1/services/Pottery_1", key=ops)  # services are not per key
            assert status == 200 and shown["source"] == "registered" and shown["digest"] == registered["digest"]
            status, answer = request(port, "POST", "/v1/models/slots:tag", sentence, chatbot)
            assert status == 200, answer
            assert {k["tag"] for token in answer["results"][0]["top_k"] for k in token} <= POTTERY_SPAN_TAGS
            tagged.append(answer["results"])
        assert tagged[0] == tagged[1]  # the same model and schema: the same answer on either host

        status, session = request(ports[0], "POST", "/v1/dialogs", {"model": "dialog-action", "slots": "slots"},
                                  chatbot)
        assert status == 201, session
        turn = {"text": "Fire it at 1200 degrees with a blue glaze", "speaker": "USER", "service": "Pottery_1"}
        status, answer = request(ports[1], "POST", f"/v1/dialogs/{session['session_id']}/turns", {**turn, "turn": 1},
                                 chatbot)
        assert status == 200 and all(s["label"] in {"kiln_temperature", "glaze_color"} for s in answer["slots"])
        status, hidden = request(ports[1], "GET", f"/v1/dialogs/{session['session_id']}", key=ops)
        assert status == 404 and hidden["error"]["code"] == "session_not_found"  # another key's session

        renamed = json.loads(json.dumps(POTTERY).replace("glaze_color", "glaze_shade"))
        status, replaced = request(ports[1], "PUT", "/v1/services/Pottery_1", renamed, ops)
        assert status == 200 and replaced["digest"] != registered["digest"]
        status, answer = request(ports[0], "POST", "/v1/models/slots:tag", sentence, chatbot)
        new_tags = {tag.replace("glaze_color", "glaze_shade") for tag in POTTERY_SPAN_TAGS}
        shown = {k["tag"] for token in answer["results"][0]["top_k"] for k in token}
        assert status == 200 and shown <= new_tags and any("glaze_shade" in tag for tag in shown), shown
        status, answer = request(ports[0], "POST", f"/v1/dialogs/{session['session_id']}/turns", {**turn, "turn": 2},
                                 chatbot)
        assert status == 200 and all(s["label"] in {"kiln_temperature", "glaze_shade"} for s in answer["slots"])

        assert request(lb_port, "DELETE", "/v1/services/Pottery_1", key=chatbot)[0] == 204
        for port in ports:
            status, answer = request(port, "POST", "/v1/models/slots:tag", sentence, chatbot)
            assert status == 404 and answer["error"]["code"] == "unknown_service", answer
            status, answer = request(port, "POST", f"/v1/dialogs/{session['session_id']}/turns",
                                     {**turn, "turn": 3}, chatbot)
            assert status == 404 and answer["error"]["code"] == "unknown_service", answer
        assert request(lb_port, "GET", f"/v1/dialogs/{session['session_id']}", key=chatbot)[1]["turn"] == 2

        for port in ports:  # both hosts were given the same keys: one configuration across the fleet
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/metrics", headers={"Authorization": f"Bearer {ops}"})
            scraped = connection.getresponse().read().decode()
            connection.close()
            assert "seqtag_fleet_api_key_configs 1.0" in scraped
    finally:
        stop_fleet(hosts, balancer)


def test_hosts_with_different_api_keys_are_counted_and_logged(redis_url, caplog):
    """The fleet's records carry each worker's key fingerprint: a host given other keys shows as a second
    configuration (and a warning) until it leaves; a record from before the fingerprint still counts its versions."""
    import logging

    import redis

    from service.auth import ApiKeys
    from service.fleet import Fleet

    client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/4")
    client.flushdb()
    same = ApiKeys(f"chatbot:{KEYS['chatbot']}").fingerprint()
    assert same == ApiKeys(f"chatbot:{KEYS['chatbot']}").fingerprint()
    assert len({same, ApiKeys(f"chatbot:{KEYS['ops']}").fingerprint(), ApiKeys(f"bot:{KEYS['chatbot']}").fingerprint(),
                ApiKeys(f"chatbot:{KEYS['chatbot']}").fingerprint({"chatbot": {"max_sentences": 5}})}) == 4
    assert KEYS["chatbot"] not in same
    first, second = (Fleet(client, 0.0, cache_seconds=0.0, api_keys=same) for _ in range(2))
    second.key += ":second"  # another worker
    other = Fleet(client, 0.0, cache_seconds=0.0, api_keys=ApiKeys(f"chatbot:{KEYS['ops']}").fingerprint())
    other.key += ":other"
    try:
        with caplog.at_level(logging.INFO, logger="service.fleet"):
            first.publish({"dialog-act": [1, 2]})
            second.publish({"dialog-act": [1, 2]})
            assert first.api_key_configs() == 1 and not caplog.records
            other.publish({"dialog-act": [2]})
            first.publish({"dialog-act": [1, 2]})
            assert first.api_key_configs() == 2
            assert "2 different API key configurations" in caplog.records[-1].getMessage()
            other.withdraw()
            first.publish({"dialog-act": [1, 2]})
            assert first.api_key_configs() == 1 and "agree" in caplog.records[-1].getMessage()
        assert first.shared_versions("dialog-act") == {1, 2}
        client.set("seqtag:fleet:old-host:1", json.dumps({"dialog-act": [1]}))  # an older seqtag's record
        assert first.shared_versions("dialog-act") == {1} and first.api_key_configs() == 1  # it holds version 2 back
    finally:
        client.flushdb()
        client.close()

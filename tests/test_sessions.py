"""Dialog sessions over HTTP (Flask test client), the same suite against both session stores.

The Redis store runs against a real ``redis-server`` started by the ``redis_url`` fixture.
"""

import shutil
import threading
import time

import numpy as np
import pytest

from service import create_app
from training.dialog.saved_dialog import DialogTurnInput, SavedDialogModel

CONVERSATION = [("A", "Do you have any pets?"), ("B", "Yes, two cats."), ("A", "Oh, nice."), ("B", "Uh-huh."),
                ("A", "What are their names?")]


def make_models_dir(root, random_dialog_dirs, random_tagger_dir):
    shutil.copytree(random_dialog_dirs["dialog-act"], root / "dialog-act" / "1")
    shutil.copytree(random_dialog_dirs["dialog-action"], root / "dialog-action" / "1")
    shutil.copytree(random_tagger_dir, root / "pos" / "1")
    return root


def make_app(backend, models_dir, request, **settings):
    config = {"models_dir": str(models_dir), "poll_interval_seconds": 0, "keep_versions": 1, "keep_dialog_versions": 1,
              **settings}
    if backend == "redis":
        config["redis_url"] = request.getfixturevalue("redis_url")
    return create_app(config)


def close(app):
    app.extensions["seqtag.registry"].close()
    app.extensions["seqtag.sessions"].close()


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, random_dialog_dirs, random_tagger_dir):
    """Shared by the tests that only read it (the version test makes its own)."""
    return make_models_dir(tmp_path_factory.mktemp("models"), random_dialog_dirs, random_tagger_dir)


@pytest.fixture(scope="module", params=["memory", "redis"])
def backend(request):
    return request.param


@pytest.fixture(scope="module")
def app(backend, models_dir, request):
    app = make_app(backend, models_dir, request)
    yield app
    close(app)


@pytest.fixture
def client(app):
    return app.test_client()


def open_session(client, model="dialog-act", **extra):
    response = client.post("/v1/dialogs", json={"model": model, **extra})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def offline_probabilities(directory, conversation, previous=None):
    """The ``serve`` signature on the whole conversation: what each streamed turn must give."""
    model = SavedDialogModel(directory)
    turns = [DialogTurnInput([t.text for t in model.tokenizer.tokenize(text)], speaker, (previous or {}).get(i))
             for i, (speaker, text) in enumerate(conversation)]
    return model.predict([turns])[0], model.labels


def test_open_stream_and_match_the_offline_model(client, models_dir):
    session = open_session(client)
    assert session["turn"] == 0 and session["model"] == {"name": "dialog-act", "version": 1}
    assert len(session["session_id"]) >= 32  # token_urlsafe(24): 192 random bits
    expected, labels = offline_probabilities(models_dir / "dialog-act" / "1", CONVERSATION)
    for n, (speaker, text) in enumerate(CONVERSATION, start=1):
        answer = client.post(f"/v1/dialogs/{session['session_id']}/turns", json={"text": text, "speaker": speaker}).get_json()
        assert answer["turn"] == n and answer["label"] in labels
        assert answer["label_name"] is None  # this tiny model's metadata names no labels (the shipped one does)
        scores = np.array([answer["scores"][label] for label in labels])
        np.testing.assert_allclose(scores, expected[n - 1], atol=2e-6)  # scores are rounded to 6 places
        assert answer["label"] == labels[int(np.argmax(expected[n - 1]))]
    shown = client.get(f"/v1/dialogs/{session['session_id']}").get_json()
    assert shown["turn"] == len(CONVERSATION) and shown["model"]["version"] == 1
    assert shown["last_active"] >= shown["created"]


def test_reset_starts_over_and_reproduces_the_first_turn(client):
    session_id = open_session(client)["session_id"]
    first = client.post(f"/v1/dialogs/{session_id}/turns", json={"tokens": ["Hi", "there", "."], "speaker": "A"}).get_json()
    second = client.post(f"/v1/dialogs/{session_id}/turns", json={"tokens": ["Hi", "there", "."], "speaker": "A"}).get_json()
    assert second["scores"] != first["scores"]  # the state moved on
    reset = client.post(f"/v1/dialogs/{session_id}/reset")
    assert reset.status_code == 200 and reset.get_json()["turn"] == 0
    again = client.post(f"/v1/dialogs/{session_id}/turns", json={"tokens": ["Hi", "there", "."], "speaker": "A"}).get_json()
    assert again == first


def test_sessions_do_not_mix(client):
    a, b = open_session(client)["session_id"], open_session(client)["session_id"]
    assert a != b
    client.post(f"/v1/dialogs/{a}/turns", json={"text": "Some long opening statement.", "speaker": "A"})
    first_b = client.post(f"/v1/dialogs/{b}/turns", json={"tokens": ["Hi", "."], "speaker": "A"}).get_json()
    fresh = open_session(client)["session_id"]
    first_fresh = client.post(f"/v1/dialogs/{fresh}/turns", json={"tokens": ["Hi", "."], "speaker": "A"}).get_json()
    assert first_b == first_fresh and client.get(f"/v1/dialogs/{a}").get_json()["turn"] == 1


def test_concurrent_turns_to_one_session_are_applied_one_after_the_other(client):
    session_id = open_session(client)["session_id"]
    turns, errors = [], []

    def talk():
        for _ in range(5):
            response = client.post(f"/v1/dialogs/{session_id}/turns", json={"tokens": ["yeah", "."], "speaker": "B"})
            (turns if response.status_code == 200 else errors).append(response.get_json().get("turn"))

    threads = [threading.Thread(target=talk) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and sorted(turns) == list(range(1, 31))
    assert client.get(f"/v1/dialogs/{session_id}").get_json()["turn"] == 30


def test_a_numbered_turn_sent_again_is_answered_again_and_taken_once(client):
    """``"turn": N`` makes a retry safe: after a timeout or a 503 the client cannot know whether its turn was
    taken; sent again, it gets the first answer, and the state moves on once."""
    session_id = open_session(client)["session_id"]
    path = f"/v1/dialogs/{session_id}/turns"
    first = client.post(path, json={"text": "Do you have any pets?", "speaker": "A", "turn": 1})
    assert first.status_code == 200 and first.get_json()["turn"] == 1
    again = client.post(path, json={"text": "Do you have any pets?", "speaker": "A", "turn": 1})
    assert again.status_code == 200 and again.get_json() == first.get_json()
    assert client.get(f"/v1/dialogs/{session_id}").get_json()["turn"] == 1
    # Turn 1 again with other words is not a retry; a number from the past or the future is not the next turn.
    for body in ({"text": "Something else.", "speaker": "A", "turn": 1}, {"text": "Hi.", "turn": 3},
                 {"tokens": ["Do", "you", "have", "any", "pets", "?"], "speaker": "B", "turn": 1}):
        response = client.post(path, json=body)
        assert response.status_code == 409, body
        error = response.get_json()["error"]
        assert error["code"] == "turn_mismatch" and "at turn 1" in error["message"]
    second = client.post(path, json={"text": "Yes, two cats.", "speaker": "B", "turn": 2}).get_json()
    assert second["turn"] == 2 and client.get(f"/v1/dialogs/{session_id}").get_json()["turn"] == 2
    # The same turns without numbers in a fresh session: the same answers (the retry changed no state).
    fresh = open_session(client)["session_id"]
    client.post(f"/v1/dialogs/{fresh}/turns", json={"text": "Do you have any pets?", "speaker": "A"})
    assert client.post(f"/v1/dialogs/{fresh}/turns", json={"text": "Yes, two cats.", "speaker": "B"}).get_json() == second
    # After a reset there is no last turn to repeat: turn 1 is the next one again.
    client.post(f"/v1/dialogs/{session_id}/reset")
    assert client.post(path, json={"text": "Do you have any pets?", "speaker": "A", "turn": 1}).get_json() == first.get_json()


def test_action_model_takes_the_systems_actions(client, models_dir):
    session = open_session(client, "dialog-action")
    labels = SavedDialogModel(models_dir / "dialog-action" / "1").labels
    path = f"/v1/dialogs/{session['session_id']}/turns"
    answer = client.post(path, json={"text": "I need a table for two.", "speaker": "USER"}).get_json()
    assert answer["turn"] == 1 and set(answer["labels"]) <= set(labels) and set(answer["scores"]) == set(labels)
    done = client.post(path, json={"text": "At 7 pm.", "speaker": "USER", "system_actions": ["REQUEST(time)"]})
    assert done.status_code == 200 and done.get_json()["turn"] == 2
    # The posted actions reach the model: the same turn after other actions scores differently.
    other = open_session(client, "dialog-action")["session_id"]
    client.post(f"/v1/dialogs/{other}/turns", json={"text": "I need a table for two.", "speaker": "USER"})
    changed = client.post(f"/v1/dialogs/{other}/turns", json={"text": "At 7 pm.", "speaker": "USER",
                                                              "system_actions": ["GOODBYE", "NOTIFY_SUCCESS"]}).get_json()
    assert changed["scores"] != done.get_json()["scores"]
    bad = client.post(path, json={"text": "x", "system_actions": ["NOT_AN_ACTION(x)"]})
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "unknown_action"
    assert client.get(f"/v1/dialogs/{session['session_id']}").get_json()["turn"] == 2  # the failed turn changed nothing


@pytest.mark.parametrize("method, path, body, status, code", [
    ("post", "/v1/dialogs", {"model": "pos"}, 400, "not_a_dialog_model"),
    ("post", "/v1/dialogs", {"model": "nope"}, 404, "model_not_found"),
    ("post", "/v1/dialogs", {"model": "dialog-act", "version": 7}, 404, "version_not_found"),
    ("post", "/v1/dialogs", {"model": "dialog-act", "extra": 1}, 400, "invalid_request"),
    ("post", "/v1/dialogs", {}, 400, "invalid_request"),
    ("post", "/v1/dialogs/unknown-id/turns", {"text": "hi"}, 404, "session_not_found"),
    ("post", "/v1/dialogs/unknown-id/reset", None, 404, "session_not_found"),
    ("get", "/v1/dialogs/unknown-id", None, 404, "session_not_found"),
    ("delete", "/v1/dialogs/unknown-id", None, 404, "session_not_found"),
])
def test_bad_requests_get_their_4xx(client, method, path, body, status, code):
    response = getattr(client, method)(path, json=body) if body is not None else getattr(client, method)(path)
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code


@pytest.mark.parametrize("body, code", [
    ({"text": "hi", "tokens": ["hi"]}, "invalid_request"),
    ({}, "invalid_request"),
    ({"tokens": ["ok", 3]}, "invalid_request"),
    ({"tokens": []}, "invalid_request"),
    ({"tokens": [" "]}, "invalid_token"),
    ({"text": "x" * 6000}, "text_too_long"),
    ({"text": "hi", "system_actions": ["GOODBYE"]}, "invalid_request"),  # the act model takes no actions
    ({"text": "hi", "turn": 0}, "invalid_request"),
    ({"text": "hi", "turn": "1"}, "invalid_request"),
])
def test_bad_turns_get_a_400_and_change_nothing(client, body, code):
    session_id = open_session(client)["session_id"]
    response = client.post(f"/v1/dialogs/{session_id}/turns", json=body)
    assert response.status_code == 400 and response.get_json()["error"]["code"] == code
    assert client.get(f"/v1/dialogs/{session_id}").get_json()["turn"] == 0
    wrong_type = client.post(f"/v1/dialogs/{session_id}/turns", data="text=hi", content_type="text/plain")
    assert wrong_type.status_code == 415


def test_delete(client):
    session_id = open_session(client)["session_id"]
    assert client.delete(f"/v1/dialogs/{session_id}").status_code == 204
    assert client.post(f"/v1/dialogs/{session_id}/turns", json={"text": "hi"}).status_code == 404


def test_live_sessions_keep_their_version_until_it_is_unloaded(backend, tmp_path, random_dialog_dirs, random_tagger_dir,
                                                               request):
    models_dir = make_models_dir(tmp_path / "models", random_dialog_dirs, random_tagger_dir)
    app = make_app(backend, models_dir, request)
    client = app.test_client()
    old = open_session(client)["session_id"]
    client.post(f"/v1/dialogs/{old}/turns", json={"text": "Hello.", "speaker": "A"})
    shutil.copytree(random_dialog_dirs["dialog-act"], models_dir / "dialog-act" / "2")
    app.extensions["seqtag.registry"].refresh()  # keep_dialog_versions=1: version 1 is unloaded
    new = open_session(client)
    assert new["model"]["version"] == 2
    stale = client.post(f"/v1/dialogs/{old}/turns", json={"text": "Still there?", "speaker": "A"})
    assert stale.status_code == 409 and "reset" in stale.get_json()["error"]["message"]
    assert client.get(f"/v1/dialogs/{old}").get_json()["turn"] == 1  # the refused turn changed nothing
    reset = client.post(f"/v1/dialogs/{old}/reset").get_json()
    assert reset["model"]["version"] == 2 and reset["turn"] == 0
    assert client.post(f"/v1/dialogs/{old}/turns", json={"text": "Still there?", "speaker": "A"}).status_code == 200
    close(app)


def test_in_process_store_evicts_the_least_recently_active(models_dir, backend, request):
    if backend != "memory":
        pytest.skip("the in-process store's own limit")
    app = make_app(backend, models_dir, request, max_sessions=2)
    client = app.test_client()
    first, second = open_session(client)["session_id"], open_session(client)["session_id"]
    client.post(f"/v1/dialogs/{first}/turns", json={"text": "hi"})  # first is now the most recent
    open_session(client)
    assert client.get(f"/v1/dialogs/{second}").status_code == 404
    assert client.get(f"/v1/dialogs/{first}").status_code == 200
    close(app)


def test_idle_sessions_expire(backend, models_dir, request):
    app = make_app(backend, models_dir, request, session_ttl_seconds=0.3)
    client = app.test_client()
    session_id = open_session(client)["session_id"]
    assert client.get(f"/v1/dialogs/{session_id}").status_code == 200
    time.sleep(0.6)
    assert client.get(f"/v1/dialogs/{session_id}").status_code == 404
    close(app)


def test_turns_of_different_sessions_share_step_calls(backend, models_dir, request):
    """Cross-session batching: states stacked into one ``step`` call, each session still gets its own answer."""
    app = make_app(backend, models_dir, request, batch_timeout_ms=20)  # wait a little for company
    client = app.test_client()
    expected, labels = offline_probabilities(models_dir / "dialog-act" / "1", CONVERSATION)
    sessions = [open_session(client)["session_id"] for _ in range(8)]
    results = {s: [] for s in sessions}
    barrier = threading.Barrier(len(sessions))

    def converse(session_id):
        for speaker, text in CONVERSATION:
            barrier.wait()  # every session posts its n-th turn at the same moment
            answer = client.post(f"/v1/dialogs/{session_id}/turns", json={"text": text, "speaker": speaker}).get_json()
            results[session_id].append([answer["scores"][label] for label in labels])

    threads = [threading.Thread(target=converse, args=(s,)) for s in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for session_id in sessions:
        np.testing.assert_allclose(np.array(results[session_id]), expected, atol=2e-6)
    batcher = app.extensions["seqtag.registry"].get("dialog-act").batcher
    assert max(batcher.batch_sizes) > 1
    close(app)


def test_an_unreachable_redis_gives_503_and_leaves_tagging_alone(models_dir):
    """A worker started (or restarted by gunicorn) while Redis is down boots and tags; its dialog routes answer
    503 ``sessions_unavailable`` with ``Retry-After``, quickly, instead of a 500 or a worker that never boots."""
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app({"models_dir": str(models_dir), "poll_interval_seconds": 0, "redis_url": f"redis://127.0.0.1:{port}/0",
                      "redis_timeout_seconds": 0.5})
    client = app.test_client()
    try:
        assert client.get("/readyz").status_code == 200
        assert client.post("/v1/models/pos:tag", json={"sentences": [["A", "dog", "."]]}).status_code == 200
        started = time.monotonic()
        for method, path, body in [("post", "/v1/dialogs", {"model": "dialog-act"}),
                                   ("post", "/v1/dialogs/some-session/turns", {"text": "hi"}),
                                   ("post", "/v1/dialogs/some-session/reset", None),
                                   ("get", "/v1/dialogs/some-session", None),
                                   ("delete", "/v1/dialogs/some-session", None)]:
            response = getattr(client, method)(path, json=body) if body else getattr(client, method)(path)
            assert response.status_code == 503, (path, response.get_json())
            assert response.get_json()["error"]["code"] == "sessions_unavailable"
            assert response.headers["Retry-After"] == "1"
        assert time.monotonic() - started < 10  # failed fast, not after the client's own timeout
        assert client.get("/metrics").status_code == 200
    finally:
        close(app)
